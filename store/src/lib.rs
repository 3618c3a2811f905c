//! The revisioned key-value store every part of Baton shares.
//!
//! The [`Store`] trait is etcd's data model, cut to what Baton needs: every change bumps a
//! global revision; each key remembers the revision that created it and the one that last
//! modified it; transactions apply all-or-nothing behind compares on those revisions (which
//! is how a leader fences its writes and the API server does optimistic concurrency);
//! watches replay every change after a revision and then stream; leases expire keys whose
//! owner stopped renewing them (how a dead agent disappears).
//!
//! Two backends implement it: [`embedded::EmbeddedStore`] (in process, persisted with redb,
//! for `baton dev`) and [`etcd::EtcdStore`] for production. Both must pass the same [`contract`] suite.
//! [`keys`] is the typed keyspace on top, and [`election`] the leader election and fencing
//! built from the trait alone.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

#[cfg(feature = "contract")]
pub mod contract;
pub mod election;
pub mod embedded;
pub mod etcd;
pub mod etcd_auth;
mod etcd_group;
pub mod keys;
pub mod wire;

pub use keys::Keyspace;

/// A store revision: a counter bumped by every change. 0 means "none" (a key that does not
/// exist has create and mod revision 0).
pub type Revision = i64;

/// A lease id; keys attached to a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// The most operations one transaction may hold in each branch (etcd's default limit).
pub const MAX_TXN_OPS: usize = 128;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "wire::bytes")]
    pub value: Vec<u8>,
    /// Revision of the change that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the change that last wrote this key.
    pub mod_revision: Revision,
    /// Writes since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareTarget {
    /// The key's create revision; 0 when the key does not exist.
    CreateRevision(Revision),
    /// The key's mod revision; 0 when the key does not exist.
    ModRevision(Revision),
    /// The key's version; 0 when the key does not exist.
    Version(i64),
    /// The key's value (a missing key never compares equal).
    Value(#[serde(with = "wire::bytes")] Vec<u8>),
}

/// How a compare compares (the key's attribute on the left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(0) }
    }

    /// The key was last written at `revision` (0: it does not exist).
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(revision) }
    }

    /// The key was created at `revision`: the fence of a leader whose key was created then.
    pub fn create_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(revision) }
    }

    /// Whether `kv` (None: the key does not exist) satisfies this compare.
    pub fn matches(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ordering = match &self.target {
            CompareTarget::CreateRevision(r) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
            CompareTarget::Value(v) => match kv {
                // etcd: a value compare on a missing key is false whatever the operator.
                None => return false,
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            },
        };
        match self.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::Less => ordering == Ordering::Less,
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Write `value` at `key`, attached to `lease` (0: none).
    Put {
        key: String,
        #[serde(with = "wire::bytes")]
        value: Vec<u8>,
        lease: LeaseId,
    },
    /// Delete `key` if it exists.
    Delete { key: String },
    /// Delete every key that starts with `prefix`.
    DeletePrefix { prefix: String },
    /// Read `key` as of this transaction.
    Get { key: String },
    /// Read the first `limit` keys (0: all) that start with `prefix`, as of this transaction:
    /// several reads in one request see one revision, and cost the store one read (etcd
    /// copies its buffer of uncommitted writes once per read request).
    Range { prefix: String, limit: usize },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put { key: key.into(), value: value.into(), lease: 0 }
    }

    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        Op::Put { key: key.into(), value: value.into(), lease }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }

    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        Op::DeletePrefix { prefix: prefix.into() }
    }

    pub fn get(key: impl Into<String>) -> Self {
        Op::Get { key: key.into() }
    }

    pub fn range(prefix: impl Into<String>, limit: usize) -> Self {
        Op::Range { prefix: prefix.into(), limit }
    }
}

/// The result of one operation, in the order of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OpResponse {
    Put,
    /// How many keys were deleted.
    Delete(i64),
    Get(Option<KeyValue>),
    /// The keys of an [`Op::Range`], in key order; `more`: there were keys past `limit`.
    Range {
        kvs: Vec<KeyValue>,
        more: bool,
    },
}

