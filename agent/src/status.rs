//! The agent's status writer: every change of an instance's status goes through it, and it
//! writes whatever is pending in one transaction (at most [`baton_store::MAX_TXN_OPS`] keys;
//! the latest change of a key wins). Deletes go through it too, so a status put that is
//! still pending can never bring back a status that was deleted after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use baton_api::StatusRecord;
use baton_store::{Op, Store, Txn};

/// A pending change of one status key: the new status, or `None` to delete it.
type Change = (String, Option<StatusRecord>);

/// How long the writer keeps retrying after its last sender is gone (the agent stopping).
const FINAL_RETRY: Duration = Duration::from_secs(30);

/// Sends status changes to the writer task.
#[derive(Clone)]
pub struct StatusWriter {
    changes: mpsc::UnboundedSender<Change>,
}

impl StatusWriter {
    /// Starts the writer task; it ends once every `StatusWriter` is dropped and what was
    /// sent is written.
    pub fn start(store: Arc<dyn Store>) -> (Self, JoinHandle<()>) {
        let (changes, pending) = mpsc::unbounded_channel();
        (Self { changes }, tokio::spawn(write_batches(store, pending)))
    }

    pub fn put(&self, key: String, status: &StatusRecord) {
        let _ = self.changes.send((key, Some(status.clone())));
    }

    pub fn delete(&self, key: String) {
        let _ = self.changes.send((key, None));
    }
}

async fn write_batches(store: Arc<dyn Store>, mut pending: mpsc::UnboundedReceiver<Change>) {
    while let Some((key, change)) = pending.recv().await {
        let mut batch: BTreeMap<String, Option<StatusRecord>> = BTreeMap::from([(key, change)]);
        while batch.len() < baton_store::MAX_TXN_OPS {
            match pending.try_recv() {
                Ok((key, change)) => _ = batch.insert(key, change),
                Err(_) => break,
            }
        }
        let ops: Vec<Op> = batch
            .into_iter()
            .map(|(key, change)| match change {
                Some(status) => Op::put(key, serde_json::to_vec(&status).expect("a status serializes")),
                None => Op::delete(key),
            })
            .collect();
        write(&store, ops, &pending).await;
    }
}

/// Writes one batch, retrying while the store is unavailable (bounded once the agent is
/// stopping, so a dead store cannot hold the stop forever).
async fn write(store: &Arc<dyn Store>, ops: Vec<Op>, pending: &mpsc::UnboundedReceiver<Change>) {
    let mut delay = Duration::from_millis(100);
    let mut stopping_since = None;
    loop {
        match store.txn(Txn::new().and_then(ops.iter().cloned())).await {
            Ok(_) => return,
            Err(e) => {
                if pending.is_closed() {
                    let since = *stopping_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > FINAL_RETRY {
                        tracing::error!(statuses = ops.len(), error = %e, "giving up writing statuses at shutdown");
                        return;
                    }
                }
                tracing::warn!(statuses = ops.len(), error = %e, "could not write statuses; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_api::Phase;
    use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};

    #[tokio::test]
    async fn changes_are_batched_and_the_last_change_of_a_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap());
        let before = baton_store::StoreExt::current_revision(store.as_ref()).await.unwrap();
        let (writer, task) = StatusWriter::start(store.clone());
        for i in 0..300 {
            writer.put(format!("/s/{i}"), &StatusRecord::new(Phase::Staging));
            writer.put(format!("/s/{i}"), &StatusRecord::new(Phase::Running));
        }
        writer.delete("/s/0".into());
        drop(writer);
        task.await.unwrap();
        let written = store.range("/s/").await.unwrap();
        assert_eq!(written.kvs.len(), 299);
        let status: StatusRecord = serde_json::from_slice(&written.kvs[0].value).unwrap();
        assert_eq!(status.phase, Phase::Running);
        let transactions = written.revision - before;
        assert!(transactions <= 10, "601 changes of 300 keys took {transactions} transactions");
    }
}
