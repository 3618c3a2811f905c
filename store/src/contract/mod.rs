//! The contract every [`Store`] backend must pass, unchanged.
//!
//! A backend's test file implements [`Backend`] and invokes [`contract_suite!`], which
//! expands to one `#[tokio::test]` per clause below. Every wait is bounded and fails with a
//! message that says what did not happen.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

pub mod etcd_server;

use crate::election;
use crate::{
    Compare, CompareOp, CompareTarget, Error, EventKind, Op, OpResponse, PageRequest, RangePage, Revision, Store,
    StoreExt, Txn, WatchEvent, WatchStream,
};

/// A backend under test.
#[async_trait]
pub trait Backend: Send {
    /// Opens the store on this backend's data (again, after [`Backend::close`]).
    async fn open(&mut self) -> Arc<dyn Store>;
    /// Closes the store: the suite has dropped every handle it held. Data must survive.
    async fn close(&mut self);
}

/// Expands to one test per contract clause, each on a fresh backend from `$make`.
#[macro_export]
macro_rules! contract_suite {
    ($make:expr) => {
        $crate::contract_suite!(@tests $make;
            revisions_increase, txn_compares_decide_the_branch, failed_or_oversized_txn_writes_nothing,
            range_reads_a_prefix, txn_reads_keys_and_prefixes_at_one_revision, range_reads_more_than_a_page, range_pages_read_one_revision,
            delete_prefix_removes_only_the_prefix, watch_replays_then_streams, watch_current_carries_no_previous_values,
            watch_filters_by_prefix_and_keeps_txns_together, lease_expiry_deletes_attached_keys,
            revoke_deletes_attached_keys, data_survives_close_and_reopen, election_fences_a_deposed_leader,
            concurrent_txns_each_get_their_own_outcome, concurrent_increments_of_one_key_all_count);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let mut backend = $make;
                $crate::contract::$name(&mut backend).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(watch: &mut WatchStream, what: &str) -> Vec<WatchEvent> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(batch))) => batch.events,
        Ok(Some(Err(e))) => panic!("watch failed while waiting for {what}: {e}"),
        Ok(None) => panic!("watch ended while waiting for {what}"),
        Err(_) => panic!("no watch event within {WAIT:?} while waiting for {what}"),
    }
}

/// Collects events until `count` have arrived.
async fn events(watch: &mut WatchStream, count: usize, what: &str) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < count {
        out.extend(next_event(watch, what).await);
    }
    assert_eq!(out.len(), count, "{what}: more events than expected: {out:#?}");
    out
}

fn keys(events: &[WatchEvent]) -> Vec<(&str, EventKind)> {
    events.iter().map(|e| (e.kv.key.as_str(), e.kind)).collect()
}

pub async fn revisions_increase(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let r1 = store.put("/t/a", b"1".to_vec()).await.unwrap();
    let r2 = store.put("/t/b", b"2".to_vec()).await.unwrap();
    let r3 = store.put("/t/a", b"3".to_vec()).await.unwrap();
    assert!(r1 < r2 && r2 < r3, "revisions must increase: {r1}, {r2}, {r3}");
    let a = store.get("/t/a").await.unwrap().expect("/t/a exists");
    assert_eq!((a.create_revision, a.mod_revision, a.version, a.value.as_slice()), (r1, r3, 2, &b"3"[..]));
    assert_eq!(store.current_revision().await.unwrap(), r3, "a read-only txn must not bump the revision");
    assert_eq!(store.range("/t/").await.unwrap().revision, r3);
    assert!(store.delete("/t/a").await.unwrap());
    let r4 = store.current_revision().await.unwrap();
    assert!(r4 > r3, "a delete bumps the revision");
    assert!(!store.delete("/t/a").await.unwrap(), "deleting a missing key reports nothing deleted");
    assert_eq!(store.current_revision().await.unwrap(), r4, "deleting nothing must not bump the revision");
    let again = store.put("/t/a", b"4".to_vec()).await.unwrap();
    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.version), (again, 1), "a re-created key starts over");
}

