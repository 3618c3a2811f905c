//! The embedded backend: the [`Store`] in process, persisted with redb in a data directory.
//!
//! It is what `baton dev` runs on: one file, `<data-dir>/store.redb`, so a restarted
//! `baton dev` keeps its apps. Semantics follow etcd's so that everything built on it runs
//! unchanged on etcd:
//!
//! - One writer at a time. Each transaction that writes anything bumps the revision once;
//!   every changed key gets that revision as its mod revision.
//! - Every revision's changes are appended to a change log in the same redb transaction as
//!   the data, so a watch can replay any revision still kept and then follow live commits
//!   (published on a broadcast channel; a watcher that falls behind re-reads the log). The
//!   log keeps the last [`EmbeddedOptions::history`] revisions; older watches get
//!   [`Error::Compacted`].
//! - Leases are persisted with their TTL. Their deadlines live in memory and, as in etcd,
//!   are reset to a full TTL when the store is reopened. An expired lease is revoked by a
//!   background task: its keys are deleted in one revision.
//!
//! Commits are durable (`fsync`) before a transaction returns.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::{
    Error, EventKind, KeyValue, LeaseId, Op, OpResponse, PageRequest, RangePage, RangeResponse, Result, Revision,
    Store, Txn, TxnResponse, WatchBatch, WatchEvent, WatchStream, prefix_end,
};

/// key → encoded [`KeyValue`] without the key.
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
/// revision → encoded list of the [`WatchEvent`]s of that revision.
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// lease id → TTL in milliseconds.
const LEASES: TableDefinition<'_, i64, u64> = TableDefinition::new("leases");
/// "revision", "oldest" (oldest revision in the log), "next_lease".
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "store.redb";

/// How live commits reach watchers; a watcher that lags more than this re-reads the log.
const BROADCAST_CAPACITY: usize = 4096;
/// Log entries read per step when a watch replays history.
const REPLAY_CHUNK: u64 = 512;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Revisions of change history kept for watches.
    pub history: u64,
    /// When opening, revoke every lease attached to a key under one of these prefixes
    /// (deleting the keys attached to it). Right when this process is the store's only user,
    /// as in `baton dev`: the data dir is locked to one process, so an agent registration or
    /// a leader's lease from an earlier run has no holder left to renew it, and waiting out
    /// its TTL (etcd's behaviour, for clients on other machines) only delays the new run.
    /// Leases under no such prefix (events' time to live) run on.
    pub revoke_leases_under: Vec<String>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { history: 100_000, revoke_leases_under: Vec::new() }
    }
}

/// The embedded store. Cheap to clone; the database closes when the last clone and every
/// watch stream are dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    state: Mutex<WriteState>,
    commits: broadcast::Sender<Arc<Commit>>,
    /// Wakes the lease reaper when a lease is granted or renewed earlier than it expected.
    leases_changed: Arc<Notify>,
    history: u64,
}

/// Everything the single writer owns. Held while a write transaction runs.
struct WriteState {
    revision: Revision,
    /// The oldest revision whose changes are still in the log.
    oldest: Revision,
    next_lease: LeaseId,
    leases: HashMap<LeaseId, LeaseState>,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// The changes of one revision, as published to live watchers.
struct Commit {
    revision: Revision,
    events: Vec<WatchEvent>,
}

fn backend(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("{context}: {e}"))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Must be called within a Tokio runtime: it
    /// starts the task that expires leases.
    pub async fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        let dir = dir.to_path_buf();
        let inner =
            tokio::task::spawn_blocking(move || Inner::open(&dir, options)).await.map_err(|e| backend("open", e))??;
        let inner = Arc::new(inner);
        tokio::spawn(reap_leases(Arc::downgrade(&inner), inner.leases_changed.clone()));
        Ok(Self { inner })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| backend("store task", e))?
    }
}

