//! Faults, with real processes on etcd: a leader killed or frozen mid-work, agents killed
//! and restarted, etcd restarted. After each, what happened is read from the store's
//! history: exactly what the spec needed was launched, nothing the spec did not require
//! was stopped, and no deposed leader's write landed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_api::{Goal, InstanceRecord, Phase};
use baton_e2e::cluster::RecordWrite;
use baton_e2e::{Cluster, ClusterOptions, ProcessId};

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn app(name: &str, instances: u32, extra: &str) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  instances: {instances}\n  \
         cmd: sleep 3600\n  resources: {{cpus: 0.01, mem: 1}}\n{extra}"
    )
}

/// Records of `app` that are wanted running.
fn running_records(cluster: &Cluster, app: &str) -> Vec<InstanceRecord> {
    cluster.records().into_values().filter(|r| r.run.app.name == app && r.goal == Goal::Running).collect()
}

/// Waits until exactly `n` instances of `app` are wanted running and their processes run.
fn wait_running(cluster: &Cluster, app: &str, n: usize) -> Vec<InstanceRecord> {
    cluster.wait_for(&format!("{n} instances of {app} running"), WAIT, |c| {
        let records = running_records(c, app);
        let statuses = c.statuses();
        let running = records.iter().filter(|r| statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running)).count();
        (records.len() == n && running == n).then_some(records)
    })
}

fn writes_of<'h>(history: &'h [RecordWrite], app: &str) -> Vec<&'h RecordWrite> {
    history.iter().filter(|w| w.after.as_ref().or(w.before.as_ref()).is_some_and(|r| r.run.app.name == app)).collect()
}

/// Kills the leader; returns its id and how long until the standby led.
fn kill_leader(cluster: &mut Cluster) -> (String, Duration) {
    let leader = cluster.leader().expect("a leader");
    let killed_at = Instant::now();
    cluster.controller(&leader).kill();
    let new = cluster.wait_for("the standby to lead", WAIT, |c| c.leader().filter(|l| *l != leader));
    let took = killed_at.elapsed();
    eprintln!("failover: {leader} SIGKILLed, {new} led {:.2} s later (election TTL 2 s)", took.as_secs_f64());
    (leader, took)
}

#[test]
fn leader_killed_mid_scale_up_launches_exactly_what_the_spec_needs() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("many", 0, ""));
    cluster.kubectl_ok(&["scale", "app/many", "--replicas=50"]);
    // Kill the leader as soon as it has begun: instances are launching, statuses coming in.
    cluster.wait_for("the first instance record", WAIT, |c| (!running_records(c, "many").is_empty()).then_some(()));
    let (old, _) = kill_leader(&mut cluster);
    wait_running(&cluster, "many", 50);
    let standby = if old == "c1" { 1 } else { 0 };
    let metric = cluster
        .wait_for("the standby's failover metric", WAIT, |c| c.metric(standby, "baton_controller_failover_seconds"));
    eprintln!(
        "failover: the standby's baton_controller_failover_seconds = {metric:.3} (from the old key's expiry to its first tick)"
    );

    let history = cluster.history();
    let writes = writes_of(&history, "many");
    let created = writes.iter().filter(|w| w.is_creation()).count();
    let stopped = writes.iter().filter(|w| w.is_stop()).count();
    assert_eq!(created, 50, "exactly the 50 instances the spec asks for were launched, across the failover");
    assert_eq!(stopped, 0, "nothing was stopped");
}

