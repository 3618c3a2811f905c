//! Two controllers of two scopes on one store, with real processes on etcd: the platform's,
//! and a tenant's that owns the namespace labelled `baton.dev/tenant=team-a`. Neither stops,
//! rewrites or counts the other's instances; the platform places around the tenant's.
//!
//! Only the platform binds instances to agents: the tenant's controller asks it to launch its
//! instances (`status.launchRequest`), the platform places them, with the tenant's scope, in its
//! own fenced writes, and from then on the tenant's controller owns them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_api::{Goal, InstanceRecord, Phase, Scope};
use baton_e2e::{Cluster, ClusterOptions};
use baton_store::{Keyspace, Store};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const TENANT: &str = "tenant/team-a";

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn app(name: &str, namespace: &str, instances: u32, cpus: f64) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  \
         instances: {instances}\n  cmd: sleep 3600\n  resources: {{cpus: {cpus}, mem: 1}}\n"
    )
}

fn get_app(cluster: &Cluster, name: &str, namespace: &str) -> Value {
    cluster.kubectl.json(&["get", "app", name, "-n", namespace]).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

/// Records of `app` wanted running whose processes run, when there are exactly `n`.
fn running(cluster: &Cluster, app: &str, n: usize) -> Option<Vec<InstanceRecord>> {
    let statuses = cluster.statuses();
    let records: Vec<InstanceRecord> =
        cluster.records().into_values().filter(|r| r.run.app.name == app && r.goal == Goal::Running).collect();
    let all_run = records.iter().all(|r| statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running));
    (records.len() == n && all_run).then_some(records)
}

/// The term (election key's create revision) of `scope`'s leader.
fn term_of(store: &Arc<dyn Store>, cluster: &Cluster, scope: &str) -> i64 {
    let key = Keyspace::default().leader(scope);
    cluster.block_on(store.get(&key)).expect("reading the leader key").expect("a leader").create_revision
}

#[test]
fn two_scopes_on_one_store_leave_each_other_alone() {
    let options = ClusterOptions { controllers: 1, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&baton_binary(), options);
    cluster
        .apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    baton.dev/tenant: team-a\n");
    cluster.add_controller("t1", &["--scope", TENANT]);
    cluster.wait_for("the tenant's controller to lead its scope", WAIT, |c| c.leader_of(TENANT));

    // The tenant's app: its controller plans it and asks the platform to place it.
    cluster.apply(&app("api", "team-a", 2, 1.75));
    // The platform places them for it, on a1 (3.5 of 4 cpus), and they run.
    let api = cluster.wait_for("the tenant's instances to run", WAIT, |c| running(c, "api", 2));
    assert!(api.iter().all(|r| r.run.scope.to_string() == TENANT && r.agent == "a1"), "{api:?}");
    // Served: the tenant's controller asks for nothing more (its request may have come and
    // gone before the first look).
    cluster.wait_for("the tenant's request to be withdrawn", WAIT, |c| {
        get_app(c, "api", "team-a")["status"]["launchRequest"].is_null().then_some(())
    });
    cluster.wait_for("the tenant's controller to count them", WAIT, |c| {
        let status = get_app(c, "api", "team-a")["status"].clone();
        (status["running"] == 2 && status["instances"] == 2).then_some(())
    });

    // The platform's app: placed around the tenant's instances, counted on its own.
    cluster.apply(&app("web", "default", 4, 1.0));
    let web = cluster.wait_for("the platform's 4 instances to run", WAIT, |c| running(c, "web", 4));
    assert!(web.iter().all(|r| r.agent == "a2" && r.run.scope == Scope::Platform), "a1 is taken: {web:?}");
    cluster.wait_for("the platform to count its own", WAIT, |c| {
        let status = c.app("web")["status"].clone();
        (status["running"] == 4 && status["instances"] == 4).then_some(())
    });
    let api_status = get_app(&cluster, "api", "team-a")["status"].clone();
    assert_eq!((api_status["running"].as_i64(), api_status["instances"].as_i64()), (Some(2), Some(2)));

    // Deleting the platform's app stops its instances only.
    cluster.kubectl_ok(&["delete", "app", "web", "--wait=true"]);
    cluster
        .wait_for("web's records to go", WAIT, |c| c.records().values().all(|r| r.run.app.name != "web").then_some(()));
    assert!(running(&cluster, "api", 2).is_some(), "the tenant's instances still run: {:?}", cluster.records());

    // The tenant's controller stops its own.
    cluster.kubectl_ok(&["delete", "app", "api", "-n", "team-a", "--wait=true"]);
    cluster
        .wait_for("api's records to go", WAIT, |c| c.records().values().all(|r| r.run.app.name != "api").then_some(()));

    // Who wrote what: each scope's records only by its own leader.
    let store = cluster.store().clone();
    let platform = term_of(&store, &cluster, "platform");
    let tenant = term_of(&store, &cluster, TENANT);
    assert_ne!(platform, tenant);
    let history = cluster.history();
    for write in &history {
        let record = write.after.as_ref().or(write.before.as_ref()).expect("a record");
        match record.run.app.name.as_str() {
            "api" => {
                assert_eq!(record.run.scope.to_string(), TENANT, "{write:?}");
                if let Some(after) = &write.after
                    && !write.is_creation()
                {
                    assert_eq!(after.term, tenant, "only the tenant's leader rewrites its instances: {write:?}");
                }
                if write.is_creation() {
                    assert_eq!(record.term, platform, "only the platform places the tenant's instances: {write:?}");
                }
            }
            "web" => {
                if let Some(after) = &write.after {
                    assert_eq!(after.term, platform, "{write:?}");
                }
            }
            other => panic!("an instance of an unexpected app {other}: {write:?}"),
        }
    }
    let created =
        history.iter().filter(|w| w.is_creation() && w.after.as_ref().is_some_and(|r| r.run.app.name == "api"));
    assert_eq!(created.count(), 2, "each of the tenant's instances was placed once");
    let stops: Vec<(&str, Option<&str>)> = history
        .iter()
        .filter(|w| w.is_stop())
        .filter_map(|w| w.after.as_ref())
        .map(|r| (r.run.app.name.as_str(), r.stop_reason.as_deref()))
        .collect();
    assert_eq!(stops.iter().filter(|(app, _)| *app == "api").count(), 2, "{stops:?}");
    assert!(stops.iter().all(|(_, reason)| *reason == Some("AppDeleted")), "{stops:?}");
}

