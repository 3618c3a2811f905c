//! Leader election and fencing, built from the [`Store`] trait alone.
//!
//! A candidate holds a lease and tries to create the election key (`/baton/leader/<scope>`)
//! attached to it; whoever creates it leads until the key goes away (the leader resigns, or
//! its lease expires because it stopped renewing it). The key's create revision identifies
//! one term of one leader: every write of the leader carries
//! `Compare(CreateRevision(key) == term)` — the [`Leadership::fence`] — so a deposed leader's
//! writes fail even if it has not noticed yet that it was deposed (etcd's `concurrency`
//! package does the same).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Compare, EventKind, LeaseId, Op, OpResponse, Result, Revision, Store, Txn};

/// A won election: proof of leadership for one term.
pub struct Leadership {
    store: Arc<dyn Store>,
    key: String,
    term: Revision,
    lease: LeaseId,
    predecessor_gone_at: Option<std::time::Instant>,
    lost: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// The compare every write of this leader must carry.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(self.key.clone(), self.term)
    }

    /// The election key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The create revision of the election key: this term's number.
    pub fn term(&self) -> Revision {
        self.term
    }

    /// When this candidate saw the previous leader's key go (its lease expired or it
    /// resigned), if it had to wait for one: where a failover starts.
    pub fn predecessor_gone_at(&self) -> Option<std::time::Instant> {
        self.predecessor_gone_at
    }

    /// Whether leadership is known to be lost (lease expired, key deleted or replaced).
    /// Fenced writes fail from the moment it is lost, even before this says so.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Completes when leadership is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the watchers ended, which only happens once leadership is over.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Gives leadership up now: deletes the election key (fenced) and revokes the lease.
    pub async fn resign(self) -> Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        let txn = Txn::new().when([self.fence()]).and_then([Op::delete(self.key.clone())]);
        self.store.txn(txn).await?;
        self.store.revoke_lease(self.lease).await
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Campaigns for `key` as `id` until elected. `ttl` bounds how long leadership outlives a
/// leader that stopped renewing it. Waits while someone else leads.
pub async fn campaign(store: Arc<dyn Store>, key: &str, id: &str, ttl: Duration) -> Result<Leadership> {
    let lease = store.grant_lease(ttl).await?;
    let (lost_tx, lost_rx) = watch::channel(false);
    let lost_tx = Arc::new(lost_tx);
    let keep_alive = tokio::spawn(keep_lease_alive(store.clone(), lease, ttl, lost_tx.clone()));
    let mut predecessor_gone_at = None;
    let term = loop {
        let txn = Txn::new()
            .when([Compare::absent(key)])
            .and_then([Op::put_with_lease(key, id.as_bytes(), lease)])
            .or_else([Op::get(key)]);
        let response = match store.txn(txn).await {
            Ok(response) => response,
            Err(e) => {
                keep_alive.abort();
                let _ = store.revoke_lease(lease).await;
                return Err(e);
            }
        };
        if response.succeeded {
            break response.revision;
        }
        let Some(OpResponse::Get(Some(current))) = response.responses.into_iter().next() else {
            continue; // Deleted between the compare and the read: try again.
        };
        tracing::info!(key, leader = %String::from_utf8_lossy(&current.value), "waiting for the current leader to go");
        wait_for_delete(store.as_ref(), key, current.mod_revision + 1).await?;
        predecessor_gone_at = Some(std::time::Instant::now());
    };
    let watcher = tokio::spawn(watch_term(store.clone(), key.to_string(), term, lost_tx));
    Ok(Leadership {
        store,
        key: key.to_string(),
        term,
        lease,
        predecessor_gone_at,
        lost: lost_rx,
        tasks: vec![keep_alive, watcher],
    })
}

/// Waits until `key` is deleted, watching from `from`.
async fn wait_for_delete(store: &dyn Store, key: &str, from: Revision) -> Result<()> {
    let mut watch = store.watch_current(key, from).await?;
    while let Some(batch) = watch.next().await {
        if batch?.events.iter().any(|e| e.kv.key == key && e.kind == EventKind::Delete) {
            return Ok(());
        }
    }
    Ok(())
}

/// Renews the lease at a third of its TTL. Declares leadership lost once renewing has failed
/// for a whole TTL, or the store says the lease is gone.
async fn keep_lease_alive(store: Arc<dyn Store>, lease: LeaseId, ttl: Duration, lost: Arc<watch::Sender<bool>>) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.keep_alive(lease).await {
            Ok(_) => last_renewed = Instant::now(),
            Err(crate::Error::LeaseNotFound(_)) => {
                tracing::warn!(lease, "election lease expired");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                tracing::warn!(lease, error = %e, "could not renew the election lease");
                if last_renewed.elapsed() >= ttl {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

/// Declares leadership lost when the election key is deleted or re-created.
async fn watch_term(store: Arc<dyn Store>, key: String, term: Revision, lost: Arc<watch::Sender<bool>>) {
    let mut watch = match store.watch_current(&key, term + 1).await {
        Ok(watch) => watch,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot watch the election key; giving leadership up");
            let _ = lost.send(true);
            return;
        }
    };
    while let Some(batch) = watch.next().await {
        let over = match batch {
            Ok(batch) => batch.events.iter().any(|e| e.kind == EventKind::Delete || e.kv.create_revision != term),
            Err(e) => {
                tracing::warn!(key, error = %e, "election watch failed; giving leadership up");
                true
            }
        };
        if over {
            let _ = lost.send(true);
            return;
        }
    }
    let _ = lost.send(true);
}