/// An etcd-style transaction: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Checks the per-branch operation limit before anything is sent.
    pub fn check_size(&self) -> Result<()> {
        let largest = self.success.len().max(self.failure.len()).max(self.compares.len());
        if largest > MAX_TXN_OPS {
            return Err(Error::TooManyOps { ops: largest, max: MAX_TXN_OPS });
        }
        Ok(())
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnResponse {
    /// Whether every compare held (and `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction: that of every key it wrote. One that wrote
    /// nothing may be told a later revision than its read (etcd: the revision of the request
    /// it went in with others), never an earlier one; what it read did not change between.
    pub revision: Revision,
    /// One response per operation of the branch that ran.
    pub responses: Vec<OpResponse>,
}

/// The keys under a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The store revision the range was read at; watch from `revision + 1` to see every
    /// later change.
    pub revision: Revision,
}

/// Which page of a prefix to read.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PageRequest {
    pub prefix: String,
    /// Start after this key (the last key of the previous page); `None`: from the start.
    pub after: Option<String>,
    /// At most this many keys; 0 for all.
    pub limit: usize,
    /// Read as of this revision (that of the first page, so that every page is one
    /// consistent view); `None`: the current revision.
    pub revision: Option<Revision>,
}

/// One page of keys under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Whether keys follow the page's last key.
    pub more: bool,
}

/// Whether a watch event wrote or deleted its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// After the change. For a delete: the key, an empty value, and `mod_revision` = the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// The changes a watch delivers at once, in revision order. Changes of one transaction are
/// never split across batches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchBatch {
    pub events: Vec<WatchEvent>,
}

/// A watch: batches of changes until an error ends it.
pub type WatchStream = BoxStream<'static, Result<WatchBatch>>;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The history before `compact_revision` is gone; re-read with a range and watch from its
    /// revision. (`compact_revision` is 0 when the backend did not say.)
    #[error("revision {requested} has been compacted{}", kept_from(*.compact_revision))]
    Compacted { requested: Revision, compact_revision: Revision },
    #[error("lease {0} not found (it expired or was revoked)")]
    LeaseNotFound(LeaseId),
    #[error("a transaction branch holds {ops} operations; at most {max} are allowed")]
    TooManyOps { ops: usize, max: usize },
    #[error("lease TTL must be at least 1 second, got {0:?}")]
    InvalidTtl(Duration),
    #[error("store data dir {path}: {message}")]
    Open { path: String, message: String },
    #[error("store backend: {0}")]
    Backend(String),
    #[error("the store is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn kept_from(compact_revision: Revision) -> String {
    if compact_revision > 0 { format!("; the oldest revision kept is {compact_revision}") } else { String::new() }
}

/// A revisioned key-value store with transactions, watches and leases (see the crate docs).
///
/// Keys are UTF-8 strings under the installation's prefix; values are bytes (JSON by
/// convention). Every method is cancel-safe from the caller's side: a dropped future either
/// applied its transaction completely or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, at one revision.
    async fn range(&self, prefix: &str) -> Result<RangeResponse>;

    /// One page of the keys under a prefix, in key order. Reading an older revision than the
    /// kept history yields [`Error::Compacted`].
    async fn range_page(&self, request: &PageRequest) -> Result<RangePage>;

    /// Applies a transaction atomically. A branch that only reads does not bump the revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams every change of a key under `prefix` from revision `from` on (inclusive):
    /// first the recorded history, then live changes. `from` older than the kept history
    /// yields [`Error::Compacted`]. `from = 0` starts after the current revision.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// As [`Store::watch`], without the values before each change (`prev_kv` is always
    /// `None`): for a follower of the current values (a cache, an agent), at a fraction of
    /// etcd's cost. etcd reads the previous value of every update and delete for a watch
    /// that asks for it, and in etcd 3.4 each such read copies its whole buffer of writes not
    /// yet committed: with five such watches over 10,000 instances, those reads were 85 % of
    /// etcd's CPU and held the cluster to 300 launches/s.
    async fn watch_current(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        use futures::StreamExt;
        let stream = self.watch(prefix, from).await?;
        Ok(stream
            .map(|batch| {
                batch.map(|mut batch| {
                    batch.events.iter_mut().for_each(|event| event.prev_kv = None);
                    batch
                })
            })
            .boxed())
    }

    /// Grants a lease that expires `ttl` after the last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease for its full TTL; returns the TTL. [`Error::LeaseNotFound`] once it has
    /// expired: the caller's keys are gone and it must start over.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes a lease now, deleting every key attached to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
}