impl Inner {
    fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        let open_error = |message: String| Error::Open { path: dir.display().to_string(), message };
        std::fs::create_dir_all(dir).map_err(|e| open_error(format!("cannot create it: {e}")))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_error(format!(
                "{} is in use by another process (is another baton running on this data dir?)",
                path.display()
            )),
            other => open_error(format!("cannot open {}: {other}", path.display())),
        })?;

        let txn = db.begin_write().map_err(|e| backend("open", e))?;
        let mut state = WriteState { revision: 0, oldest: 1, next_lease: 1, leases: HashMap::new() };
        let mut stale_lease_keys = Vec::new();
        {
            // Opening creates the tables on first use.
            let meta = txn.open_table(META).map_err(|e| backend("open", e))?;
            let read = |name: &str, default: i64| -> Result<i64> {
                Ok(meta.get(name).map_err(|e| backend("open", e))?.map_or(default, |v| v.value()))
            };
            state.revision = read("revision", 0)?;
            state.oldest = read("oldest", 1)?;
            state.next_lease = read("next_lease", 1)?;
            txn.open_table(LOG).map_err(|e| backend("open", e))?;
            let leases = txn.open_table(LEASES).map_err(|e| backend("open", e))?;
            let now = Instant::now();
            for entry in leases.iter().map_err(|e| backend("open", e))? {
                let (id, ttl_ms) = entry.map_err(|e| backend("open", e))?;
                let ttl = Duration::from_millis(ttl_ms.value());
                // As etcd does after a restart: every lease gets a full TTL again.
                state.leases.insert(id.value(), LeaseState { ttl, deadline: now + ttl, keys: BTreeSet::new() });
            }
            let kv = txn.open_table(KV).map_err(|e| backend("open", e))?;
            for entry in kv.iter().map_err(|e| backend("open", e))? {
                let (key, value) = entry.map_err(|e| backend("open", e))?;
                let record = decode_record(key.value(), value.value())?;
                if record.lease != 0 {
                    match state.leases.get_mut(&record.lease) {
                        Some(lease) => _ = lease.keys.insert(record.key),
                        None => stale_lease_keys.push(record.key),
                    }
                }
            }
        }
        txn.commit().map_err(|e| backend("open", e))?;
        let (commits, _) = broadcast::channel(BROADCAST_CAPACITY);
        let inner = Inner {
            db,
            path,
            state: Mutex::new(state),
            commits,
            leases_changed: Arc::new(Notify::new()),
            history: options.history.max(1),
        };
        if !stale_lease_keys.is_empty() {
            // Keys whose lease record is gone cannot expire any more: delete them now.
            for chunk in stale_lease_keys.chunks(crate::MAX_TXN_OPS) {
                inner.apply(Txn::new().and_then(chunk.iter().map(|k| Op::delete(k.as_str()))))?;
            }
        }
        if !options.revoke_leases_under.is_empty() {
            let leases: Vec<LeaseId> = inner
                .lock()
                .leases
                .iter()
                .filter(|(_, lease)| {
                    lease.keys.iter().any(|key| options.revoke_leases_under.iter().any(|p| key.starts_with(p)))
                })
                .map(|(id, _)| *id)
                .collect();
            for lease in leases {
                inner.revoke(lease)?;
            }
        }
        Ok(inner)
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // A panic while holding the lock cannot leave redb half-written (its transaction
        // aborts on drop), so the state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read().map_err(|e| backend("get", e))?;
        let kv = txn.open_table(KV).map_err(|e| backend("get", e))?;
        let value = kv.get(key).map_err(|e| backend("get", e))?;
        value.map(|v| decode_record(key, v.value())).transpose()
    }

    fn range(&self, prefix: &str) -> Result<RangeResponse> {
        let txn = self.db.begin_read().map_err(|e| backend("range", e))?;
        let meta = txn.open_table(META).map_err(|e| backend("range", e))?;
        let revision = meta.get("revision").map_err(|e| backend("range", e))?.map_or(0, |v| v.value());
        let kv = txn.open_table(KV).map_err(|e| backend("range", e))?;
        let (kvs, _) = read_prefix(&kv, prefix, 0, "range")?;
        Ok(RangeResponse { kvs, revision })
    }

    /// A page of a prefix as of a revision: the current keys, with those changed since the
    /// revision put back as they were (from the log), all in one read transaction.
    fn range_page(&self, request: &PageRequest) -> Result<RangePage> {
        use std::ops::Bound;
        let fail = |e: &dyn std::fmt::Display| backend("range", e);
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let meta = txn.open_table(META).map_err(|e| fail(&e))?;
        let current = meta.get("revision").map_err(|e| fail(&e))?.map_or(0, |v| v.value());
        let oldest = meta.get("oldest").map_err(|e| fail(&e))?.map_or(1, |v| v.value());
        let at = request.revision.filter(|r| *r > 0).unwrap_or(current);
        if at > current {
            return Err(Error::Backend(format!("range: revision {at} is in the future (the store is at {current})")));
        }
        if at < current && at + 1 < oldest {
            return Err(Error::Compacted { requested: at, compact_revision: oldest });
        }
        let prefix = request.prefix.as_str();
        let after = request.after.as_deref().filter(|a| *a >= prefix);
        let wanted = |key: &str| key.starts_with(prefix) && after.is_none_or(|a| key > a);
        // Keys changed after `at`, as they were at `at` (`None`: absent then). Walking the
        // log backwards, the earliest change's previous value is written last.
        let mut then: std::collections::BTreeMap<String, Option<KeyValue>> = std::collections::BTreeMap::new();
        if at < current {
            let log = txn.open_table(LOG).map_err(|e| fail(&e))?;
            for entry in log.range((at + 1) as u64..=current as u64).map_err(|e| fail(&e))?.rev() {
                let (_, value) = entry.map_err(|e| fail(&e))?;
                for event in decode_events(value.value())?.into_iter().rev() {
                    if wanted(&event.kv.key) {
                        then.insert(event.kv.key, event.prev_kv);
                    }
                }
            }
        }
        let kv = txn.open_table(KV).map_err(|e| fail(&e))?;
        let end = prefix_end(prefix);
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let upper = match &end {
            Some(end) => Bound::Excluded(end.as_str()),
            None => Bound::Unbounded,
        };
        let take = if request.limit == 0 { usize::MAX } else { request.limit + 1 };
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut past = then.into_iter().peekable();
        let mut present = kv.range::<&str>((lower, upper)).map_err(|e| fail(&e))?;
        let mut next_present = present.next().transpose().map_err(|e| fail(&e))?;
        while kvs.len() < take {
            let present_key = next_present.as_ref().map(|(k, _)| k.value().to_string());
            let past_first = match (past.peek(), &present_key) {
                (Some((past_key, _)), Some(present_key)) => past_key <= present_key,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if past_first {
                let (key, then) = past.next().expect("peeked");
                if present_key.as_deref() == Some(key.as_str()) {
                    next_present = present.next().transpose().map_err(|e| fail(&e))?;
                }
                kvs.extend(then);
            } else {
                let (key, value) = next_present.take().expect("a present key");
                kvs.push(decode_record(key.value(), value.value())?);
                next_present = present.next().transpose().map_err(|e| fail(&e))?;
            }
        }
        let more = kvs.len() > request.limit && request.limit > 0;
        kvs.truncate(if more { request.limit } else { kvs.len() });
        Ok(RangePage { kvs, revision: at, more })
    }

    /// Applies a transaction: the one place that writes.
    fn apply(&self, txn: Txn) -> Result<TxnResponse> {
        txn.check_size()?;
        let mut state = self.lock();
        let next = state.revision + 1;
        let mut wtxn = self.db.begin_write().map_err(|e| backend("txn", e))?;
        let mut events: Vec<WatchEvent> = Vec::new();
        let mut responses = Vec::new();
        let succeeded;
        {
            let mut kv = wtxn.open_table(KV).map_err(|e| backend("txn", e))?;
            let read = |kv: &redb::Table<'_, &str, &[u8]>, key: &str| -> Result<Option<KeyValue>> {
                kv.get(key).map_err(|e| backend("txn", e))?.map(|v| decode_record(key, v.value())).transpose()
            };
            let mut all_hold = true;
            for compare in &txn.compares {
                if !compare.matches(read(&kv, &compare.key)?.as_ref()) {
                    all_hold = false;
                    break;
                }
            }
            succeeded = all_hold;
            let ops = if succeeded { &txn.success } else { &txn.failure };
            // Leases are checked before anything is written, so a bad lease writes nothing.
            for op in ops {
                if let Op::Put { lease, .. } = op
                    && *lease != 0
                    && !state.leases.contains_key(lease)
                {
                    return Err(Error::LeaseNotFound(*lease));
                }
            }
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        let prev = read(&kv, key)?;
                        let record = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: prev.as_ref().map_or(next, |p| p.create_revision),
                            mod_revision: next,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            lease: *lease,
                        };
                        kv.insert(key.as_str(), encode_record(&record).as_slice()).map_err(|e| backend("txn", e))?;
                        events.push(WatchEvent { kind: EventKind::Put, kv: record, prev_kv: prev });
                        responses.push(OpResponse::Put);
                    }
                    Op::Delete { key } => {
                        let prev = read(&kv, key)?;
                        let deleted = i64::from(prev.is_some());
                        if let Some(prev) = prev {
                            kv.remove(key.as_str()).map_err(|e| backend("txn", e))?;
                            events.push(delete_event(prev, next));
                        }
                        responses.push(OpResponse::Delete(deleted));
                    }
                    Op::DeletePrefix { prefix } => {
                        let (doomed, _) = read_prefix(&kv, prefix, 0, "txn")?;
                        let deleted = doomed.len() as i64;
                        for prev in doomed {
                            kv.remove(prev.key.as_str()).map_err(|e| backend("txn", e))?;
                            events.push(delete_event(prev, next));
                        }
                        responses.push(OpResponse::Delete(deleted));
                    }
                    Op::Get { key } => responses.push(OpResponse::Get(read(&kv, key)?)),
                    Op::Range { prefix, limit } => {
                        let (kvs, more) = read_prefix(&kv, prefix, *limit, "txn")?;
                        responses.push(OpResponse::Range { kvs, more });
                    }
                }
            }
        }
        if events.is_empty() {
            // Nothing changed: the revision stays, as in etcd.
            wtxn.abort().map_err(|e| backend("txn", e))?;
            return Ok(TxnResponse { succeeded, revision: state.revision, responses });
        }
        let mut oldest = state.oldest;
        {
            let mut log = wtxn.open_table(LOG).map_err(|e| backend("txn", e))?;
            log.insert(next as u64, encode_events(&events).as_slice()).map_err(|e| backend("txn", e))?;
            // Compact in steps of a tenth of the history, not at every commit.
            let keep_from = next - self.history as i64 + 1;
            if keep_from - oldest > (self.history as i64 / 10).max(1) {
                log.retain_in(oldest as u64..keep_from as u64, |_, _| false).map_err(|e| backend("compact", e))?;
                oldest = keep_from;
            }
            let mut meta = wtxn.open_table(META).map_err(|e| backend("txn", e))?;
            meta.insert("revision", next).map_err(|e| backend("txn", e))?;
            meta.insert("oldest", oldest).map_err(|e| backend("txn", e))?;
        }
        wtxn.set_durability(redb::Durability::Immediate).map_err(|e| backend("txn", e))?;
        wtxn.commit().map_err(|e| backend("commit", e))?;

        state.revision = next;
        state.oldest = oldest;
        for event in &events {
            if let Some(prev) = &event.prev_kv
                && prev.lease != 0
                && let Some(lease) = state.leases.get_mut(&prev.lease)
            {
                lease.keys.remove(&prev.key);
            }
            if event.kind == EventKind::Put
                && event.kv.lease != 0
                && let Some(lease) = state.leases.get_mut(&event.kv.lease)
            {
                lease.keys.insert(event.kv.key.clone());
            }
        }
        // Published while the lock is held, so watchers see commits in revision order.
        let _ = self.commits.send(Arc::new(Commit { revision: next, events }));
        Ok(TxnResponse { succeeded, revision: next, responses })
    }

    /// The log entries of revisions `from..=to`, filtered to `prefix`.
    fn read_log(&self, prefix: &str, from: Revision, to: Revision) -> Result<Vec<WatchEvent>> {
        let txn = self.db.begin_read().map_err(|e| backend("watch", e))?;
        let log = txn.open_table(LOG).map_err(|e| backend("watch", e))?;
        let mut events = Vec::new();
        for entry in log.range(from as u64..=to as u64).map_err(|e| backend("watch", e))? {
            let (_, value) = entry.map_err(|e| backend("watch", e))?;
            events.extend(decode_events(value.value())?.into_iter().filter(|e| e.kv.key.starts_with(prefix)));
        }
        Ok(events)
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let mut state = self.lock();
        let id = state.next_lease;
        let txn = self.db.begin_write().map_err(|e| backend("lease", e))?;
        {
            let mut leases = txn.open_table(LEASES).map_err(|e| backend("lease", e))?;
            leases.insert(id, ttl.as_millis() as u64).map_err(|e| backend("lease", e))?;
            let mut meta = txn.open_table(META).map_err(|e| backend("lease", e))?;
            meta.insert("next_lease", id + 1).map_err(|e| backend("lease", e))?;
        }
        txn.commit().map_err(|e| backend("lease", e))?;
        state.next_lease = id + 1;
        state.leases.insert(id, LeaseState { ttl, deadline: Instant::now() + ttl, keys: BTreeSet::new() });
        drop(state);
        self.leases_changed.notify_one();
        Ok(id)
    }

    fn keep_alive(&self, id: LeaseId) -> Result<Duration> {
        let mut state = self.lock();
        let lease = state.leases.get_mut(&id).ok_or(Error::LeaseNotFound(id))?;
        lease.deadline = Instant::now() + lease.ttl;
        Ok(lease.ttl)
    }

    /// Deletes a lease and its keys in one revision.
    fn revoke(&self, id: LeaseId) -> Result<()> {
        self.revoke_if(id, false)
    }

    /// Deletes a lease and its keys — with `expired_only`, only if its deadline has passed.
    ///
    /// The lease goes first, in the same lock as the check: from then on it cannot be renewed
    /// and no key can be attached to it, so the keys taken with it are all there are. (Taken
    /// after its keys were deleted, a renewal in between succeeded on a lease whose keys were
    /// gone: the Loop's run 1 saw it.) If deleting the keys fails, the lease is put back, to be
    /// expired again.
    fn revoke_if(&self, id: LeaseId, expired_only: bool) -> Result<()> {
        let lease = {
            let mut state = self.lock();
            let lease = state.leases.get(&id).ok_or(Error::LeaseNotFound(id))?;
            if expired_only && lease.deadline > Instant::now() {
                return Ok(());
            }
            state.leases.remove(&id).expect("the lease just read")
        };
        let keys: Vec<&String> = lease.keys.iter().collect();
        // Keys go in batches of the transaction limit; a lease holding more than that is
        // deleted over several revisions.
        let deleted = keys
            .chunks(crate::MAX_TXN_OPS)
            .try_for_each(|chunk| {
                self.apply(Txn::new().and_then(chunk.iter().map(|k| Op::delete(k.as_str())))).map(drop)
            })
            .and_then(|()| {
                let txn = self.db.begin_write().map_err(|e| backend("lease", e))?;
                {
                    let mut leases = txn.open_table(LEASES).map_err(|e| backend("lease", e))?;
                    leases.remove(id).map_err(|e| backend("lease", e))?;
                }
                txn.commit().map_err(|e| backend("lease", e))
            });
        if deleted.is_err() {
            self.lock().leases.insert(id, lease);
        }
        deleted
    }
}

