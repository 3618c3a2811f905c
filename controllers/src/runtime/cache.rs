//! Caches of the observed state: store records (agents, instances, statuses) kept current
//! by a store watch, and Apps, AppGroups and Namespaces kept current by kube-rs reflectors.
//! Each change wakes the loop; a snapshot is a cheap copy of `Arc`s, of the controller's
//! scope: its namespaces' apps, groups, backoffs and kill requests, and its instances (the
//! platform's cache also holds other scopes' instances, for the capacity they take; a
//! tenant's holds only its own).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use baton_api::{
    AgentRecord, App, AppGroup, BackoffRecord, DrainRecord, InstanceRecord, KillRequest, Maintenance, RunSpec, Scope,
    StatusRecord, Tenant, UnreachableMarker,
};
use baton_store::{EventKind, KeyValue, Keyspace, Revision, Store, StoreExt, WatchEvent};
use k8s_openapi::api::core::v1::Namespace;

use crate::snapshot::{AgentUse, InstanceState, Marker, RecordKeys, Snapshot, held_by_agent};

/// A change to an instance's record or status the cache has not put into its map yet: a
/// snapshot still held the map when it came (see [`Records::instances`]).
enum Change {
    Record { agent: String, record: Arc<InstanceRecord>, keys: RecordKeys, created: Revision, revision: Revision },
    RecordGone { agent: String, id: String, revision: Revision },
    Status { agent: String, id: String, status: Arc<StatusRecord> },
    StatusGone { agent: String, id: String },
}

#[derive(Default)]
struct Records {
    /// The controller's scope.
    scope: Scope,
    agents: BTreeMap<String, (Arc<AgentRecord>, Revision)>,
    /// The scope's instances by id, with their agents' last reports: the map a snapshot
    /// hands out, itself (an `Arc`), not a copy. Changes that come while a snapshot holds it
    /// wait in `pending` and go in once it is let go — the loop drops its snapshot once it
    /// has planned — or, should one still hold it when the next snapshot is taken, into a
    /// copy. (Built afresh for every snapshot, the map and what it was built from took
    /// ~0.35 KiB per instance, which the allocator kept for the next tick.)
    instances: Arc<BTreeMap<String, InstanceState>>,
    /// Other scopes' instances by id (the platform keeps them for the capacity they take).
    foreign: BTreeMap<String, InstanceState>,
    /// Changes waiting for `instances`, in the order they came.
    pending: Vec<Change>,
    /// What each agent's instances hold, while no change could have moved it.
    held: Option<Arc<BTreeMap<String, AgentUse>>>,
    markers: BTreeMap<String, (Arc<UnreachableMarker>, Revision)>,
    drains: BTreeMap<String, (Arc<DrainRecord>, Revision)>,
    backoffs: BTreeMap<(String, String), (Arc<BackoffRecord>, Revision)>,
    kill_requests: BTreeMap<(String, String), (Arc<KillRequest>, Revision)>,
    /// What the records of each app version (uid, version) run, shared by them: parsed,
    /// each record would hold a copy of its own (~0.4 KiB with its strings).
    shared: HashMap<(String, String), Arc<RunSpec>>,
    /// The revision through which changes are applied to these records.
    applied: Revision,
}

/// Store records, kept current by one watch over the keyspace (so changes apply in
/// revision order).
#[derive(Clone)]
pub struct StoreCache {
    records: Arc<Mutex<Records>>,
    /// The revision through which every change has been applied.
    revision: watch::Receiver<Revision>,
    ready: watch::Receiver<bool>,
}