#[test]
fn leader_killed_mid_rolling_replacement_stops_only_the_old_version() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("roll", 10, "  env: {V: \"1\"}\n"));
    let old_records = wait_running(&cluster, "roll", 10);
    let old_version = old_records[0].run.version.clone();
    cluster.kubectl_ok(&["patch", "app", "roll", "--type", "merge", "-p", r#"{"spec":{"env":{"V":"2"}}}"#]);
    cluster.wait_for("the first new-version instance", WAIT, |c| {
        running_records(c, "roll").iter().any(|r| r.run.version != old_version).then_some(())
    });
    kill_leader(&mut cluster);
    let done = cluster.wait_for("the rollout to finish", WAIT, |c| {
        let records: Vec<InstanceRecord> = c.records().into_values().filter(|r| r.run.app.name == "roll").collect();
        let statuses = c.statuses();
        let finished = records.len() == 10
            && records.iter().all(|r| r.run.version != old_version && r.goal == Goal::Running)
            && records.iter().all(|r| statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running));
        finished.then_some(records)
    });
    let new_version = done[0].run.version.clone();

    let history = cluster.history();
    let writes = writes_of(&history, "roll");
    let created: Vec<&InstanceRecord> =
        writes.iter().filter(|w| w.is_creation()).filter_map(|w| w.after.as_ref()).collect();
    let stopped: Vec<&InstanceRecord> =
        writes.iter().filter(|w| w.is_stop()).filter_map(|w| w.before.as_ref()).collect();
    assert_eq!(created.len(), 20, "10 at the start and 10 of the new version, no more");
    assert_eq!(created.iter().filter(|r| r.run.version == new_version).count(), 10);
    assert_eq!(stopped.len(), 10, "exactly the 10 old instances were stopped");
    assert!(stopped.iter().all(|r| r.run.version == old_version), "no new-version instance was stopped");
    let stopped_ids: BTreeSet<&str> = stopped.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(stopped_ids.len(), 10, "no instance was stopped twice");
}

#[test]
fn a_frozen_leader_resumed_after_losing_its_lease_writes_nothing() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("frozen", 2, ""));
    wait_running(&cluster, "frozen", 2);
    let stale = cluster.leader().expect("a leader");
    let old_term = cluster
        .block_on(cluster.store().get("/baton/leader/platform"))
        .expect("reading the leader key")
        .expect("a leader key")
        .create_revision;

    // Freeze the leader past its lease; meanwhile the spec changes.
    cluster.controller(&stale).pause();
    cluster.kubectl_ok(&["scale", "app/frozen", "--replicas=5"]);
    let standby = cluster.wait_for("the standby to take over", WAIT, |c| c.leader().filter(|l| *l != stale));
    wait_running(&cluster, "frozen", 5);
    let new_term = cluster.block_on(cluster.store().get("/baton/leader/platform")).unwrap().unwrap().create_revision;

    // Thaw it: whatever it was about to do, and whatever it plans before it notices, must
    // not land.
    cluster.controller(&stale).resume();
    cluster.wait_for("the thawed leader to notice it lost", WAIT, |c| {
        let log = c.controllers.iter().find(|p| p.name() == stale).map(|p| p.log()).unwrap_or_default();
        (log.contains("leadership lost") || log.contains("election lease expired")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster.kubectl_ok(&["scale", "app/frozen", "--replicas=6"]);
    wait_running(&cluster, "frozen", 6);

    let history = cluster.history();
    let stale_writes: Vec<&RecordWrite> = history
        .iter()
        .filter(|w| w.revision > new_term && w.after.as_ref().is_some_and(|r| r.term == old_term))
        .collect();
    assert!(
        stale_writes.is_empty(),
        "writes of the deposed leader landed after {standby} took over: {stale_writes:#?}"
    );
    let writes = writes_of(&history, "frozen");
    assert_eq!(writes.iter().filter(|w| w.is_creation()).count(), 6, "6 instances launched in all, none twice");
    assert_eq!(cluster.leader().as_deref(), Some(standby.as_str()), "the thawed leader did not take leadership back");
}

#[test]
fn a_killed_agents_instances_are_replaced_then_the_extras_stopped_when_it_returns() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("spread", 4, "  unreachableStrategy: {inactiveAfterSeconds: 2, expungeAfterSeconds: 120}\n"));
    let before = wait_running(&cluster, "spread", 4);
    let victim = "a1";
    let originals: Vec<String> = before.iter().filter(|r| r.agent == victim).map(|r| r.id.clone()).collect();
    assert!(!originals.is_empty(), "placement spreads the app over both agents: {before:?}");
    let statuses = cluster.statuses();
    let original_pids: Vec<ProcessId> =
        originals.iter().filter_map(|id| statuses.get(id)?.pid).filter_map(ProcessId::of).collect();

    let killed_at = Instant::now();
    cluster.agent(victim).kill();
    // Replaced on the other agent once inactive (the lease TTL, 2 s, then 2 s more).
    cluster.wait_for("replacements on the other agent", WAIT, |c| {
        let statuses = c.statuses();
        let running_elsewhere = running_records(c, "spread")
            .iter()
            .filter(|r| r.agent != victim && statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running))
            .count();
        (running_elsewhere == 4).then_some(())
    });
    eprintln!("agent {victim} SIGKILLed: its instances replaced after {:.1} s", killed_at.elapsed().as_secs_f64());
    assert!(original_pids.iter().all(|p| p.is_alive()), "the killed agent's instance processes still run");

    // It comes back: its instances count again (adopted, same processes), and the extra
    // replacements (the youngest) are stopped.
    cluster.agent(victim).restart();
    let after = cluster.wait_for("the count back at 4", WAIT, |c| {
        let records = running_records(c, "spread");
        let statuses = c.statuses();
        let all_running = records.iter().all(|r| statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running));
        (records.len() == 4 && all_running).then_some(records)
    });
    let kept: BTreeSet<&str> = after.iter().map(|r| r.id.as_str()).collect();
    assert!(originals.iter().all(|id| kept.contains(id.as_str())), "YoungestFirst keeps the originals: {kept:?}");
    assert!(original_pids.iter().all(|p| p.is_alive()), "the originals were adopted, not restarted");
    let history = cluster.history();
    let stopped: Vec<&RecordWrite> = writes_of(&history, "spread").into_iter().filter(|w| w.is_stop()).collect();
    assert_eq!(stopped.len(), originals.len(), "exactly the extra replacements were stopped");
}