fn delete_event(prev: KeyValue, revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: prev.key.clone(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        },
        prev_kv: Some(prev),
    }
}

/// Revokes leases whose deadline passed. Stops when the store is dropped.
async fn reap_leases(weak: Weak<Inner>, leases_changed: Arc<Notify>) {
    loop {
        // Hold a strong reference only while working, never while sleeping, so that
        // dropping the store ends this task.
        let changed = leases_changed.notified();
        let next_deadline = {
            let Some(inner) = weak.upgrade() else { return };
            let now = Instant::now();
            let expired: Vec<LeaseId> = {
                let state = inner.lock();
                state.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect()
            };
            for id in expired {
                let worker = inner.clone();
                // Renewed meanwhile? Then it is not expired any more.
                let result = tokio::task::spawn_blocking(move || worker.revoke_if(id, true)).await;
                match result {
                    Ok(Ok(())) | Ok(Err(Error::LeaseNotFound(_))) => {}
                    Ok(Err(e)) => tracing::warn!(lease = id, error = %e, "could not expire lease"),
                    Err(e) => tracing::warn!(lease = id, error = %e, "lease expiry task failed"),
                }
            }
            inner.lock().leases.values().map(|l| l.deadline).min()
        };
        // Wake at the next deadline, or when a lease is granted; at least once a second so a
        // dropped store is noticed.
        let wake = next_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = changed => {}
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.range(&prefix)).await
    }

    async fn range_page(&self, request: &PageRequest) -> Result<RangePage> {
        let request = request.clone();
        self.blocking(move |inner| inner.range_page(&request)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.check_size()?;
        self.blocking(move |inner| inner.apply(txn)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (receiver, current, oldest) = {
            let state = self.inner.lock();
            (self.inner.commits.subscribe(), state.revision, state.oldest)
        };
        let from = if from <= 0 { current + 1 } else { from };
        if from < oldest && from <= current {
            return Err(Error::Compacted { requested: from, compact_revision: oldest });
        }
        let watch = Watch {
            inner: self.inner.clone(),
            prefix: prefix.to_string(),
            next: from,
            replay_to: current,
            receiver,
            finished: false,
        };
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            match watch.next_batch().await {
                Ok(Some(batch)) => Some((Ok(batch), watch)),
                Ok(None) => None,
                Err(e) => {
                    // An error ends the stream once it is delivered.
                    watch.finished = true;
                    Some((Err(e), watch))
                }
            }
        })
        .boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::InvalidTtl(ttl));
        }
        self.blocking(move |inner| inner.grant(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let ttl = self.inner.keep_alive(lease)?;
        Ok(ttl)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |inner| inner.revoke(lease)).await
    }
}

