//! CORE. Results as aligned text tables for a terminal.

use std::fmt::Write;

use super::{bytes, count, figure_value, micros};
use crate::result::{PhaseSummary, RunResult};
use crate::stats::Percentiles;

fn row(out: &mut String, key: &str, value: impl AsRef<str>) {
    let _ = writeln!(out, "  {key:<34} {}", value.as_ref());
}

fn latency(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".into();
    }
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
        micros(p.p50_us),
        micros(p.p99_us),
        micros(p.p999_us),
        micros(p.max_us),
        p.count
    )
}

fn phase(out: &mut String, name: &str, p: &PhaseSummary) {
    row(out, &format!("{name}: clients ok / failed"), format!("{} / {}", p.ok, p.failed));
    row(out, &format!("{name}: duration, rate"), format!("{:.2} s, {}/s", p.secs, count(p.per_sec)));
    row(out, &format!("{name}: per-client latency"), latency(&p.latency));
    if p.subscriptions_ok + p.subscriptions_failed > 0 {
        row(
            out,
            &format!("{name}: subscriptions ok / failed"),
            format!("{} / {}", p.subscriptions_ok, p.subscriptions_failed),
        );
    }
    if p.session_present > 0 {
        row(out, &format!("{name}: session present"), p.session_present.to_string());
    }
}

/// One run as a table.
pub fn render(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} against {} ({}), run {}", r.scenario, r.label, r.broker, r.run_id);
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "  {}  workers={}", params.join(" "), r.workers);
    if let Some(p) = &r.connect {
        phase(&mut out, "connect", p);
    }
    if let Some(p) = &r.subscribe {
        phase(&mut out, "subscribe", p);
    }
    if let Some(p) = &r.reconnect {
        phase(&mut out, "reconnect", p);
    }
    if let Some(t) = &r.traffic {
        let a = &t.accounting;
        row(&mut out, "messages sent / acked / unacked", format!("{} / {} / {}", t.sent, t.acked, t.unacked));
        row(&mut out, "deliveries expected / unique", format!("{} / {}", a.expected, a.unique));
        row(
            &mut out,
            "lost / duplicates / reordered",
            format!("{} / {} / {}", a.lost, a.duplicates, a.reordered),
        );
        row(
            &mut out,
            "window: published, delivered",
            format!("{}, {} in {:.1} s", t.sent_in_window, t.delivered_in_window, t.measure_secs),
        );
        row(&mut out, "latency", latency(&t.latency));
    }
    if let Some(u) = &r.broker_usage {
        row(
            &mut out,
            "broker CPU in measured phase",
            format!("{:.2} s over {:.2} s", u.cpu_secs, u.wall_secs),
        );
        row(
            &mut out,
            "broker RSS start / end / peak",
            format!(
                "{} / {} / {}",
                bytes(u.rss_start_bytes as f64),
                bytes(u.rss_end_bytes as f64),
                bytes(u.rss_peak_bytes as f64)
            ),
        );
    }
    for (k, v) in &r.figures {
        let mark = if r.headline.as_ref().is_some_and(|h| &h.figure == k) { " *" } else { "" };
        row(&mut out, k, format!("{}{mark}", figure_value(k, *v)));
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// Several runs side by side: one column per run, one row per figure.
pub fn side_by_side(runs: &[&RunResult]) -> String {
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.figures.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    let _ = write!(out, "  {:<34}", "figure");
    for r in runs {
        let _ = write!(out, " {:>14}", truncate(&r.label, 14));
    }
    out.push('\n');
    for n in names {
        let _ = write!(out, "  {n:<34}");
        for r in runs {
            let v = r.figures.get(n).map_or("-".into(), |v| figure_value(n, *v));
            let _ = write!(out, " {v:>14}");
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Headline;

    #[test]
    fn renders_figures_and_notes() {
        let mut r = RunResult { scenario: "conn".into(), label: "flotilla".into(), ..RunResult::default() };
        r.figures.insert("broker_bytes_per_connection".into(), 1700.0);
        r.headline = Some(Headline { figure: "broker_bytes_per_connection".into(), higher_is_better: false });
        r.notes.push("something".into());
        let t = render(&r);
        assert!(t.contains("1.7 KiB *"), "{t}");
        assert!(t.contains("note: something"));
        let s = side_by_side(&[&r, &r]);
        assert!(s.contains("flotilla"));
    }
}
