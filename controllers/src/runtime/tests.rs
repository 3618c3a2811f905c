//! The runtime against a real embedded store: the executor's fencing and batching, and the
//! store cache through a watch gap and across scopes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use baton_api::{InstanceRecord, RunSpec, Scope};
use baton_store::election::{self, Leadership};
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{Error as StoreError, Keyspace, Store, StoreExt};

use super::cache::{Scopes, StoreCache};
use super::executor::{self, Executor};
use crate::plan::{Launch, Plan, Removal};
use crate::testing::{app, instance};

async fn embedded() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).await.unwrap();
    (Arc::new(store), dir)
}

/// A client for status patches; these tests' plans have none, so it never connects.
fn client() -> kube::Client {
    kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
}

async fn lead(store: &Arc<dyn Store>, id: &str) -> Leadership {
    election::campaign(store.clone(), &Keyspace::default().leader("platform"), id, Duration::from_secs(10))
        .await
        .unwrap()
}

/// `n` records of app `web` on agents a0…a4.
fn records(n: usize) -> Vec<InstanceRecord> {
    let web = app("web").build();
    (0..n).map(|i| instance(&web, &format!("a{}", i % 5), i as u32).build().record.as_ref().clone()).collect()
}

fn launches(records: &[InstanceRecord]) -> Plan {
    Plan { launches: records.iter().map(|r| Launch { record: r.clone() }).collect(), ..Plan::default() }
}

/// Instance ids with a record, and ids with an index entry.
async fn stored(store: &Arc<dyn Store>) -> (Vec<String>, Vec<String>) {
    let keys = Keyspace::default();
    let records = store.range(&keys.instances()).await.unwrap();
    let indexed = store.range(&keys.instance_agents()).await.unwrap();
    let mut ids: Vec<String> =
        records.kvs.iter().filter_map(|kv| keys.parse_instance_key(&kv.key)).map(|(_, id)| id.to_string()).collect();
    let mut index: Vec<String> =
        indexed.kvs.iter().filter_map(|kv| keys.parse_instance_agent_key(&kv.key)).map(str::to_string).collect();
    ids.sort();
    index.sort();
    (ids, index)
}

#[tokio::test]
async fn a_deposed_leader_writes_nothing() {
    let (store, _dir) = embedded().await;
    let executor = Executor::new(store.clone(), Keyspace::default(), client());
    let first = lead(&store, "c1").await;
    // 3, then 200: the second plan's transactions (63 launches each) go out several at once.
    let all = records(203);
    let applied = executor.apply(&launches(&all[..3]), 0, &first).await.unwrap();
    assert_eq!(applied.launched, 3);

    // c1 loses its election key; c2 is elected.
    store.delete(&Keyspace::default().leader("platform")).await.unwrap();
    let second = lead(&store, "c2").await;
    let before = store.current_revision().await.unwrap();
    let refused = executor.apply(&launches(&all[3..]), 0, &first).await;
    assert!(matches!(refused, Err(executor::Error::LostLeadership)), "{refused:?}");
    assert_eq!(store.current_revision().await.unwrap(), before, "the deposed leader wrote nothing");

    let applied = executor.apply(&launches(&all[3..]), 0, &second).await.unwrap();
    assert_eq!(applied.launched, 200);
    let (ids, index) = stored(&store).await;
    assert_eq!((ids.len(), &ids), (203, &index), "every record with its index entry");
    for (record, leader) in [(&all[0], &first), (&all[202], &second)] {
        let key = Keyspace::default().instance(&record.agent, &record.id);
        let stored: InstanceRecord = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored.term, leader.term(), "{} is written with its leader's term", record.id);
    }
}

