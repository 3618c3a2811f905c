//! One store watch per stored kind, shared by every client watch of it (Kubernetes' watch
//! cache, cut down): each change is read and parsed once, kept in a ring of recent changes,
//! and fanned out; the JSON line of each event is encoded once for every watcher that
//! sends JSON. A client watch that starts from a revision still in the ring is served from
//! memory; an older one gets a store watch of its own (which replays or answers 410).
//!
//! A hub also holds the latest version of every object of its kind: what a change replaced
//! (so the store need not read each change's previous value for it: etcd 3.4 copies its
//! buffer of uncommitted writes for every such read), and a first guess for the writes of
//! the API server, which read an object, change it and write it if its revision is still
//! the one they read (Kubernetes' `GuaranteedUpdate` with the watch cache's object).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use baton_store::{EventKind, Revision, Store, StoreExt, WatchEvent};
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
    pub before: Option<Arc<Value>>,
    /// The object after the change (absent when deleted).
    pub after: Option<Arc<Value>>,
    /// The JSON watch line for ADDED, MODIFIED and DELETED, each encoded once.
    lines: [OnceLock<Bytes>; 3],
}

impl Change {
    /// The change `event` makes to `objects` (made there too); `None` for a value that does
    /// not read, which is then forgotten.
    fn apply(event: &WatchEvent, objects: &mut HashMap<String, Arc<Value>>) -> Option<Self> {
        let after = match event.kind {
            EventKind::Put => object_of(&event.kv).ok().map(Arc::new),
            EventKind::Delete => None,
        };
        let before = match &after {
            Some(after) => objects.insert(event.kv.key.clone(), after.clone()),
            None => objects.remove(&event.kv.key),
        };
        if event.kind == EventKind::Put && after.is_none() {
            return None;
        }
        Some(Change { revision: event.revision(), before, after, lines: Default::default() })
    }

    /// What a watcher is sent for this change as `type_`: the object after it, or for a
    /// deletion the object before it, at the revision of the deletion.
    pub fn object(&self, type_: &str) -> Option<Value> {
        if type_ == "DELETED" {
            let mut before = Value::clone(self.before.as_ref().or(self.after.as_ref())?);
            before["metadata"]["resourceVersion"] = json!(self.revision.to_string());
            Some(before)
        } else {
            self.after.as_deref().cloned()
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
    /// The latest version of every object, by key, as of `latest`.
    objects: HashMap<String, Arc<Value>>,
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
    /// The object at `key` as this hub saw it last (with its `resourceVersion`): what the
    /// store holds, or held a moment ago.
    pub fn object(&self, key: &str) -> Option<Arc<Value>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).objects.get(key).cloned()
    }

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
    /// The object at `key` as a running hub over it saw it last; `None` when no hub covers the
    /// key (nobody watches its kind) or it holds no such object.
    pub fn object(&self, key: &str) -> Option<Arc<Value>> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.iter().filter(|(prefix, _)| key.starts_with(prefix.as_str())).find_map(|(_, hub)| hub.object(key))
    }

    /// The hub of `prefix`, started if there is none: it reads every object as of just before
    /// `from` (the revision the first watcher wants changes from, so that it is served from
    /// the hub; 0: now), then watches from there.
    pub async fn get(&self, store: &Arc<dyn Store>, prefix: &str, from: Revision) -> baton_store::Result<Arc<Hub>> {
        if let Some(hub) = self.hubs.lock().unwrap_or_else(|p| p.into_inner()).get(prefix) {
            return Ok(hub.clone());
        }
        let at = (from > 1).then(|| from - 1);
        let listed = match store.range_at(prefix, at).await {
            Ok(listed) => listed,
            // Compacted, or ahead of the store: the hub starts now, and that watcher gets a
            // store watch of its own (which answers 410 or waits).
            Err(_) if at.is_some() => store.range_at(prefix, None).await?,
            Err(e) => return Err(e),
        };
        let latest = listed.revision;
        let objects =
            listed.kvs.iter().filter_map(|kv| Some((kv.key.clone(), Arc::new(object_of(kv).ok()?)))).collect();
        let watch = store.watch_current(prefix, latest + 1).await?;
        let (live, _) = broadcast::channel(LAG);
        let state = State { objects, ring: VecDeque::new(), complete_after: latest, latest };
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
                    let Some(change) = Change::apply(event, &mut state.objects) else { continue };
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
