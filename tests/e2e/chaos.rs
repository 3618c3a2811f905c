//! Chaos: random user actions and faults against a real cluster, then the recorded history
//! checked against Baton's promises (see `baton_e2e::chaos`). One seed per run, a different
//! one each time unless `BATON_CHAOS_SEED` names it (`hack/chaos.sh SEED` does); seeds that
//! once failed run every time, below.

use std::path::Path;

use baton_e2e::chaos::{self, Options, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_baton");

fn steps() -> usize {
    std::env::var("BATON_CHAOS_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

fn report(outcome: &Outcome) {
    eprintln!(
        "chaos seed {}: {} steps in {:.0} s, {} store changes ({} record writes, {} decisions judged), {} launches, {} stops, {} instance processes \
         started ({} ended), converged {:?} after the last heal, {} violations",
        outcome.seed,
        outcome.steps.len(),
        outcome.duration.as_secs_f64(),
        outcome.changes,
        outcome.writes_checked,
        outcome.decisions_checked,
        outcome.launches,
        outcome.stops,
        outcome.processes_started,
        outcome.processes_ended,
        outcome.converged_in,
        outcome.violations.len()
    );
    assert!(
        outcome.violations.is_empty(),
        "chaos seed {} broke {} promise(s) (replay it: hack/chaos.sh {}):\n{}\n\nsteps:\n{}\n\n{}",
        outcome.seed,
        outcome.violations.len(),
        outcome.seed,
        outcome.violations.join("\n"),
        outcome.steps.join("\n"),
        outcome.logs
    );
}

fn seed(seed: u64) {
    let record = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos").join(format!("seed-{seed}"));
    report(&chaos::run(Path::new(BIN), Options { seed, steps: 30, record_to: Some(&record) }));
}

/// Found the checker counting an instance killed for its health as still starting beside its
/// replacement launched in the same tick (3 starting under `maxConcurrentStarts` 2).
#[test]
fn seed_5_a_health_kill_and_its_replacement_in_one_tick() {
    seed(5);
}

/// Found the recorder counting a shell's forked child, before its exec, as a second process of
/// the same instance.
#[test]
fn seed_7_one_process_per_instance() {
    seed(7);
}

#[test]
fn a_random_seed_keeps_every_promise() {
    let seed = match std::env::var("BATON_CHAOS_SEED") {
        Ok(seed) => seed.parse().unwrap_or_else(|_| panic!("BATON_CHAOS_SEED={seed:?} is not a number")),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000
        }
    };
    // Printed first, so that a run that hangs or crashes still names its seed.
    eprintln!("chaos seed {seed} (replay it: hack/chaos.sh {seed})");
    let record = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos").join(format!("seed-{seed}"));
    report(&chaos::run(Path::new(BIN), Options { seed, steps: steps(), record_to: Some(&record) }));
}

/// The Loop's record (`hack/loop-report`, run by `hack/loop.sh`): a run's JUnit outcomes
/// become lines stamped with the commit, the run goes into the record whole and only once,
/// and the record reads back for the next run's number, a run's summary and the page.
#[test]
fn the_loop_records_a_whole_run_once_and_reads_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let script = root.join("hack/loop-report");
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    std::fs::write(
        &junit,
        r#"<testsuites><testsuite name="baton::faults">
<testcase classname="baton::faults" name="passes" time="1.25"/>
<testcase classname="baton::faults" name="fails" time="2"><failure message="test failed">thread 'fails' panicked at tests/e2e/faults.rs:10:5:
the leader wrote after it was deposed</failure></testcase>
</testsuite></testsuites>"#,
    )
    .unwrap();
    let loop_report = |args: &[&str]| {
        let out = std::process::Command::new("python3").arg(&script).args(args).current_dir(root).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let lines = dir.path().join("run-12.jsonl");
    let record = dir.path().join("record");
    let (ok, out) = loop_report(&["--lines", junit.to_str().unwrap(), "--run", "12"]);
    assert!(ok, "--lines failed: {out}");
    std::fs::write(&lines, &out).unwrap();
    let parsed: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), 2, "one line per test: {out}");
    let failed = parsed.iter().find(|l| l["name"] == "baton::faults fails").unwrap();
    assert_eq!(failed["pass"], false);
    assert_eq!(failed["failure"], "the leader wrote after it was deposed");
    assert_eq!(failed["seconds"], 2.0);
    assert!(failed["commit"].as_str().is_some_and(|c| !c.is_empty()), "stamped with the commit: {failed}");
    assert!(failed["at"].as_str().is_some_and(|t| t.ends_with('Z')), "stamped with the time: {failed}");

    let (ok, out) = loop_report(&["--keep", lines.to_str().unwrap(), "--into", record.to_str().unwrap()]);
    assert!(ok, "--keep failed: {out}");
    let kept = record.join("run-0012.jsonl.gz");
    let bytes = std::fs::read(&kept).unwrap_or_else(|e| panic!("{} not written ({e}): {out}", kept.display()));
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip file");
    assert!(!lines.exists(), "the run's working lines are gone once recorded");

    // A second run 12 is refused, and the first stays as it was.
    std::fs::write(
        &lines,
        "{\"run\": 12, \"name\": \"x\", \"seed\": null, \"pass\": true, \"seconds\": 0, \"failure\": null}\n",
    )
    .unwrap();
    let (ok, out) = loop_report(&["--keep", lines.to_str().unwrap(), "--into", record.to_str().unwrap()]);
    assert!(!ok && out.contains("run 12 is recorded"), "a run is recorded once: {out}");
    assert_eq!(std::fs::read(&kept).unwrap(), bytes);

    let (ok, out) = loop_report(&["--last-run", record.to_str().unwrap()]);
    assert!(ok && out.trim() == "12", "the next run is numbered on from 12: {out}");
    let (ok, out) = loop_report(&["--failures", record.to_str().unwrap(), "--run", "12"]);
    assert!(ok && out.trim() == "1 of 2 failed: baton::faults fails", "{out}");
    let page = dir.path().join("report.html");
    let (ok, out) = loop_report(&[record.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    assert!(ok, "the page: {out}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<b>1 failed</b>") && html.contains("the leader wrote after it was deposed"), "{html}");
    assert!(html.contains("Passed in a row since the last failure: <b>0</b>"), "{html}");
}
