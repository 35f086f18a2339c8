//! CORE. A self-contained HTML report: summary tables and inline SVG charts (throughput over
//! time, latency percentiles, broker RSS over time, connected clients). No scripts, fonts or
//! other network resources, so it opens from disk anywhere.

use std::fmt::Write;

use super::{figure_value, micros};
use crate::result::RunResult;

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A named series of `(x, y)` points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, `x` ascending.
    pub points: Vec<(f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn legend(out: &mut String, labels: &[&str]) {
    for (i, l) in labels.iter().enumerate() {
        let y = TOP + 14.0 + i as f64 * 18.0;
        let x = W - RIGHT + 12.0;
        let c = COLORS[i % COLORS.len()];
        let _ = write!(out, r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{c}"/>"#, y - 10.0);
        let _ = write!(out, r#"<text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"#, x + 18.0, esc(l));
    }
}

fn frame(out: &mut String, title: &str, y_max: f64, y_fmt: &dyn Fn(f64) -> String) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = write!(out, r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#, esc(title));
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = TOP + plot_h * (1.0 - f64::from(i) / 4.0);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            esc(&y_fmt(v))
        );
    }
    let _ =
        write!(out, r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#444"/>"##, H - BOTTOM);
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
}

/// A line chart of several series against seconds.
pub fn line_chart(title: &str, series: &[Series], y_fmt: &dyn Fn(f64) -> String) -> String {
    let x_max = nice_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max));
    let y_max = nice_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max));
    let mut out = String::new();
    frame(&mut out, title, y_max, y_fmt);
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    for i in 0..=4 {
        let v = x_max * f64::from(i) / 4.0;
        let x = LEFT + plot_w * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{v:.0} s</text>"#,
            H - BOTTOM + 16.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", LEFT + plot_w * x / x_max, TOP + plot_h * (1.0 - y / y_max)))
            .collect();
        if !pts.is_empty() {
            let c = COLORS[i % COLORS.len()];
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{}"/>"#,
                pts.join(" ")
            );
        }
    }
    let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    legend(&mut out, &labels);
    out.push_str("</svg>");
    out
}

/// Grouped bars on a log scale: one group per category, one bar per series.
pub fn log_bar_chart(
    title: &str,
    categories: &[&str],
    series: &[(String, Vec<f64>)],
    y_fmt: &dyn Fn(f64) -> String,
) -> String {
    let max = series.iter().flat_map(|s| s.1.iter().copied()).fold(1.0, f64::max);
    let top = 10f64.powf(max.log10().ceil().max(1.0));
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = write!(out, r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#, esc(title));
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let decades = top.log10();
    let y_of = |v: f64| TOP + plot_h * (1.0 - v.max(1.0).log10() / decades);
    for d in 0..=(decades as u32) {
        let v = 10f64.powi(d as i32);
        let y = y_of(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            esc(&y_fmt(v))
        );
    }
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (ci, c) in categories.iter().enumerate() {
        let gx = LEFT + group_w * ci as f64;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            H - BOTTOM + 16.0,
            esc(c)
        );
        for (si, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(0.0);
            let y = y_of(v);
            let x = gx + group_w * 0.1 + bar_w * si as f64;
            let color = COLORS[si % COLORS.len()];
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}</title></rect>"#,
                (bar_w - 2.0).max(1.0),
                (H - BOTTOM - y).max(0.0),
                esc(&y_fmt(v))
            );
        }
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    let labels: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    legend(&mut out, &labels);
    out.push_str("</svg>");
    out
}

fn run_label(r: &RunResult, i: usize) -> String {
    format!("{} #{}", r.label, i + 1)
}

/// Deliveries per second between consecutive samples.
pub fn throughput(r: &RunResult) -> Vec<(f64, f64)> {
    r.timeline
        .windows(2)
        .filter(|w| w[1].t_secs > w[0].t_secs)
        .map(|w| {
            (w[1].t_secs, (w[1].received.saturating_sub(w[0].received)) as f64 / (w[1].t_secs - w[0].t_secs))
        })
        .collect()
}

