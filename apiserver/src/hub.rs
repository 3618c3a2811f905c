//! One store watch per stored kind, shared by every client watch of it (Kubernetes' watch
//! cache, cut down): each change is read and parsed once, kept in a ring of recent changes,
//! and fanned out; the JSON line of each event is encoded once for every watcher that
//! sends JSON. A client watch that starts from a revision still in the ring is served from
//! memory; an older one gets a store watch of its own (which replays or answers 410).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use baton_store::{EventKind, Revision, Store, WatchEvent};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::objects::object_of;

/// Recent changes kept per kind.
const RING: usize = 4096;
/// Changes a watcher may fall behind before its watch is closed (it resumes from the last
/// revision it saw, from the ring).
const LAG: usize = 4096;

/// One change of one stored object, parsed.
pub struct Change {
    pub revision: Revision,
    /// The object before the change (absent when created).
    pub before: Option<Value>,
    /// The object after the change (absent when deleted).
    pub after: Option<Value>,
    /// The JSON watch line for ADDED, MODIFIED and DELETED, each encoded once.
    lines: [OnceLock<Bytes>; 3],
}

impl Change {
    fn of(event: &WatchEvent) -> Option<Self> {
        let before = event.prev_kv.as_ref().and_then(|kv| object_of(kv).ok());
        let after = match event.kind {
            EventKind::Put => Some(object_of(&event.kv).ok()?),
            EventKind::Delete => None,
        };
        Some(Change { revision: event.revision(), before, after, lines: Default::default() })
    }

    /// What a watcher is sent for this change as `type_`: the object after it, or for a
    /// deletion the object before it, at the revision of the deletion.
    pub fn object(&self, type_: &str) -> Option<Value> {
        if type_ == "DELETED" {
            let mut before = self.before.clone().or_else(|| self.after.clone())?;
            before["metadata"]["resourceVersion"] = json!(self.revision.to_string());
            Some(before)
        } else {
            self.after.clone()
        }
    }

    /// The JSON line of this change as `type_`, encoded on first use.
    pub fn json_line(&self, type_: &str, encode: impl FnOnce(&Value) -> Bytes) -> Option<Bytes> {
        let slot = match type_ {
            "ADDED" => &self.lines[0],
            "MODIFIED" => &self.lines[1],
            _ => &self.lines[2],
        };
        if let Some(line) = slot.get() {
            return Some(line.clone());
        }
        let line = encode(&self.object(type_)?);
        Some(slot.get_or_init(|| line).clone())
    }
}

struct State {
    ring: VecDeque<Arc<Change>>,
    /// The ring holds every change after this revision.
    complete_after: Revision,
    /// The last revision the hub has seen.
    latest: Revision,
}

/// The shared watch of one key prefix.
pub struct Hub {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Change>>,
}

/// What a new client watch is given: the changes from its revision that the ring holds,
/// and the live ones after them.
pub struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

impl Hub {
    /// Subscribes a watch that wants every change from `from` on; `None` when the ring no
    /// longer holds all of them.
    pub fn subscribe(&self, from: Revision) -> Option<Subscription> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        if from > state.latest {
            return Some(Subscription { replay: Vec::new(), live });
        }
        (from > state.complete_after)
            .then(|| Subscription { replay: state.ring.iter().filter(|c| c.revision >= from).cloned().collect(), live })
    }
}

/// The hubs of a server, by key prefix.
#[derive(Default)]
pub struct Hubs {
    hubs: Arc<Mutex<HashMap<String, Arc<Hub>>>>,
}

impl Hubs {
    /// The hub of `prefix`, started (watching from the store's current revision) if there is
    /// none.
    pub async fn get(&self, store: &Arc<dyn Store>, prefix: &str) -> baton_store::Result<Arc<Hub>> {
        if let Some(hub) = self.hubs.lock().unwrap_or_else(|p| p.into_inner()).get(prefix) {
            return Ok(hub.clone());
        }
        let latest = baton_store::StoreExt::current_revision(store.as_ref()).await?;
        let watch = store.watch(prefix, latest + 1).await?;
        let (live, _) = broadcast::channel(LAG);
        let state = State { ring: VecDeque::new(), complete_after: latest, latest };
        let hub = Arc::new(Hub { state: Mutex::new(state), live });
        {
            let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = hubs.get(prefix) {
                return Ok(existing.clone()); // Another request started one meanwhile.
            }
            hubs.insert(prefix.to_string(), hub.clone());
        }
        let feeding = Arc::downgrade(&hub);
        let prefix_owned = prefix.to_string();
        let registry = self.hubs.clone();
        tokio::spawn(async move {
            let mut watch = watch;
            while let Some(batch) = watch.next().await {
                let Some(hub) = feeding.upgrade() else { return };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(prefix = %prefix_owned, error = %e, "the shared watch ended; watchers resume");
                        break;
                    }
                };
                let mut state = hub.state.lock().unwrap_or_else(|p| p.into_inner());
                for event in &batch.events {
                    state.latest = state.latest.max(event.revision());
                    let Some(change) = Change::of(event) else { continue };
                    let change = Arc::new(change);
                    state.ring.push_back(change.clone());
                    if state.ring.len() > RING
                        && let Some(dropped) = state.ring.pop_front()
                    {
                        state.complete_after = dropped.revision;
                    }
                    // No receivers is fine: nobody watches right now.
                    let _ = hub.live.send(change);
                }
            }
            // The hub is gone: its watchers' streams end (they resume), and the next watch
            // starts a new one.
            registry.lock().unwrap_or_else(|p| p.into_inner()).remove(&prefix_owned);
        });
        Ok(hub)
    }
}