/// Conveniences built from the trait's primitives.
#[async_trait]
pub trait StoreExt: Store {
    /// Writes one key unconditionally; returns the revision of the write.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        Ok(self.txn(Txn::new().and_then([Op::put(key, value)])).await?.revision)
    }

    /// Deletes one key unconditionally; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool> {
        let response = self.txn(Txn::new().and_then([Op::delete(key)])).await?;
        Ok(matches!(response.responses.first(), Some(OpResponse::Delete(n)) if *n > 0))
    }

    /// Every key under `prefix` as of `revision` (`None`: now), read a page at a time at
    /// that one revision.
    async fn range_at(&self, prefix: &str, revision: Option<Revision>) -> Result<RangeResponse> {
        const PAGE: usize = 10_000;
        let mut request = PageRequest { prefix: prefix.to_string(), after: None, limit: PAGE, revision };
        let mut kvs = Vec::new();
        loop {
            let page = self.range_page(&request).await?;
            request.revision = Some(page.revision);
            request.after = page.kvs.last().map(|kv| kv.key.clone());
            kvs.extend(page.kvs);
            if !page.more || request.after.is_none() {
                return Ok(RangeResponse { kvs, revision: page.revision });
            }
        }
    }

    /// The current revision of the store.
    async fn current_revision(&self) -> Result<Revision> {
        // A read-only transaction returns the revision without changing anything.
        Ok(self.txn(Txn::new()).await?.revision)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The secret at `key`: 32 random bytes, made by whichever part of Baton needs it first, the
/// same for all of them after.
pub async fn secret(store: &dyn Store, key: &str) -> Result<Vec<u8>> {
    use rand::Rng;
    let mut rng = rand::rng();
    get_or_create(store, key, (0..32).map(|_| rng.random::<u8>()).collect()).await
}

/// The value at `key`, first written as `fresh` if the key does not exist.
pub async fn get_or_create(store: &dyn Store, key: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
    let txn = Txn::new().when([Compare::absent(key)]).and_then([Op::put(key, fresh.clone())]).or_else([Op::get(key)]);
    let response = store.txn(txn).await?;
    if response.succeeded {
        return Ok(fresh);
    }
    match response.responses.into_iter().next() {
        Some(OpResponse::Get(Some(kv))) => Ok(kv.value),
        _ => Err(Error::Backend(format!("{key} was neither absent nor readable"))),
    }
}

/// The smallest prefix range that holds every key starting with `prefix`: used by backends
/// that scan ordered keys.
pub fn prefix_end(prefix: &str) -> Option<String> {
    // Keys are UTF-8 strings; incrementing the last char keeps the bound a valid string.
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(create: Revision, modr: Revision) -> KeyValue {
        KeyValue {
            key: "k".into(),
            value: b"v".to_vec(),
            create_revision: create,
            mod_revision: modr,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn compares_on_missing_and_present_keys() {
        assert!(Compare::absent("k").matches(None));
        assert!(!Compare::absent("k").matches(Some(&kv(3, 3))));
        assert!(Compare::mod_revision("k", 5).matches(Some(&kv(3, 5))));
        assert!(!Compare::mod_revision("k", 4).matches(Some(&kv(3, 5))));
        assert!(Compare::create_revision("k", 3).matches(Some(&kv(3, 5))));
        let value_eq = Compare { key: "k".into(), op: CompareOp::Equal, target: CompareTarget::Value(b"v".to_vec()) };
        assert!(value_eq.matches(Some(&kv(1, 1))));
        assert!(!value_eq.matches(None));
        let greater = Compare { key: "k".into(), op: CompareOp::Greater, target: CompareTarget::ModRevision(4) };
        assert!(greater.matches(Some(&kv(1, 5))));
        assert!(!greater.matches(None));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("/baton/apps/").as_deref(), Some("/baton/apps0"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }
}
