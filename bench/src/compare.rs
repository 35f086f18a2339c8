//! SHELL. `bench compare`: the same scenario against two brokers alternately (A B A B ...),
//! so slow drifts of a shared machine hit both alike. Reports each pair's ratio A/B of every
//! figure and the median ratio over the pairs.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::report::figure_value;
use crate::result::RunResult;
use crate::scenario::Scenario;
use crate::scenario::opts::Dur;

/// A broker to compare: `IP:PORT [PID] [LABEL]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Broker address.
    pub addr: SocketAddr,
    /// Broker process id, for CPU and memory figures.
    pub pid: Option<u32>,
    /// Name in reports.
    pub label: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let addr = parts.next().ok_or("empty broker")?;
        let addr: SocketAddr = addr.parse().map_err(|e| format!("bad broker address {addr:?}: {e}"))?;
        let mut pid = None;
        let mut label = None;
        for p in parts {
            match p.parse::<u32>() {
                Ok(n) if pid.is_none() => pid = Some(n),
                _ => label = Some(p.to_string()),
            }
        }
        Ok(Self { addr, pid, label: label.unwrap_or_else(|| addr.to_string()) })
    }
}

/// Options of `bench compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// Broker A: 'IP:PORT [PID] [LABEL]'.
    #[arg(long)]
    pub a: Target,
    /// Broker B: 'IP:PORT [PID] [LABEL]'.
    #[arg(long)]
    pub b: Target,
    /// A/B pairs (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=50))]
    pub pairs: u32,
    /// Pause between runs, so the brokers settle.
    #[arg(long, default_value = "2s")]
    pub pause: Dur,
    /// The scenario (its --broker, --broker-pid and --label are set per target).
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// One A/B pair of a figure.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pair {
    /// Value for A.
    pub a: f64,
    /// Value for B.
    pub b: f64,
    /// `a / b`.
    pub ratio: f64,
}

/// The outcome of a comparison.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// Broker A.
    pub a: Target,
    /// Broker B.
    pub b: Target,
    /// The headline figure.
    pub headline: Option<String>,
    /// Whether larger headline values are better.
    pub higher_is_better: bool,
    /// Per figure, the pairs in run order.
    pub pairs: BTreeMap<String, Vec<Pair>>,
    /// Per figure, the median of the pair ratios A/B.
    pub median_ratio: BTreeMap<String, f64>,
    /// Per figure, the median values of A and B.
    pub median_a: BTreeMap<String, f64>,
    /// See `median_a`.
    pub median_b: BTreeMap<String, f64>,
    /// Every run, in order A B A B ...
    pub runs: Vec<RunResult>,
}

/// Median of a non-empty list (mean of the middle two for even lengths); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Builds the comparison from runs in A B A B order.
pub fn summarize(scenario: &str, a: &Target, b: &Target, runs: Vec<RunResult>) -> Comparison {
    let mut pairs: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    for ab in runs.chunks(2) {
        let [ra, rb] = ab else {
            continue;
        };
        for (name, &va) in &ra.figures {
            if let Some(&vb) = rb.figures.get(name) {
                let ratio = if vb == 0.0 { f64::NAN } else { va / vb };
                pairs.entry(name.clone()).or_default().push(Pair { a: va, b: vb, ratio });
            }
        }
    }
    let med = |f: &dyn Fn(&Pair) -> f64| -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.clone(), median(&v.iter().map(f).collect::<Vec<_>>()))).collect()
    };
    let headline = runs.first().and_then(|r| r.headline.clone());
    Comparison {
        scenario: scenario.into(),
        a: a.clone(),
        b: b.clone(),
        headline: headline.as_ref().map(|h| h.figure.clone()),
        higher_is_better: headline.is_none_or(|h| h.higher_is_better),
        median_ratio: med(&|p| p.ratio),
        median_a: med(&|p| p.a),
        median_b: med(&|p| p.b),
        pairs,
        runs,
    }
}

/// Runs the comparison.
pub async fn run(args: &CompareArgs) -> anyhow::Result<Comparison> {
    let mut runs = Vec::new();
    for i in 0..args.pairs {
        for t in [&args.a, &args.b] {
            let mut s = args.scenario.clone();
            let o = s.opts_mut();
            o.broker = t.addr.into();
            o.broker_pid = t.pid.into_iter().collect();
            o.label = t.label.clone();
            o.run_id = None;
            eprintln!("compare: pair {}/{} {} on {} ({})", i + 1, args.pairs, s.name(), t.label, t.addr);
            runs.push(s.run().await?);
            tokio::time::sleep(args.pause.0).await;
        }
    }
    Ok(summarize(args.scenario.name(), &args.a, &args.b, runs))
}

/// The comparison as text.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: A = {} ({}), B = {} ({}), {} pairs",
        c.scenario,
        c.a.label,
        c.a.addr,
        c.b.label,
        c.b.addr,
        c.runs.len() / 2
    );
    if let Some(h) = &c.headline {
        let better = if c.higher_is_better { "higher is better" } else { "lower is better" };
        let _ = writeln!(out, "headline: {h} ({better})");
        if let Some(pairs) = c.pairs.get(h) {
            for (i, p) in pairs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  pair {}: A {:>12}  B {:>12}  A/B {:.2}",
                    i + 1,
                    figure_value(h, p.a),
                    figure_value(h, p.b),
                    p.ratio
                );
            }
        }
        let _ = writeln!(out, "  median A/B: {:.2}", c.median_ratio.get(h).copied().unwrap_or(f64::NAN));
    }
    let _ = writeln!(out, "  {:<40} {:>12} {:>12} {:>8}", "figure (medians)", c.a.label, c.b.label, "A/B");
    for (name, r) in &c.median_ratio {
        let a = c.median_a.get(name).copied().unwrap_or(f64::NAN);
        let b = c.median_b.get(name).copied().unwrap_or(f64::NAN);
        let ratio = if r.is_finite() { format!("{r:.2}") } else { "-".into() };
        let _ = writeln!(
            out,
            "  {name:<40} {:>12} {:>12} {ratio:>8}",
            figure_value(name, a),
            figure_value(name, b)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_optional_pid_and_label() {
        let t: Target = "127.0.0.1:1883 4242 flotilla".parse().expect("target");
        assert_eq!((t.pid, t.label.as_str()), (Some(4242), "flotilla"));
        let t: Target = "127.0.0.1:1884".parse().expect("target");
        assert_eq!((t.pid, t.label.as_str()), (None, "127.0.0.1:1884"));
        assert!("nonsense".parse::<Target>().is_err());
    }

    #[test]
    fn medians_of_pair_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let run = |label: &str, v: f64| {
            let mut r = RunResult { label: label.into(), ..RunResult::default() };
            r.figures.insert("x".into(), v);
            r
        };
        let a: Target = "127.0.0.1:1 1 a".parse().expect("a");
        let b: Target = "127.0.0.1:2 2 b".parse().expect("b");
        let runs =
            vec![run("a", 10.0), run("b", 5.0), run("a", 9.0), run("b", 3.0), run("a", 8.0), run("b", 8.0)];
        let c = summarize("p2p", &a, &b, runs);
        assert_eq!(c.pairs["x"].len(), 3);
        assert_eq!(c.median_ratio["x"], 2.0);
        assert_eq!(c.median_a["x"], 9.0);
    }
}
