//! The embedded backend against the store contract, plus what only it has (its own
//! compaction of history).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_store::contract::Backend;
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{Error, PageRequest, Store, StoreExt};

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("a temporary data dir") }
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn open(&mut self) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(self.dir.path(), EmbeddedOptions::default()).await.expect("the store opens"))
    }

    async fn close(&mut self) {
        // Every handle is dropped; redb releases its file lock with the last one. Give the
        // lease reaper (which holds only a weak reference) a moment to notice.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

baton_store::contract_suite!(Embedded::new());

#[tokio::test]
async fn a_second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
    let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.err().expect("a second open fails");
    let message = err.to_string();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "the error names the data dir: {message}");
}

#[tokio::test]
async fn watching_compacted_history_fails_with_the_oldest_revision_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        EmbeddedStore::open(dir.path(), EmbeddedOptions { history: 10, ..EmbeddedOptions::default() }).await.unwrap();
    for i in 0..40 {
        store.put(&format!("/c/{i}"), b"v".to_vec()).await.unwrap();
    }
    match store.watch("/c/", 1).await {
        Err(Error::Compacted { requested, compact_revision }) => {
            assert_eq!(requested, 1);
            assert!(
                compact_revision > 1 && compact_revision <= 31,
                "kept history covers the last 10: {compact_revision}"
            );
        }
        Ok(_) => panic!("watching from revision 1 must fail once it is compacted"),
        Err(other) => panic!("expected Compacted, got {other}"),
    }
    // The last `history` revisions stay watchable, and readable by page.
    let current = store.current_revision().await.unwrap();
    assert!(store.watch("/c/", current - 9).await.is_ok());
    let page = |revision| PageRequest { prefix: "/c/".into(), after: None, limit: 5, revision: Some(revision) };
    let recent = store.range_page(&page(current - 5)).await.unwrap();
    assert_eq!(recent.kvs.len(), 5);
    match store.range_page(&page(2)).await {
        Err(Error::Compacted { requested: 2, .. }) => {}
        other => panic!("a page at a compacted revision must fail with Compacted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sole_user_can_drop_the_leases_of_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let put = baton_store::Txn::new().and_then([baton_store::Op::put_with_lease("/l/leader", &b"old"[..], lease)]);
        store.txn(put).await.unwrap();
        store.put("/l/plain", b"kept".to_vec()).await.unwrap();
        let ttl = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let event = baton_store::Txn::new().and_then([baton_store::Op::put_with_lease("/e/event", &b"e"[..], ttl)]);
        store.txn(event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let options = EmbeddedOptions { revoke_leases_under: vec!["/l/".into()], ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
    assert_eq!(store.get("/l/leader").await.unwrap(), None, "the earlier run's leased key is gone at once");
    assert!(store.get("/l/plain").await.unwrap().is_some());
    assert!(store.get("/e/event").await.unwrap().is_some(), "a lease under no listed prefix runs on");
}
