//! App groups end to end with `baton dev`: examples/shop.yaml (db ← api ← web in `/shop`,
//! each taking two seconds to listen) starts layer by layer, refuses a dependency cycle,
//! shows in `kubectl get appgroups`, scales with the group's factor, and stops in reverse
//! order on `kubectl delete -f`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_e2e::{Baton, ProcessId};
use serde_json::Value;

/// A bound on each wait, far above what a step takes (the whole test runs in ~30 s): Loop
/// run 83 failed a 60 s wait here while the machine stalled for five minutes.
const WAIT: Duration = Duration::from_secs(120);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn shop() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every instance in the namespace, from one read (records are read before statuses, so a
/// record seen here is never newer than the statuses beside it).
fn instances(baton: &Baton) -> Vec<Value> {
    let all = baton.api().get_json("/apis/baton.dev/v1alpha1/namespaces/default/instances");
    all["items"].as_array().cloned().unwrap_or_default()
}

fn of_app<'a>(all: &'a [Value], app: &str) -> Vec<&'a Value> {
    all.iter().filter(|i| i["spec"]["app"] == app).collect()
}

fn healthy(instance: &Value) -> bool {
    instance["status"]["health"] == "Healthy"
}

/// Its process may still run: wanted, or being stopped and not yet reported over.
fn live(instance: &Value) -> bool {
    !matches!(instance["status"]["phase"].as_str(), Some("Finished" | "Failed" | "Killed"))
}

fn app(baton: &Baton, name: &str) -> Value {
    baton.api().get_json(&format!("/apis/baton.dev/v1alpha1/namespaces/default/apps/{name}"))
}

