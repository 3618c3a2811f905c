//! The read-only views: `Instance` (an instance record joined with the status its agent
//! reports) and `Agent` (an agent's record with what its instances take, or its
//! unreachable marker), built from the store and served like any kind: get, list, and
//! watch (`kubectl get instances -l app=web -w`, `kubectl get agents`).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::response::Response;
use baton_api::{Agent, AgentRecord, DrainRecord, Instance, InstanceRecord, StatusRecord, UnreachableMarker};
use baton_store::{Compare, EventKind, KeyValue, Keyspace, Op, OpResponse, PageRequest, Revision, Txn, WatchEvent};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::kinds::{Kind, Source};
use crate::request::Query;
use crate::status::{ApiError, ApiResult, Target};
use crate::table::Format;
use crate::watch::{Encoder, respond, start_revision, transition};

/// Which view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Instances,
    Agents,
}

impl Which {
    fn of(kind: &Kind) -> ApiResult<Self> {
        match kind.source {
            Source::InstanceView => Ok(Which::Instances),
            Source::AgentView => Ok(Which::Agents),
            Source::Registry(_) => Err(ApiError::internal(format!("{} is not a view", kind.plural))),
        }
    }
}

/// `(agent, instance id)`.
type Slot = (String, String);

/// One view object's identity: an instance slot, or an agent name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Id {
    Instance(Slot),
    Agent(String),
}

/// Every record the views are built from, with the revision that last changed each.
/// Ordered maps, so an agent's instances are one range.
#[derive(Default)]
struct Join {
    records: BTreeMap<Slot, (InstanceRecord, Revision)>,
    statuses: BTreeMap<Slot, (StatusRecord, Revision)>,
    agents: BTreeMap<String, (AgentRecord, Revision)>,
    markers: BTreeMap<String, (UnreachableMarker, Revision)>,
    /// Agents in maintenance.
    drains: BTreeMap<String, (DrainRecord, Revision)>,
    /// The `apiVersion` of the kind served, when not the views' own (`baton.dev/v1alpha1`):
    /// behind the Kubernetes aggregation layer they are `views.baton.dev`.
    api_version: Option<String>,
}

fn agent_range(agent: &str) -> std::ops::RangeFrom<Slot> {
    (agent.to_string(), String::new())..
}

