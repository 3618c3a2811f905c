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
