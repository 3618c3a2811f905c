//! Load, bounded and on loopback: 200 watchers follow the apps while 1,000 creates and
//! updates are made 16 at a time. Every watcher must see every change exactly once; the
//! figures are printed (`hack/bench.sh api` measures them on a release build).

use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::load::{Load, run};
use baton_e2e::{Cluster, ClusterOptions};

#[test]
fn two_hundred_watchers_see_every_one_of_a_thousand_writes() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let cluster = Cluster::start(&binary, ClusterOptions { controllers: 0, agents: 0, ..ClusterOptions::default() });
    let load = Load { watchers: 200, creates: 500, updates: 500, concurrency: 16 };
    let report = run(&cluster, load, Duration::from_secs(120));
    eprintln!("load (debug build): {report}");
}

/// Hollow agents stand in for real ones: 200 of them in one process register, take an app's
/// 300 instances (spread over them by the real placer), report them Staging then Running and
/// healthy, and report them Killed when the app scales down — no process started.
#[test]
fn hollow_agents_run_a_cluster_without_processes() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let mut cluster =
        Cluster::start(&binary, ClusterOptions { controllers: 1, agents: 0, ..ClusterOptions::default() });
    cluster.add_hollow_agents("h", 200, "cpus=4,mem=4096,disk=1024", &["--hollow-start-delay", "300ms"]);
    let app = |instances: u32| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: wide}}\nspec:\n  instances: {instances}\n  \
             cmd: sleep 3600\n  resources: {{cpus: 1, mem: 64}}\n  \
             ports: [{{name: http}}]\n  healthChecks: [{{protocol: TCP, intervalSeconds: 1, timeoutSeconds: 1}}]\n"
        )
    };
    cluster.apply(&app(300));
    cluster.wait_for("300 instances running and healthy", Duration::from_secs(60), |c| {
        let status = c.app("wide")["status"].clone();
        (status["running"] == 300 && status["healthy"] == 300).then_some(())
    });
    let agents: std::collections::BTreeSet<String> = cluster.records().values().map(|r| r.agent.clone()).collect();
    assert!(agents.len() >= 75, "spread over the hollow agents (4 cpus each): {}", agents.len());
    assert!(baton_e2e::processes_in(&cluster.dir()).is_empty(), "no instance process started");
    cluster.apply(&app(10));
    cluster.wait_for("the extra 290 reported Killed and removed", Duration::from_secs(60), |c| {
        let status = c.app("wide")["status"].clone();
        (status["running"] == 10 && status["instances"] == 10).then_some(())
    });
}