/// The state of one watch: replay the log up to `replay_to`, then follow live commits.
struct Watch {
    inner: Arc<Inner>,
    prefix: String,
    /// The next revision to deliver.
    next: Revision,
    /// Revisions up to here are read from the log.
    replay_to: Revision,
    receiver: broadcast::Receiver<Arc<Commit>>,
    finished: bool,
}

impl Watch {
    async fn next_batch(&mut self) -> Result<Option<WatchBatch>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            while self.next <= self.replay_to {
                let from = self.next;
                let to = (from + REPLAY_CHUNK as i64 - 1).min(self.replay_to);
                let oldest = self.inner.lock().oldest;
                if from < oldest {
                    return Err(Error::Compacted { requested: from, compact_revision: oldest });
                }
                let inner = self.inner.clone();
                let prefix = self.prefix.clone();
                let events = tokio::task::spawn_blocking(move || inner.read_log(&prefix, from, to))
                    .await
                    .map_err(|e| backend("watch", e))??;
                self.next = to + 1;
                if !events.is_empty() {
                    return Ok(Some(WatchBatch { events }));
                }
            }
            match self.receiver.recv().await {
                Ok(commit) => {
                    if commit.revision < self.next {
                        continue; // Already replayed from the log.
                    }
                    if commit.revision > self.next {
                        // A gap can only come from lag: fill it from the log.
                        self.replay_to = commit.revision;
                        continue;
                    }
                    self.next = commit.revision + 1;
                    let events: Vec<WatchEvent> =
                        commit.events.iter().filter(|e| e.kv.key.starts_with(&self.prefix)).cloned().collect();
                    if !events.is_empty() {
                        return Ok(Some(WatchBatch { events }));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.replay_to = self.inner.lock().revision;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }
}

// --- encoding -------------------------------------------------------------------------
//
// A record is four little-endian i64 (create revision, mod revision, version, lease)
// followed by the value. A log entry is a u32 count, then per event: kind (u8), whether a
// previous record follows (u8), the key (u32 length + bytes), the record (u32 length +
// bytes) and the previous record if any (same form).

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&kv.value);
    out
}