pub async fn txn_compares_decide_the_branch(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let create = |value: &'static [u8]| {
        Txn::new().when([Compare::absent("/t/k")]).and_then([Op::put("/t/k", value)]).or_else([Op::get("/t/k")])
    };
    let first = store.txn(create(b"one")).await.unwrap();
    assert!(first.succeeded, "create-if-absent on a missing key succeeds");
    let second = store.txn(create(b"two")).await.unwrap();
    assert!(!second.succeeded, "create-if-absent on an existing key fails");
    match &second.responses[..] {
        [OpResponse::Get(Some(kv))] => assert_eq!(kv.value, b"one"),
        other => panic!("the failure branch must read the current value, got {other:?}"),
    }
    assert_eq!(second.revision, first.revision, "a failed compare with a read-only branch writes nothing");

    // Optimistic concurrency on the mod revision.
    let stale =
        Txn::new().when([Compare::mod_revision("/t/k", first.revision - 1)]).and_then([Op::put("/t/k", &b"x"[..])]);
    assert!(!store.txn(stale).await.unwrap().succeeded, "a stale mod revision fails");
    let fresh = Txn::new().when([Compare::mod_revision("/t/k", first.revision)]).and_then([Op::put("/t/k", &b"y"[..])]);
    let fresh = store.txn(fresh).await.unwrap();
    assert!(fresh.succeeded && fresh.revision > first.revision, "the current mod revision succeeds");

    // The fence: the create revision survives updates.
    let fenced =
        Txn::new().when([Compare::create_revision("/t/k", first.revision)]).and_then([Op::put("/t/other", &b"z"[..])]);
    assert!(store.txn(fenced).await.unwrap().succeeded, "the create revision is unchanged by updates");

    // Every compare must hold.
    let mixed = Txn::new()
        .when([Compare::create_revision("/t/k", first.revision), Compare::absent("/t/other")])
        .and_then([Op::put("/t/never", &b"!"[..])]);
    assert!(!store.txn(mixed).await.unwrap().succeeded, "one false compare fails the transaction");
    assert_eq!(store.get("/t/never").await.unwrap(), None);

    // Value compares and the other operators.
    let value = |op, v: &[u8]| Compare { key: "/t/k".into(), op, target: CompareTarget::Value(v.to_vec()) };
    for (compare, expected) in [
        (value(CompareOp::Equal, b"y"), true),
        (value(CompareOp::NotEqual, b"y"), false),
        (value(CompareOp::Greater, b"x"), true),
        (value(CompareOp::Less, b"x"), false),
        (Compare { key: "/t/missing".into(), op: CompareOp::Equal, target: CompareTarget::Value(vec![]) }, false),
        (Compare { key: "/t/k".into(), op: CompareOp::Greater, target: CompareTarget::Version(1) }, true),
        (
            Compare { key: "/t/k".into(), op: CompareOp::Less, target: CompareTarget::ModRevision(fresh.revision) },
            false,
        ),
    ] {
        let got = store.txn(Txn::new().when([compare.clone()])).await.unwrap().succeeded;
        assert_eq!(got, expected, "compare {compare:?}");
    }
}

