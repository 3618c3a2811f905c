//! `hack/bench.sh store`: keys written per second by each backend, in the write patterns
//! Baton uses — transactions of 128 puts (the controller's and agents' batches), single
//! puts one after another, and single puts from 32 tasks at once. 128-byte values. The
//! etcd backend runs against a real etcd started here on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_store::contract::etcd_server::TestEtcd;
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::etcd::EtcdStore;
use baton_store::{MAX_TXN_OPS, Op, Store, Txn};

const VALUE: [u8; 128] = [b'v'; 128];

async fn batched(store: &Arc<dyn Store>, prefix: &str, keys: usize) -> Duration {
    let started = Instant::now();
    for start in (0..keys).step_by(MAX_TXN_OPS) {
        let ops = (start..(start + MAX_TXN_OPS).min(keys)).map(|i| Op::put(format!("{prefix}/{i:08}"), VALUE.to_vec()));
        store.txn(Txn::new().and_then(ops)).await.expect("a batched write");
    }
    started.elapsed()
}

async fn single(store: &Arc<dyn Store>, prefix: &str, keys: usize) -> Duration {
    let started = Instant::now();
    for i in 0..keys {
        store.txn(Txn::new().and_then([Op::put(format!("{prefix}/{i:08}"), VALUE.to_vec())])).await.expect("a write");
    }
    started.elapsed()
}

async fn concurrent(store: &Arc<dyn Store>, prefix: &str, keys: usize, tasks: usize) -> Duration {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            for i in (t..keys).step_by(tasks) {
                store
                    .txn(Txn::new().and_then([Op::put(format!("{prefix}/{i:08}"), VALUE.to_vec())]))
                    .await
                    .expect("a write");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a writer task");
    }
    started.elapsed()
}

fn report(backend: &str, mode: &str, keys: usize, took: Duration) {
    let rate = keys as f64 / took.as_secs_f64();
    println!("store={backend} mode={mode} keys={keys} seconds={:.2} keys_per_second={rate:.0}", took.as_secs_f64());
}

async fn run(backend: &str, store: Arc<dyn Store>, single_keys: usize) {
    report(backend, "txn128", 51_200, batched(&store, "/bench/batched", 51_200).await);
    report(backend, "single", single_keys, single(&store, "/bench/single", single_keys).await);
    report(backend, "concurrent32", 10_000, concurrent(&store, "/bench/concurrent", 10_000, 32).await);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let dir = tempfile::tempdir().expect("a temporary dir");
    let embedded = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.expect("the embedded store opens");
    // Each embedded commit is fsynced: single puts are bounded by the disk.
    run("embedded", Arc::new(embedded), 1_000).await;

    let etcd = TestEtcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(10)).await.expect("etcd answers");
    run("etcd", Arc::new(store), 5_000).await;
}
