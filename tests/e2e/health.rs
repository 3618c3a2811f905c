//! Health checks end to end with `baton dev`: the "snowball" — every instance of an app
//! failing its health check at once — kills at most the policy's budget of the instances
//! that were running, also while their replacements cannot start (they exit at start, or
//! fail their probes, and are tried again), and the pool recovers without further kills once
//! the cause goes away.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_e2e::Baton;
use serde_json::Value;

/// A bound on each wait, far above what a step takes (the whole test runs in ~30 s): Loop
/// run 83 failed a 60 s wait here while the machine stalled for five minutes.
const WAIT: Duration = Duration::from_secs(120);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn instances(baton: &Baton, app: &str) -> Vec<Value> {
    let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/instances?labelSelector=app%3D{app}");
    baton.api().get_json(&path)["items"].as_array().cloned().unwrap_or_default()
}

fn app_status(baton: &Baton, app: &str) -> Value {
    baton.api().get_json(&format!("/apis/baton.dev/v1alpha1/namespaces/default/apps/{app}"))["status"].clone()
}

fn condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

/// Ids of the instances the controller still wants running that have not ended.
fn wanted_running(all: &[Value]) -> BTreeSet<String> {
    let ended = |i: &&Value| ["Failed", "Finished", "Killed", "Lost"].iter().any(|p| i["status"]["phase"] == *p);
    all.iter()
        .filter(|i| i["spec"]["goal"] == "Running" && !ended(i))
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn name(instance: &Value) -> String {
    instance["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// An instance in one line: name, goal, stop reason, phase, health and what it replaces.
fn summary(i: &Value) -> String {
    format!(
        "{} {} {} {} {} replaces {}",
        name(i),
        i["spec"]["goal"],
        i["spec"]["stopReason"],
        i["status"]["phase"],
        i["status"]["health"],
        i["spec"]["replaces"]
    )
}

/// How the replacements of killed instances behave while the dependency is down.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Replacements {
    /// They exit at start (the example as it is).
    ExitAtStart,
    /// They run and fail their health checks.
    FailProbes,
}

#[test]
fn a_snowball_kills_at_most_the_budget_while_replacements_exit_at_start() {
    snowball(Replacements::ExitAtStart);
}

#[test]
fn a_snowball_kills_at_most_the_budget_while_replacements_fail_their_probes() {
    snowball(Replacements::FailProbes);
}

fn snowball(replacements: Replacements) {
    let mut baton = Baton::start_dev(&baton_binary(), 3);
    let flag = baton.data_dir().join("broken");
    // The example as users run it, with the flag file in this test's directory.
    let mut manifest = example("snowball.yaml").replace("/tmp/baton-snowball-broken", flag.to_str().unwrap());
    if replacements == Replacements::FailProbes {
        let exit_at_start =
            "    if os.path.exists(os.environ[\"FLAG\"]):\n        sys.exit(\"cannot reach the dependency\")\n";
        assert!(manifest.contains(exit_at_start), "the example changed: {manifest}");
        manifest = manifest.replace(exit_at_start, "");
    }
    let budget = 2;
    let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Settled before the dependency breaks: 10 healthy and no replacement slot held. On a busy
    // machine an instance can miss its grace period at start and be killed for its health; its
    // slot is held until the replacement has passed 3 probes in a row, so breaking the
    // dependency earlier leaves that slot held with a killed instance this test never saw
    // (Loop run 13: the budget's other slot went to one original, and the replacement, itself
    // a refill, was killed free).
    baton.wait_for("10 healthy instances and no replacement slot held", WAIT, |b| {
        let all = instances(b, "pool");
        let healthy = all.iter().filter(|i| i["status"]["health"] == "Healthy").count();
        let status = app_status(b, "pool");
        (healthy == 10 && status["healthy"] == 10 && status["replacements"] == serde_json::json!([])).then_some(())
    });
    let shown = baton.kubectl_ok(&["get", "app", "pool"]);
    assert!(shown.lines().next().unwrap().contains("HEALTHY"), "{shown}");

    // The shared dependency breaks for everyone.
    let originals = wanted_running(&instances(&baton, "pool"));
    std::fs::write(&flag, "").unwrap();
    let broke = Instant::now();
    let mut timeline: Vec<String> = vec!["0.0 s: the flag file is created; every instance answers 500".into()];
    let mut seen: BTreeSet<String> = originals.clone();
    let mut killed: BTreeMap<String, f64> = BTreeMap::new();
    let mut replacement_ends: BTreeSet<String> = BTreeSet::new();
    let mut first_kill: Option<Instant> = None;
    let mut withheld_seen = false;
    let mut slots_seen: Option<Value> = None;
    // Watch until the budget's replacements have failed several times over: exited at start
    // and were tried again after the backoff, or were due themselves (grace 5 s + 3 failures
    // at 1 s) and were killed and replaced in turn.
    while first_kill.is_none_or(|t| t.elapsed() < Duration::from_secs(16)) {
        assert!(broke.elapsed() < WAIT, "no instance was killed within {WAIT:?}\n{}", baton.log_tail());
        let all = instances(&baton, "pool");
        let t = broke.elapsed().as_secs_f64();
        let listed: BTreeSet<String> = all.iter().map(name).collect();
        for instance in &all {
            let id = name(instance);
            let stopped = instance["spec"]["goal"] == "Stopped";
            if originals.contains(&id) && stopped && !killed.contains_key(&id) {
                assert_eq!(instance["spec"]["stopReason"], "Unhealthy", "{instance}");
                killed.insert(id.clone(), t);
                timeline.push(format!("{t:.1} s: {id} killed"));
                first_kill.get_or_insert_with(Instant::now);
            }
            if seen.insert(id.clone()) {
                timeline.push(format!("{t:.1} s: {id} launched to replace {}", instance["spec"]["replaces"]));
            }
            let ended =
                instance["status"]["phase"] == "Failed" || (stopped && instance["spec"]["stopReason"] == "Unhealthy");
            if !originals.contains(&id) && ended && replacement_ends.insert(id.clone()) {
                timeline.push(format!("{t:.1} s: replacement {id} {}", if stopped { "killed" } else { "exited" }));
            }
        }
        // A replacement gone: it exited (its failure was counted and its record removed).
        for id in seen.difference(&listed) {
            if !originals.contains(id) && replacement_ends.insert(id.clone()) {
                timeline.push(format!("{t:.1} s: replacement {id} ended and is gone"));
            }
        }
        // An original gone without its stop seen is counted as killed too.
        for id in originals.difference(&listed) {
            if !killed.contains_key(id) {
                killed.insert(id.clone(), t);
                timeline.push(format!("{t:.1} s: {id} gone"));
            }
        }
        assert!(
            killed.len() <= budget,
            "more than the budget of {budget} of the running instances killed: {killed:?}\n{}\n{}",
            timeline.join("\n"),
            baton.log_tail()
        );
        let status = app_status(&baton, "pool");
        if !withheld_seen && condition(&status, "Healthy").is_some_and(|c| c["reason"] == "KillsWithheld") {
            withheld_seen = true;
            timeline.push(format!("{t:.1} s: status says KillsWithheld"));
        }
        if status["replacements"].as_array().is_some_and(|slots| slots.len() == budget) {
            slots_seen = Some(status["replacements"].clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(killed.len(), budget, "the budget is used: {}", timeline.join("\n"));
    assert!(
        replacement_ends.len() >= budget,
        "the replacements could not become healthy and were tried again: {}",
        timeline.join("\n")
    );
    assert!(withheld_seen, "the app's Healthy condition said why kills were withheld\n{}", timeline.join("\n"));
    let slots =
        slots_seen.unwrap_or_else(|| panic!("status.replacements never showed the 2 slots\n{}", timeline.join("\n")));
    for slot in slots.as_array().unwrap() {
        assert!(
            killed.contains_key(slot["killed"].as_str().unwrap()),
            "a slot names an instance not seen killed: {slot}\n{}\n{:#?}",
            timeline.join("\n"),
            instances(&baton, "pool").iter().map(summary).collect::<Vec<_>>()
        );
        assert!(!slot["waitingFor"].as_str().unwrap_or("").is_empty(), "{slot}");
    }
    let described = baton.kubectl_ok(&["describe", "app", "pool"]);
    assert!(described.contains("KillsWithheld"), "{described}");
    assert!(described.contains("Waiting For"), "describe shows what each slot waits for: {described}");

    // The cause goes away: every instance passes again, none more is killed.
    std::fs::remove_file(&flag).unwrap();
    let fixed = Instant::now();
    timeline.push(format!("{:.1} s: the flag file is removed", broke.elapsed().as_secs_f64()));
    baton.wait_for("all 10 healthy again, no slot held", WAIT, |b| {
        let all = instances(b, "pool");
        let healthy = all.iter().filter(|i| i["spec"]["goal"] == "Running" && i["status"]["health"] == "Healthy");
        let status = app_status(b, "pool");
        (healthy.count() == 10 && status["healthy"] == 10 && status["replacements"] == serde_json::json!([]))
            .then_some(())
    });
    timeline.push(format!(
        "{:.1} s: all 10 healthy ({:.1} s after the fix)",
        broke.elapsed().as_secs_f64(),
        fixed.elapsed().as_secs_f64()
    ));
    let settled = wanted_running(&instances(&baton, "pool"));
    let survivors: BTreeSet<String> = originals.iter().filter(|id| !killed.contains_key(*id)).cloned().collect();
    assert!(
        survivors.is_subset(&settled),
        "the 8 spared kept running\n{}\n{:#?}\n{}",
        timeline.join("\n"),
        instances(&baton, "pool").iter().map(summary).collect::<Vec<_>>(),
        baton.log_tail()
    );
    assert_eq!(settled.len(), 10);
    let calm = Instant::now();
    while calm.elapsed() < Duration::from_secs(5) {
        let all = instances(&baton, "pool");
        assert_eq!(wanted_running(&all), settled, "an instance was killed after the fix\n{}", timeline.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = app_status(&baton, "pool");
    assert_eq!(condition(&status, "Healthy").unwrap()["reason"], "AllHealthy", "{status}");

    // Events: the kills with their reason, and the withheld kills with theirs.
    let events = baton.api().get_json("/api/v1/namespaces/default/events");
    let about_pool: Vec<(String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "pool")
        .map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(about_pool.iter().any(|(r, m)| r == "Killing" && m.contains("failed health checks")), "{about_pool:#?}");
    assert!(
        about_pool.iter().any(|(r, m)| r == "KillsWithheld" && m.contains("minHealthyRatio 0.5")),
        "{about_pool:#?}"
    );

    eprintln!("snowball kill timeline ({replacements:?}, budget {budget} of 10):\n  {}", timeline.join("\n  "));
    baton.kubectl_ok(&["delete", "app", "pool", "--wait"]);
}