#[test]
fn a_chain_starts_in_order_refuses_cycles_scales_by_group_and_stops_in_reverse() {
    let mut baton = Baton::start_dev(&baton_binary(), 2);
    let applied = Instant::now();
    // The example, but each server takes a second to stop, so that the stop order shows
    // between polls.
    let manifest = shop().replace(
        r#"exec python3 -m http.server "$PORT0" --bind "$HOST""#,
        r#"trap 'sleep 1; exit 0' TERM; python3 -m http.server "$PORT0" --bind "$HOST" & wait"#,
    );
    assert_ne!(manifest, shop());
    let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Start: each layer only once every instance of the one below is healthy.
    let mut first_seen: BTreeMap<&str, f64> = BTreeMap::new();
    let mut timeline = Vec::new();
    baton.wait_for("db, api and web healthy", WAIT, |b| {
        let all = instances(b);
        let t = applied.elapsed().as_secs_f64();
        for (layer, below, wanted_below) in [("db", None, 0), ("api", Some("db"), 1), ("web", Some("api"), 2)] {
            let mine = of_app(&all, layer);
            if mine.is_empty() {
                continue;
            }
            if !first_seen.contains_key(layer) {
                first_seen.insert(layer, t);
                timeline.push(format!("{t:.1} s: first {layer} instance"));
            }
            if let Some(below) = below {
                let ready = of_app(&all, below).iter().filter(|i| healthy(i)).count();
                assert!(
                    ready >= wanted_below,
                    "{layer} started while only {ready} of {wanted_below} {below} instances were healthy\n{}\n{}",
                    timeline.join("\n"),
                    b.log_tail()
                );
            }
        }
        let counts: Vec<usize> =
            ["db", "api", "web"].iter().map(|a| of_app(&all, a).iter().filter(|i| healthy(i)).count()).collect();
        (counts == [1, 2, 2]).then_some(())
    });
    eprintln!("start order:\n{}", timeline.join("\n"));
    assert!(first_seen["db"] < first_seen["api"] && first_seen["api"] < first_seen["web"], "{first_seen:?}");
    let web = app(&baton, "web");
    assert_eq!(web["status"]["id"], "/shop/web");
    let dependencies = web["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Dependencies");
    assert_eq!(dependencies.unwrap()["reason"], "Available", "{web}");
    let events = baton.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=web"]);
    assert!(events.contains("WaitingForDependencies") && events.contains("/shop/api"), "{events}");

    // A cycle is refused, naming the paths; nothing changes.
    let cyclic = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: db}\n\
                  spec: {group: /shop, dependencies: [web], cmd: sleep 100}\n";
    let refused = baton.kubectl_with_input(&["apply", "-f", "-"], Some(cyclic));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a cycle must be refused");
    assert!(stderr.contains("cycle") && stderr.contains("/shop/db → /shop/web → /shop/api → /shop/db"), "{stderr}");
    assert!(app(&baton, "db")["spec"]["dependencies"].is_null(), "the refused apply changed nothing");

    // `kubectl get appgroups`: path, apps, ready/total.
    let table = baton.kubectl_ok(&["get", "appgroups"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PATH", "APPS", "READY", "AGE"], "{table}");
    baton.wait_for("the group's status", WAIT, |b| {
        let row = b.kubectl_ok(&["get", "appgroup", "shop", "--no-headers"]);
        let cells: Vec<String> = row.split_whitespace().map(String::from).collect();
        (cells[1..4] == ["/shop", "3", "5/5"]).then_some(())
    });

    // A scale factor of 2 doubles every app and restarts nothing.
    let before: Vec<String> =
        instances(&baton).iter().map(|i| i["metadata"]["name"].as_str().unwrap().into()).collect();
    baton.kubectl_ok(&["patch", "appgroup", "shop", "--type=merge", "-p", r#"{"spec":{"scaleFactor":2}}"#]);
    baton.wait_for("10 healthy instances", WAIT, |b| {
        let all = instances(b);
        (all.iter().filter(|i| healthy(i)).count() == 10).then_some(())
    });
    let after: Vec<String> = instances(&baton).iter().map(|i| i["metadata"]["name"].as_str().unwrap().into()).collect();
    assert!(before.iter().all(|id| after.contains(id)), "scaling restarted an instance: {before:?} → {after:?}");
    assert_eq!(app(&baton, "api")["status"]["desired"], 4);

    // Delete: web stops first, then api, then db. The controller's finalizer holds each App
    // until its instances are gone.
    for name in ["db", "api", "web"] {
        let finalizers = &app(&baton, name)["metadata"]["finalizers"];
        assert_eq!(finalizers, &serde_json::json!(["baton.dev/stop-instances"]), "{name}");
    }
    let pids: Vec<ProcessId> = instances(&baton)
        .iter()
        .filter_map(|i| i["status"]["pid"].as_u64())
        .filter_map(|p| ProcessId::of(p as u32))
        .collect();
    assert_eq!(pids.len(), 10);
    let output = baton.kubectl_with_input(&["delete", "-f", "-", "--wait=false"], Some(&manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let deleted = Instant::now();
    let mut stop_order: Vec<String> = Vec::new();
    baton.wait_for("every app gone", WAIT, |b| {
        let all = instances(b);
        let t = deleted.elapsed().as_secs_f64();
        for (layer, above, full) in [("db", "api", 2), ("api", "web", 4), ("web", "", 4)] {
            let mine = of_app(&all, layer);
            let stopping = mine.len() < full || mine.iter().any(|i| i["spec"]["goal"] == "Stopped");
            if stopping && !stop_order.iter().any(|s| s.ends_with(&format!(" {layer}"))) {
                stop_order.push(format!("{t:.1} s: {layer}"));
            }
            if stopping && !above.is_empty() {
                let running_above = of_app(&all, above).iter().filter(|i| live(i)).count();
                assert_eq!(
                    running_above,
                    0,
                    "{layer} was stopped while {running_above} {above} instances still ran\n{}",
                    stop_order.join("\n")
                );
            }
        }
        let apps = b.api().get_json("/apis/baton.dev/v1alpha1/namespaces/default/apps");
        (apps["items"].as_array().is_some_and(|a| a.is_empty()) && all.is_empty()).then_some(())
    });
    eprintln!("stop order:\n{}", stop_order.join("\n"));
    let order: Vec<&str> = stop_order.iter().map(|s| s.rsplit(' ').next().unwrap()).collect();
    assert_eq!(order, ["web", "api", "db"]);
    let alive: Vec<&ProcessId> = pids.iter().filter(|p| p.is_alive()).collect();
    assert!(alive.is_empty(), "processes outlived their apps: {alive:?}");
}