#[tokio::test]
async fn writes_fill_transactions_to_the_limit_and_a_stale_one_drops_whole() {
    let (store, _dir) = embedded().await;
    let executor = Executor::new(store.clone(), Keyspace::default(), client());
    let leader = lead(&store, "c1").await;
    let all = records(200);

    // A launch is 2 operations and 2 compares; with the fence, 63 fit in a transaction.
    let before = store.current_revision().await.unwrap();
    let applied = executor.apply(&launches(&all), 0, &leader).await.unwrap();
    assert_eq!((applied.launched, applied.stale), (200, 0));
    let transactions = store.current_revision().await.unwrap() - before;
    assert_eq!(transactions, 4, "200 launches in 4 transactions (63 + 63 + 63 + 11)");

    // Removals: 1 compare and 2 operations each, so 64 a transaction. One was planned on a
    // stale view: its transaction is dropped whole, the others land.
    let keys = Keyspace::default();
    let mut removals = Vec::new();
    for record in &all {
        let kv = store.get(&keys.instance(&record.agent, &record.id)).await.unwrap().unwrap();
        removals.push(Removal { agent: record.agent.clone(), id: record.id.clone(), revision: kv.mod_revision });
    }
    removals[70].revision -= 1;
    let applied = executor.apply(&Plan { removals, ..Plan::default() }, 0, &leader).await.unwrap();
    assert_eq!((applied.removed, applied.stale), (200 - 64, 64));
    let (ids, index) = stored(&store).await;
    assert_eq!(ids.len(), 64, "the second transaction's removals did not land");
    assert_eq!(ids, index, "no record without its index entry, nor the reverse");
}

/// A store whose watches can be broken on demand, and whose ranges can be held back.
struct Gappy {
    inner: Arc<dyn Store>,
    /// Ends the current watch with an error (as after a compaction).
    break_watch: Arc<Notify>,
    /// Ranges wait while the test holds this.
    hold: Arc<tokio::sync::Mutex<()>>,
    ranges: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Gappy {
    async fn get(&self, key: &str) -> baton_store::Result<Option<baton_store::KeyValue>> {
        self.inner.get(key).await
    }

    async fn range(&self, prefix: &str) -> baton_store::Result<baton_store::RangeResponse> {
        self.ranges.fetch_add(1, Ordering::SeqCst);
        let _held = self.hold.lock().await;
        self.inner.range(prefix).await
    }

    async fn range_page(&self, request: &baton_store::PageRequest) -> baton_store::Result<baton_store::RangePage> {
        self.inner.range_page(request).await
    }

    async fn txn(&self, txn: baton_store::Txn) -> baton_store::Result<baton_store::TxnResponse> {
        self.inner.txn(txn).await
    }

    async fn watch(&self, prefix: &str, from: baton_store::Revision) -> baton_store::Result<baton_store::WatchStream> {
        let live = self.inner.watch(prefix, from).await?;
        let broken = self.break_watch.clone();
        let gap = futures::stream::once(async move {
            broken.notified().await;
            Err(StoreError::Compacted { requested: from, compact_revision: from + 1 })
        });
        Ok(futures::stream::select(live, gap).boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> baton_store::Result<baton_store::LeaseId> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: baton_store::LeaseId) -> baton_store::Result<Duration> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: baton_store::LeaseId) -> baton_store::Result<()> {
        self.inner.revoke_lease(lease).await
    }
}

async fn put_record(store: &Arc<dyn Store>, record: &InstanceRecord) {
    let key = Keyspace::default().instance(&record.agent, &record.id);
    store.put(&key, serde_json::to_vec(record).unwrap()).await.unwrap();
}

/// Polls the cache's snapshot until its instance ids are `want`, within 10 s.
async fn wait_for_ids(cache: &StoreCache, want: &[&str]) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = cache.snapshot(Vec::new(), Vec::new(), &Scopes::default()).instances.keys().cloned().collect::<Vec<_>>();
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cache holds {seen:?}, not {want:?}, after 10 s");
}

