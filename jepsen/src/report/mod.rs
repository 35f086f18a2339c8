//! Reports: `summary.txt` (text), `results.json` (machine-readable) and `report.html`
//! (self-contained: inline SVG timeline, latency and throughput, no scripts from the
//! network).

mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::check::{Valid, Verdict};
use crate::history::{History, Kind};

/// Writes the three report files into `dir`.
pub fn write(dir: &Path, h: &History, v: &Verdict) -> std::io::Result<()> {
    std::fs::write(dir.join("summary.txt"), summary(h, v))?;
    let results = serde_json::json!({"meta": h.meta, "verdict": v});
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results).unwrap_or_default())?;
    std::fs::write(dir.join("report.html"), html::page(h, v))?;
    Ok(())
}

/// The text summary.
pub fn summary(h: &History, v: &Verdict) -> String {
    let m = &h.meta;
    let mut s = String::new();
    let verdict = match v.exit_code() {
        0 => "PASS",
        1 => "FAIL (a safety check is violated)",
        _ => "FAIL (unknown: a check could not be decided)",
    };
    let _ = writeln!(s, "Flotilla jepsen run: {verdict}");
    let _ = writeln!(
        s,
        "workload {}, nemesis [{}], seed {}, {} s, concurrency {}, rate {}/s, {} node(s) over {}{}",
        m.workload,
        m.nemesis.join(","),
        m.seed,
        m.time_limit_s,
        m.concurrency,
        m.rate,
        m.nodes,
        m.net,
        m.test_bug.as_ref().map(|b| format!(", FLOTILLA_TEST_BUG={b}")).unwrap_or_default()
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &m.schedule {
        *kinds.entry(f.kind.name()).or_default() += 1;
    }
    let _ = writeln!(s, "faults scheduled: {} {:?}", m.schedule.len(), kinds);
    let mut ops: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for e in &h.events {
        if e.client_proc().is_some() && e.kind != Kind::Invoke {
            let k = match e.kind {
                Kind::Ok => "ok",
                Kind::Fail => "fail",
                _ => "info",
            };
            *ops.entry((e.f.as_str(), k)).or_default() += 1;
        }
    }
    let _ = writeln!(s, "events: {} in the history", h.events.len());
    let mut line = String::new();
    for ((f, k), n) in &ops {
        let _ = write!(line, "{f} {k} {n}; ");
    }
    let _ = writeln!(s, "completions: {line}");
    let _ = writeln!(s, "\nchecks:");
    for r in &v.results {
        let valid = match r.valid {
            Valid::True => "valid",
            Valid::False => "INVALID",
            Valid::Unknown => "UNKNOWN",
        };
        let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = writeln!(s, "  {:<16} {:<8} {}", r.name, valid, counts.join(" "));
        for e in r.examples.iter().take(8) {
            let _ = writeln!(s, "      {e}");
        }
    }
    let _ = writeln!(
        s,
        "\nreproduce: cargo run --release -p jepsen -- test --workload {} --nemesis {} --time-limit {} --seed {} \
         --concurrency {} --rate {} --nodes {}{}",
        m.workload,
        if m.nemesis.is_empty() { "none".to_string() } else { m.nemesis.join(",") },
        m.time_limit_s,
        m.seed,
        m.concurrency,
        m.rate,
        m.nodes,
        m.test_bug.as_ref().map(|b| format!(" --test-bug {b} --bin <test-bugs build>")).unwrap_or_default()
    );
    s
}