fn scenario_section(out: &mut String, scenario: &str, runs: &[&RunResult]) {
    let _ = write!(out, "<h2>{}</h2>", esc(scenario));
    out.push_str("<table><tr><th>figure</th>");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, "<th>{}</th>", esc(&run_label(r, i)));
    }
    out.push_str("</tr>");
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.figures.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let _ = write!(out, "<tr><td>{}</td>", esc(n));
        for r in runs {
            let v = r.figures.get(n).map_or("-".into(), |v| figure_value(n, *v));
            let _ = write!(out, "<td>{}</td>", esc(&v));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    for (i, r) in runs.iter().enumerate() {
        let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            out,
            "<p class=\"params\">{}: {} (broker {}, run {})</p>",
            esc(&run_label(r, i)),
            esc(&params.join(" ")),
            esc(&r.broker),
            esc(&r.run_id)
        );
        for n in &r.notes {
            let _ = write!(out, "<p class=\"note\">{}: {}</p>", esc(&run_label(r, i)), esc(n));
        }
    }
    let series = |f: &dyn Fn(&RunResult) -> Vec<(f64, f64)>| -> Vec<Series> {
        runs.iter().enumerate().map(|(i, r)| Series { label: run_label(r, i), points: f(r) }).collect()
    };
    let tput = series(&throughput);
    if tput.iter().any(|s| s.points.iter().any(|p| p.1 > 0.0)) {
        out.push_str(&line_chart("Deliveries per second", &tput, &|v| super::count(v)));
    }
    let lat: Vec<(String, Vec<f64>)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let l = r.traffic.as_ref()?.latency;
            (l.count > 0).then(|| {
                (
                    run_label(r, i),
                    [l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us].iter().map(|&v| v as f64).collect(),
                )
            })
        })
        .collect();
    if !lat.is_empty() {
        out.push_str(&log_bar_chart(
            "End-to-end latency",
            &["p50", "p90", "p99", "p99.9", "max"],
            &lat,
            &|v| micros(v as u64),
        ));
    }
    let rss = series(&|r: &RunResult| {
        r.timeline.iter().filter_map(|s| Some((s.t_secs, s.broker_rss_bytes? as f64))).collect()
    });
    if rss.iter().any(|s| !s.points.is_empty()) {
        out.push_str(&line_chart("Broker RSS", &rss, &|v| super::bytes(v)));
    }
    let conns = series(&|r: &RunResult| r.timeline.iter().map(|s| (s.t_secs, s.connected as f64)).collect());
    out.push_str(&line_chart("Connected clients", &conns, &|v| super::count(v)));
}

/// The whole report for `runs`, grouped by scenario; `summary` is preformatted text shown
/// first (e.g. a comparison).
pub fn render(title: &str, runs: &[RunResult], summary: Option<&str>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:1000px}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:8px}}\
         .note{{color:#a33;margin:2px 0}}.params{{color:#555;margin:2px 0;font-size:13px}}svg{{display:block;margin:12px 0}}\
         </style></head><body><h1>{}</h1>",
        esc(title),
        esc(title)
    );
    if let Some(s) = summary {
        let _ = write!(out, "<pre>{}</pre>", esc(s));
    }
    let mut scenarios: Vec<&str> = runs.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    let mut seen = Vec::new();
    for s in scenarios {
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        let group: Vec<&RunResult> = runs.iter().filter(|r| r.scenario == s).collect();
        scenario_section(&mut out, s, &group);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Sample, TrafficSummary};

    #[test]
    fn report_is_self_contained_svg() {
        let mut r = RunResult { scenario: "p2p".into(), label: "a<b".into(), ..RunResult::default() };
        for t in 0..5u32 {
            r.timeline.push(Sample {
                t_secs: f64::from(t),
                received: u64::from(t) * 1000,
                broker_rss_bytes: Some(1 << 20),
                ..Sample::default()
            });
        }
        let mut t = TrafficSummary::default();
        t.latency.count = 10;
        t.latency.p50_us = 100;
        t.latency.max_us = 20_000;
        r.traffic = Some(t);
        r.figures.insert("deliveries_per_sec".into(), 1000.0);
        let html = render("Bench", &[r.clone(), r], Some("summary"));
        assert!(html.contains("<svg"));
        assert!(html.contains("a&lt;b #2"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert_eq!(
            throughput(&RunResult { timeline: vec![Sample::default(); 1], ..RunResult::default() }),
            vec![]
        );
    }
}
