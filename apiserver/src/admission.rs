//! Admission checks: what a kind declares ([`crate::kinds::Kind::admission`]) to check a
//! write against other stored objects — a dependency graph without cycles, a tenant's
//! quota — beyond the object's own validation. The generic write path runs a kind's checks
//! inside its read-modify-write loop and knows nothing of what they check.
//!
//! A check either refuses the write (an error naming the field and the value) or lets it
//! through with a [`Guard`]: compares and operations that go into the write's own
//! transaction, so that two concurrent writes that are each fine alone but not together
//! cannot both land — the second finds a guard key moved and is checked again.
//!
//! A check declares what it reads ([`Admission::reads`]) before any check runs: the write
//! path reads all of it in one store request, at one revision (etcd 3.4 copies its buffer of
//! uncommitted writes for every read request; an App's create read the store five times).
//! Concurrent writes share that request ([`SharedReads`]): one read, started after each of
//! them arrived, serves them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_store::{Compare, KeyValue, Keyspace, Op, OpResponse, Store, Txn};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use crate::metrics::AdmissionReads;
use crate::status::{ApiResult, Target};

/// What a check adds to the write's transaction.
#[derive(Debug, Default)]
pub struct Guard {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// One write under check.
pub struct Proposed<'a> {
    /// The object written, for errors.
    pub target: Target<'a>,
    pub namespace: Option<&'a str>,
    /// The object as stored now (`None` for a create).
    pub before: Option<&'a Value>,
    /// The object as it would be stored.
    pub after: &'a Value,
}

impl Proposed<'_> {
    /// Whether the write changes what `shape` takes of the object (a create always does).
    pub fn changes(&self, shape: impl Fn(&Value) -> Value) -> bool {
        self.before.is_none_or(|before| shape(before) != shape(self.after))
    }
}

/// A read a check makes of the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Read {
    Key(String),
    /// Every key that starts with it.
    Prefix(String),
}

/// Keys a prefix read in one request may hold; a larger prefix is read by pages, on its own.
const PREFIX_KEYS: usize = 1000;

/// What was read for one write's checks, in one request at one revision.
#[derive(Debug, Default)]
pub struct Reads {
    keys: HashMap<String, Option<KeyValue>>,
    prefixes: HashMap<String, Vec<KeyValue>>,
}

impl Reads {
    /// Reads `reads` in one transaction (none when there is nothing to read).
    pub async fn of(store: &dyn Store, reads: &[Read]) -> baton_store::Result<Self> {
        let mut read = Reads::default();
        if reads.is_empty() {
            return Ok(read);
        }
        let ops = reads.iter().map(|r| match r {
            Read::Key(key) => Op::get(key),
            Read::Prefix(prefix) => Op::range(prefix, PREFIX_KEYS),
        });
        let response = store.txn(Txn::new().and_then(ops)).await?;
        for (asked, answer) in reads.iter().zip(response.responses) {
            match (asked, answer) {
                (Read::Key(key), OpResponse::Get(kv)) => _ = read.keys.insert(key.clone(), kv),
                // A prefix larger than one request holds is read again by whoever asks for it.
                (Read::Prefix(prefix), OpResponse::Range { kvs, more: false }) => {
                    _ = read.prefixes.insert(prefix.clone(), kvs)
                }
                _ => {}
            }
        }
        Ok(read)
    }

    /// `key` as read, if it was.
    pub fn key(&self, key: &str) -> Option<Option<&KeyValue>> {
        self.keys.get(key).map(Option::as_ref)
    }
}

/// Reads one request's prefixes and keys together with the distinct reads of others'
/// waiting at the same time — at most this many in all…
const SHARED_READS: usize = 64;
/// …and at most this many prefixes (each up to [`PREFIX_KEYS`] keys).
const SHARED_PREFIXES: usize = 4;

/// The admission reads of concurrent writes, made together (group commit, for reads): a
/// write's reads wait while a read is in flight, and the next read, one store request at
/// one revision, serves every write that waited. Each write's read still starts after it
/// arrived, so it sees every write that finished before — what a read of its own would see.
/// (2,000 creates sent 16 at a time read the store a few hundred times, not 2,000.)
pub struct SharedReads {
    store: Arc<dyn Store>,
    state: Arc<Mutex<Waiting>>,
    counted: AdmissionReads,
}

#[derive(Default)]
struct Waiting {
    /// A task is reading for the waiting writes.
    flying: bool,
    writes: Vec<(Vec<Read>, Answer)>,
}

