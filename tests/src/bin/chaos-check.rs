//! Judges the record of a chaos run again, offline: `chaos-check DIR`, where DIR holds the
//! run's `store.jsonl` (written by every chaos run; the test prints where). For working on the
//! checker, or reading what a failed run did without running it again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use baton_e2e::chaos::check::{self, History};
use baton_e2e::cluster::Change;
use baton_store::Keyspace;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: chaos-check DIR   (DIR: the record of a chaos run, with its store.jsonl)");
        return ExitCode::from(2);
    };
    let path = dir.join("store.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("chaos-check: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut changes = Vec::new();
    let mut times = BTreeMap::new();
    let mut values: HashMap<String, Vec<u8>> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let parsed: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => {
                eprintln!("chaos-check: {} line {}: not JSON ({e})", path.display(), number + 1);
                return ExitCode::from(2);
            }
        };
        let (Some(revision), Some(key)) = (parsed["revision"].as_i64(), parsed["key"].as_str()) else {
            eprintln!("chaos-check: {} line {}: no revision or key", path.display(), number + 1);
            return ExitCode::from(2);
        };
        if let Some(seen) = parsed["seen"].as_f64() {
            times.entry(revision).or_insert(seen);
        }
        let value = parsed["value"].as_str().map(|v| v.as_bytes().to_vec());
        let before = match &value {
            Some(v) => values.insert(key.to_string(), v.clone()),
            None => values.remove(key),
        };
        changes.push(Change { revision, key: key.to_string(), value, before });
    }
    let keys = Keyspace::default();
    let report = check::check(&History { changes: &changes, times: &times, keys: &keys });
    println!(
        "{} changes, {} record writes and {} decisions judged, {} violations",
        changes.len(),
        report.writes,
        report.decisions,
        report.violations.len()
    );
    for violation in &report.violations {
        println!("{violation}");
    }
    if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
