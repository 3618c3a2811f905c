//! `hack/bench.sh cluster`: the whole cluster end to end on etcd, as an operator of a large
//! fleet sees it — etcd, the API server, two controllers and hollow agents (`baton agent
//! --hollow`: no processes, the same store traffic), on a release build. In one run it prints:
//!
//! (a) etcd's batched write ceiling on this machine, now: keys/s of 128-key transactions of
//!     1 KiB values, 8 at a time;
//! (b) 2,000 apps of 50 instances (100,000) created on 10,000 agents: time until every instance
//!     is Running, launches/s, and their ratio to (a);
//! (c) a rolling upgrade of 200 of those apps (10,000 instances, minimumHealthCapacity 0.8,
//!     maximumOverCapacity 0.2): time, and the largest excess and smallest healthy fraction
//!     seen (apps' statuses, read every second);
//! (d) the leading controller's resident memory per agent and per instance;
//! (e) its plan time p50/p99 during (b) and (c), and at steady state — once the upgrade has
//!     settled, woken ten times a second by an annotation change that asks for nothing (from
//!     its histogram: within 25 %);
//! (f) the leader SIGKILLed at 100,000 instances with one app scaled up by one at once: time
//!     until the new leader's first write, and what was launched or stopped meanwhile (exactly
//!     that one launch, no stop).
//!
//! `SCALE=0.1` divides agents, apps and instances by ten, for a quick run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_api::{Goal, Phase};
use baton_e2e::{Cluster, ClusterOptions};
use baton_store::{EventKind, Op, Txn};
use futures::StreamExt;

/// What the store says, as a watch from the bench follows it.
#[derive(Default)]
struct Seen {
    /// Status phase by instance id.
    phases: HashMap<String, Phase>,
    running: u64,
    /// Instance records by id: their version, goal and term.
    records: HashMap<String, (String, Goal, i64)>,
    creations: u64,
    stops: u64,
    /// Write transactions by what their first change was (see [`kind_of`]).
    txns: BTreeMap<String, u64>,
    last_revision: i64,
}

