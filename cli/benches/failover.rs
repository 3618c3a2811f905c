//! `hack/bench.sh failover`: leader changes under load, with the default election TTL. A
//! cluster on etcd (API server, two controllers, two agents, real processes) runs for
//! `MINUTES` (default 30) with both cores saturated — two busy loops at full speed, etcd
//! taking a stream of writes, the controller replanning an app whose 100 instances crash
//! and restart and another scaled up and down every few seconds — while every change of the
//! platform's leader is recorded. Prints the leader changes (there should be none: nothing
//! asked a leader to stop), the store writes made, and the controllers' plan counts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_e2e::{Cluster, ClusterOptions, Proc};
use baton_store::{Op, StoreExt, Txn};
use futures::StreamExt;

fn main() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let minutes: f64 = std::env::var("MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(30.0);
    let cluster = Cluster::start(&binary, ClusterOptions { election_ttl: "", ..ClusterOptions::default() });
    let first = cluster.leader().expect("a leader");
    println!("failover soak: {minutes} min, default election TTL, both cores saturated; {first} leads");

    // Leader changes, as the store records them.
    let changes = Arc::new(AtomicU64::new(0));
    let store = cluster.store().clone();
    let key = cluster.keys().leader("platform");
    let from = cluster.block_on(store.current_revision()).expect("the store's revision") + 1;
    let seen = changes.clone();
    cluster.spawn(async move {
        let Ok(mut watch) = store.watch_current(&key, from).await else { return };
        while let Some(Ok(batch)) = watch.next().await {
            for event in batch.events.iter().filter(|e| e.kv.key == key && e.kind == baton_store::EventKind::Put) {
                seen.fetch_add(1, Ordering::SeqCst);
                println!("  leader change: {} leads", String::from_utf8_lossy(&event.kv.value));
            }
        }
    });

    // Busy controller: a crash-looping app and one scaled up and down.
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: crashy}\nspec:\n  instances: 100\n  \
         cmd: sleep 2; exit 1\n  resources: {cpus: 0.01, mem: 1}\n  backoff: {seconds: 1, factor: 1, maxLaunchDelaySeconds: 1}\n",
    );
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: churn}\nspec:\n  instances: 0\n  \
         cmd: sleep 3600\n  resources: {cpus: 0.01, mem: 1}\n",
    );
    // Busy cores: two loops at full speed, for as long as the run.
    let dir = tempfile::tempdir().expect("a temporary dir");
    let mut loops: Vec<Proc> = (0..2)
        .map(|i| {
            let args = vec!["-c".into(), "while :; do :; done".into()];
            Proc::start(
                &format!("busy-{i}"),
                std::path::Path::new("/bin/sh"),
                args,
                Vec::new(),
                dir.path().join(format!("busy-{i}.log")),
            )
        })
        .collect();
    // Busy etcd: batches of writes, as fast as it takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    {
        let (store, stop, writes) = (cluster.store().clone(), stop.clone(), writes.clone());
        cluster.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let ops: Vec<Op> =
                    (0..16).map(|i| Op::put(format!("/soak/{}", (n * 16 + i) % 4096), vec![b'x'; 256])).collect();
                if store.txn(Txn::new().and_then(ops)).await.is_ok() {
                    writes.fetch_add(16, Ordering::SeqCst);
                }
                n += 1;
            }
        });
    }
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut scale = 0;
    let mut compacted = Instant::now();
    while started.elapsed() < total {
        // As etcd's --auto-compaction-retention does in production: without it the write
        // stream fills etcd's quota and it refuses every write.
        if compacted.elapsed() > Duration::from_secs(60) {
            cluster.compact_etcd();
            compacted = Instant::now();
        }
        scale = if scale == 0 { 50 } else { 0 };
        let _ = cluster.kubectl.run(&["scale", "app/churn", &format!("--replicas={scale}")], None);
        std::thread::sleep(Duration::from_secs(5));
        let elapsed = started.elapsed().as_secs();
        if elapsed % 300 < 5 {
            println!(
                "  {} min: {} leader change(s), {} store writes",
                elapsed / 60,
                changes.load(Ordering::SeqCst),
                writes.load(Ordering::SeqCst)
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for busy in &mut loops {
        busy.kill();
    }
    let plans: Vec<String> = (0..2)
        .map(|i| format!("c{}: {:.0}", i + 1, cluster.metric(i, "baton_controller_plans_total").unwrap_or(0.0)))
        .collect();
    println!(
        "failover soak: {} leader change(s) in {minutes} min with both cores saturated (default election TTL); {} \
         store writes by the load; plans made: {}",
        changes.load(Ordering::SeqCst),
        writes.load(Ordering::SeqCst),
        plans.join(", ")
    );
}