impl Join {
    fn instance_slots<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a Slot> + 'a {
        self.records.range(agent_range(agent)).map(|(slot, _)| slot).take_while(move |(a, _)| a == agent)
    }

    fn instance_view(&self, slot: &Slot) -> Option<Value> {
        let (record, record_rev) = self.records.get(slot)?;
        let status = self.statuses.get(slot);
        let agent = self.agents.get(&slot.0);
        let rev = [Some(*record_rev), status.map(|(_, r)| *r), agent.map(|(_, r)| *r)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let view = Instance::from_records(record, status.map(|(s, _)| s), agent.is_some(), rev);
        Some(serde_json::to_value(view).expect("an Instance serializes"))
    }

    /// The view of an agent that reports, has an unreachable marker, or has instances not
    /// yet over.
    fn agent_view(&self, name: &str) -> Option<Value> {
        let agent = self.agents.get(name);
        let marker = self.markers.get(name);
        let drain = self.drains.get(name);
        let mut rev = agent.map_or(0, |(_, r)| *r).max(marker.map_or(0, |(_, r)| *r)).max(drain.map_or(0, |(_, r)| *r));
        let mut live = Vec::new();
        for slot in self.instance_slots(name) {
            let (record, record_rev) = &self.records[slot];
            let status = self.statuses.get(slot);
            if status.is_some_and(|(s, _)| s.phase.is_terminal()) {
                continue;
            }
            rev = rev.max(*record_rev).max(status.map_or(0, |(_, r)| *r));
            live.push(record);
        }
        if agent.is_none() && marker.is_none() && live.is_empty() {
            return None;
        }
        let mut view = Agent::from_records(name, agent.map(|(a, _)| a), &live, marker.map(|(m, _)| m), rev);
        view.status.maintenance = drain.map(|(d, _)| baton_api::agent::AgentMaintenance::of(d));
        Some(serde_json::to_value(view).expect("an Agent serializes"))
    }

    fn view(&self, id: &Id) -> Option<Value> {
        let view = match id {
            Id::Instance(slot) => self.instance_view(slot),
            Id::Agent(name) => self.agent_view(name),
        };
        view.map(|v| self.versioned(v))
    }

    /// `view` as the kind served names itself.
    fn versioned(&self, mut view: Value) -> Value {
        if let Some(api_version) = &self.api_version {
            view["apiVersion"] = json!(api_version);
        }
        view
    }

    /// The views to be served as `kind` (renamed only outside their own group).
    fn served_as(mut self, kind: &Kind) -> Self {
        self.api_version = (kind.group != baton_api::GROUP).then(|| kind.api_version());
        self
    }

    fn ids(&self, which: Which) -> Vec<Id> {
        match which {
            Which::Instances => self.records.keys().cloned().map(Id::Instance).collect(),
            Which::Agents => {
                let names: BTreeSet<&String> =
                    self.agents.keys().chain(self.markers.keys()).chain(self.records.keys().map(|(a, _)| a)).collect();
                names.into_iter().cloned().map(Id::Agent).collect()
            }
        }
    }

    /// Every view, by namespace and name.
    fn views(&self, which: Which) -> Vec<Value> {
        let mut views: Vec<Value> = self.ids(which).iter().filter_map(|id| self.view(id)).collect();
        views.sort_by(|a, b| {
            let key = |v: &Value| {
                let field = |f: &str| v["metadata"][f].as_str().unwrap_or_default().to_string();
                (field("namespace"), field("name"))
            };
            key(a).cmp(&key(b))
        });
        views
    }

    /// The views one store change may alter.
    fn touched(&self, which: Which, keys: &Keyspace, key: &str) -> Vec<Id> {
        let agent_of = || {
            keys.parse_agent_key(key)
                .or_else(|| keys.parse_instance_key(key).map(|(a, _)| a))
                .or_else(|| keys.parse_status_key(key).map(|(a, _)| a))
                .or_else(|| keys.parse_unreachable_key(key))
                .or_else(|| keys.parse_drain_key(key))
        };
        match which {
            Which::Agents => agent_of().map(|a| Id::Agent(a.to_string())).into_iter().collect(),
            Which::Instances => {
                if let Some(agent) = keys.parse_agent_key(key) {
                    // An agent coming or going changes the phase of all its instances.
                    self.instance_slots(agent).cloned().map(Id::Instance).collect()
                } else if let Some((agent, id)) = keys.parse_instance_key(key).or_else(|| keys.parse_status_key(key)) {
                    vec![Id::Instance((agent.to_string(), id.to_string()))]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Takes in records as read (puts).
    fn ingest_all(&mut self, keys: &Keyspace, kvs: impl IntoIterator<Item = KeyValue>) {
        for kv in kvs {
            self.ingest(keys, &WatchEvent { kind: EventKind::Put, kv, prev_kv: None });
        }
    }

    /// Takes in one store change.
    fn ingest(&mut self, keys: &Keyspace, event: &WatchEvent) {
        let key = &event.kv.key;
        let rev = event.kv.mod_revision;
        let put = event.kind == EventKind::Put;
        if let Some(agent) = keys.parse_agent_key(key) {
            match parse::<AgentRecord>(&event.kv).filter(|_| put) {
                Some(record) => _ = self.agents.insert(agent.to_string(), (record, rev)),
                None => _ = self.agents.remove(agent),
            }
        } else if let Some(agent) = keys.parse_unreachable_key(key) {
            match parse::<UnreachableMarker>(&event.kv).filter(|_| put) {
                Some(marker) => _ = self.markers.insert(agent.to_string(), (marker, rev)),
                None => _ = self.markers.remove(agent),
            }
        } else if let Some(agent) = keys.parse_drain_key(key) {
            match parse::<DrainRecord>(&event.kv).filter(|_| put) {
                Some(drain) => _ = self.drains.insert(agent.to_string(), (drain, rev)),
                None => _ = self.drains.remove(agent),
            }
        } else if let Some((agent, id)) = keys.parse_instance_key(key) {
            let slot = (agent.to_string(), id.to_string());
            match parse::<InstanceRecord>(&event.kv).filter(|_| put) {
                Some(record) => _ = self.records.insert(slot, (record, rev)),
                None => _ = self.records.remove(&slot),
            }
        } else if let Some((agent, id)) = keys.parse_status_key(key) {
            let slot = (agent.to_string(), id.to_string());
            match parse::<StatusRecord>(&event.kv).filter(|_| put) {
                Some(status) => _ = self.statuses.insert(slot, (status, rev)),
                None => _ = self.statuses.remove(&slot),
            }
        }
    }

    /// Applies one store change; returns the views before and after it of what it touched.
    /// Views after a change carry its revision.
    fn apply(&mut self, which: Which, keys: &Keyspace, event: &WatchEvent) -> Vec<(Option<Value>, Option<Value>)> {
        let touched = self.touched(which, keys, &event.kv.key);
        if touched.is_empty() {
            return Vec::new();
        }
        let before: Vec<Option<Value>> = touched.iter().map(|id| self.view(id)).collect();
        // An instance that came and went before this watch loaded: rebuild it from the event.
        let before = match (which, before.as_slice(), &event.prev_kv) {
            (Which::Instances, [None], Some(prev)) if keys.parse_instance_key(&prev.key).is_some() => {
                let rebuilt = parse::<InstanceRecord>(prev).map(|record| {
                    let view = Instance::from_records(&record, None, true, prev.mod_revision);
                    self.versioned(serde_json::to_value(view).expect("an Instance serializes"))
                });
                vec![rebuilt]
            }
            _ => before,
        };
        self.ingest(keys, event);
        let stamp = |mut view: Value| {
            view["metadata"]["resourceVersion"] = json!(event.revision().to_string());
            view
        };
        touched
            .iter()
            .zip(before)
            .map(|(id, before)| {
                let after = self.view(id).map(stamp);
                // A deleted object carries the revision of its deletion.
                let before = if after.is_none() { before.map(stamp) } else { before };
                (before, after)
            })
            .collect()
    }
}

fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(key = kv.key, error = %e, "skipping an unreadable record");
            None
        }
    }
}

/// The keys a transaction's gets found.
fn found(responses: Vec<OpResponse>) -> impl Iterator<Item = KeyValue> {
    responses.into_iter().filter_map(|r| match r {
        OpResponse::Get(kv) => kv,
        _ => None,
    })
}

fn in_namespace(view: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| view.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
}

impl ApiServer {
    /// Reads every record a view needs, all as of one revision (that of the first read), so
    /// the views are one consistent state and a watch from that revision misses nothing.
    async fn load_join(&self, which: Which) -> ApiResult<(Join, Revision)> {
        let agents = self.store.range(&self.keys.agents()).await?;
        let revision = agents.revision;
        let mut prefixes = vec![self.keys.instances(), self.keys.statuses()];
        if which == Which::Agents {
            prefixes.push(self.keys.unreachable_agents());
            prefixes.push(self.keys.drains());
        }
        let mut join = Join::default();
        join.ingest_all(&self.keys, agents.kvs);
        for prefix in prefixes {
            let request = PageRequest { prefix, after: None, limit: 0, revision: Some(revision) };
            join.ingest_all(&self.keys, self.store.range_page(&request).await?.kvs);
        }
        Ok((join, revision))
    }

    /// Every object of a view (in `namespace`, if given) and the revision it was read at.
    pub async fn list_view(&self, kind: &Kind, namespace: Option<&str>) -> ApiResult<(Vec<Value>, Revision)> {
        let which = Which::of(kind)?;
        let (join, revision) = self.load_join(which).await?;
        let join = join.served_as(kind);
        Ok((join.views(which).into_iter().filter(|v| in_namespace(v, namespace)).collect(), revision))
    }

    /// One view, from a bounded number of reads whatever the cluster's size: an instance
    /// from its index entry, its record, its status and its agent (two round trips); an
    /// agent from its record, its marker, and its own instances and their statuses.
    pub async fn get_view(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let which = Which::of(kind)?;
        let not_found =
            || ApiError::not_found(&Target { group: &kind.group, plural: &kind.plural, kind: &kind.kind, name });
        let (join, id) = match which {
            Which::Instances => {
                let Some(agent) = self.store.get(&self.keys.instance_agent(name)).await? else {
                    return Err(not_found());
                };
                let agent = String::from_utf8_lossy(&agent.value).into_owned();
                (self.load_instance(&agent, name).await?, Id::Instance((agent, name.to_string())))
            }
            Which::Agents => (self.load_agent(name).await?, Id::Agent(name.to_string())),
        };
        join.served_as(kind).view(&id).filter(|v| in_namespace(v, namespace)).ok_or_else(not_found)
    }

    /// The records of instance `id` on `agent`, in one transaction (so as of one revision).
    async fn load_instance(&self, agent: &str, id: &str) -> ApiResult<Join> {
        let keys = [self.keys.instance(agent, id), self.keys.status(agent, id), self.keys.agent(agent)];
        let response = self.store.txn(Txn::new().and_then(keys.iter().map(Op::get))).await?;
        let mut join = Join::default();
        join.ingest_all(&self.keys, found(response.responses));
        Ok(join)
    }

    /// The records of agent `name`: its own, its marker, its instances and their statuses,
    /// all as of one revision.
    async fn load_agent(&self, name: &str) -> ApiResult<Join> {
        let keys = [self.keys.agent(name), self.keys.unreachable_agent(name), self.keys.drain(name)];
        let response = self.store.txn(Txn::new().and_then(keys.iter().map(Op::get))).await?;
        let mut join = Join::default();
        join.ingest_all(&self.keys, found(response.responses));
        for prefix in [self.keys.agent_instances(name), self.keys.agent_statuses(name)] {
            let request = PageRequest { prefix, after: None, limit: 0, revision: Some(response.revision) };
            join.ingest_all(&self.keys, self.store.range_page(&request).await?.kvs);
        }
        Ok(join)
    }

    /// Gives every instance record an index entry (`instance-agents/<id>`) if it has none:
    /// records written before the index existed. Run at start; the controller writes the
    /// entries of new records itself, with them.
    pub async fn ensure_instance_index(&self) -> ApiResult<()> {
        let records = self.store.range(&self.keys.instances()).await?;
        let indexed = self.store.range(&self.keys.instance_agents()).await?;
        let indexed: BTreeSet<&str> =
            indexed.kvs.iter().filter_map(|kv| self.keys.parse_instance_agent_key(&kv.key)).collect();
        let missing: Vec<(&str, &str, Revision)> = records
            .kvs
            .iter()
            .filter_map(|kv| self.keys.parse_instance_key(&kv.key).map(|(agent, id)| (agent, id, kv.mod_revision)))
            .filter(|(_, id, _)| !indexed.contains(id))
            .collect();
        for chunk in missing.chunks(baton_store::MAX_TXN_OPS / 2) {
            // Each only if its record is still as read (a record removed meanwhile gets none).
            let compares =
                chunk.iter().map(|(agent, id, rev)| Compare::mod_revision(self.keys.instance(agent, id), *rev));
            let puts =
                chunk.iter().map(|(agent, id, _)| Op::put(self.keys.instance_agent(id), agent.as_bytes().to_vec()));
            if !self.store.txn(Txn::new().when(compares).and_then(puts)).await?.succeeded {
                tracing::info!("instance records changed while indexing them; the controller indexes what it writes");
            }
        }
        if !missing.is_empty() {
            tracing::info!(instances = missing.len(), "indexed instance records written before the index");
        }
        Ok(())
    }

    /// `DELETE` of an instance: a request to kill it, which the controller carries out (and
    /// replaces the instance, as for any that is missing). Answers the instance, marked for
    /// deletion; it disappears once its process has ended. A request made again keeps the
    /// first one. `gracePeriodSeconds` replaces the app's time from SIGTERM to SIGKILL.
    pub async fn kill_instance(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        user: &str,
        query: &Query,
        options: &Value,
    ) -> ApiResult<crate::Reply> {
        if Which::of(kind)? != Which::Instances {
            return Err(ApiError::method_not_allowed(&format!("{} (a read-only view)", kind.plural)));
        }
        let mut view = self.get_view(kind, namespace, name).await?;
        let target = Target { group: &kind.group, plural: &kind.plural, kind: &kind.kind, name };
        if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
            && view.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            let why = format!("the UID in the precondition ({uid}) does not match the UID in record");
            return Err(ApiError::conflict(&target, &why));
        }
        let grace_seconds = match options.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().and_then(|g| u32::try_from(g).ok()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "gracePeriodSeconds: Invalid value: {value}: must be a whole number of seconds, 0 or more"
                ))
            })?),
        };
        let now = crate::objects::now_seconds();
        view["metadata"]["deletionTimestamp"] = json!(now.to_string());
        if let Some(grace) = grace_seconds {
            view["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if query.dry_run {
            return Ok(crate::Reply::json(axum::http::StatusCode::OK, view));
        }
        let namespace = view.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let key = self.keys.kill_request(namespace, name);
        let request = baton_api::KillRequest { user: user.to_string(), requested_at: now, grace_seconds };
        let value = serde_json::to_vec(&request).map_err(|e| ApiError::internal(e.to_string()))?;
        // Only if there is none: a second request keeps the first (its time and user).
        let txn = baton_store::Txn::new()
            .when([baton_store::Compare::absent(&key)])
            .and_then([baton_store::Op::put(&key, value)]);
        if self.store.txn(txn).await?.succeeded {
            tracing::info!(instance = name, namespace, user, "kill requested");
        }
        Ok(crate::Reply::json(axum::http::StatusCode::OK, view))
    }

    pub(crate) async fn watch_view(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        query: &Query,
        format: Format,
        slot: crate::WatchSlot,
    ) -> ApiResult<Response> {
        let which = Which::of(kind)?;
        let encoder = Encoder { kind: kind.clone(), format, include: query.include_object };
        let (join, loaded_at) = self.load_join(which).await?;
        let mut join = join.served_as(kind);
        let mut initial: Vec<Bytes> = Vec::new();
        let from = match start_revision(query)? {
            Some(revision) => revision + 1,
            None => {
                let views = join.views(which);
                for view in views.iter().filter(|v| in_namespace(v, namespace) && query.selectors.matches(v)) {
                    initial.push(encoder.event("ADDED", view));
                }
                if query.send_initial_events && query.allow_bookmarks {
                    initial.push(encoder.bookmark(loaded_at, true));
                }
                loaded_at + 1
            }
        };
        let keys = self.keys.clone();
        let selectors = query.selectors.clone();
        let namespace = namespace.map(str::to_string);
        let events = encoder.clone();
        let convert = move |event: &WatchEvent| {
            let matches = |v: &Value| in_namespace(v, namespace.as_deref()) && selectors.matches(v);
            join.apply(which, &keys, event)
                .into_iter()
                .filter_map(|(before, after)| {
                    let type_ = transition(before.as_ref().map(matches), after.as_ref().map(matches))?;
                    let object = if type_ == "DELETED" { before.or(after) } else { after };
                    object.map(|o| events.event(type_, &o))
                })
                .collect::<Vec<_>>()
        };
        // One watch over the whole keyspace keeps changes of every record in revision
        // order; keys no view reads are skipped.
        let live = self.follow(&self.keys.root_prefix(), from, encoder, query, convert).await?;
        Ok(respond(initial, live, query, &self.shutdown, slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_api::records::Command;
    use baton_api::{AppRef, Goal, Phase, ResourceAmounts, RunSpec};
    use jiff::Timestamp;
    use std::sync::Arc;

    fn put(key: String, value: Value, rev: Revision) -> WatchEvent {
        let kv = KeyValue {
            key,
            value: value.to_string().into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        WatchEvent { kind: EventKind::Put, kv, prev_kv: None }
    }

    fn record(agent: &str, id: &str) -> Value {
        serde_json::to_value(InstanceRecord {
            id: id.into(),
            agent: agent.into(),
            host: "h".into(),
            created_at: Timestamp::UNIX_EPOCH,
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: vec![],
            term: 1,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: AppRef { namespace: "default".into(), name: "web".into(), uid: "u".into() },
                scope: Default::default(),
                version: "v".into(),
                whole_agent: false,
                command: Command::Shell("x".into()),
                user: None,
                fetch: Vec::new(),
                env: Default::default(),
                labels: Default::default(),
                resources: ResourceAmounts { millicpus: 500, mem_mib: 64, disk_mib: 0, gpus: 0 },
                kill_grace_seconds: 3,
                health_checks: Vec::new(),
                readiness_checks: Vec::new(),
            }),
        })
        .unwrap()
    }

    #[test]
    fn an_agent_view_follows_its_instances_and_leaves_with_its_last_trace() {
        let keys = Keyspace::default();
        let mut join = Join::default();
        let agent = json!({"name": "a1", "host": "h", "resources": {"millicpus": 2000, "memMib": 1024, "diskMib": 0},
                           "version": "0.1.0", "startedAt": "2026-01-01T00:00:00Z"});
        let changes = join.apply(Which::Agents, &keys, &put(keys.agent("a1"), agent, 2));
        assert_eq!(changes.len(), 1);
        assert!(changes[0].0.is_none() && changes[0].1.is_some(), "the agent appears");

        let changes = join.apply(Which::Agents, &keys, &put(keys.instance("a1", "web-1"), record("a1", "web-1"), 3));
        let after = changes[0].1.as_ref().unwrap();
        assert_eq!(after["status"]["allocated"]["cpus"], 0.5);
        assert_eq!(after["metadata"]["resourceVersion"], "3", "a watched view carries the change's revision");

        let status = serde_json::to_value(StatusRecord::new(Phase::Failed)).unwrap();
        let changes = join.apply(Which::Agents, &keys, &put(keys.status("a1", "web-1"), status, 4));
        assert_eq!(changes[0].1.as_ref().unwrap()["status"]["instances"], 0, "an instance that is over takes nothing");

        let gone = WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: keys.agent("a1"),
                value: vec![],
                create_revision: 0,
                mod_revision: 5,
                version: 0,
                lease: 0,
            },
            prev_kv: None,
        };
        let changes = join.apply(Which::Agents, &keys, &gone);
        assert!(changes[0].1.is_none(), "an agent without key, marker or live instance is gone");
        assert_eq!(changes[0].0.as_ref().unwrap()["metadata"]["resourceVersion"], "5");
        assert!(join.apply(Which::Agents, &keys, &put("/baton/registry/x".into(), json!({}), 6)).is_empty());
    }
}