#[test]
fn an_agent_restart_keeps_its_instances_and_their_pids() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("steady", 4, ""));
    let before = wait_running(&cluster, "steady", 4);
    let statuses = cluster.statuses();
    let processes: Vec<ProcessId> =
        before.iter().filter_map(|r| statuses.get(&r.id)?.pid).filter_map(ProcessId::of).collect();
    assert_eq!(processes.len(), 4);

    let status = cluster.agent("a1").stop();
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    cluster.agent("a1").restart();
    cluster.wait_for("a1 to adopt its instances", WAIT, |c| {
        c.agents[0].log().contains("adopted a running instance").then_some(())
    });
    let after = wait_running(&cluster, "steady", 4);
    let ids = |records: &[InstanceRecord]| records.iter().map(|r| r.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "the same instances");
    let statuses = cluster.statuses();
    let pids: BTreeSet<u32> = after.iter().filter_map(|r| statuses.get(&r.id)?.pid).collect();
    assert_eq!(pids, processes.iter().map(|p| p.pid).collect(), "with the same pids");
    assert!(processes.iter().all(|p| p.is_alive()), "none of them was restarted");
    // Each is still in its own cgroup (found again from its id), held to its limits.
    for record in &after {
        let pid = statuses.get(&record.id).and_then(|s| s.pid).expect("a pid");
        let members = cgroup_members("a1", &record.id);
        assert!(members.contains(&pid), "{} (pid {pid}) in its cgroup after the restart: {members:?}", record.id);
    }
    let history = cluster.history();
    assert_eq!(
        writes_of(&history, "steady").iter().filter(|w| w.is_creation()).count(),
        4,
        "nothing was launched again"
    );
}

/// A cgroup standing for a container's: what a container runtime kills when the pod goes.
struct Container {
    dir: PathBuf,
}

impl Container {
    fn new() -> Self {
        let dir = baton_e2e::cgroup_tree("memory").join(format!("baton-test-container-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e} (this test needs cgroups)", dir.display()));
        Container { dir }
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("moving the agent into the container");
    }

    fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// SIGKILLs everything in it until it is empty, as a runtime stops a pod's container.
    fn kill_all(&self) -> usize {
        let mut killed = BTreeSet::new();
        baton_e2e::wait_for(
            "the container to be empty",
            WAIT,
            || format!("left: {:?}", self.pids()),
            || {
                let pids = self.pids();
                for pid in &pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    killed.insert(*pid);
                }
                pids.is_empty().then_some(())
            },
        );
        killed.len()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// As on Kubernetes, where the agent runs in a container of its pod: a runtime stopping the
/// pod kills everything in the container's cgroup. The instances (in their own cgroups) and
/// their log writers are not in it: they keep running and writing, and the next agent adopts
/// them.
#[test]
fn instances_outlive_the_agents_container() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    let container = Container::new();
    container.enter(cluster.agent("a1").pid);
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: talker\nspec:\n  instances: 2\n  \
         cmd: \"while :; do echo tick; sleep 0.1; done\"\n  resources: {cpus: 0.05, mem: 32}\n  \
         constraints: [[hostname, CLUSTER, a1]]\n",
    );
    let before = wait_running(&cluster, "talker", 2);
    let statuses = cluster.statuses();
    let processes: Vec<ProcessId> =
        before.iter().filter_map(|r| statuses.get(&r.id)?.pid).filter_map(ProcessId::of).collect();
    assert_eq!(processes.len(), 2);

    let killed = container.kill_all();
    cluster.agent("a1").kill();
    assert_eq!(killed, 1, "only the agent was in its container");
    assert!(processes.iter().all(|p| p.is_alive()), "the instances outlived the agent's container");
    let stdout = |id: &str| cluster.dir().join("a1/sandboxes").join(id).join("stdout");
    let sizes = |ids: &[InstanceRecord]| -> Vec<u64> {
        ids.iter().map(|r| std::fs::metadata(stdout(&r.id)).map(|m| m.len()).unwrap_or(0)).collect()
    };
    let at_kill = sizes(&before);
    std::thread::sleep(Duration::from_millis(500));
    let later = sizes(&before);
    assert!(later.iter().zip(&at_kill).all(|(l, k)| l > k), "their output is still written: {at_kill:?} → {later:?}");

    cluster.agent("a1").restart();
    cluster.wait_for("a1 to adopt its instances", WAIT, |c| {
        (c.agents[0].log().matches("adopted a running instance").count() >= 2).then_some(())
    });
    let after = wait_running(&cluster, "talker", 2);
    let ids = |records: &[InstanceRecord]| records.iter().map(|r| r.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "the same instances");
    assert!(processes.iter().all(|p| p.is_alive()), "not restarted");
}

/// The processes in an instance's memory cgroup (v2: its one cgroup), as the agent places it.
fn cgroup_members(agent: &str, id: &str) -> Vec<u32> {
    let procs = baton_e2e::cgroup_tree("memory").join("baton").join(agent).join(id).join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).unwrap_or_else(|e| panic!("{}: {e}", procs.display()));
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn etcd_stopped_and_started_on_its_data_loses_nothing() {
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions::default());
    cluster.apply(&app("durable", 3, ""));
    let before = wait_running(&cluster, "durable", 3);
    let statuses = cluster.statuses();
    let processes: Vec<ProcessId> =
        before.iter().filter_map(|r| statuses.get(&r.id)?.pid).filter_map(ProcessId::of).collect();

    cluster.etcd.stop();
    std::thread::sleep(Duration::from_secs(3));
    cluster.etcd.restart();

    // Everything converges: the app is there, the same instances run, and the cluster acts
    // on new changes again.
    let after = wait_running(&cluster, "durable", 3);
    assert_eq!(
        after.iter().map(|r| &r.id).collect::<BTreeSet<_>>(),
        before.iter().map(|r| &r.id).collect::<BTreeSet<_>>(),
        "nothing was lost or replaced"
    );
    assert!(processes.iter().all(|p| p.is_alive()), "no instance was restarted");
    cluster.wait_for("the API to answer again", WAIT, |c| {
        c.kubectl.ok(&["scale", "app/durable", "--replicas=5"], None).ok()
    });
    wait_running(&cluster, "durable", 5);
    let history = cluster.history();
    assert_eq!(writes_of(&history, "durable").iter().filter(|w| w.is_creation()).count(), 5);
}

