//! The executor: the only part of the controller that writes.
//!
//! Store writes go in transactions of at most [`baton_store::MAX_TXN_OPS`] operations,
//! each carrying the leader's fence plus the compares of its writes (a launch creates keys
//! that must not exist — the record and its `instance-agents` index entry; a stop or removal
//! must find the record at the revision the plan read). A write is never split across
//! transactions ([`Packed`]); `TXNS_IN_FLIGHT` transactions go out at once. A transaction
//! whose fence fails means leadership is lost: nothing more is sent (what is in flight is
//! fenced as well: it lands only if the store took it before the leadership ended). One
//! whose other compares fail was planned on a stale view: it is dropped and the next tick
//! decides again. App statuses go to the API server, and only while leading.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use baton_api::{App, AppGroup, Goal, InstanceRecord, Maintenance, Tenant, UnreachableMarker};
use baton_store::election::Leadership;
use baton_store::{Compare, Keyspace, Op, OpResponse, Revision, Store, Txn};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::plan::{ControllerApp, Plan};

/// Executor errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leadership lost: a fenced write was refused")]
    LostLeadership,
    #[error("store: {0}")]
    Store(#[from] baton_store::Error),
}

/// What applying a plan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The revision of the last successful write (0: none).
    pub revision: Revision,
    pub launched: usize,
    /// The reason of each stop written.
    pub stopped: Vec<&'static str>,
    pub removed: usize,
    /// Operations dropped because the plan was made on a stale view.
    pub stale: usize,
    pub statuses: usize,
    /// Finalizers put on or taken off Apps.
    pub finalizers: usize,
    /// How long the store's transactions took, from the first sent to the last answered.
    pub store_writes: std::time::Duration,
}

/// What kind of plan step a write carries out.
#[derive(Clone, Copy)]
enum Step {
    Launch,
    Stop(&'static str),
    Removal,
    Marker,
}

/// App finalizer and status patches in flight at once.
const PATCHES_IN_FLIGHT: usize = 32;

/// Store transactions of one plan in flight at once. No write of a plan assumes another
/// landed first: each carries its own compares (two that touch one key cannot both land,
/// whichever goes first), a kill request is marked done only once its instance is gone, and
/// a backoff and the failures it counts share one transaction. Measured on 2 cores
/// (`hack/bench.sh cluster`, 100,000 launches, ten runs alternated on 2026-12-03): in ticks
/// of over 20,000 launches the leader wrote a launch in 91–160 µs one transaction at a time,
/// in 62–108 µs three at a time, and every instance ran 9.1–12.8 s after the first create
/// instead of 12.3–15.8 s. (With 4 and 8, on 2026-12-02, before etcd's watches stopped asking
/// for previous values, it took longer than with one.)
const TXNS_IN_FLIGHT: usize = 3;

pub struct Executor {
    store: Arc<dyn Store>,
    keys: Keyspace,
    client: kube::Client,
}

impl Executor {
    pub fn new(store: Arc<dyn Store>, keys: Keyspace, client: kube::Client) -> Self {
        Self { store, keys, client }
    }