fn main() {
    let scale: f64 = std::env::var("SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n = |x: f64| ((x * scale).round() as usize).max(1);
    let (agents, apps, per_app, upgraded) = (n(10_000.0), n(2_000.0), 50, n(200.0));
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let started = Instant::now();
    let mut cluster = Cluster::start(
        &binary,
        ClusterOptions {
            controllers: 2,
            agents: 0,
            election_ttl: "",
            agent_lease_ttl: "10s",
            ..ClusterOptions::default()
        },
    );
    let etcd = cluster.etcd.version().unwrap_or_else(|| "of unknown version".into());
    println!("cluster: {agents} hollow agents, {apps} apps × {per_app} instances; SCALE={scale}; etcd {etcd}");

    // (a) etcd's batched write ceiling.
    let ceiling = write_ceiling(&cluster);
    println!("(a) etcd batched write ceiling: {ceiling:.0} keys/s (128-key transactions of 1 KiB, 8 at a time)");

    let seen = follow(&cluster);
    let rss_empty = rss_kib(&cluster);
    cluster.add_hollow_agents("h", agents, "cpus=16,mem=65536,disk=100000", &["--hollow-start-delay", "1s"]);
    let leader = leader_index(&cluster);
    std::thread::sleep(Duration::from_secs(3)); // a few ticks over the agents
    let rss_agents = rss_kib(&cluster);
    let live_agents = allocated(&cluster, leader);

    // (b) 2,000 apps of 50 instances.
    let plans_before = plan_histogram(&cluster, leader);
    let api = cluster.api();
    let revision_before = store_revision(&cluster);
    let txns_before = seen.lock().expect("seen").txns.clone();
    let cpu_before = cpu_seconds(&cluster);
    let requests_before = cluster.etcd.requests_answered();
    let create_started = Instant::now();
    create_apps(&api, apps, per_app);
    let created_in = create_started.elapsed();
    let total = (apps * per_app) as u64;
    wait(&seen, Duration::from_secs(1800), "every instance's record", |s| s.records.len() as u64 >= total);
    let all_written = create_started.elapsed();
    wait(&seen, Duration::from_secs(1800), "every instance Running", |s| s.running >= total);
    let all_running = create_started.elapsed();
    let revisions = store_revision(&cluster) - revision_before;
    let launches_per_s = total as f64 / all_running.as_secs_f64();
    let plans_b = plan_histogram(&cluster, leader);
    let txns_b = counts_between(&txns_before, &seen.lock().expect("seen").txns);
    let requests_b = counts_between(&requests_before, &cluster.etcd.requests_answered());
    let cpu_b: Vec<String> = cpu_seconds(&cluster)
        .iter()
        .zip(&cpu_before)
        .map(|((who, after), (_, before))| format!("{who} {:.1}", after - before))
        .collect();
    println!(
        "(b) {total} instances of {apps} apps on {agents} agents: all Running {:.1} s after the first create (creates took \
         {:.1} s, every record written after {:.1} s): {launches_per_s:.0} launches/s = {:.0} % of (a); each launch is 4 store writes (record, index, Staging, \
         Running): {:.0} % of (a) in keys; the store took {revisions} write transactions ({:.2} per instance, \
         every process's, the Apps' creates and status patches included; by their first change: {txns_b})",
        all_running.as_secs_f64(),
        created_in.as_secs_f64(),
        all_written.as_secs_f64(),
        100.0 * launches_per_s / ceiling,
        400.0 * launches_per_s / ceiling,
        revisions as f64 / total as f64
    );
    println!(
        "(b) requests etcd answered meanwhile, by method (each costs etcd a fixed part; 3.4 copies its buffer of writes \
         for each): {requests_b}"
    );
    println!(
        "(b) CPU seconds used meanwhile (2 cores × {:.1} s = {:.1}): {}",
        all_running.as_secs_f64(),
        2.0 * all_running.as_secs_f64(),
        cpu_b.join(", ")
    );
    std::thread::sleep(Duration::from_secs(5));
    let rss_instances = rss_kib(&cluster);
    let live_instances = allocated(&cluster, leader);
    let peak = leader_memory_kib(&cluster, "VmHWM:");
    println!(
        "(d) leader's resident memory: {:.1} MiB empty, {:.1} MiB with {agents} agents, {:.1} MiB with {total} instances \
         (at most {:.1} MiB on the way): {:.2} KiB per agent, {:.2} KiB per instance; of it in live allocations \
         {:.1} MiB with the agents, {:.1} MiB with the instances: {:.2} KiB per instance",
        rss_empty as f64 / 1024.0,
        rss_agents as f64 / 1024.0,
        rss_instances as f64 / 1024.0,
        peak as f64 / 1024.0,
        (rss_agents as f64 - rss_empty as f64) / agents as f64,
        (rss_instances as f64 - rss_agents as f64) / total as f64,
        live_agents / (1 << 20) as f64,
        live_instances / (1 << 20) as f64,
        (live_instances - live_agents) / 1024.0 / total as f64
    );

    // (c) a rolling upgrade of `upgraded` apps.
    let upgrade_started = Instant::now();
    let (max_over, min_healthy) = rolling_upgrade(&cluster, &api, upgraded, per_app);
    let upgrade_took = upgrade_started.elapsed();
    let plans_c = plan_histogram(&cluster, leader);
    println!(
        "(c) rolling upgrade of {} instances ({upgraded} apps, minimumHealthCapacity 0.8, maximumOverCapacity 0.2): {:.1} s; \
         largest excess seen {:.0} % (limit 20 %), smallest healthy fraction seen {:.0} % (limit 80 %)",
        upgraded * per_app,
        upgrade_took.as_secs_f64(),
        max_over * 100.0,
        min_healthy * 100.0
    );
    for (what, from, to) in [("(b)", &plans_before, &plans_b), ("(c)", &plans_b, &plans_c)] {
        let (p50, p99, count) = quantiles(from, to);
        println!("(e) plan time during {what}: p50 ≤ {p50:.1} ms, p99 ≤ {p99:.1} ms over {count} plans");
    }
    // Steady state: once the upgrade's last records are gone, the leader has nothing to do,
    // and plans only when woken. It is woken ten times a second by a change that asks for
    // nothing (an annotation on an App), as a busy cluster wakes it: each tick plans the
    // whole cluster and finds nothing to do.
    let settled_in = settle(&cluster, leader);
    let steady_from = plan_histogram(&cluster, leader);
    let nudges = nudge(&api, apps, Duration::from_secs(15));
    let steady_to = plan_histogram(&cluster, leader);
    let (p50, p99, count) = quantiles(&steady_from, &steady_to);
    println!(
        "(e) plan time at steady state ({total} instances; no plan for 3 s from {:.1} s after (c); then woken by \
         {nudges} annotation changes in 15 s): p50 ≤ {p50:.1} ms, p99 ≤ {p99:.1} ms over {count} plans",
        settled_in.as_secs_f64()
    );

    // (f) the leader SIGKILLed at full size, one app scaled up by one at once.
    let (creations, stops) = {
        let s = seen.lock().expect("seen");
        (s.creations, s.stops)
    };
    let old = cluster.leader().expect("a leader");
    let old_term = current_term(&cluster);
    let killed = Instant::now();
    cluster.controller(&old).kill();
    let out = cluster.kubectl.run(&["scale", "app/app-0000", &format!("--replicas={}", per_app + 1)], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first_write = wait(&seen, Duration::from_secs(120), "the new leader's first write", |s| {
        s.records.values().any(|(_, _, term)| *term > old_term)
    });
    let took = killed.elapsed();
    let _ = first_write;
    std::thread::sleep(Duration::from_secs(5));
    let s = seen.lock().expect("seen");
    println!(
        "(f) leader {old} SIGKILLed at {total} instances: the new leader's first write {:.2} s later; meanwhile {} \
         launched (1 asked) and {} stopped (0 asked)",
        took.as_secs_f64(),
        s.creations - creations,
        s.stops - stops
    );
    println!("cluster: the whole run took {:.0} s", started.elapsed().as_secs_f64());
}

/// Keys/s etcd takes in 128-key transactions of 1 KiB values, 8 at a time, for 5 s.
fn write_ceiling(cluster: &Cluster) -> f64 {
    let store = cluster.store().clone();
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (store, written) = (store.clone(), written.clone());
            cluster.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let ops: Vec<Op> = (0..128)
                        .map(|i| Op::put(format!("/ceiling/{t}/{}", (n * 128 + i) % 8192), vec![b'x'; 1024]))
                        .collect();
                    if store.txn(Txn::new().and_then(ops)).await.is_ok() {
                        written.fetch_add(128, Ordering::SeqCst);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let began = Instant::now();
    for task in tasks {
        let _ = cluster.block_on(task);
    }
    let rate = written.load(Ordering::SeqCst) as f64 / began.elapsed().as_secs_f64();
    // etcd holds the keys a commit (every 100 ms) writes in a buffer that keeps its largest
    // length, and copies it whole for every transaction after (3.4; 3.5 for its reads) — until
    // a commit leaves it unused. Deleted in one transaction, (a)'s 65,536 keys made each of
    // (b)'s ~9,000 transactions copy that much, in most runs: etcd's CPU in (b) doubled or
    // tripled. So (a) leaves etcd as it found it: its keys deleted a writer's at a time, each
    // in a commit of its own, then two commits that write no key (a lease granted, then
    // revoked) for the buffer to be let go.
    for t in 0..8 {
        let _ = cluster.block_on(store.txn(Txn::new().and_then([Op::delete_prefix(format!("/ceiling/{t}/"))])));
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Ok(lease) = cluster.block_on(store.grant_lease(Duration::from_secs(60))) {
        std::thread::sleep(Duration::from_millis(250));
        let _ = cluster.block_on(store.revoke_lease(lease));
        std::thread::sleep(Duration::from_millis(250));
    }
    rate
}

/// Follows instance records and statuses: loads them, then watches; after a watch ends or
/// fails (a slow reader may be cut off at this size), loads them again.
fn follow(cluster: &Cluster) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let store = cluster.store().clone();
    let keys = cluster.keys().clone();
    let shared = seen.clone();
    cluster.spawn(async move {
        loop {
            let (Ok(statuses), Ok(records)) =
                (store.range(&keys.statuses()).await, store.range(&keys.instances()).await)
            else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            {
                let mut s = shared.lock().expect("seen");
                s.phases = statuses
                    .kvs
                    .iter()
                    .filter_map(|kv| {
                        let (_, id) = keys.parse_status_key(&kv.key)?;
                        Some((id.to_string(), serde_json::from_slice::<StatusSeen>(&kv.value).ok()?.phase))
                    })
                    .collect();
                s.running = s.phases.values().filter(|p| **p == Phase::Running).count() as u64;
                s.records = records
                    .kvs
                    .iter()
                    .filter_map(|kv| {
                        let (_, id) = keys.parse_instance_key(&kv.key)?;
                        let r = serde_json::from_slice::<RecordSeen>(&kv.value).ok()?;
                        Some((id.to_string(), (r.version, r.goal, r.term)))
                    })
                    .collect();
            }
            let from = statuses.revision.min(records.revision) + 1;
            let Ok(mut watch) = store.watch_current(&keys.root_prefix(), from).await else { continue };
            while let Some(Ok(batch)) = watch.next().await {
                let mut s = shared.lock().expect("seen");
                for event in &batch.events {
                    apply(&keys, &mut s, event);
                }
            }
            println!("  (the bench's own watch ended; loading again)");
        }
    });
    seen
}

/// What the bench reads of an instance record (`baton_api::InstanceRecord`): the rest is
/// skipped, not decoded, so that the bench's own watch takes less of the CPU it measures.
#[derive(serde::Deserialize)]
struct RecordSeen {
    goal: Goal,
    term: i64,
    /// The run spec's, flattened into the record.
    version: String,
}

/// What the bench reads of an agent's report (`baton_api::StatusRecord`).
#[derive(serde::Deserialize)]
struct StatusSeen {
    phase: Phase,
}

/// One change, into what the bench has seen.
fn apply(keys: &baton_store::Keyspace, s: &mut Seen, event: &baton_store::WatchEvent) {
    // The changes of one transaction share its revision.
    if event.kv.mod_revision != s.last_revision {
        s.last_revision = event.kv.mod_revision;
        *s.txns.entry(kind_of(keys, event)).or_default() += 1;
    }
    if let Some((_, id)) = keys.parse_status_key(&event.kv.key) {
        let before = s.phases.get(id).copied();
        let after = match event.kind {
            EventKind::Put => serde_json::from_slice::<StatusSeen>(&event.kv.value).ok().map(|r| r.phase),
            EventKind::Delete => None,
        };
        if before == Some(Phase::Running) {
            s.running -= 1;
        }
        if after == Some(Phase::Running) {
            s.running += 1;
        }
        match after {
            Some(phase) => _ = s.phases.insert(id.to_string(), phase),
            None => _ = s.phases.remove(id),
        }
    } else if let Some((_, id)) = keys.parse_instance_key(&event.kv.key) {
        match event.kind {
            EventKind::Put => {
                let Ok(record) = serde_json::from_slice::<RecordSeen>(&event.kv.value) else { return };
                let before = s.records.insert(id.to_string(), (record.version, record.goal, record.term));
                match before {
                    None => s.creations += 1,
                    Some((_, Goal::Running, _)) if record.goal == Goal::Stopped => s.stops += 1,
                    _ => {}
                }
            }
            EventKind::Delete => _ = s.records.remove(id),
        }
    }
}

/// What a change is, for the tally of write transactions: the key's first part under the
/// root (`statuses`, `instances`, …), or an API object's plural and whether it was created,
/// changed or deleted.
fn kind_of(keys: &baton_store::Keyspace, event: &baton_store::WatchEvent) -> String {
    let rest = event.kv.key.strip_prefix(&keys.root_prefix()).unwrap_or(&event.kv.key);
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or_default();
    if first != "registry" {
        return first.to_string();
    }
    let plural = parts.nth(1).unwrap_or_default();
    let how = match event.kind {
        EventKind::Delete => "deletes",
        EventKind::Put if event.kv.create_revision == event.kv.mod_revision => "creates",
        EventKind::Put => "updates",
    };
    format!("{plural} {how}")
}

/// What is counted in `to` beyond `from` (transactions by kind, requests by method), largest first.
fn counts_between(from: &BTreeMap<String, u64>, to: &BTreeMap<String, u64>) -> String {
    let mut counts: Vec<(&String, u64)> =
        to.iter().map(|(kind, n)| (kind, n - from.get(kind).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts.iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ")
}

fn wait(seen: &Arc<Mutex<Seen>>, timeout: Duration, what: &str, done: impl Fn(&Seen) -> bool) -> Duration {
    let began = Instant::now();
    let mut last_print = Instant::now();
    loop {
        {
            let s = seen.lock().expect("seen");
            if done(&s) {
                return began.elapsed();
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                println!("  … waiting for {what}: {} running, {} records", s.running, s.records.len());
                last_print = Instant::now();
            }
        }
        assert!(began.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates the apps through the API server, 16 at a time.
fn create_apps(api: &baton_e2e::ApiClient, apps: usize, per_app: usize) {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= apps {
                        return;
                    }
                    let body = app(i, per_app, "1").to_string();
                    let (code, text) = api.post_json("/apis/baton.dev/v1alpha1/namespaces/default/apps", &body);
                    assert_eq!(code, 201, "creating app-{i:04}: {text}");
                }
            });
        }
    });
}

fn app(i: usize, instances: usize, version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "App",
        "metadata": {"name": format!("app-{i:04}"), "namespace": "default"},
        "spec": {
            "instances": instances, "cmd": "sleep 3600",
            "resources": {"cpus": 0.5, "mem": 512},
            "env": {"V": version},
            "upgradeStrategy": {"minimumHealthCapacity": 0.8, "maximumOverCapacity": 0.2},
        },
    })
}

