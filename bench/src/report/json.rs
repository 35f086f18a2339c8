//! SHELL. Results as JSON: one object per run, one line per object, so a file of results is
//! JSON Lines and can be appended to run after run.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::result::RunResult;

/// One result as a single-line JSON object.
pub fn line(r: &RunResult) -> anyhow::Result<String> {
    Ok(serde_json::to_string(r)?)
}

/// Appends results to a JSON Lines file.
pub fn append(path: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    for r in results {
        writeln!(f, "{}", line(r)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Reads every result of a JSON Lines file.
pub fn read(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a bench result", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_a_jsonl_file() {
        let dir = std::env::temp_dir().join(format!("bench-json-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("r.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut r = RunResult { scenario: "p2p".into(), label: "x".into(), ..RunResult::default() };
        r.figures.insert("deliveries_per_sec".into(), 1234.5);
        append(&path, &[r.clone()]).expect("append");
        append(&path, &[r.clone()]).expect("append");
        let back = read(&path).expect("read");
        assert_eq!(back, vec![r.clone(), r]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