    /// Carries out `plan`, made on a view of the store through revision `planned_at`.
    pub async fn apply(&self, plan: &Plan, planned_at: Revision, leadership: &Leadership) -> Result<Applied, Error> {
        let by = (leadership.term(), planned_at);
        // Built as the transactions go out, not all first: the writes of a tick that launched
        // 100,000 instances took ~100 MiB at once, which the allocator then kept.
        let launches = plan.launches.iter().map(|launch| {
            let (agent, id) = (&launch.record.agent, &launch.record.id);
            let key = self.keys.instance(agent, id);
            let record = InstanceRecord { term: by.0, planned_at, ..launch.record.clone() };
            // The record and the index entry that finds it by id, together.
            let index = self.keys.instance_agent(id);
            Write {
                step: Step::Launch,
                compares: vec![Compare::absent(&key), Compare::absent(&index)],
                ops: vec![Op::put(&key, to_json(&record)), Op::put(&index, agent.as_bytes().to_vec())],
            }
        });
        let stops = plan.stops.iter().map(|stop| {
            let mut record = stop.record.clone();
            record.goal = Goal::Stopped;
            record.stop_reason = Some(stop.reason.as_str().into());
            if let Some(grace) = stop.grace_seconds {
                Arc::make_mut(&mut record.run).kill_grace_seconds = grace;
            }
            record.holds_slot = stop.takes_slot;
            self.rewrite(Step::Stop(stop.reason.as_str()), record, stop.revision, by)
        });
        let noted = plan.noted.iter().map(|noted| {
            let record = InstanceRecord { end_noted: true, ..noted.record.clone() };
            self.rewrite(Step::Marker, record, noted.revision, by)
        });
        let releases = plan.slot_releases.iter().map(|release| {
            let record = InstanceRecord { holds_slot: false, ..release.record.clone() };
            self.rewrite(Step::Marker, record, release.revision, by)
        });
        let removals = plan.removals.iter().map(|removal| {
            let key = self.keys.instance(&removal.agent, &removal.id);
            Write {
                step: Step::Removal,
                compares: vec![Compare::mod_revision(&key, removal.revision)],
                ops: vec![Op::delete(&key), Op::delete(self.keys.instance_agent(&removal.id))],
            }
        });
        let kills_done = plan.kills_done.iter().map(|done| {
            let key = self.keys.kill_request(&done.namespace, &done.id);
            Write::one(Step::Marker, Compare::mod_revision(&key, done.revision), Op::delete(&key))
        });
        let marks = plan.marks.iter().map(|mark| {
            let key = self.keys.unreachable_agent(&mark.agent);
            let marker = UnreachableMarker { since: mark.since };
            Write::one(Step::Marker, Compare::absent(&key), Op::put(&key, to_json(&marker)))
        });
        let drains = plan.drains.iter().map(|drain| {
            let key = self.keys.drain(&drain.agent);
            let compare =
                if drain.revision == 0 { Compare::absent(&key) } else { Compare::mod_revision(&key, drain.revision) };
            let op = match &drain.next {
                Some(record) => Op::put(&key, to_json(record)),
                None => Op::delete(&key),
            };
            Write::one(Step::Marker, compare, op)
        });
        let unmarks = plan.unmarks.iter().map(|unmark| {
            let key = self.keys.unreachable_agent(&unmark.agent);
            Write::one(Step::Marker, Compare::mod_revision(&key, unmark.revision), Op::delete(&key))
        });
        let writes = launches.chain(stops).chain(noted).chain(releases).chain(removals).chain(kills_done).chain(marks);
        // Boxed: held across the awaits below, the closures' types defeat the check that the
        // future is Send.
        let writes: Box<dyn Iterator<Item = Write> + Send + '_> = Box::new(writes.chain(drains).chain(unmarks));

        // A backoff change and the marks on the failed instances it counts go in one
        // transaction of their own; everything else in batches.
        let backoffs = plan.backoffs.iter().map(|change| {
            let key = self.keys.app_backoff(&change.namespace, &change.name);
            let compare =
                if change.revision == 0 { Compare::absent(&key) } else { Compare::mod_revision(&key, change.revision) };
            let op = match &change.next {
                Some(record) => Op::put(&key, to_json(record)),
                None => Op::delete(&key),
            };
            let mut unit = vec![Write::one(Step::Marker, compare, op)];
            for counted in &change.counted {
                let record = InstanceRecord { end_noted: true, ..counted.record.clone() };
                unit.push(self.rewrite(Step::Marker, record, counted.revision, by));
            }
            unit
        });
        let batches: Box<dyn Iterator<Item = Vec<Write>> + Send + '_> = Box::new(Packed::new(writes).chain(backoffs));

        let params = PatchParams { field_manager: Some(super::events::COMPONENT.into()), ..PatchParams::default() };
        let mut applied = self.store_writes(batches, leadership).await?;
        let (finalizers, statuses) = self.app_patches(plan, &params, leadership).await?;
        applied.finalizers += finalizers;
        applied.statuses += statuses;
        for update in &plan.group_statuses {
            let patch = Patch::Merge(json!({"status": update.status}));
            let api = kube::Api::<AppGroup>::namespaced(self.client.clone(), &update.namespace);
            if self.patch(api, &update.name, &params, &patch, true, leadership).await? {
                applied.statuses += 1;
            }
        }
        for create in &plan.namespace_creates {
            if leadership.is_lost() {
                return Err(Error::LostLeadership);
            }
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(create.name.clone()),
                    labels: Some([(baton_api::scope::TENANT_LABEL.to_string(), create.tenant.clone())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            let api = kube::Api::<Namespace>::all(self.client.clone());
            match api.create(&kube::api::PostParams::default(), &namespace).await {
                Ok(_) => applied.statuses += 1,
                // Made meanwhile: the next tick sees it.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => tracing::warn!(namespace = create.name, error = %e, "could not create a tenant's namespace"),
            }
        }
        for change in &plan.tenant_finalizers {
            let patch = Patch::Merge(json!({"metadata": {
                "finalizers": change.finalizers,
                "resourceVersion": change.resource_version,
            }}));
            let api = kube::Api::<Tenant>::all(self.client.clone());
            if self.patch(api, &change.name, &params, &patch, false, leadership).await? {
                applied.finalizers += 1;
            }
        }
        for name in &plan.namespace_deletes {
            if leadership.is_lost() {
                return Err(Error::LostLeadership);
            }
            let api = kube::Api::<Namespace>::all(self.client.clone());
            match api.delete(name, &kube::api::DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => tracing::warn!(namespace = name, error = %e, "could not delete a deleted tenant's namespace"),
            }
        }
        self.controller_apps(&plan.controller_apps, leadership).await?;
        for update in &plan.tenant_statuses {
            let patch = status_patch(&update.status, &["namespacesTaken"]);
            let api = kube::Api::<Tenant>::all(self.client.clone());
            if self.patch(api, &update.name, &params, &patch, true, leadership).await? {
                applied.statuses += 1;
            }
        }
        for update in &plan.maintenance_statuses {
            let fields = ["window", "nextWindow", "agents", "blocked", "schedule", "atRisk", "conditions"];
            let patch = status_patch(&update.status, &fields);
            let api = kube::Api::<Maintenance>::all(self.client.clone());
            if self.patch(api, &update.name, &params, &patch, true, leadership).await? {
                applied.statuses += 1;
            }
        }
        Ok(applied)
    }

    /// Commits `batches`, each fenced by `leadership`, [`TXNS_IN_FLIGHT`] at a time; their
    /// outcomes are counted in order. A failed fence ends it (what is still in flight lands
    /// only if the store took it before the leadership ended).
    async fn store_writes(
        &self,
        batches: impl Iterator<Item = Vec<Write>> + Send,
        leadership: &Leadership,
    ) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let writes_started = std::time::Instant::now();
        let mut commits =
            futures::stream::iter(batches).map(|batch| self.commit(batch, leadership)).buffered(TXNS_IN_FLIGHT);
        while let Some((steps, response)) = commits.next().await {
            let response = response?;
            if response.succeeded {
                applied.revision = applied.revision.max(response.revision);
                for step in &steps {
                    match step {
                        Step::Launch => applied.launched += 1,
                        Step::Stop(reason) => applied.stopped.push(reason),
                        Step::Removal => applied.removed += 1,
                        Step::Marker => {}
                    }
                }
                continue;
            }
            let leader = match response.responses.first() {
                Some(OpResponse::Get(kv)) => kv.as_ref().map(|kv| kv.create_revision),
                _ => None,
            };
            if leader != Some(leadership.term()) {
                return Err(Error::LostLeadership);
            }
            tracing::debug!(
                writes = steps.len(),
                "dropped a batch planned on a stale view; the next tick decides again"
            );
            applied.stale += steps.len();
        }
        applied.store_writes = writes_started.elapsed();
        Ok(applied)
    }

    /// Apps' finalizers, then their statuses (a status written first would move the
    /// resourceVersion a finalizer change is conditional on), each many at once: one at a
    /// time, a tick that launched for 2,000 new apps spent most of a minute in round trips.
    /// How many of each were written.
    async fn app_patches(
        &self,
        plan: &Plan,
        params: &PatchParams,
        leadership: &Leadership,
    ) -> Result<(usize, usize), Error> {
        let finalizers = plan.finalizers.iter().map(|change| self.app_finalizers(change, params, leadership));
        let finalizers = in_parallel(finalizers).await?;
        let statuses = plan.statuses.iter().map(|update| self.app_status(update, params, leadership));
        Ok((finalizers, in_parallel(statuses).await?))
    }

    /// Applies (server-side, as the platform's field manager) or deletes tenants'
    /// controllers' Apps, in the system namespace (created first if missing).
    async fn controller_apps(&self, changes: &[ControllerApp], leadership: &Leadership) -> Result<(), Error> {
        use baton_api::tenant::SYSTEM_NAMESPACE;
        if changes.is_empty() {
            return Ok(());
        }
        if leadership.is_lost() {
            return Err(Error::LostLeadership);
        }
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(SYSTEM_NAMESPACE.into()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        match kube::Api::<Namespace>::all(self.client.clone()).create(&Default::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => tracing::warn!(namespace = SYSTEM_NAMESPACE, error = %e, "could not create the system namespace"),
        }
        let api = kube::Api::<App>::namespaced(self.client.clone(), SYSTEM_NAMESPACE);
        let params = PatchParams::apply(super::events::COMPONENT).force();
        for change in changes {
            if leadership.is_lost() {
                return Err(Error::LostLeadership);
            }
            let (name, result) = match change {
                ControllerApp::Apply(app) => {
                    let name = app.metadata.name.clone().unwrap_or_default();
                    let result = api.patch(&name, &params, &Patch::Apply(app.as_ref())).await.map(|_| ());
                    (name, result)
                }
                ControllerApp::Delete { name } => {
                    (name.clone(), api.delete(name, &kube::api::DeleteParams::default()).await.map(|_| ()))
                }
            };
            match result {
                Ok(()) => tracing::info!(app = name, "tenant controller's App written"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => tracing::warn!(app = name, error = %e, "could not write a tenant controller's App"),
            }
        }
        Ok(())
    }

    /// Writes one App's finalizers. The resourceVersion makes it conditional: a finalizer
    /// list changed meanwhile is not overwritten (409), and the next tick decides again.
    async fn app_finalizers(
        &self,
        change: &crate::plan::FinalizerChange,
        params: &PatchParams,
        leadership: &Leadership,
    ) -> Result<bool, Error> {
        let patch = Patch::Merge(json!({"metadata": {
            "finalizers": change.finalizers,
            "resourceVersion": change.resource_version,
        }}));
        let api = kube::Api::<App>::namespaced(self.client.clone(), &change.namespace);
        self.patch(api, &change.name, params, &patch, false, leadership).await
    }

    /// Writes one App's status.
    async fn app_status(
        &self,
        update: &crate::plan::StatusUpdate,
        params: &PatchParams,
        leadership: &Leadership,
    ) -> Result<bool, Error> {
        let patch = Patch::Merge(json!({"status": update.status}));
        let api = kube::Api::<App>::namespaced(self.client.clone(), &update.namespace);
        self.patch(api, &update.name, params, &patch, true, leadership).await
    }

    /// Sends one batch of writes in a transaction fenced by `leadership`.
    async fn commit(
        &self,
        batch: Vec<Write>,
        leadership: &Leadership,
    ) -> (Vec<Step>, baton_store::Result<baton_store::TxnResponse>) {
        let steps = batch.iter().map(|w| w.step).collect();
        let (compares, ops): (Vec<Vec<Compare>>, Vec<Vec<Op>>) = batch.into_iter().map(|w| (w.compares, w.ops)).unzip();
        let txn = Txn::new()
            .when(std::iter::once(leadership.fence()).chain(compares.into_iter().flatten()))
            .and_then(ops.into_iter().flatten())
            .or_else([Op::get(leadership.key())]);
        (steps, self.store.txn(txn).await)
    }

    /// Rewrites `record` (at `revision`), by the leader of `term` on a view through `planned_at`,
    /// if it is still at `revision`; its index entry with it (records written before the index
    /// existed gain one).
    fn rewrite(&self, step: Step, record: InstanceRecord, revision: Revision, by: (Revision, Revision)) -> Write {
        let key = self.keys.instance(&record.agent, &record.id);
        let index = Op::put(self.keys.instance_agent(&record.id), record.agent.as_bytes().to_vec());
        let (term, planned_at) = by;
        let record = InstanceRecord { term, planned_at, ..record };
        Write {
            step,
            compares: vec![Compare::mod_revision(&key, revision)],
            ops: vec![Op::put(&key, to_json(&record)), index],
        }
    }

    /// Patches an object's status (or the object), only while leading. False when it was not
    /// written: deleted or changed meanwhile, or refused (logged).
    async fn patch<K>(
        &self,
        api: kube::Api<K>,
        name: &str,
        params: &PatchParams,
        patch: &Patch<serde_json::Value>,
        status: bool,
        leadership: &Leadership,
    ) -> Result<bool, Error>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        if leadership.is_lost() {
            return Err(Error::LostLeadership);
        }
        let result =
            if status { api.patch_status(name, params, patch).await } else { api.patch(name, params, patch).await };
        match result {
            Ok(_) => Ok(true),
            // Deleted or changed meanwhile: the next tick decides again.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), object = name, error = %e, "could not write");
                Ok(false)
            }
        }
    }
}

/// Runs `writes`, [`PATCHES_IN_FLIGHT`] at a time; how many were made (the first error ends it).
async fn in_parallel<F>(writes: impl Iterator<Item = F>) -> Result<usize, Error>
where
    F: std::future::Future<Output = Result<bool, Error>>,
{
    let mut writes = writes;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut made = 0;
    loop {
        while in_flight.len() < PATCHES_IN_FLIGHT {
            let Some(write) = writes.next() else { break };
            in_flight.push(write);
        }
        let Some(result) = in_flight.next().await else { return Ok(made) };
        if result? {
            made += 1;
        }
    }
}

/// A merge patch replacing `status`. A merge patch keeps what it does not name, so `omitted`
/// (the fields the status leaves out when empty) are named null.
fn status_patch(status: &impl serde::Serialize, omitted: &[&str]) -> Patch<serde_json::Value> {
    let mut status = json!(status);
    if let Some(fields) = status.as_object_mut() {
        for field in omitted {
            fields.entry(*field).or_insert(serde_json::Value::Null);
        }
    }
    Patch::Merge(json!({ "status": status }))
}

/// One step of a plan in the store: compares and operations that land together or not at all.
#[derive(Clone)]
pub struct Write {
    step: Step,
    compares: Vec<Compare>,
    ops: Vec<Op>,
}

impl Write {
    fn one(step: Step, compare: Compare, op: Op) -> Self {
        Write { step, compares: vec![compare], ops: vec![op] }
    }
}

/// Writes packed, in order and each whole, into transactions of at most
/// [`baton_store::MAX_TXN_OPS`] compares (one of them the leader's fence) and operations: one
/// transaction's writes at a time, as they are asked for.
pub struct Packed<I: Iterator<Item = Write>> {
    writes: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Write>> Packed<I> {
    pub fn new(writes: impl IntoIterator<IntoIter = I>) -> Self {
        Packed { writes: writes.into_iter().peekable() }
    }
}

impl<I: Iterator<Item = Write>> Iterator for Packed<I> {
    type Item = Vec<Write>;

    fn next(&mut self) -> Option<Vec<Write>> {
        let mut batch: Vec<Write> = Vec::new();
        let (mut compares, mut ops) = (0, 0);
        while let Some(write) = self.writes.next_if(|write| {
            batch.is_empty()
                || (compares + write.compares.len() < baton_store::MAX_TXN_OPS
                    && ops + write.ops.len() <= baton_store::MAX_TXN_OPS)
        }) {
            compares += write.compares.len();
            ops += write.ops.len();
            batch.push(write);
        }
        (!batch.is_empty()).then_some(batch)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}