/// Objects stored under older rules, bypassing the API server's validation — a billion
/// instances, a 1 MiB env value, a 1,000-level group, 1,000 dependencies — stop nothing: the
/// controller runs the others as usual, and says what it does not do.
#[test]
fn pathological_objects_in_the_store_do_not_stop_the_controller() {
    let cluster = Cluster::start(&baton_binary(), ClusterOptions { controllers: 1, ..ClusterOptions::default() });
    let deep = format!("/{}", vec!["g"; 1000].join("/"));
    let dependencies: Vec<String> = (0..1000).map(|i| format!("/d{i}")).collect();
    let poison = serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "App",
        "metadata": {"name": "poison", "namespace": "default", "uid": "6ba7b810-0000-0000-0000-00000000dead",
                     "generation": 1, "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"instances": 1_000_000_000, "cmd": "sleep 3600", "resources": {"cpus": 1000, "mem": 1},
                 "env": {"BIG": "x".repeat(1 << 20)}, "group": deep, "dependencies": dependencies},
    });
    let key = cluster.keys().registry_object("baton.dev", "apps", Some("default"), "poison");
    let store = cluster.store().clone();
    cluster
        .block_on(baton_store::StoreExt::put(&*store, &key, poison.to_string().into_bytes()))
        .expect("storing the poison");
    cluster.apply(&app("fine", 3, ""));
    wait_running(&cluster, "fine", 3);
    let planned = cluster.wait_for("the poison app's status to say what is not done", WAIT, |c| {
        let app = c.app("poison");
        let conditions = app["status"]["conditions"].as_array()?.clone();
        conditions.into_iter().find(|c| c["type"] == "Planned")
    });
    assert_eq!(planned["reason"], "TooManyInstances", "{planned}");
    assert!(cluster.records().values().all(|r| r.run.app.name != "poison"), "nothing of it fits, nothing launched");
    // And the controller keeps reconciling: a scale of the fine app goes through.
    cluster.kubectl_ok(&["scale", "app/fine", "--replicas=5"]);
    wait_running(&cluster, "fine", 5);
}

