//! Load on an API server: many watchers following apps while writers create and update
//! them concurrently, over loopback, with kube-rs as the client. Used by the load test
//! (which checks that every watcher sees every change) and `hack/bench.sh api` (which
//! reports the figures).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_api::{App, AppSpec};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::Cluster;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub watchers: usize,
    pub creates: usize,
    pub updates: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    pub load: Load,
    /// From the first write to the last answer.
    pub writing: Duration,
    /// From the first write until every watcher had every event.
    pub delivering: Duration,
    /// Each write's latency, sorted.
    pub latencies: Vec<Duration>,
    /// CPU time the API server process used meanwhile.
    pub server_cpu: Duration,
}

impl Report {
    pub fn writes_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.writing.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }

    /// Watch events delivered per second, over all watchers.
    pub fn events_per_second(&self) -> f64 {
        (self.load.watchers * (self.load.creates + self.load.updates)) as f64 / self.delivering.as_secs_f64()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{} watchers, {} creates + {} updates ({} in flight): {:.0} writes/s, latency p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms; every watcher had every event after {:.2} s ({:.0} events/s delivered); the API server \
             used {:.2} s of CPU",
            self.load.watchers,
            self.load.creates,
            self.load.updates,
            self.load.concurrency,
            self.writes_per_second(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(*self.latencies.last().expect("writes were made")),
            self.delivering.as_secs_f64(),
            self.events_per_second(),
            self.server_cpu.as_secs_f64(),
        )
    }
}

fn app(name: &str) -> App {
    let spec: AppSpec = serde_json::from_value(json!({"cmd": "sleep 100", "instances": 1})).expect("a spec");
    App::new(name, spec)
}

/// Runs `load` against the cluster's API server; fails if a write fails or a watcher misses
/// an event within `deadline`.
pub fn run(cluster: &Cluster, load: Load, deadline: Duration) -> Report {
    let server = cluster.apiserver.pid;
    let cpu_before = crate::cpu_time(server);
    let mut report = cluster.block_on(async {
        let admin: Api<App> = Api::namespaced(cluster.kube_client().await, "default");
        let start = admin.list(&ListParams::default()).await.expect("listing apps").metadata.resource_version;
        let start = start.expect("a list resourceVersion");
        let expected = load.creates + load.updates;
        let complete = Arc::new(AtomicUsize::new(0));
        let mut watchers = Vec::new();
        for _ in 0..load.watchers {
            // Each watcher is its own client, with its own connection, as separate programs are.
            let api: Api<App> = Api::namespaced(cluster.kube_client().await, "default");
            let start = start.clone();
            let complete = complete.clone();
            watchers.push(tokio::spawn(async move {
                // Each change once: (name, resourceVersion) pairs, and how many events came.
                let mut seen = std::collections::HashSet::new();
                let mut events = 0;
                let params = WatchParams::default().timeout(290);
                let mut stream = api.watch(&params, &start).await.expect("a watch").boxed();
                while let Some(event) = stream.try_next().await.expect("the watch stream") {
                    if let WatchEvent::Added(app) | WatchEvent::Modified(app) = event {
                        events += 1;
                        seen.insert((app.metadata.name, app.metadata.resource_version));
                        if seen.len() == expected {
                            complete.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
                (seen.len(), events)
            }));
        }

        let began = Instant::now();
        let creates = futures::stream::iter(0..load.creates)
            .map(|i| {
                let admin = admin.clone();
                async move {
                    let sent = Instant::now();
                    admin.create(&PostParams::default(), &app(&format!("load-{i}"))).await.expect("a create");
                    sent.elapsed()
                }
            })
            .buffer_unordered(load.concurrency);
        let mut latencies: Vec<Duration> = creates.collect().await;
        let updates = futures::stream::iter(0..load.updates)
            .map(|i| {
                let admin = admin.clone();
                async move {
                    let sent = Instant::now();
                    let name = format!("load-{}", i % load.creates.max(1));
                    let patch = Patch::Merge(json!({"metadata": {"annotations": {"update": i.to_string()}}}));
                    admin.patch(&name, &PatchParams::default(), &patch).await.expect("an update");
                    sent.elapsed()
                }
            })
            .buffer_unordered(load.concurrency);
        latencies.extend(updates.collect::<Vec<_>>().await);
        let writing = began.elapsed();

        let waited = tokio::time::timeout(deadline, async {
            while complete.load(Ordering::SeqCst) < load.watchers {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let delivering = began.elapsed();
        if waited.is_err() {
            for watcher in &watchers {
                watcher.abort();
            }
            panic!(
                "after {deadline:?}, {} of {} watchers had all {expected} events",
                complete.load(Ordering::SeqCst),
                load.watchers
            );
        }
        for watcher in watchers {
            let (distinct, events) = watcher.await.expect("a watcher");
            assert_eq!((distinct, events), (expected, expected), "every watcher sees every change exactly once");
        }
        latencies.sort();
        Report { load, writing, delivering, latencies, server_cpu: Duration::ZERO }
    });
    report.server_cpu = crate::cpu_time(server).saturating_sub(cpu_before);
    report
}