/// A tenant's controller SIGKILLed loses nothing: none of the tenant's instances stops, its
/// standby leads the scope within the election TTL and carries on (a scale-up is asked for
/// and placed once).
#[test]
fn a_tenants_controller_killed_loses_nothing_and_its_standby_carries_on() {
    let options = ClusterOptions { controllers: 1, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&baton_binary(), options);
    cluster
        .apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    baton.dev/tenant: team-a\n");
    cluster.add_controller("t1", &["--scope", TENANT]);
    cluster.add_controller("t2", &["--scope", TENANT]);
    let first = cluster.wait_for("a tenant controller to lead", WAIT, |c| c.leader_of(TENANT));
    cluster.apply(&app("api", "team-a", 2, 0.5));
    cluster.wait_for("the tenant's instances to run", WAIT, |c| running(c, "api", 2));

    let killed_at = std::time::Instant::now();
    cluster.controller(&first).kill();
    let second = cluster
        .wait_for("the standby to lead the tenant's scope", WAIT, |c| c.leader_of(TENANT).filter(|l| *l != first));
    let took = killed_at.elapsed();
    eprintln!("tenant failover: {first} SIGKILLed, {second} led {:.2} s later (election TTL 2 s)", took.as_secs_f64());
    assert!(took < Duration::from_secs(30), "the replacement leads within 30 s");

    cluster.kubectl_ok(&["scale", "app/api", "-n", "team-a", "--replicas=3"]);
    cluster.wait_for("the scale-up, asked for by the new leader and placed", WAIT, |c| running(c, "api", 3));
    let history = cluster.history();
    let api: Vec<_> = history
        .iter()
        .filter(|w| w.after.as_ref().or(w.before.as_ref()).is_some_and(|r| r.run.app.name == "api"))
        .collect();
    assert_eq!(api.iter().filter(|w| w.is_stop()).count(), 0, "none of the tenant's instances stopped");
    assert_eq!(api.iter().filter(|w| w.is_creation()).count(), 3, "each placed once");
}

/// On etcd as on `baton dev`: for a Tenant the platform's controller runs the tenant's
/// controller as an app on an agent (a real process, reaching the store only through the API
/// server), and it plans the apps of the tenant's namespace.
#[test]
fn on_etcd_a_tenants_controller_runs_as_an_app_and_plans_its_apps() {
    let options = ClusterOptions { controllers: 1, ..ClusterOptions::default() };
    let cluster = Cluster::start(&baton_binary(), options);
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  namespaces: [team-a]\n",
    );
    cluster.wait_for("the tenant's controller to run as an app and lead its scope", WAIT, |c| {
        let ready = c.kubectl.json(&["get", "tenant", "team-a"]).ok()?["status"]["controller"] == "1/1";
        (ready && c.leader_of(TENANT).is_some()).then_some(())
    });
    let controller = cluster.wait_for("the controller's instance", WAIT, |c| running(c, "tenant-team-a", 1));
    assert_eq!(controller[0].run.scope, Scope::Platform, "the platform's app");
    cluster.apply(&app("api", "team-a", 2, 0.5));
    let api = cluster.wait_for("the tenant's instances to run", WAIT, |c| running(c, "api", 2));
    assert!(api.iter().all(|r| r.run.scope.to_string() == TENANT), "{api:?}");
    cluster.wait_for("the tenant's controller to count them", WAIT, |c| {
        let status = get_app(c, "api", "team-a")["status"].clone();
        (status["running"] == 2 && status["instances"] == 2).then_some(())
    });
}
