//! What an agent writes while it probes: a real agent on an embedded store runs one real
//! process with an HTTP health check every second against a server on loopback that the test
//! turns from passing to failing. Probes that change nothing the controller decides on are
//! not written (within the refresh period); a check that starts failing, and one that
//! becomes due to be killed, are written at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use baton_agent::{AgentConfig, process};
use baton_api::{InstanceRecord, PortRange, ResourceAmounts, StatusRecord};
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{KeyValue, Keyspace, Store, StoreExt};

/// A server answering 200 while `healthy`, else 500.
async fn serve(healthy: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let line = if healthy.load(Ordering::SeqCst) { "200 OK" } else { "500 Oops" };
                let response = format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

fn record(port: u16) -> InstanceRecord {
    let check = serde_json::json!({
        "port": port, "intervalSeconds": 1, "timeoutSeconds": 1, "delaySeconds": 0,
        "gracePeriodSeconds": 0, "maxConsecutiveFailures": 3,
    });
    serde_json::from_value(serde_json::json!({
        "id": "web-1", "agent": "a1", "host": "127.0.0.1", "version": "v1",
        "app": {"namespace": "default", "name": "web", "uid": "u"},
        "createdAt": jiff::Timestamp::now(), "goal": "Running", "killGraceSeconds": 1,
        "command": {"exec": ["sleep", "600"]},
        "resources": {"millicpus": 100, "memMib": 16, "diskMib": 0, "gpus": 0},
        "healthChecks": [check],
    }))
    .unwrap()
}

/// The stored status once `done` holds for it, within 15 s.
async fn wait_for(store: &Arc<dyn Store>, key: &str, what: &str, done: impl Fn(&StatusRecord) -> bool) -> KeyValue {
    for _ in 0..150 {
        if let Some(kv) = store.get(key).await.unwrap()
            && done(&serde_json::from_slice(&kv.value).unwrap())
        {
            return kv;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after 15 s waiting for the stored status to show {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_written_when_they_change_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).await.unwrap());
    let keys = Keyspace::default();
    let healthy = Arc::new(AtomicBool::new(true));
    let port = serve(healthy.clone()).await;
    let config = AgentConfig {
        name: "a1".into(),
        host: "127.0.0.1".into(),
        resources: ResourceAmounts { millicpus: 1000, mem_mib: 1024, disk_mib: 1024, gpus: 0 },
        attributes: Default::default(),
        ports: vec![PortRange { begin: 40000, end: 40010 }],
        work_dir: dir.path().join("agent"),
        lease_ttl: Duration::from_secs(10),
        keys: keys.clone(),
        stop_instances_on_exit: true,
        metrics: Default::default(),
        logging: process::Logging { program: None, rotation: Default::default() },
        status_refresh: Duration::from_secs(60),
        sandbox_listen: None,
        cgroups: baton_agent::cgroups::Settings { mode: baton_agent::cgroups::Mode::Off, ..Default::default() },
        usage_interval: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(baton_agent::run(store.clone(), config, shutdown.clone()));
    let record = record(port);
    store.put(&keys.instance("a1", "web-1"), serde_json::to_vec(&record).unwrap()).await.unwrap();
    let key = keys.status("a1", "web-1");

    // Passing, then proven (3 passes in a row): each written as it happens.
    wait_for(&store, &key, "a passing check", |s| s.health.first().is_some_and(|r| r.passing == Some(true))).await;
    let proven =
        wait_for(&store, &key, "3 passes in a row", |s| s.health.first().is_some_and(|r| r.consecutive_successes >= 3))
            .await;
    // Three more passes change nothing a decision reads: not written.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let later = store.get(&key).await.unwrap().expect("the status");
    assert_eq!(later.mod_revision, proven.mod_revision, "passing probes were written within the refresh period");

    // The first failure is written at once; so is the third (due to be killed).
    healthy.store(false, Ordering::SeqCst);
    let failing =
        wait_for(&store, &key, "a failing check", |s| s.health.first().is_some_and(|r| r.passing == Some(false))).await;
    let status: StatusRecord = serde_json::from_slice(&failing.value).unwrap();
    assert_eq!(status.health[0].consecutive_failures, 1, "written at the first failure");
    let due = wait_for(&store, &key, "3 failures in a row", |s| {
        s.health.first().is_some_and(|r| r.consecutive_failures >= 3)
    })
    .await;
    let status: StatusRecord = serde_json::from_slice(&due.value).unwrap();
    assert_eq!(status.health[0].consecutive_failures, 3, "written as it became due, not later");
    assert_eq!(status.health[0].last_output.as_deref(), Some("HTTP 500"));

    shutdown.cancel();
    agent.await.unwrap().unwrap();
}