#[tokio::test]
async fn after_a_watch_gap_the_cache_lists_again_and_misses_no_delete() {
    let (inner, _dir) = embedded().await;
    let gappy = Arc::new(Gappy {
        inner: inner.clone(),
        break_watch: Arc::new(Notify::new()),
        hold: Arc::new(tokio::sync::Mutex::new(())),
        ranges: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let cache = StoreCache::start(
        gappy.clone(),
        Keyspace::default(),
        Scope::Platform,
        Arc::new(Notify::new()),
        shutdown.clone(),
    );
    cache.ready().await;
    let all = records(3);
    let mut ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    put_record(&inner, &all[0]).await;
    put_record(&inner, &all[1]).await;
    wait_for_ids(&cache, &ids[..2]).await;

    // The watch breaks; while the cache has no watch (its listing held back), one instance
    // goes and another comes.
    let held = gappy.hold.lock().await;
    let listed = gappy.ranges.load(Ordering::SeqCst);
    gappy.break_watch.notify_one();
    for _ in 0..200 {
        if gappy.ranges.load(Ordering::SeqCst) > listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gappy.ranges.load(Ordering::SeqCst) > listed, "the cache did not list again after its watch broke");
    let keys = Keyspace::default();
    inner.delete(&keys.instance(&all[0].agent, &all[0].id)).await.unwrap();
    put_record(&inner, &all[2]).await;
    drop(held);
    wait_for_ids(&cache, &[all[1].id.as_str(), all[2].id.as_str()]).await;
    let revision = inner.current_revision().await.unwrap();
    assert!(cache.caught_up(revision, Duration::from_secs(5)).await, "the cache caught up with the store");
    shutdown.cancel();
}

#[tokio::test]
async fn a_tenants_cache_holds_only_its_scope_and_the_platforms_counts_the_rest_as_foreign() {
    let (store, _dir) = embedded().await;
    let all = records(2);
    let tenant = Scope::Tenant("team-a".into());
    put_record(&store, &all[0]).await;
    let mut theirs = all[1].clone();
    Arc::make_mut(&mut theirs.run).scope = tenant.clone();
    put_record(&store, &theirs).await;
    let shutdown = CancellationToken::new();
    let start = |scope: Scope| {
        StoreCache::start(store.clone(), Keyspace::default(), scope, Arc::new(Notify::new()), shutdown.clone())
    };
    let (platform, theirs) = (start(Scope::Platform), start(tenant.clone()));
    platform.ready().await;
    theirs.ready().await;
    let snapshot = platform.snapshot(Vec::new(), Vec::new(), &Scopes::default());
    assert_eq!(snapshot.instances.keys().collect::<Vec<_>>(), [&all[0].id]);
    assert_eq!(snapshot.foreign.iter().map(|i| i.id()).collect::<Vec<_>>(), [all[1].id.as_str()]);
    assert_eq!(snapshot.held().values().map(|used| used.live).sum::<usize>(), 2, "both take capacity");
    let snapshot = theirs.snapshot(Vec::new(), Vec::new(), &Scopes::default());
    assert_eq!(snapshot.instances.keys().collect::<Vec<_>>(), [&all[1].id]);
    assert!(snapshot.foreign.is_empty(), "a tenant's cache does not hold the platform's instances");
    shutdown.cancel();
}

#[tokio::test]
async fn records_of_one_app_version_share_its_run_spec_in_the_cache() {
    let (store, _dir) = embedded().await;
    let web = app("web").build();
    let env: std::collections::BTreeMap<String, String> =
        [("DB".to_string(), "db.internal:5432".to_string()), ("MODE".to_string(), "production".to_string())].into();
    let mut all: Vec<InstanceRecord> = (0..4)
        .map(|i| {
            let mut record = instance(&web, &format!("a{i}"), i).build().record.as_ref().clone();
            // Each its own copy, as parsed.
            record.run = Arc::new(RunSpec { env: env.clone(), ..(*record.run).clone() });
            record
        })
        .collect();
    Arc::make_mut(&mut all[3].run).labels = [("tier".to_string(), "web".to_string())].into();
    for record in &all {
        put_record(&store, record).await;
    }
    let shutdown = CancellationToken::new();
    let cache =
        StoreCache::start(store.clone(), Keyspace::default(), Scope::Platform, Arc::new(Notify::new()), shutdown);
    cache.ready().await;
    let snapshot = cache.snapshot(Vec::new(), Vec::new(), &Scopes::default());
    let held: Vec<&InstanceRecord> = all.iter().map(|r| snapshot.instances[&r.id].record.as_ref()).collect();
    assert_eq!(held.iter().map(|r| (*r).clone()).collect::<Vec<_>>(), all, "read as written");
    assert_eq!(held[0].run.env.len(), 2);
    assert!(held[..3].iter().all(|r| Arc::ptr_eq(&r.run, &held[0].run)), "one run spec for the version");
    assert!(!Arc::ptr_eq(&held[3].run, &held[0].run), "one that differs is kept as it is");
    assert_eq!(held[3].run.labels.len(), 1);
}

/// A snapshot hands out the cache's own map of instances, not a copy: one still held while
/// changes come keeps what it saw, the next one sees every change (records put and deleted,
/// reports that end an instance, in what each agent holds too), and with nothing changed
/// two snapshots share one map.
#[tokio::test]
async fn a_held_snapshot_keeps_its_view_and_the_next_one_sees_every_change() {
    use baton_api::{Phase, StatusRecord};
    let (store, _dir) = embedded().await;
    let keys = Keyspace::default();
    let all = records(4);
    for record in &all[..3] {
        put_record(&store, record).await;
    }
    let shutdown = CancellationToken::new();
    let cache =
        StoreCache::start(store.clone(), keys.clone(), Scope::Platform, Arc::new(Notify::new()), shutdown.clone());
    cache.ready().await;
    let scopes = Scopes::default();
    let first = cache.snapshot(Vec::new(), Vec::new(), &scopes);

    // While the first is held: the first instance's process fails, the second's record goes,
    // a fourth comes.
    let failed = serde_json::to_vec(&StatusRecord::new(Phase::Failed)).unwrap();
    store.put(&keys.status(&all[0].agent, &all[0].id), failed).await.unwrap();
    store.delete(&keys.instance(&all[1].agent, &all[1].id)).await.unwrap();
    put_record(&store, &all[3]).await;
    let now = store.current_revision().await.unwrap();
    assert!(cache.caught_up(now, Duration::from_secs(10)).await, "the cache follows the store");

    let ids = |s: &crate::snapshot::Snapshot| s.instances.keys().cloned().collect::<Vec<_>>();
    let live = |s: &crate::snapshot::Snapshot| s.held().values().map(|used| used.live).sum::<usize>();
    assert_eq!(ids(&first), [all[0].id.clone(), all[1].id.clone(), all[2].id.clone()], "the held view is as it was");
    assert!(first.instances[&all[0].id].status.is_none());
    assert_eq!(live(&first), 3);
    let second = cache.snapshot(Vec::new(), Vec::new(), &scopes);
    assert_eq!(ids(&second), [all[0].id.clone(), all[2].id.clone(), all[3].id.clone()], "the next sees every change");
    assert_eq!(second.instances[&all[0].id].phase(), Some(Phase::Failed));
    assert_eq!(live(&second), 2, "an ended instance holds nothing");
    assert!(!Arc::ptr_eq(&first.instances, &second.instances));
    drop(first);

    // With nothing changed, the next snapshot shares the map.
    let third = cache.snapshot(Vec::new(), Vec::new(), &scopes);
    assert!(Arc::ptr_eq(&second.instances, &third.instances), "one map while nothing changed");
    drop((second, third));

    // Once let go, changes go on coming in: a report that the third instance runs.
    let running = serde_json::to_vec(&StatusRecord::new(Phase::Running)).unwrap();
    store.put(&keys.status(&all[2].agent, &all[2].id), running).await.unwrap();
    let now = store.current_revision().await.unwrap();
    assert!(cache.caught_up(now, Duration::from_secs(10)).await, "the cache follows the store");
    let fourth = cache.snapshot(Vec::new(), Vec::new(), &scopes);
    assert_eq!(fourth.instances[&all[2].id].phase(), Some(Phase::Running));
    assert_eq!(live(&fourth), 2);
    shutdown.cancel();
}

/// The cache wakes the planner for changes to what it follows, not for the rest of the
/// root (the API server's objects: an Event recorded after a rollout is no news to plan on).
#[tokio::test]
async fn the_cache_wakes_the_planner_only_for_what_it_follows() {
    let (store, _dir) = embedded().await;
    let keys = Keyspace::default();
    let changed = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let cache = StoreCache::start(store.clone(), keys.clone(), Scope::Platform, changed.clone(), shutdown.clone());
    cache.ready().await;
    let woken = || tokio::time::timeout(Duration::from_secs(10), changed.notified());
    woken().await.expect("woken once the cache holds a full view");

    let event = format!("{}registry/core/events/default/web.17f3a", keys.root_prefix());
    store.put(&event, br#"{"kind":"Event"}"#.to_vec()).await.unwrap();
    let now = store.current_revision().await.unwrap();
    assert!(cache.caught_up(now, Duration::from_secs(10)).await, "the cache follows the store");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), changed.notified()).await.is_err(),
        "an Event woke the planner"
    );

    put_record(&store, &records(1)[0]).await;
    woken().await.expect("a new instance record wakes the planner");
    shutdown.cancel();
}
