//! `hack/bench.sh status`: the store writes an agent makes for 1,000 healthy instances with
//! 1 s HTTP health probes, per minute — writing after every probe (`--status-refresh 0s`, how
//! agents wrote before) and writing only what the controller decides on at once
//! (`--status-refresh 30s`, the default). Every write wakes the controller.
//!
//! Real processes (`sleep`) started by a real agent on an embedded store; their probes go to
//! one HTTP server in this process. Prints, per setting: status writes/min, transactions/min.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use baton_agent::{AgentConfig, process};
use baton_api::{InstanceRecord, PortRange, ResourceAmounts, StatusRecord};
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{EventKind, Keyspace, Op, Store, StoreExt, Txn};

const INSTANCES: usize = 1000;
const AGENT: &str = "bench-agent";

/// Answers every request with 200, one connection per probe.
async fn serve_ok(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
        });
    }
}

fn record(n: usize, port: u16) -> InstanceRecord {
    let check = serde_json::json!({
        "protocol": "HTTP", "port": port, "intervalSeconds": 1, "timeoutSeconds": 1,
        "delaySeconds": 0, "gracePeriodSeconds": 0, "maxConsecutiveFailures": 3,
    });
    serde_json::from_value(serde_json::json!({
        "id": format!("web-{n:05}"), "agent": AGENT, "host": "127.0.0.1", "version": "v1",
        "app": {"namespace": "bench", "name": "web", "uid": "uid-web"},
        "createdAt": jiff::Timestamp::now(), "goal": "Running", "killGraceSeconds": 1,
        "command": {"exec": ["sleep", "3600"]},
        "resources": {"millicpus": 1, "memMib": 1, "diskMib": 0, "gpus": 0},
        "healthChecks": [check],
    }))
    .expect("an instance record")
}

/// Runs 1,000 instances with `refresh`; returns (status writes, transactions) per minute.
async fn measure(refresh: Duration, port: u16, window: Duration) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).await.expect("an embedded store"),
    );
    let keys = Keyspace::default();
    let config = AgentConfig {
        name: AGENT.into(),
        host: "127.0.0.1".into(),
        resources: ResourceAmounts { millicpus: 1_000_000, mem_mib: 1_000_000, disk_mib: 1_000_000, gpus: 0 },
        attributes: Default::default(),
        ports: vec![PortRange { begin: 40000, end: 40999 }],
        work_dir: dir.path().join("agent"),
        lease_ttl: Duration::from_secs(10),
        keys: keys.clone(),
        stop_instances_on_exit: true,
        metrics: Default::default(),
        logging: process::Logging { program: None, rotation: Default::default() },
        status_refresh: refresh,
        sandbox_listen: None,
        cgroups: baton_agent::cgroups::Settings { mode: baton_agent::cgroups::Mode::Off, ..Default::default() },
        usage_interval: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(baton_agent::run(store.clone(), config, shutdown.clone()));
    let records: Vec<InstanceRecord> = (0..INSTANCES).map(|n| record(n, port)).collect();
    for chunk in records.chunks(100) {
        let ops = chunk
            .iter()
            .map(|r| Op::put(keys.instance(&r.agent, &r.id), serde_json::to_vec(r).expect("a record serializes")));
        store.txn(Txn::new().and_then(ops)).await.expect("writing instance records");
    }
    // Until every instance runs and passes its check.
    let started = Instant::now();
    loop {
        let statuses = store.range(&keys.statuses()).await.expect("reading statuses");
        let healthy = statuses
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<StatusRecord>(&kv.value).ok())
            .filter(|s| s.passes_health_checks(1) && s.health.first().is_some_and(|r| r.passing == Some(true)))
            .count();
        if healthy == INSTANCES {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "only {healthy} of {INSTANCES} healthy after 180 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then, once the last to start have passed their first probes, count what the agent
    // writes in a window of steady health.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let from = store.current_revision().await.expect("the revision") + 1;
    let mut watch = store.watch_current(&keys.statuses(), from).await.expect("watching statuses");
    let (mut writes, mut revisions) = (0usize, std::collections::BTreeSet::new());
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(batch)) = tokio::time::timeout_at(end, watch.next()).await {
        for event in batch.expect("the watch").events {
            if event.kind == EventKind::Put {
                writes += 1;
                revisions.insert(event.revision());
            }
        }
    }
    shutdown.cancel();
    let _ = agent.await;
    let per_minute = 60.0 / window.as_secs_f64();
    (writes as f64 * per_minute, revisions.len() as f64 * per_minute)
}

fn main() {
    let window = Duration::from_secs(std::env::var("WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(60));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(serve_ok(listener));
        println!("{INSTANCES} healthy instances, HTTP probes every 1 s, measured over {} s", window.as_secs());
        for (name, refresh) in
            [("every probe (before)", Duration::ZERO), ("default 30 s refresh", Duration::from_secs(30))]
        {
            let (writes, txns) = measure(refresh, port, window).await;
            println!("{name}: {writes:.0} status writes/min in {txns:.0} transactions/min");
        }
    });
}