/// Every new leader of the platform's scope, as the store records it: `(when seen, id)`.
fn leaders(cluster: &Cluster) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let store = cluster.store().clone();
    let key = cluster.keys().leader("platform");
    let from =
        cluster.block_on(baton_store::StoreExt::current_revision(store.as_ref())).expect("the store's revision") + 1;
    cluster.spawn(async move {
        use futures::StreamExt;
        let Ok(mut watch) = store.watch(&key, from).await else { return };
        while let Some(Ok(batch)) = watch.next().await {
            for event in batch.events.iter().filter(|e| e.kind == baton_store::EventKind::Put && e.kv.key == key) {
                if tx.send((Instant::now(), String::from_utf8_lossy(&event.kv.value).into_owned())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// With the default election TTL: a leader asked to stop (SIGTERM) resigns and the standby
/// leads at once; a crashed one (SIGKILL) is replaced within 3 s.
#[test]
fn failover_with_the_default_election_ttl() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let options = ClusterOptions { election_ttl: "", ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&baton_binary(), options);
    let first = cluster.leader().expect("a leader");
    let standby = if first == "c1" { "c2" } else { "c1" };
    cluster.wait_for("the standby to campaign", WAIT, |c| {
        c.logs().contains("waiting for the current leader to go").then_some(())
    });
    let leaders = leaders(&cluster);

    let asked = Instant::now();
    kill(Pid::from_raw(cluster.controller(&first).pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let (at, second) = leaders.recv_timeout(WAIT).expect("a new leader after SIGTERM");
    let handover = at.duration_since(asked);
    eprintln!("failover: {first} asked to stop (SIGTERM), {second} led {:.3} s later", handover.as_secs_f64());
    assert_eq!(second, standby);
    assert!(handover <= Duration::from_millis(500), "a leader asked to stop hands over at once: {handover:?}");

    // The first comes back as the standby; then the leader crashes.
    let status = cluster.controller(&first).stop();
    assert!(status.success(), "{first} exits cleanly on SIGTERM: {status}");
    let campaigning = cluster.controller(&first).log().matches("waiting for the current leader to go").count();
    cluster.controller(&first).restart();
    cluster.wait_for("the restarted controller to campaign", WAIT, |c| {
        let log = c.controllers.iter().find(|p| p.name() == first).map(|p| p.log()).unwrap_or_default();
        (log.matches("waiting for the current leader to go").count() > campaigning).then_some(())
    });
    let killed = Instant::now();
    cluster.controller(&second).kill();
    let (at, third) = leaders.recv_timeout(WAIT).expect("a new leader after SIGKILL");
    let failover = at.duration_since(killed);
    eprintln!("failover: {second} SIGKILLed, {third} led {:.2} s later (default TTL)", failover.as_secs_f64());
    assert_eq!(third, first);
    assert!(failover <= Duration::from_secs(3), "a crashed leader is replaced within 3 s: {failover:?}");
}

/// An agent killed just after starting instances, before what it wrote of them reached the
/// store (chaos seed 414869, Loop run 118: the next run of the agent started one again while
/// its first process still ran — two processes at once). Its next run finds one with a status
/// without a pid, the other with no status at all. The first is over (`Lost`, replaced by the
/// controller) and never starts again under its id; the second starts again, as the agent
/// cannot know it ran; and each process the earlier run left is killed first.
#[test]
fn instances_started_but_never_recorded_by_a_killed_agent_never_run_twice_at_once() {
    use baton_store::StoreExt;
    let mut cluster = Cluster::start(&baton_binary(), ClusterOptions { agents: 1, ..ClusterOptions::default() });
    cluster.apply(&app("once", 2, ""));
    let first = wait_running(&cluster, "once", 2);
    let statuses = cluster.statuses();
    let process = |record: &InstanceRecord| {
        let pid = statuses.get(&record.id).and_then(|s| s.pid).expect("a pid");
        ProcessId::of(pid).expect("its process runs")
    };
    let (lost, again) = (&first[0], &first[1]);
    let (lost_process, again_process) = (process(lost), process(again));

    cluster.agent("a1").kill();
    // What the store holds when the agent dies between starting a process and writing its pid
    // (Staging), or before writing anything of it.
    let staging = serde_json::to_vec(&baton_api::StatusRecord::new(Phase::Staging)).expect("a status");
    cluster.block_on(cluster.store().put(&cluster.keys().status("a1", &lost.id), staging)).expect("a status put");
    cluster.block_on(cluster.store().delete(&cluster.keys().status("a1", &again.id))).expect("a status deleted");
    cluster.agent("a1").restart();

    let started = |c: &Cluster, id: &str| c.agents[0].log().matches(&format!("started instance=\"{id}\"")).count();
    cluster
        .wait_for("the instance without a status to start again", WAIT, |c| (started(c, &again.id) == 2).then_some(()));
    assert!(!again_process.is_alive(), "{}'s first process was killed before it started again", again.id);
    cluster.wait_for("the instance without a pid to be replaced", WAIT, |c| {
        let records = running_records(c, "once");
        let statuses = c.statuses();
        let running = records.iter().filter(|r| statuses.get(&r.id).is_some_and(|s| s.phase == Phase::Running));
        (running.filter(|r| r.id != lost.id).count() == 2).then_some(())
    });
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", lost_process.pid)).unwrap_or_default();
    assert!(!lost_process.is_alive(), "{}'s process was killed: {stat}", lost.id);
    assert_eq!(started(&cluster, &lost.id), 1, "{} did not start again:\n{}", lost.id, cluster.agents[0].log());
    if let Some(status) = cluster.statuses().get(&lost.id) {
        assert!(status.phase.is_terminal(), "{} is over: {status:?}", lost.id);
    }
}
