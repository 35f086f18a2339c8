//! The HTML report: a timeline (one lane per concurrent process, operations as bars from
//! invocation to completion, deliveries as ticks, fault windows shaded), a latency scatter
//! (log scale) and throughput per second. Plain inline SVG; capped in elements.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::check::{Valid, Verdict};
use crate::history::{Event, History, Kind, Proc};

const W: f64 = 1400.0;
const LEFT: f64 = 60.0;
const MAX_BARS: usize = 20_000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Ok => "#2e9b4f",
        Kind::Fail => "#d33",
        Kind::Info => "#f0a020",
        Kind::Invoke => "#888",
    }
}

struct Bar<'a> {
    p: u64,
    start: u64,
    end: u64,
    kind: Kind,
    e: &'a Event,
}

/// The page.
pub(super) fn page(h: &History, v: &Verdict) -> String {
    let end = h.events.iter().map(|e| e.t).max().unwrap_or(1).max(1);
    let x = |t: u64| LEFT + (t as f64 / end as f64) * (W - LEFT - 10.0);
    let windows = fault_windows(h);
    let (bars, ticks) = bars(h);
    let mut s = String::new();
    let verdict = if v.pass { "PASS" } else { "FAIL" };
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>jepsen {} seed {}: {verdict}</title>\
         <style>body{{font:13px sans-serif;margin:20px}} .bad{{color:#c00}} .ok{{color:#080}} \
         td,th{{padding:2px 8px;text-align:left;vertical-align:top}} svg{{border:1px solid #ccc}}</style>\
         </head><body><h1>{} &middot; seed {} &middot; <span class=\"{}\">{verdict}</span></h1>",
        esc(&h.meta.workload),
        h.meta.seed,
        esc(&h.meta.workload),
        h.meta.seed,
        if v.pass { "ok" } else { "bad" }
    );
    let _ = write!(s, "<pre>{}</pre>", esc(&super::summary(h, v)));
    s.push_str("<table><tr><th>check</th><th>valid</th><th>counts</th><th>examples</th></tr>");
    for r in &v.results {
        let cls = if r.valid == Valid::True { "ok" } else { "bad" };
        let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"{cls}\">{:?}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            r.valid,
            esc(&counts.join(" ")),
            r.examples.iter().map(|e| esc(e)).collect::<Vec<_>>().join("<br>")
        );
    }
    s.push_str("</table>");
    // Timeline.
    let lanes = assign_lanes(h);
    let nlanes = lanes.values().copied().max().map_or(1, |m| m + 1);
    let lane_h = 6.0;
    let height = 30.0 + nlanes as f64 * lane_h;
    let _ = write!(s, "<h2>Timeline ({} processes in {nlanes} lanes)</h2>", lanes.len());
    let _ = write!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\">");
    shade(&mut s, &windows, &x, height);
    axis(&mut s, end, &x, height);
    let step = bars.len().div_ceil(MAX_BARS).max(1);
    for b in bars.iter().step_by(step) {
        let lane = lanes.get(&b.p).copied().unwrap_or(0) as f64;
        let (x0, x1) = (x(b.start), x(b.end));
        let _ = write!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
            20.0 + lane * lane_h,
            (x1 - x0).max(0.8),
            lane_h - 1.0,
            color(b.kind),
            esc(&serde_json::to_string(b.e).unwrap_or_default())
        );
    }
    let tstep = ticks.len().div_ceil(MAX_BARS).max(1);
    for e in ticks.iter().step_by(tstep) {
        let lane = e.client_proc().and_then(|p| lanes.get(&p)).copied().unwrap_or(0) as f64;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"0.7\" height=\"{:.1}\" fill=\"#36c\"/>",
            x(e.t),
            20.0 + lane * lane_h,
            lane_h - 1.0
        );
    }
    s.push_str(
        "</svg><p>green ok, orange info (indeterminate), red fail, blue ticks deliveries; shaded: faults</p>",
    );
    latency(&mut s, &bars, &windows, end, &x);
    throughput(&mut s, &bars, &windows, end, &x);
    s.push_str("</body></html>\n");
    s
}

fn fault_windows(h: &History) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    let mut open: Option<(u64, String)> = None;
    for e in h.events.iter().filter(|e| e.p == Proc::Nemesis(crate::history::Nemesis::Nemesis)) {
        if let Some(name) = e.f.strip_prefix("start-") {
            open = Some((e.t, name.to_string()));
        } else if e.f.starts_with("stop-")
            && let Some((t, name)) = open.take()
        {
            out.push((t, e.t, name));
        }
    }
    out
}