impl StoreCache {
    /// Starts loading and following the store; `changed` is notified after each change.
    pub fn start(
        store: Arc<dyn Store>,
        keys: Keyspace,
        scope: Scope,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Self {
        let records = Arc::new(Mutex::new(Records::new(scope)));
        let (revision_tx, revision) = watch::channel(0);
        let (ready_tx, ready) = watch::channel(false);
        let task_records = records.clone();
        tokio::spawn(async move {
            let follow = follow(store, keys, task_records, revision_tx, ready_tx, changed);
            tokio::select! {
                _ = follow => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Self { records, revision, ready }
    }

    /// Waits until the first full load is in.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Waits until every change through `revision` is applied (so a plan sees the
    /// controller's own last writes); false after `timeout`.
    pub async fn caught_up(&self, revision: Revision, timeout: Duration) -> bool {
        let mut seen = self.revision.clone();
        tokio::time::timeout(timeout, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// The scope's state as it is now: `apps` and `groups` are every App and AppGroup,
    /// `namespaces` tells each namespace's scope.
    pub fn snapshot(&self, apps: Vec<Arc<App>>, groups: Vec<Arc<AppGroup>>, namespaces: &Scopes) -> Snapshot {
        let mut records = self.records.lock().expect("cache lock");
        records.forget_unshared();
        records.settle(true);
        let scope = records.scope.clone();
        let ours = |namespace: Option<&str>| namespaces.of(namespace.unwrap_or_default()) == &scope;
        let instances = records.instances.clone();
        let foreign: Vec<InstanceState> = records.foreign.values().cloned().collect();
        let held = match &records.held {
            Some(held) => held.clone(),
            None => {
                let held = Arc::new(held_by_agent(instances.values().chain(&foreign)));
                records.held = Some(held.clone());
                held
            }
        };
        let agents = records.agents.iter().map(|(name, (agent, _))| (name.clone(), agent.clone())).collect();
        let unreachable = records
            .markers
            .iter()
            .map(|(agent, (marker, revision))| (agent.clone(), Marker { since: marker.since, revision: *revision }))
            .collect();
        let (apps, other_apps): (Vec<Arc<App>>, Vec<Arc<App>>) =
            apps.into_iter().partition(|a| ours(a.metadata.namespace.as_deref()));
        let (groups, other_groups): (Vec<Arc<AppGroup>>, Vec<Arc<AppGroup>>) =
            groups.into_iter().partition(|g| ours(g.metadata.namespace.as_deref()));
        // Other scopes' apps only the platform counts (in their tenants' usage).
        let (other_apps, other_groups) =
            if scope.places() { (other_apps, other_groups) } else { (Vec::new(), Vec::new()) };
        Snapshot {
            revision: records.applied,
            apps,
            groups,
            agents,
            instances,
            foreign,
            unreachable,
            maintenances: Vec::new(),
            drains: records.drains.clone(),
            tenants: Vec::new(),
            tenant_controllers: None,
            namespaces: namespaces.0.clone(),
            other_apps,
            other_groups,
            backoffs: records.backoffs.iter().filter(|((ns, _), _)| ours(Some(ns))).map(clone_entry).collect(),
            kill_requests: records
                .kill_requests
                .iter()
                .filter(|((ns, _), _)| ours(Some(ns)))
                .map(clone_entry)
                .collect(),
            held: Some(held),
            versions: None,
            settled: None,
            scope,
        }
    }
}

fn clone_entry<K: Clone, V: Clone>((key, value): (&K, &V)) -> (K, V) {
    (key.clone(), value.clone())
}

impl Records {
    fn new(scope: Scope) -> Self {
        Records { scope, ..Records::default() }
    }

    /// Whether the cache keeps this instance: the platform keeps every scope's (it places
    /// around them); another scope only its own.
    fn keeps(&self, record: &InstanceRecord) -> bool {
        self.scope.places() || record.run.scope == self.scope
    }

    /// Makes `record` hold its app version's run spec as the other records of that version
    /// do (the first record of a version sets it; one that differs keeps its own).
    fn share(&mut self, record: &mut InstanceRecord) {
        let key = (record.run.app.uid.clone(), record.run.version.clone());
        let shared = self.shared.entry(key).or_insert_with(|| record.run.clone());
        if !Arc::ptr_eq(shared, &record.run) && **shared == *record.run {
            record.run = shared.clone();
        }
    }

    /// Forgets the app versions no record holds any more.
    fn forget_unshared(&mut self) {
        self.shared.retain(|_, shared| Arc::strong_count(shared) > 1);
    }

    /// Takes a change to an instance: into the map now, unless a snapshot holds it.
    fn change(&mut self, change: Change) {
        self.pending.push(change);
        self.settle(false);
    }

    /// Puts the pending changes into the map once no snapshot holds it — or, `now`, into a
    /// copy if one still does.
    fn settle(&mut self, now: bool) {
        if self.pending.is_empty() {
            return;
        }
        let instances = if now {
            Arc::make_mut(&mut self.instances)
        } else {
            match Arc::get_mut(&mut self.instances) {
                Some(instances) => instances,
                None => return,
            }
        };
        let scope = &self.scope;
        let mut moved = false;
        for change in self.pending.drain(..) {
            moved |= apply_change(instances, &mut self.foreign, scope, change);
        }
        if moved {
            self.held = None;
        }
    }
}

/// The instance `id` on `agent`, of this scope or another.
fn entry_of<'a>(
    own: &'a mut BTreeMap<String, InstanceState>,
    foreign: &'a mut BTreeMap<String, InstanceState>,
    agent: &str,
    id: &str,
) -> Option<&'a mut InstanceState> {
    match own.get_mut(id) {
        Some(state) => Some(state),
        None => foreign.get_mut(id),
    }
    .filter(|state| state.record.agent == agent)
}

/// Applies one change; whether it may have moved what an agent holds.
fn apply_change(
    own: &mut BTreeMap<String, InstanceState>,
    foreign: &mut BTreeMap<String, InstanceState>,
    scope: &Scope,
    change: Change,
) -> bool {
    match change {
        Change::Record { agent, record, keys, created, revision } => {
            let (map, other) = if record.run.scope == *scope { (own, foreign) } else { (foreign, own) };
            // Rewritten into another scope, it leaves the one it was in (with its report).
            let moved = match other.get(&record.id) {
                Some(state) if state.revision < revision => other.remove(&record.id),
                _ => None,
            };
            match map.entry(record.id.clone()) {
                Entry::Vacant(entry) => {
                    let status = moved.filter(|state| state.record.agent == agent).and_then(|state| state.status);
                    entry.insert(InstanceState::with_keys(record, keys, revision, status).with_created(created));
                }
                Entry::Occupied(mut entry) if entry.get().revision < revision => {
                    let state = entry.get_mut();
                    // A report is about the instance on its agent.
                    let status = if state.record.agent == agent { state.status.take() } else { None };
                    *state = InstanceState::with_keys(record, keys, revision, status).with_created(created);
                }
                Entry::Occupied(_) => return false,
            }
            true
        }
        Change::RecordGone { agent, id, revision } => {
            for map in [own, foreign] {
                if map.get(&id).is_some_and(|state| state.record.agent == agent && state.revision < revision) {
                    map.remove(&id);
                    return true;
                }
            }
            false
        }
        // Reports come in revision order (one watch, after a load at the revision before it).
        Change::Status { agent, id, status } => {
            let Some(state) = entry_of(own, foreign, &agent, &id) else { return false };
            let was_over = state.is_terminal();
            state.set_status(Some(status));
            was_over != state.is_terminal()
        }
        Change::StatusGone { agent, id } => {
            let Some(state) = entry_of(own, foreign, &agent, &id) else { return false };
            if state.status.is_none() {
                return false;
            }
            let was_over = state.is_terminal();
            state.set_status(None);
            was_over != state.is_terminal()
        }
    }
}

/// Loads, then follows; after a watch failure (e.g. compacted history), loads again.
async fn follow(
    store: Arc<dyn Store>,
    keys: Keyspace,
    records: Arc<Mutex<Records>>,
    revision: watch::Sender<Revision>,
    ready: watch::Sender<bool>,
    changed: Arc<Notify>,
) {
    loop {
        match load_and_watch(&store, &keys, &records, &revision, &ready, &changed).await {
            Ok(()) => tracing::warn!("store watch ended; reloading"),
            Err(e) => tracing::warn!(error = %e, "store watch failed; reloading"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn load_and_watch(
    store: &Arc<dyn Store>,
    keys: &Keyspace,
    records: &Mutex<Records>,
    revision: &watch::Sender<Revision>,
    ready: &watch::Sender<bool>,
    changed: &Notify,
) -> baton_store::Result<()> {
    // Every prefix as of the revision of the first: one consistent view. (Read each at its
    // own revision, a view claimed the last one's revision while its instances were older:
    // a leader planning on it, after etcd restarted, counted launches that were missing.)
    let agents = store.range(&keys.agents()).await?;
    let at = agents.revision;
    let mut fresh = Records::new(records.lock().expect("cache lock").scope.clone());
    for kv in &agents.kvs {
        apply_put(&mut fresh, keys, kv);
    }
    for prefix in
        [keys.instances(), keys.statuses(), keys.unreachable_agents(), keys.drains(), keys.apps(), keys.kill_requests()]
    {
        for kv in store.range_at(&prefix, Some(at)).await?.kvs {
            apply_put(&mut fresh, keys, &kv);
        }
    }
    fresh.applied = at;
    *records.lock().expect("cache lock") = fresh;
    revision.send_replace(at);
    ready.send_replace(true);
    changed.notify_one();
    // Changes after the first range are applied (again); applying is idempotent by revision.
    let mut watch = store.watch_current(&keys.root_prefix(), agents.revision + 1).await?;
    while let Some(batch) = watch.next().await {
        let batch = batch?;
        let last = batch.events.last().map(WatchEvent::revision);
        // Whether any change is to what the cache follows: the rest of the root (the API
        // server's objects, Kubernetes Events among them) moves the revision but is no news
        // to the planner. (Each Event the controller recorded after a rollout woke it for a
        // plan of nothing, ~500 in 15 s after `hack/bench.sh cluster`'s upgrade.)
        let mut followed = false;
        {
            let mut records = records.lock().expect("cache lock");
            for event in &batch.events {
                followed |= match event.kind {
                    EventKind::Put => apply_put(&mut records, keys, &event.kv),
                    EventKind::Delete => apply_delete(&mut records, keys, event),
                };
            }
            if let Some(last) = last {
                records.applied = records.applied.max(last);
            }
        }
        if let Some(last) = last {
            revision.send_if_modified(|r| {
                let newer = last > *r;
                *r = (*r).max(last);
                newer
            });
        }
        if followed {
            changed.notify_one();
        }
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<Arc<T>> {
    parse_value(kv).map(Arc::new)
}

fn parse_value<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(key = kv.key, error = %e, "ignoring an unreadable record");
            None
        }
    }
}

/// Inserts `value` unless the map already holds a newer revision of the key.
fn upsert<K: Ord, V>(map: &mut BTreeMap<K, (V, Revision)>, key: K, value: V, revision: Revision) {
    match map.get(&key) {
        Some((_, known)) if *known >= revision => {}
        _ => _ = map.insert(key, (value, revision)),
    }
}

/// Removes the key unless the map holds a revision newer than the delete.
fn remove<K: Ord, V>(map: &mut BTreeMap<K, (V, Revision)>, key: &K, revision: Revision) {
    if map.get(key).is_some_and(|(_, known)| *known < revision) {
        map.remove(key);
    }
}

/// Applies a put; false when the key is not one the cache follows.
fn apply_put(records: &mut Records, keys: &Keyspace, kv: &KeyValue) -> bool {
    if let Some(name) = keys.parse_agent_key(&kv.key) {
        if let Some(agent) = parse(kv) {
            upsert(&mut records.agents, name.to_string(), agent, kv.mod_revision);
        }
    } else if let Some((agent, id)) = keys.parse_instance_key(&kv.key) {
        if let Some(mut record) = parse_value::<InstanceRecord>(kv)
            && records.keeps(&record)
        {
            if record.id != id {
                tracing::warn!(key = kv.key, id = record.id, "ignoring an instance record whose id is not its key's");
                return true;
            }
            records.share(&mut record);
            let record = Arc::new(record);
            let keys = RecordKeys::of(&record);
            let (agent, created, revision) = (agent.to_string(), kv.create_revision, kv.mod_revision);
            records.change(Change::Record { agent, record, keys, created, revision });
        }
    } else if let Some((agent, id)) = keys.parse_status_key(&kv.key) {
        // Statuses of instances the cache keeps (an instance's record is written before its
        // agent reports on it).
        if let Some(status) = parse(kv) {
            records.change(Change::Status { agent: agent.to_string(), id: id.to_string(), status });
        }
    } else if let Some(agent) = keys.parse_unreachable_key(&kv.key) {
        if let Some(marker) = parse(kv) {
            upsert(&mut records.markers, agent.to_string(), marker, kv.mod_revision);
        }
    } else if let Some(agent) = keys.parse_drain_key(&kv.key) {
        if let Some(drain) = parse(kv) {
            upsert(&mut records.drains, agent.to_string(), drain, kv.mod_revision);
        }
    } else if let Some((namespace, app)) = keys.parse_app_backoff_key(&kv.key) {
        if let Some(backoff) = parse(kv) {
            upsert(&mut records.backoffs, (namespace.to_string(), app.to_string()), backoff, kv.mod_revision);
        }
    } else if let Some((namespace, id)) = keys.parse_kill_request_key(&kv.key) {
        if let Some(request) = parse(kv) {
            upsert(&mut records.kill_requests, (namespace.to_string(), id.to_string()), request, kv.mod_revision);
        }
    } else {
        return false;
    }
    true
}

/// Applies a delete; false when the key is not one the cache follows.
fn apply_delete(records: &mut Records, keys: &Keyspace, event: &WatchEvent) -> bool {
    let key = &event.kv.key;
    let revision = event.revision();
    if let Some(name) = keys.parse_agent_key(key) {
        remove(&mut records.agents, &name.to_string(), revision);
    } else if let Some((agent, id)) = keys.parse_instance_key(key) {
        records.change(Change::RecordGone { agent: agent.to_string(), id: id.to_string(), revision });
    } else if let Some((agent, id)) = keys.parse_status_key(key) {
        records.change(Change::StatusGone { agent: agent.to_string(), id: id.to_string() });
    } else if let Some(agent) = keys.parse_unreachable_key(key) {
        remove(&mut records.markers, &agent.to_string(), revision);
    } else if let Some(agent) = keys.parse_drain_key(key) {
        remove(&mut records.drains, &agent.to_string(), revision);
    } else if let Some((namespace, app)) = keys.parse_app_backoff_key(key) {
        remove(&mut records.backoffs, &(namespace.to_string(), app.to_string()), revision);
    } else if let Some((namespace, id)) = keys.parse_kill_request_key(key) {
        remove(&mut records.kill_requests, &(namespace.to_string(), id.to_string()), revision);
    } else {
        return false;
    }
    true
}

/// Objects of one kind (Apps, AppGroups), kept current by kube-rs reflectors: one over
/// every namespace, or one per namespace for a controller limited to some.
#[derive(Clone)]
pub struct ObjectCache<K: kube::Resource<DynamicType = ()> + 'static> {
    readers: Vec<reflector::Store<K>>,
    /// True once the first full list of every reflector is in. (Not the reflector's own
    /// `wait_until_ready`: of several tasks waiting on it at once, only the last to poll is
    /// woken.)
    ready: watch::Receiver<bool>,
}

/// What the API server keeps on an object for its writers, not for its controller: which
/// writer owns which fields (`managedFields`, a tree per writer) and kubectl's copy of the
/// object as last applied. Planning reads neither, and the controller writes patches, never
/// whole cached objects, so its caches leave them out. (At 2,000 Apps with their status
/// written by the controller, the fields trees alone were ~20 MB of the leader's ~120 MB.)
fn forget_bookkeeping<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation `kubectl apply` keeps the applied manifest in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Every App.
pub type AppCache = ObjectCache<App>;
/// Every AppGroup.
pub type GroupCache = ObjectCache<AppGroup>;
/// Every Maintenance.
pub type MaintenanceCache = ObjectCache<Maintenance>;
/// Every Tenant.
pub type TenantCache = ObjectCache<Tenant>;
/// Every Namespace: their labels tell their scopes.
pub type NamespaceCache = ObjectCache<Namespace>;

/// Each namespace's scope, for one tick.
#[derive(Default)]
pub struct Scopes(BTreeMap<String, Scope>);

impl Scopes {
    /// `namespaces`, all of `scope` (a controller told which namespaces are its own).
    pub fn fixed(namespaces: &[String], scope: &Scope) -> Self {
        Scopes(namespaces.iter().map(|ns| (ns.clone(), scope.clone())).collect())
    }

    /// `namespace`'s scope. One not known (yet) is the platform's, as an unlabelled one is.
    pub fn of(&self, namespace: &str) -> &Scope {
        static PLATFORM: Scope = Scope::Platform;
        self.0.get(namespace).unwrap_or(&PLATFORM)
    }
}

impl NamespaceCache {
    /// Every namespace's scope, as the labels are now.
    pub fn scopes(&self) -> Scopes {
        let namespaces = self.objects();
        let scopes = namespaces.iter().filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            Some((name, Scope::of_namespace(ns.metadata.labels.as_ref())))
        });
        Scopes(scopes.collect())
    }
}

impl<K> ObjectCache<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    /// Starts watching every object of the kind; `changed` is notified after each event.
    pub fn start(client: kube::Client, changed: Arc<Notify>, shutdown: CancellationToken) -> Self {
        Self::start_with(vec![kube::Api::all(client)], changed, shutdown)
    }

    /// Holds no object, ready at once: for a kind this controller has no use for.
    pub fn empty(changed: Arc<Notify>, shutdown: CancellationToken) -> Self {
        Self::start_with(Vec::new(), changed, shutdown)
    }

    /// Starts watching the objects of the kind in `namespaces` only (`None`: in every one).
    pub fn start_in(
        client: kube::Client,
        namespaces: Option<&[String]>,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Self
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespaces {
            None => Self::start(client, changed, shutdown),
            Some(list) => {
                let apis = list.iter().map(|ns| kube::Api::namespaced(client.clone(), ns)).collect();
                Self::start_with(apis, changed, shutdown)
            }
        }
    }

    fn start_with(apis: Vec<kube::Api<K>>, changed: Arc<Notify>, shutdown: CancellationToken) -> Self {
        let (ready_tx, ready) = watch::channel(apis.is_empty());
        let ready_tx = Arc::new(ready_tx);
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(apis.len()));
        let mut readers = Vec::new();
        for api in apis {
            let (reader, writer) = reflector::store();
            readers.push(reader);
            let events = reflector(writer, watcher(api, watcher::Config::default()).modify(forget_bookkeeping))
                .default_backoff();
            let (ready_tx, remaining, changed, shutdown) =
                (ready_tx.clone(), remaining.clone(), changed.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut events = std::pin::pin!(events.take_until(shutdown.cancelled_owned()));
                let mut listed = false;
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::InitDone) if !listed => {
                            listed = true;
                            if remaining.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                                ready_tx.send_replace(true);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watching"),
                    }
                    changed.notify_one();
                }
            });
        }
        Self { readers, ready }
    }

    /// Waits until the first full list is in: planning before it would see every object as
    /// deleted.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        // Fails only if the sender is dropped, i.e. at shutdown.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Every object, in (namespace, name) order.
    pub fn objects(&self) -> Vec<Arc<K>> {
        let mut objects: Vec<Arc<K>> = self.readers.iter().flat_map(|r| r.state()).collect();
        objects.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
        objects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn cached_objects_leave_out_the_servers_bookkeeping_and_keep_the_rest() {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("team-a".into());
        namespace.metadata.managed_fields =
            Some(vec![ManagedFieldsEntry { manager: Some("kubectl".into()), ..ManagedFieldsEntry::default() }]);
        namespace.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED.to_string(), r#"{"kind":"Namespace"}"#.to_string()),
            ("baton.dev/tenant".to_string(), "a".to_string()),
        ]));
        namespace.metadata.labels = Some(BTreeMap::from([("team".to_string(), "a".to_string())]));
        forget_bookkeeping(&mut namespace);
        assert_eq!(namespace.metadata.managed_fields, None);
        assert_eq!(
            namespace.metadata.annotations,
            Some(BTreeMap::from([("baton.dev/tenant".to_string(), "a".to_string())]))
        );
        assert_eq!(namespace.metadata.labels, Some(BTreeMap::from([("team".to_string(), "a".to_string())])));
        assert_eq!(namespace.metadata.name.as_deref(), Some("team-a"));
    }
}