/// Where a waiting write is told what was read for it (`None`: the shared read failed).
type Answer = tokio::sync::oneshot::Sender<Option<Arc<Reads>>>;

impl SharedReads {
    /// Reads from `store`, counting into `counted`.
    pub fn new(store: Arc<dyn Store>, counted: AdmissionReads) -> Self {
        SharedReads { store, state: Default::default(), counted }
    }

    /// Reads `reads` (and maybe more) in a request that starts after this call; a store
    /// error is that of a request of `reads` alone.
    pub async fn read(&self, reads: Vec<Read>) -> baton_store::Result<Arc<Reads>> {
        if reads.is_empty() {
            return Ok(Arc::default());
        }
        self.counted.writes.inc();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start = {
            let mut waiting = self.state.lock().unwrap_or_else(|p| p.into_inner());
            waiting.writes.push((reads.clone(), answer));
            !std::mem::replace(&mut waiting.flying, true)
        };
        if start {
            // In a task of its own: a request dropped (its client gone) stops no one's read.
            tokio::spawn(fly(self.store.clone(), self.state.clone(), self.counted.requests.clone()));
        }
        match answered.await {
            Ok(Some(read)) => Ok(read),
            // The shared read failed (or its task ended): this write's own read says why.
            _ => {
                self.counted.requests.inc();
                Ok(Arc::new(Reads::of(self.store.as_ref(), &reads).await?))
            }
        }
    }
}

/// Reads for the waiting writes, a batch at a time, until none waits.
async fn fly(store: Arc<dyn Store>, state: Arc<Mutex<Waiting>>, requests: Counter) {
    let _unwinding = Unwinding(state.clone());
    loop {
        let (writes, all) = {
            let mut waiting = state.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.writes.is_empty() {
                waiting.flying = false;
                return;
            }
            let (taken, all) = batch(waiting.writes.iter().map(|(reads, _)| reads.as_slice()));
            let all: Vec<Read> = all.into_iter().cloned().collect();
            (waiting.writes.drain(..taken).collect::<Vec<_>>(), all)
        };
        requests.inc();
        let read = Reads::of(store.as_ref(), &all).await.ok().map(Arc::new);
        for (_, answer) in writes {
            // A write that stopped waiting has nothing to be told.
            let _ = answer.send(read.clone());
        }
    }
}

/// If [`fly`] panics: no read is in flight any more, and the writes waiting for one read for
/// themselves (their answers dropped), rather than wait for a read no task will make.
struct Unwinding(Arc<Mutex<Waiting>>);

impl Drop for Unwinding {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
            waiting.flying = false;
            waiting.writes.clear();
        }
    }
}

/// How many of the waiting writes, first come first, one request reads for — the first
/// always, then each whose reads keep the union within [`SHARED_READS`] and
/// [`SHARED_PREFIXES`] — and that union, each read once.
fn batch<'a>(waiting: impl Iterator<Item = &'a [Read]>) -> (usize, Vec<&'a Read>) {
    let mut union: Vec<&Read> = Vec::new();
    let mut taken = 0;
    for reads in waiting {
        let mut next = union.clone();
        for read in reads {
            if !next.contains(&read) {
                next.push(read);
            }
        }
        let prefixes = next.iter().filter(|r| matches!(r, Read::Prefix(_))).count();
        if taken > 0 && (next.len() > SHARED_READS || prefixes > SHARED_PREFIXES) {
            break;
        }
        union = next;
        taken += 1;
    }
    (taken, union)
}

/// What a check reads the other objects from: what was read for the write, else the store.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a Keyspace,
    /// `None`: read everything from the store.
    pub read: Option<&'a Reads>,
}

impl Context<'_> {
    /// The same context reading everything from the store, now: for what must be read after
    /// a guard key (what was read with the write may be older than it).
    pub fn fresh(&self) -> Self {
        Context { read: None, ..*self }
    }

    /// `key`, as read for the write (or from the store, if no check declared it).
    pub async fn get(&self, key: &str) -> baton_store::Result<Option<KeyValue>> {
        match self.read.and_then(|read| read.key(key)) {
            Some(kv) => Ok(kv.cloned()),
            None => self.store.get(key).await,
        }
    }

    /// Every key under `prefix`, as read for the write (or from the store).
    pub async fn range(&self, prefix: &str) -> baton_store::Result<Vec<KeyValue>> {
        match self.read.and_then(|read| read.prefixes.get(prefix)) {
            Some(kvs) => Ok(kvs.clone()),
            None => Ok(self.store.range(prefix).await?.kvs),
        }
    }
}