pub async fn failed_or_oversized_txn_writes_nothing(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let before = store.put("/t/base", b"0".to_vec()).await.unwrap();
    let too_many = Txn::new().and_then((0..=crate::MAX_TXN_OPS).map(|i| Op::put(format!("/t/many/{i}"), &b"v"[..])));
    match store.txn(too_many).await {
        Err(Error::TooManyOps { ops, max }) => assert_eq!((ops, max), (crate::MAX_TXN_OPS + 1, crate::MAX_TXN_OPS)),
        other => panic!("a transaction over the operation limit must be refused, got {other:?}"),
    }
    let exactly = Txn::new().and_then((0..crate::MAX_TXN_OPS).map(|i| Op::put(format!("/t/max/{i}"), &b"v"[..])));
    let exactly = store.txn(exactly).await.unwrap();
    assert_eq!(exactly.revision, before + 1, "all operations of one transaction share one revision");
    assert_eq!(store.range("/t/max/").await.unwrap().kvs.len(), crate::MAX_TXN_OPS);
    assert!(store.range("/t/many/").await.unwrap().kvs.is_empty(), "a refused transaction writes nothing");

    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let bad_lease = Txn::new().and_then([Op::put("/t/a", &b"1"[..]), Op::put_with_lease("/t/b", &b"2"[..], lease)]);
    match store.txn(bad_lease).await {
        Err(Error::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("a put with a revoked lease must fail with LeaseNotFound, got {other:?}"),
    }
    assert_eq!(store.get("/t/a").await.unwrap(), None, "a failed transaction writes none of its operations");
}

/// Transactions made at once (which a backend may send together) each succeed or fail by
/// their own compares, see their own reads and fail for their own lease.
pub async fn concurrent_txns_each_get_their_own_outcome(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let n = 60;
    let mut written = Vec::new();
    for i in 0..n {
        written.push(store.put(&format!("/c/{i:02}"), b"0".to_vec()).await.unwrap());
    }
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let txn = |i: usize| -> Txn {
        let key = format!("/c/{i:02}");
        match i % 4 {
            // A compare-and-put that holds.
            0 => Txn::new().when([Compare::mod_revision(&key, written[i])]).and_then([Op::put(&key, &b"1"[..])]),
            // One that does not, reading the key instead.
            1 => Txn::new()
                .when([Compare::mod_revision(&key, written[i] - 1)])
                .and_then([Op::put(&key, &b"1"[..])])
                .or_else([Op::get(&key)]),
            // A create of a key that exists, and of one that does not.
            2 => Txn::new().when([Compare::absent(&key)]).and_then([Op::put(&key, &b"1"[..])]),
            _ => Txn::new()
                .when([Compare::absent(format!("/c/new/{i:02}"))])
                .and_then([Op::put(format!("/c/new/{i:02}"), &b"1"[..]), Op::get(&key)]),
        }
    };
    let bad_lease = Txn::new().and_then([Op::put_with_lease("/c/leased", &b"1"[..], lease)]);
    let (answers, leased) =
        futures::join!(futures::future::join_all((0..n).map(|i| store.txn(txn(i)))), store.txn(bad_lease));
    assert!(matches!(leased, Err(Error::LeaseNotFound(id)) if id == lease), "the put with a revoked lease: {leased:?}");
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap_or_else(|e| panic!("transaction {i}: {e}"));
        let key = format!("/c/{i:02}");
        let now = store.get(&key).await.unwrap().expect("the key stays");
        match i % 4 {
            0 => {
                assert!(answer.succeeded, "transaction {i}: its compare held");
                assert_eq!((now.value.as_slice(), now.mod_revision), (&b"1"[..], answer.revision), "{key}");
            }
            1 | 2 => {
                assert!(!answer.succeeded, "transaction {i}: its compare did not hold");
                assert_eq!((now.value.as_slice(), now.mod_revision), (&b"0"[..], written[i]), "{key}");
                if i % 4 == 1 {
                    assert!(
                        matches!(&answer.responses[..], [OpResponse::Get(Some(kv))] if kv.mod_revision == written[i])
                    );
                }
                assert!(answer.revision >= written[n - 1], "transaction {i} told revision {}", answer.revision);
            }
            _ => {
                assert!(answer.succeeded, "transaction {i}: the key was missing");
                let new = store.get(&format!("/c/new/{i:02}")).await.unwrap().expect("created");
                assert_eq!(new.mod_revision, answer.revision, "{key}");
                match &answer.responses[..] {
                    [OpResponse::Put, OpResponse::Get(Some(kv))] => assert_eq!(kv.value, b"0"),
                    other => panic!("transaction {i}'s responses: {other:?}"),
                }
            }
        }
    }
    assert_eq!(store.get("/c/leased").await.unwrap(), None, "the put with a revoked lease wrote nothing");
}