/// Changes the first `apps` apps' version and waits until each completes; returns the largest
/// excess over `instances` and the smallest healthy fraction seen in their statuses.
fn rolling_upgrade(cluster: &Cluster, api: &baton_e2e::ApiClient, apps: usize, per_app: usize) -> (f64, f64) {
    for i in 0..apps {
        let patch = serde_json::json!({"spec": {"env": {"V": "2"}}}).to_string();
        let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/apps/app-{i:04}");
        let (code, text) = api.call("PATCH", &path, "application/merge-patch+json", Some(&patch));
        assert_eq!(code, 200, "upgrading app-{i:04}: {text}");
    }
    let (mut max_over, mut min_healthy) = (0.0f64, 1.0f64);
    let began = Instant::now();
    loop {
        let list = api.get_json("/apis/baton.dev/v1alpha1/namespaces/default/apps");
        let mut done = 0;
        for item in list["items"].as_array().into_iter().flatten().take(apps) {
            let status = &item["status"];
            let live = status["instances"].as_f64().unwrap_or(0.0);
            let healthy = status["healthy"].as_f64().unwrap_or(0.0);
            max_over = max_over.max((live - per_app as f64) / per_app as f64);
            min_healthy = min_healthy.min(healthy / per_app as f64);
            let complete = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "Complete")
                && status["observedGeneration"] == item["metadata"]["generation"];
            if complete {
                done += 1;
            }
        }
        if done == apps {
            return (max_over, min_healthy);
        }
        assert!(began.elapsed() < Duration::from_secs(1800), "the rolling upgrade did not finish: {done} of {apps}");
        let _ = cluster;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The index of the leading controller (`c1` → 0).
fn leader_index(cluster: &Cluster) -> usize {
    let leader = cluster.leader().expect("a leader");
    leader.trim_start_matches('c').parse::<usize>().expect("controllers are c1, c2") - 1
}

/// The election key's create revision (the leader's term).
fn current_term(cluster: &Cluster) -> i64 {
    let key = cluster.keys().leader("platform");
    cluster.block_on(cluster.store().get(&key)).ok().flatten().map_or(0, |kv| kv.create_revision)
}

/// The store's current revision: how many writes (transactions) it has taken.
fn store_revision(cluster: &Cluster) -> i64 {
    let key = cluster.keys().leader("platform");
    cluster.block_on(cluster.store().range(&key)).map_or(0, |r| r.revision)
}

/// CPU seconds (user and system) each part has used so far: etcd, the API server, each
/// controller, the agents together, and this bench (its creates, and its watch, which reads
/// every change).
fn cpu_seconds(cluster: &Cluster) -> Vec<(String, f64)> {
    let of = |pid: u32| baton_e2e::cpu_time(pid).as_secs_f64();
    let mut all = vec![
        ("etcd".to_string(), cluster.etcd.pid().map_or(0.0, of)),
        ("apiserver".to_string(), of(cluster.apiserver.pid)),
    ];
    all.extend(cluster.controllers.iter().enumerate().map(|(i, c)| (format!("c{}", i + 1), of(c.pid))));
    all.push(("agents".to_string(), cluster.agents.iter().map(|a| of(a.pid)).sum()));
    all.push(("bench".to_string(), of(std::process::id())));
    all
}

/// The leading controller's resident memory, KiB.
fn rss_kib(cluster: &Cluster) -> u64 {
    leader_memory_kib(cluster, "VmRSS:")
}

/// The leading controller's `/proc/PID/status` figure `field` (VmRSS: now, VmHWM: the most
/// it was), KiB.
fn leader_memory_kib(cluster: &Cluster, field: &str) -> u64 {
    let leader = cluster.leader().expect("a leader");
    let pid = cluster.controllers.iter().find(|c| c.name() == leader).map(|c| c.pid).expect("the leader's process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes controller `controller` holds in live allocations (its allocator's figure).
fn allocated(cluster: &Cluster, controller: usize) -> f64 {
    cluster.metric(controller, "baton_allocator_allocated_bytes").expect("the controller's allocator figures")
}

/// Waits until `controller` has not planned for 3 s (at most 120 s); how long that took.
fn settle(cluster: &Cluster, controller: usize) -> Duration {
    let began = Instant::now();
    let plans = || plan_histogram(cluster, controller).values().last().copied().unwrap_or(0.0);
    let (mut last, mut since) = (plans(), Instant::now());
    while since.elapsed() < Duration::from_secs(3) {
        assert!(began.elapsed() < Duration::from_secs(120), "the leader still plans 120 s after the upgrade");
        std::thread::sleep(Duration::from_millis(250));
        let now = plans();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    began.elapsed() - Duration::from_secs(3)
}

/// Changes an annotation of one App after another, every 100 ms for `how_long`; how many.
fn nudge(api: &baton_e2e::ApiClient, apps: usize, how_long: Duration) -> usize {
    let began = Instant::now();
    let mut n = 0;
    while began.elapsed() < how_long {
        let patch = serde_json::json!({"metadata": {"annotations": {"bench.baton.dev/nudge": n.to_string()}}});
        let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/apps/app-{:04}", n % apps);
        let (code, text) = api.call("PATCH", &path, "application/merge-patch+json", Some(&patch.to_string()));
        assert_eq!(code, 200, "annotating app-{:04}: {text}", n % apps);
        n += 1;
        let next = began + Duration::from_millis(100) * n as u32;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    n
}

/// The controller's plan-time histogram: upper bound (s) → cumulative count.
fn plan_histogram(cluster: &Cluster, controller: usize) -> BTreeMap<u64, f64> {
    let port = cluster.metrics_ports[controller];
    let (_, body) = baton_e2e::http("127.0.0.1", port, "GET", "/metrics", None).unwrap_or_default();
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("baton_controller_plan_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound: f64 = if bound == "+Inf" { f64::MAX } else { bound.parse().ok()? };
            Some(((bound * 1e9).min(u64::MAX as f64) as u64, count.trim().parse().ok()?))
        })
        .collect()
}

/// p50 and p99 (ms, bucket upper bounds) and the count of plans between two readings.
fn quantiles(from: &BTreeMap<u64, f64>, to: &BTreeMap<u64, f64>) -> (f64, f64, u64) {
    let diffs: Vec<(u64, f64)> = to.iter().map(|(b, c)| (*b, c - from.get(b).copied().unwrap_or(0.0))).collect();
    let total = diffs.last().map_or(0.0, |(_, c)| *c);
    let at = |p: f64| diffs.iter().find(|(_, c)| *c >= total * p).map_or(f64::NAN, |(b, _)| *b as f64 / 1e6);
    (at(0.5), at(0.99), total as u64)
}
