//! The executor: the only part of the controller that writes.
//!
//! Store writes go in transactions of at most [`baton_store::MAX_TXN_OPS`] operations,
//! each carrying the leader's fence plus one compare per operation (a launch creates a key
//! that must not exist; a stop or removal must find the record at the revision the plan
//! read). A transaction whose fence fails means leadership is lost: nothing more is
//! written. One whose other compares fail was planned on a stale view: it is dropped and
//! the next tick decides again. App statuses go to the API server, and only while leading.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use baton_api::{App, AppGroup, Goal, InstanceRecord, UnreachableMarker};
use baton_store::election::Leadership;
use baton_store::{Compare, Keyspace, Op, OpResponse, Revision, Store, Txn};

use crate::plan::Plan;

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
}

/// What kind of plan step a write carries out.
#[derive(Clone, Copy)]
enum Step {
    Launch,
    Stop(&'static str),
    Removal,
    Marker,
}

pub struct Executor {
    store: Arc<dyn Store>,
    keys: Keyspace,
    client: kube::Client,
}

impl Executor {
    pub fn new(store: Arc<dyn Store>, keys: Keyspace, client: kube::Client) -> Self {
        Self { store, keys, client }
    }

    pub async fn apply(&self, plan: &Plan, leadership: &Leadership) -> Result<Applied, Error> {
        let mut writes: Vec<(Step, Compare, Op)> = Vec::new();
        for launch in &plan.launches {
            let key = self.keys.instance(&launch.record.agent, &launch.record.id);
            let record = InstanceRecord { term: leadership.term(), ..launch.record.clone() };
            writes.push((Step::Launch, Compare::absent(&key), Op::put(&key, to_json(&record))));
        }
        for stop in &plan.stops {
            let key = self.keys.instance(&stop.record.agent, &stop.record.id);
            let mut record = stop.record.clone();
            record.goal = Goal::Stopped;
            record.stop_reason = Some(stop.reason.as_str().to_string());
            if let Some(grace) = stop.grace_seconds {
                record.kill_grace_seconds = grace;
            }
            record.holds_slot = stop.takes_slot;
            record.term = leadership.term();
            let write = Op::put(&key, to_json(&record));
            writes.push((Step::Stop(stop.reason.as_str()), Compare::mod_revision(&key, stop.revision), write));
        }
        for noted in &plan.noted {
            let key = self.keys.instance(&noted.record.agent, &noted.record.id);
            let record = InstanceRecord { end_noted: true, term: leadership.term(), ..noted.record.clone() };
            writes.push((Step::Marker, Compare::mod_revision(&key, noted.revision), Op::put(&key, to_json(&record))));
        }
        for release in &plan.slot_releases {
            let key = self.keys.instance(&release.record.agent, &release.record.id);
            let record = InstanceRecord { holds_slot: false, term: leadership.term(), ..release.record.clone() };
            let write = Op::put(&key, to_json(&record));
            writes.push((Step::Marker, Compare::mod_revision(&key, release.revision), write));
        }
        for removal in &plan.removals {
            let key = self.keys.instance(&removal.agent, &removal.id);
            writes.push((Step::Removal, Compare::mod_revision(&key, removal.revision), Op::delete(&key)));
        }
        for done in &plan.kills_done {
            let key = self.keys.kill_request(&done.namespace, &done.id);
            writes.push((Step::Marker, Compare::mod_revision(&key, done.revision), Op::delete(&key)));
        }
        for mark in &plan.marks {
            let key = self.keys.unreachable_agent(&mark.agent);
            let marker = UnreachableMarker { since: mark.since };
            writes.push((Step::Marker, Compare::absent(&key), Op::put(&key, to_json(&marker))));
        }
        for unmark in &plan.unmarks {
            let key = self.keys.unreachable_agent(&unmark.agent);
            writes.push((Step::Marker, Compare::mod_revision(&key, unmark.revision), Op::delete(&key)));
        }

        // A backoff change and the marks on the failed instances it counts go in one
        // transaction of their own; everything else in batches. The fence takes one of the compare slots.
        let mut batches: Vec<Vec<(Step, Compare, Op)>> =
            writes.chunks(baton_store::MAX_TXN_OPS - 1).map(<[_]>::to_vec).collect();
        for change in &plan.backoffs {
            let key = self.keys.app_backoff(&change.namespace, &change.name);
            let compare =
                if change.revision == 0 { Compare::absent(&key) } else { Compare::mod_revision(&key, change.revision) };
            let op = match &change.next {
                Some(record) => Op::put(&key, to_json(record)),
                None => Op::delete(&key),
            };
            let mut unit = vec![(Step::Marker, compare, op)];
            for counted in &change.counted {
                let key = self.keys.instance(&counted.record.agent, &counted.record.id);
                let record = InstanceRecord { end_noted: true, term: leadership.term(), ..counted.record.clone() };
                unit.push((
                    Step::Marker,
                    Compare::mod_revision(&key, counted.revision),
                    Op::put(&key, to_json(&record)),
                ));
            }
            batches.push(unit);
        }

        let mut applied = Applied::default();
        for batch in &batches {
            let txn = Txn::new()
                .when(std::iter::once(leadership.fence()).chain(batch.iter().map(|(_, c, _)| c.clone())))
                .and_then(batch.iter().map(|(_, _, op)| op.clone()))
                .or_else([Op::get(leadership.key())]);
            let response = self.store.txn(txn).await?;
            if response.succeeded {
                applied.revision = response.revision;
                for (step, _, _) in batch {
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
                operations = batch.len(),
                "dropped a batch planned on a stale view; the next tick decides again"
            );
            applied.stale += batch.len();
        }

        let params = PatchParams { field_manager: Some(super::events::COMPONENT.into()), ..PatchParams::default() };
        // Finalizers first: a status written in the same tick would move the resourceVersion
        // they are conditional on.
        for change in &plan.finalizers {
            // The resourceVersion makes it conditional: a finalizer list changed meanwhile is
            // not overwritten (409), and the next tick decides again.
            let patch = Patch::Merge(json!({"metadata": {
                "finalizers": change.finalizers,
                "resourceVersion": change.resource_version,
            }}));
            if self.patch::<App>(&change.namespace, &change.name, &params, &patch, false, leadership).await? {
                applied.finalizers += 1;
            }
        }
        for update in &plan.statuses {
            let patch = Patch::Merge(json!({"status": update.status}));
            if self.patch::<App>(&update.namespace, &update.name, &params, &patch, true, leadership).await? {
                applied.statuses += 1;
            }
        }
        for update in &plan.group_statuses {
            let patch = Patch::Merge(json!({"status": update.status}));
            if self.patch::<AppGroup>(&update.namespace, &update.name, &params, &patch, true, leadership).await? {
                applied.statuses += 1;
            }
        }
        Ok(applied)
    }

    /// Patches an object's status (or the object), only while leading. False when it was not
    /// written: deleted or changed meanwhile, or refused (logged).
    async fn patch<K>(
        &self,
        namespace: &str,
        name: &str,
        params: &PatchParams,
        patch: &Patch<serde_json::Value>,
        status: bool,
        leadership: &Leadership,
    ) -> Result<bool, Error>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        if leadership.is_lost() {
            return Err(Error::LostLeadership);
        }
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), namespace);
        let result =
            if status { api.patch_status(name, params, patch).await } else { api.patch(name, params, patch).await };
        match result {
            Ok(_) => Ok(true),
            // Deleted or changed meanwhile: the next tick decides again.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), object = %format!("{namespace}/{name}"), error = %e, "could not write");
                Ok(false)
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}