fn bars(h: &History) -> (Vec<Bar<'_>>, Vec<&Event>) {
    let mut open: HashMap<(u64, &str), &Event> = HashMap::new();
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for e in &h.events {
        let Some(p) = e.client_proc() else { continue };
        if e.kind == Kind::Invoke {
            open.insert((p, e.f.as_str()), e);
        } else if let Some(inv) = open.remove(&(p, e.f.as_str())) {
            bars.push(Bar { p, start: inv.t, end: e.t.max(inv.t), kind: e.kind, e });
        } else if e.f == "deliver" {
            ticks.push(e);
        }
    }
    (bars, ticks)
}

/// Greedy interval colouring of process lifetimes: lanes = peak concurrent processes.
fn assign_lanes(h: &History) -> HashMap<u64, usize> {
    let mut life: HashMap<u64, (u64, u64)> = HashMap::new();
    for e in &h.events {
        if let Some(p) = e.client_proc() {
            let l = life.entry(p).or_insert((e.t, e.t));
            l.1 = l.1.max(e.t);
        }
    }
    let mut procs: Vec<(u64, u64, u64)> = life.into_iter().map(|(p, (a, b))| (a, b, p)).collect();
    procs.sort_unstable();
    let mut lane_end: Vec<u64> = Vec::new();
    let mut out = HashMap::new();
    for (a, b, p) in procs {
        let lane = match lane_end.iter().position(|&end| end < a) {
            Some(l) => l,
            None => {
                lane_end.push(0);
                lane_end.len() - 1
            }
        };
        lane_end[lane] = b;
        out.insert(p, lane);
    }
    out
}

fn shade(s: &mut String, windows: &[(u64, u64, String)], x: &impl Fn(u64) -> f64, height: f64) {
    for (a, b, name) in windows {
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\" fill=\"#f4cccc\" opacity=\"0.6\">\
             <title>{}</title></rect><text x=\"{:.1}\" y=\"12\" font-size=\"10\">{}</text>",
            x(*a),
            (x(*b) - x(*a)).max(1.0),
            esc(name),
            x(*a),
            esc(name)
        );
    }
}

fn axis(s: &mut String, end: u64, x: &impl Fn(u64) -> f64, height: f64) {
    let secs = end / 1_000_000_000;
    let every = (secs / 10).max(1);
    for k in (0..=secs).step_by(every as usize) {
        let t = k * 1_000_000_000;
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"14\" y2=\"{height}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{1}\" font-size=\"10\">{k}s</text>",
            x(t),
            height - 2.0
        );
    }
}

fn latency(
    s: &mut String,
    bars: &[Bar<'_>],
    windows: &[(u64, u64, String)],
    end: u64,
    x: &impl Fn(u64) -> f64,
) {
    let h = 260.0;
    let _ = write!(
        s,
        "<h2>Latency (log scale, 0.1 ms – 10 s)</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\">"
    );
    shade(s, windows, x, h);
    axis(s, end, x, h);
    let y = |ns: u64| {
        let ms = (ns as f64 / 1e6).clamp(0.1, 10_000.0);
        let frac = (ms.log10() + 1.0) / 5.0;
        h - 15.0 - frac * (h - 30.0)
    };
    for (ms, label) in [(1u64, "1ms"), (10, "10ms"), (100, "100ms"), (1000, "1s")] {
        let yy = y(ms * 1_000_000);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{W}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"2\" y=\"{yy:.1}\" font-size=\"10\">{label}</text>"
        );
    }
    let step = bars.len().div_ceil(MAX_BARS).max(1);
    for b in bars.iter().step_by(step) {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.2\" fill=\"{}\"/>",
            x(b.end),
            y(b.end - b.start),
            color(b.kind)
        );
    }
    s.push_str("</svg>");
}

fn throughput(
    s: &mut String,
    bars: &[Bar<'_>],
    windows: &[(u64, u64, String)],
    end: u64,
    x: &impl Fn(u64) -> f64,
) {
    let h = 200.0;
    let secs = (end / 1_000_000_000 + 1) as usize;
    let mut per: HashMap<Kind, Vec<u64>> = HashMap::new();
    for b in bars {
        per.entry(b.kind).or_insert_with(|| vec![0; secs])[(b.end / 1_000_000_000) as usize % secs] += 1;
    }
    let max = per.values().flat_map(|v| v.iter()).copied().max().unwrap_or(1).max(1);
    let _ = write!(
        s,
        "<h2>Throughput (completions per second, max {max})</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\">"
    );
    shade(s, windows, x, h);
    axis(s, end, x, h);
    for (kind, v) in &per {
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{:.1},{:.1}",
                    x(i as u64 * 1_000_000_000),
                    h - 15.0 - (*n as f64 / max as f64) * (h - 30.0)
                )
            })
            .collect();
        let _ =
            write!(s, "<polyline fill=\"none\" stroke=\"{}\" points=\"{}\"/>", color(*kind), pts.join(" "));
    }
    s.push_str("</svg>");
}