/// A check of writes of one kind.
#[async_trait::async_trait]
pub trait Admission: Send + Sync {
    /// What [`Admission::admit`] reads first for `write`: nothing when the write changes
    /// nothing the check looks at. (It may read more after, from what it found.)
    fn reads(&self, keys: &Keyspace, write: &Proposed<'_>) -> Vec<Read>;

    /// Refuses `write` (an [`crate::status::ApiError`]), or lets it through with a guard;
    /// `None` when the write changes nothing the check looks at.
    async fn admit(&self, context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Option<Guard>>;
}

/// What `checks` read first for `write`, with `also`, each once.
pub fn reads(checks: &[Arc<dyn Admission>], keys: &Keyspace, write: &Proposed<'_>, also: Vec<Read>) -> Vec<Read> {
    let mut all = also;
    for read in checks.iter().flat_map(|check| check.reads(keys, write)) {
        if !all.contains(&read) {
            all.push(read);
        }
    }
    all
}

/// Runs `checks` in order; the first refusal refuses the write, the guards add up.
pub async fn admit(checks: &[Arc<dyn Admission>], context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Guard> {
    let mut all = Guard::default();
    for check in checks {
        if let Some(guard) = check.admit(context, write).await? {
            all.compares.extend(guard.compares);
            all.ops.extend(guard.ops);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::StoreExt;
    use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};

    fn key(k: &str) -> Read {
        Read::Key(k.to_string())
    }

    fn prefix(p: &str) -> Read {
        Read::Prefix(p.to_string())
    }

    #[test]
    fn a_shared_read_takes_writes_first_come_while_their_reads_fit() {
        let same = [key("/ns/default"), key("/graph"), prefix("/appgroups/"), prefix("/tenants/")];
        assert_eq!(batch(std::iter::repeat_n(same.as_slice(), 16)).0, 16, "the same reads share one request");
        let others: Vec<Vec<Read>> = (0..6).map(|i| vec![prefix(&format!("/apps/{i}/"))]).collect();
        assert_eq!(batch(others.iter().map(Vec::as_slice)).0, SHARED_PREFIXES, "prefixes are capped");
        let many: Vec<Vec<Read>> = (0..100).map(|i| vec![key(&format!("/k/{i}"))]).collect();
        assert_eq!(batch(many.iter().map(Vec::as_slice)).0, SHARED_READS, "reads are capped");
        let huge: Vec<Read> = (0..200).map(|i| key(&format!("/k/{i}"))).collect();
        let waiting = [huge.as_slice(), &same[..1]];
        assert_eq!(batch(waiting.into_iter()).0, 1, "the first write is read for, whatever it reads");
        assert_eq!(batch(std::iter::empty()).0, 0);
    }

    /// Each write's reads see every store write that finished before it asked, while other
    /// writes' reads keep a shared read in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_read_sees_what_was_written_before_it_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap());
        let counted = AdmissionReads::default();
        let shared = Arc::new(SharedReads::new(store.clone(), counted.clone()));
        let mut readers = Vec::new();
        for r in 0..8 {
            let (shared, store) = (shared.clone(), store.clone());
            readers.push(tokio::spawn(async move {
                let mine = format!("/counter/{r}");
                for i in 0..100u32 {
                    store.put(&mine, i.to_string().into_bytes()).await.unwrap();
                    let read = shared.read(vec![key(&mine), key("/counter/0"), prefix("/counter/")]).await.unwrap();
                    let seen = read.key(&mine).flatten().map(|kv| String::from_utf8_lossy(&kv.value).to_string());
                    assert_eq!(seen.as_deref(), Some(i.to_string().as_str()), "reader {r}'s write {i}");
                    assert_eq!(read.prefixes["/counter/"].iter().filter(|kv| kv.key == mine).count(), 1);
                }
            }));
        }
        for reader in readers {
            reader.await.unwrap();
        }
        let (writes, requests) = (counted.writes.get(), counted.requests.get());
        assert_eq!(writes, 800);
        assert!(requests < writes, "{requests} store requests for {writes} writes' reads: none shared");
        let nothing = shared.read(Vec::new()).await.unwrap();
        assert_eq!(nothing.key("/counter/0"), None, "no reads, nothing read");
    }
}
