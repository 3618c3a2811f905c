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

use std::collections::HashMap;
use std::sync::Arc;

use baton_store::{Compare, KeyValue, Keyspace, Op, OpResponse, Store, Txn};
use serde_json::Value;

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