/// The records under `prefix` in `table`, in key order: the first `limit` (0: all), and
/// whether there were more. `op` names the operation in errors.
fn read_prefix(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    limit: usize,
    op: &str,
) -> Result<(Vec<KeyValue>, bool)> {
    let end = prefix_end(prefix);
    let entries = match &end {
        Some(end) => table.range::<&str>(prefix..end.as_str()),
        None => table.range::<&str>(prefix..),
    }
    .map_err(|e| backend(op, e))?;
    let mut kvs = Vec::new();
    for entry in entries {
        if limit > 0 && kvs.len() == limit {
            return Ok((kvs, true));
        }
        let (key, value) = entry.map_err(|e| backend(op, e))?;
        kvs.push(decode_record(key.value(), value.value())?);
    }
    Ok((kvs, false))
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < 32 {
        return Err(Error::Backend(format!("corrupt record for key {key:?}: {} bytes", bytes.len())));
    }
    let n = |i: usize| i64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: n(0),
        mod_revision: n(1),
        version: n(2),
        lease: n(3),
        value: bytes[32..].to_vec(),
    })
}

fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        out.push(u8::from(event.prev_kv.is_some()));
        put_bytes(&mut out, event.kv.key.as_bytes());
        put_bytes(&mut out, &encode_record(&event.kv));
        if let Some(prev) = &event.prev_kv {
            put_bytes(&mut out, &encode_record(prev));
        }
    }
    out
}

