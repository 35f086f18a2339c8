//! Rendering results: [`table`] for people at a terminal, [`json`] for machines (one object
//! per run, appended as a line), [`html`] for a self-contained report with SVG charts.

pub mod html;
pub mod json;
pub mod table;

/// A byte count for people: `1.2 KiB`, `34.5 MiB`.
pub fn bytes(n: f64) -> String {
    let (v, unit) = if n.abs() >= 1024.0 * 1024.0 * 1024.0 {
        (n / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if n.abs() >= 1024.0 * 1024.0 {
        (n / (1024.0 * 1024.0), "MiB")
    } else if n.abs() >= 1024.0 {
        (n / 1024.0, "KiB")
    } else {
        return format!("{n:.0} B");
    };
    format!("{v:.1} {unit}")
}

/// A count or rate for people: `950`, `12.3k`, `4.56M`.
pub fn count(n: f64) -> String {
    if n.abs() >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n.abs() >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if n.abs() >= 100.0 || n == n.trunc() {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// Microseconds for people: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn micros(us: u64) -> String {
    let us = us as f64;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// A figure value formatted by its name's unit.
pub fn figure_value(name: &str, v: f64) -> String {
    if name.contains("bytes") {
        bytes(v)
    } else if name.ends_with("_us") {
        micros(v.max(0.0) as u64)
    } else if name.ends_with("_secs") {
        format!("{v:.2} s")
    } else if name.ends_with("cores") {
        format!("{v:.2}")
    } else {
        count(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(740.0), "740 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(count(2_500_000.0), "2.50M");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_300), "12.3 ms");
        assert_eq!(figure_value("broker_bytes_per_connection", 2048.0), "2.0 KiB");
        assert_eq!(figure_value("latency_p99_us", 1500.0), "1.5 ms");
    }
}
