//! Health checks end to end with `baton dev`: the "snowball" — every instance of an app
//! failing its health check at once — kills at most the policy's budget, and the pool
//! recovers without further kills once the cause goes away.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_e2e::Baton;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

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

/// Ids of the instances the controller still wants running.
fn wanted_running(all: &[Value]) -> BTreeSet<String> {
    all.iter()
        .filter(|i| i["spec"]["goal"] == "Running")
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_snowball_kills_at_most_the_budget_and_the_pool_recovers_without_more_kills() {
    let mut baton = Baton::start_dev(&baton_binary(), 3);
    let flag = baton.data_dir().join("broken");
    // The example as users run it, with the flag file in this test's directory.
    let manifest = example("snowball.yaml").replace("/tmp/baton-snowball-broken", flag.to_str().unwrap());
    let budget = 2;
    let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    baton.wait_for("10 healthy instances", WAIT, |b| {
        let all = instances(b, "pool");
        let healthy = all.iter().filter(|i| i["status"]["health"] == "Healthy").count();
        (healthy == 10 && app_status(b, "pool")["healthy"] == 10).then_some(())
    });
    let shown = baton.kubectl_ok(&["get", "app", "pool"]);
    assert!(shown.lines().next().unwrap().contains("HEALTHY"), "{shown}");

    // The shared dependency breaks for everyone.
    std::fs::write(&flag, "").unwrap();
    let broke = Instant::now();
    let mut timeline: Vec<String> = vec!["0.0 s: the flag file is created; every instance answers 500".into()];
    let mut ever_running: BTreeSet<String> = wanted_running(&instances(&baton, "pool"));
    let mut killed: BTreeMap<String, f64> = BTreeMap::new();
    let mut first_kill: Option<Instant> = None;
    let mut withheld_seen = false;
    // Watch until the budget's replacements have been failing long enough to be due
    // themselves (grace 5 s + 3 failures at 1 s), and more.
    while first_kill.is_none_or(|t| t.elapsed() < Duration::from_secs(12)) {
        assert!(broke.elapsed() < WAIT, "no instance was killed within {WAIT:?}\n{}", baton.log_tail());
        let running = wanted_running(&instances(&baton, "pool"));
        let t = broke.elapsed().as_secs_f64();
        for id in ever_running.difference(&running) {
            if !killed.contains_key(id) {
                killed.insert(id.clone(), t);
                timeline.push(format!("{t:.1} s: {id} killed"));
                first_kill.get_or_insert_with(Instant::now);
            }
        }
        for id in running.difference(&ever_running) {
            timeline.push(format!("{t:.1} s: {id} launched"));
        }
        ever_running.extend(running);
        assert!(
            killed.len() <= budget,
            "more than the budget of {budget} killed: {killed:?}\n{}\n{}",
            timeline.join("\n"),
            baton.log_tail()
        );
        if !withheld_seen
            && condition(&app_status(&baton, "pool"), "Healthy").is_some_and(|c| c["reason"] == "KillsWithheld")
        {
            withheld_seen = true;
            timeline.push(format!("{t:.1} s: status says KillsWithheld"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(killed.len(), budget, "the budget is used: {}", timeline.join("\n"));
    assert!(withheld_seen, "the app's Healthy condition said why kills were withheld\n{}", timeline.join("\n"));
    let described = baton.kubectl_ok(&["describe", "app", "pool"]);
    assert!(described.contains("KillsWithheld"), "{described}");

    // The cause goes away: every instance passes again, none more is killed.
    std::fs::remove_file(&flag).unwrap();
    let fixed = Instant::now();
    timeline.push(format!("{:.1} s: the flag file is removed", broke.elapsed().as_secs_f64()));
    baton.wait_for("all 10 healthy again", WAIT, |b| {
        let all = instances(b, "pool");
        let healthy = all.iter().filter(|i| i["spec"]["goal"] == "Running" && i["status"]["health"] == "Healthy");
        (healthy.count() == 10 && app_status(b, "pool")["healthy"] == 10).then_some(())
    });
    timeline.push(format!(
        "{:.1} s: all 10 healthy ({:.1} s after the fix)",
        broke.elapsed().as_secs_f64(),
        fixed.elapsed().as_secs_f64()
    ));
    let settled = wanted_running(&instances(&baton, "pool"));
    let survivors: BTreeSet<String> = ever_running.iter().filter(|id| !killed.contains_key(*id)).cloned().collect();
    assert_eq!(
        settled,
        survivors,
        "the survivors and the budget's replacements, nothing else\n{}",
        timeline.join("\n")
    );
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

    eprintln!("snowball kill timeline (budget {budget} of 10):\n  {}", timeline.join("\n  "));
    baton.kubectl_ok(&["delete", "app", "pool", "--wait"]);
}