fn decode_events(bytes: &[u8]) -> Result<Vec<WatchEvent>> {
    let corrupt = || Error::Backend("corrupt change log entry".into());
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let slice = bytes.get(*at..*at + n).ok_or_else(corrupt)?;
        *at += n;
        Ok(slice)
    };
    let take_u32 = |at: &mut usize| -> Result<usize> {
        Ok(u32::from_le_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize)
    };
    let take_bytes = |at: &mut usize| -> Result<&[u8]> {
        let len = take_u32(at)?;
        take(at, len)
    };
    let mut at = 0usize;
    let count = take_u32(&mut at)?;
    let mut events = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let header = take(&mut at, 2)?;
        let kind = if header[0] == 0 { EventKind::Put } else { EventKind::Delete };
        let has_prev = header[1] == 1;
        let key = std::str::from_utf8(take_bytes(&mut at)?).map_err(|_| corrupt())?.to_string();
        let kv = decode_record(&key, take_bytes(&mut at)?)?;
        let prev_kv = if has_prev { Some(decode_record(&key, take_bytes(&mut at)?)?) } else { None };
        events.push(WatchEvent { kind, kv, prev_kv });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_log_entries_round_trip() {
        let kv = |key: &str, value: &[u8], rev| KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            lease: 7,
        };
        let events = vec![
            WatchEvent { kind: EventKind::Put, kv: kv("/a", b"one", 5), prev_kv: None },
            WatchEvent { kind: EventKind::Put, kv: kv("/b", b"two", 5), prev_kv: Some(kv("/b", b"", 4)) },
            delete_event(kv("/c", b"three", 4), 5),
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
        assert!(decode_events(&encode_events(&events)[..10]).is_err());
    }
}