/// Many writers of one key, each reading it and writing it back one higher if unchanged:
/// every increment counts once.
pub async fn concurrent_increments_of_one_key_all_count(backend: &mut dyn Backend) {
    let store = backend.open().await;
    store.put("/n", b"0".to_vec()).await.unwrap();
    let writers = 16;
    let increment = |store: Arc<dyn Store>| async move {
        loop {
            let kv = store.get("/n").await.unwrap().expect("/n exists");
            let n: u32 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            let next = (n + 1).to_string().into_bytes();
            let txn = Txn::new().when([Compare::mod_revision("/n", kv.mod_revision)]).and_then([Op::put("/n", next)]);
            if store.txn(txn).await.unwrap().succeeded {
                return;
            }
        }
    };
    futures::future::join_all((0..writers).map(|_| increment(store.clone()))).await;
    assert_eq!(store.get("/n").await.unwrap().unwrap().value, writers.to_string().into_bytes());
}

pub async fn range_reads_a_prefix(backend: &mut dyn Backend) {
    let store = backend.open().await;
    for key in ["/t/a/2", "/t/a/1", "/t/ab", "/t/b/1", "/t/a/3"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let range = store.range("/t/a/").await.unwrap();
    let got: Vec<&str> = range.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got, ["/t/a/1", "/t/a/2", "/t/a/3"], "range returns the prefix's keys in key order");
    assert!(range.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    assert_eq!(range.revision, store.current_revision().await.unwrap());
    assert!(store.range("/nothing/").await.unwrap().kvs.is_empty());
    assert_eq!(store.get("/t/zzz").await.unwrap(), None);
}

pub async fn txn_reads_keys_and_prefixes_at_one_revision(backend: &mut dyn Backend) {
    let store = backend.open().await;
    for key in ["/t/a/2", "/t/a/1", "/t/ab", "/t/b/1", "/t/a/3"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let now = store.current_revision().await.unwrap();
    let reads = Txn::new().and_then([
        Op::range("/t/a/", 0),
        Op::get("/t/b/1"),
        Op::range("/t/a/", 2),
        Op::get("/t/missing"),
        Op::range("/none/", 5),
    ]);
    let response = store.txn(reads).await.unwrap();
    assert!(response.succeeded);
    assert_eq!(response.revision, now, "reads write nothing: the revision stays");
    let keys = |kvs: &[crate::KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    match &response.responses[..] {
        [
            OpResponse::Range { kvs: all, more: false },
            OpResponse::Get(Some(b)),
            OpResponse::Range { kvs: first, more: true },
            OpResponse::Get(None),
            OpResponse::Range { kvs: none, more: false },
        ] => {
            assert_eq!(keys(all), ["/t/a/1", "/t/a/2", "/t/a/3"], "a range reads its prefix in key order");
            assert!(all.iter().all(|kv| kv.value == kv.key.as_bytes() && kv.mod_revision > 0));
            assert_eq!(b.key, "/t/b/1");
            assert_eq!(keys(first), ["/t/a/1", "/t/a/2"], "a limited range reads the first keys and says more");
            assert!(none.is_empty());
        }
        other => panic!("one answer per read, in order, got {other:?}"),
    }
    // In the failure branch too, when a compare fails.
    let failing = Txn::new().when([Compare::absent("/t/ab")]).or_else([Op::range("/t/b/", 0)]);
    let response = store.txn(failing).await.unwrap();
    assert!(!response.succeeded);
    assert!(
        matches!(&response.responses[..], [OpResponse::Range { kvs, more: false }] if keys(kvs) == ["/t/b/1"]),
        "the failure branch's range answers as a range: {:?}",
        response.responses
    );
}

pub async fn range_reads_more_than_a_page(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let keys: Vec<String> = (0..2500).map(|i| format!("/big/{i:05}")).collect();
    for chunk in keys.chunks(crate::MAX_TXN_OPS) {
        store.txn(Txn::new().and_then(chunk.iter().map(|k| Op::put(k.as_str(), vec![b'v'; 100])))).await.unwrap();
    }
    let range = store.range("/big/").await.unwrap();
    let got: Vec<&str> = range.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got.len(), keys.len(), "every key of a large prefix is read");
    assert!(got.iter().zip(&keys).all(|(a, b)| a == b), "in key order, without repeats or gaps");
    assert_eq!(range.revision, store.current_revision().await.unwrap());
}

pub async fn range_pages_read_one_revision(backend: &mut dyn Backend) {
    let store = backend.open().await;
    for i in 0..10 {
        store.put(&format!("/p/{i:02}"), b"old".to_vec()).await.unwrap();
    }
    store.put("/q/00", b"other prefix".to_vec()).await.unwrap();
    let page = |after: Option<&str>, limit: usize, revision: Option<Revision>| PageRequest {
        prefix: "/p/".into(),
        after: after.map(str::to_string),
        limit,
        revision,
    };
    let keys = |page: &RangePage| page.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let first = store.range_page(&page(None, 4, None)).await.unwrap();
    assert_eq!(keys(&first), ["/p/00", "/p/01", "/p/02", "/p/03"]);
    assert!(first.more, "keys follow the first page");
    assert_eq!(first.revision, store.current_revision().await.unwrap());

    // Changes after the first page do not show in the later pages of the same list.
    store.delete("/p/05").await.unwrap();
    store.put("/p/045", b"new".to_vec()).await.unwrap();
    store.put("/p/06", b"new".to_vec()).await.unwrap();
    store.put("/p/99", b"new".to_vec()).await.unwrap();
    let second = store.range_page(&page(Some("/p/03"), 4, Some(first.revision))).await.unwrap();
    assert_eq!(keys(&second), ["/p/04", "/p/05", "/p/06", "/p/07"], "the second page as of the first's revision");
    assert!(second.kvs.iter().all(|kv| kv.value == b"old"), "values as of the first page's revision");
    assert_eq!(second.revision, first.revision);
    let third = store.range_page(&page(Some("/p/07"), 4, Some(first.revision))).await.unwrap();
    assert_eq!(keys(&third), ["/p/08", "/p/09"]);
    assert!(!third.more, "the last page says nothing follows");

    let now = store.range_page(&page(None, 0, None)).await.unwrap();
    assert_eq!(
        keys(&now),
        ["/p/00", "/p/01", "/p/02", "/p/03", "/p/04", "/p/045", "/p/06", "/p/07", "/p/08", "/p/09", "/p/99"],
        "without a revision: the current keys"
    );
    assert!(!now.more);
    let exact = store.range_page(&page(None, 11, None)).await.unwrap();
    assert_eq!(exact.kvs.len(), 11);
    assert!(!exact.more, "a limit equal to the count leaves nothing more");
}

pub async fn delete_prefix_removes_only_the_prefix(backend: &mut dyn Backend) {
    let store = backend.open().await;
    for key in ["/t/a/1", "/t/a/2", "/t/ab"] {
        store.put(key, b"v".to_vec()).await.unwrap();
    }
    let response = store.txn(Txn::new().and_then([Op::delete_prefix("/t/a/")])).await.unwrap();
    assert_eq!(response.responses, [OpResponse::Delete(2)]);
    let left: Vec<String> = store.range("/t/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, ["/t/ab"]);
}

pub async fn watch_replays_then_streams(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let r1 = store.put("/w/a", b"1".to_vec()).await.unwrap();
    let r2 = store.put("/w/b", b"2".to_vec()).await.unwrap();
    let r3 = store.put("/w/a", b"3".to_vec()).await.unwrap();
    assert!(store.delete("/w/b").await.unwrap());
    let r4 = store.current_revision().await.unwrap();

    // From r2: replays r2, r3, r4 in order, with previous values.
    let mut watch = store.watch("/w/", r2).await.unwrap();
    let replayed = events(&mut watch, 3, "the replay of history from r2").await;
    assert_eq!(keys(&replayed), [("/w/b", EventKind::Put), ("/w/a", EventKind::Put), ("/w/b", EventKind::Delete)]);
    assert_eq!(replayed.iter().map(|e| e.revision()).collect::<Vec<_>>(), [r2, r3, r4]);
    assert_eq!(replayed[1].kv.create_revision, r1);
    assert_eq!(
        replayed[1].prev_kv.as_ref().map(|p| p.value.as_slice()),
        Some(&b"1"[..]),
        "updates carry the previous value"
    );
    assert_eq!(
        replayed[2].prev_kv.as_ref().map(|p| p.value.as_slice()),
        Some(&b"2"[..]),
        "deletes carry the deleted value"
    );

    // Then live changes.
    let r5 = store.put("/w/c", b"5".to_vec()).await.unwrap();
    let live = events(&mut watch, 1, "a live put after the replay").await;
    assert_eq!((live[0].kv.key.as_str(), live[0].revision(), live[0].kv.value.as_slice()), ("/w/c", r5, &b"5"[..]));

    // From 0: only what happens after the watch starts.
    let mut from_now = store.watch("/w/", 0).await.unwrap();
    let r6 = store.put("/w/d", b"6".to_vec()).await.unwrap();
    let live = events(&mut from_now, 1, "a put after a watch from 0").await;
    assert_eq!(live[0].revision(), r6);
    let live = events(&mut watch, 1, "the same put on the first watch").await;
    assert_eq!(live[0].revision(), r6);

    // Many changes in a burst arrive complete and in order.
    let mut last = r6;
    for i in 0..300 {
        last = store.put(&format!("/w/burst/{i:03}"), vec![b'x'; 10]).await.unwrap();
    }
    let burst = events(&mut watch, 300, "a burst of 300 puts").await;
    assert_eq!(burst.last().unwrap().revision(), last);
    assert!(burst.windows(2).all(|w| w[0].revision() < w[1].revision()), "events arrive in revision order");
}

pub async fn watch_current_carries_no_previous_values(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let r1 = store.put("/v/a", b"1".to_vec()).await.unwrap();
    let r2 = store.put("/v/a", b"2".to_vec()).await.unwrap();
    assert!(store.delete("/v/a").await.unwrap());
    let r3 = store.current_revision().await.unwrap();

    // The same changes as `watch`, replayed then live, without what came before each.
    let mut watch = store.watch_current("/v/", r1).await.unwrap();
    let replayed = events(&mut watch, 3, "the replay of history from r1").await;
    assert_eq!(keys(&replayed), [("/v/a", EventKind::Put), ("/v/a", EventKind::Put), ("/v/a", EventKind::Delete)]);
    assert_eq!(replayed.iter().map(|e| e.revision()).collect::<Vec<_>>(), [r1, r2, r3]);
    assert_eq!(replayed[1].kv.value, b"2", "an update carries its new value");
    assert!(replayed.iter().all(|e| e.prev_kv.is_none()), "no previous values: {replayed:?}");
    let r4 = store.put("/v/a", b"4".to_vec()).await.unwrap();
    let live = events(&mut watch, 1, "a live put after the replay").await;
    assert_eq!((live[0].revision(), live[0].prev_kv.is_none()), (r4, true));
}

pub async fn watch_filters_by_prefix_and_keeps_txns_together(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let mut watch = store.watch("/p/in/", 0).await.unwrap();
    store.put("/p/out/x", b"no".to_vec()).await.unwrap();
    let txn = Txn::new().and_then([
        Op::put("/p/in/1", &b"a"[..]),
        Op::put("/p/out/y", &b"b"[..]),
        Op::put("/p/in/2", &b"c"[..]),
    ]);
    let revision = store.txn(txn).await.unwrap().revision;
    let batch = next_event(&mut watch, "the transaction's two puts under the prefix").await;
    assert_eq!(keys(&batch), [("/p/in/1", EventKind::Put), ("/p/in/2", EventKind::Put)], "one batch, only the prefix");
    assert!(batch.iter().all(|e| e.revision() == revision));
}

pub async fn lease_expiry_deletes_attached_keys(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .txn(
            Txn::new()
                .and_then([Op::put_with_lease("/l/agent", &b"alive"[..], lease), Op::put("/l/plain", &b"stays"[..])]),
        )
        .await
        .unwrap();
    let kv = store.get("/l/agent").await.unwrap().expect("the leased key exists");
    assert_eq!(kv.lease, lease);
    let mut watch = store.watch("/l/", 0).await.unwrap();

    // Renewed, the key stays past its TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.keep_alive(lease).await.unwrap(), Duration::from_secs(1));
    }
    assert!(store.get("/l/agent").await.unwrap().is_some(), "a renewed lease keeps its keys");

    // Not renewed, it expires: the key is deleted (and the watch says so).
    let deleted = events(&mut watch, 1, "the delete of the expired lease's key").await;
    assert_eq!(keys(&deleted), [("/l/agent", EventKind::Delete)]);
    assert_eq!(store.get("/l/agent").await.unwrap(), None);
    assert!(store.get("/l/plain").await.unwrap().is_some(), "keys without the lease are untouched");
    match store.keep_alive(lease).await {
        Err(Error::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("renewing an expired lease must fail with LeaseNotFound, got {other:?}"),
    }
}

pub async fn revoke_deletes_attached_keys(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    for i in 0..3 {
        store.txn(Txn::new().and_then([Op::put_with_lease(format!("/r/{i}"), &b"v"[..], lease)])).await.unwrap();
    }
    // A key moved off the lease is not deleted with it.
    store.put("/r/2", b"own".to_vec()).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let left: Vec<String> = store.range("/r/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, ["/r/2"]);
}

pub async fn data_survives_close_and_reopen(backend: &mut dyn Backend) {
    let (revision, lease) = {
        let store = backend.open().await;
        store.put("/d/a", b"1".to_vec()).await.unwrap();
        store.put("/d/b", b"2".to_vec()).await.unwrap();
        let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
        store.txn(Txn::new().and_then([Op::put_with_lease("/d/leased", &b"3"[..], lease)])).await.unwrap();
        (store.current_revision().await.unwrap(), lease)
    };
    backend.close().await;
    let store = backend.open().await;
    assert_eq!(store.current_revision().await.unwrap(), revision, "the revision survives a restart");
    let got: Vec<(String, Vec<u8>)> =
        store.range("/d/").await.unwrap().kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(
        got,
        [
            ("/d/a".to_string(), b"1".to_vec()),
            ("/d/b".to_string(), b"2".to_vec()),
            ("/d/leased".to_string(), b"3".to_vec())
        ]
    );
    store.keep_alive(lease).await.expect("a lease survives a restart");
    let mut watch = store.watch("/d/", revision - 2).await.unwrap();
    let replayed = events(&mut watch, 3, "history written before the restart").await;
    assert_eq!(keys(&replayed), [("/d/a", EventKind::Put), ("/d/b", EventKind::Put), ("/d/leased", EventKind::Put)]);
    let next = store.put("/d/c", b"4".to_vec()).await.unwrap();
    assert_eq!(next, revision + 1, "revisions continue after a restart");
}

pub async fn election_fences_a_deposed_leader(backend: &mut dyn Backend) {
    let store = backend.open().await;
    let key = "/e/leader/platform";
    let ttl = Duration::from_secs(2);
    let first = election::campaign(store.clone(), key, "one", ttl).await.unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap().value, b"one");
    let fenced_put =
        |fence: Compare, value: &'static [u8]| Txn::new().when([fence]).and_then([Op::put("/e/data", value)]);
    assert!(store.txn(fenced_put(first.fence(), b"from one")).await.unwrap().succeeded);

    // A second candidate waits while the first leads.
    let contender = tokio::spawn(election::campaign(store.clone(), key, "two", ttl));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!contender.is_finished(), "a second candidate must not win while the first leads");

    // The first leader's key goes away behind its back (as when its lease expires while it
    // is paused): the second wins, and the first one's fence no longer holds.
    let old_fence = first.fence();
    store.delete(key).await.unwrap();
    let second = tokio::time::timeout(WAIT, contender).await.expect("the contender is elected").unwrap().unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap().value, b"two");
    assert!(second.term() > first.term());
    assert!(!store.txn(fenced_put(old_fence, b"stale")).await.unwrap().succeeded, "a deposed leader's write fails");
    assert!(store.txn(fenced_put(second.fence(), b"from two")).await.unwrap().succeeded);
    assert_eq!(store.get("/e/data").await.unwrap().unwrap().value, b"from two");
    tokio::time::timeout(WAIT, first.lost()).await.expect("the deposed leader learns it lost");
    assert!(first.is_lost());

    // Resigning hands over at once.
    let third = tokio::spawn(election::campaign(store.clone(), key, "three", ttl));
    second.resign().await.unwrap();
    let third =
        tokio::time::timeout(WAIT, third).await.expect("resigning lets the next candidate win").unwrap().unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap().value, b"three");
    drop(third);
}
