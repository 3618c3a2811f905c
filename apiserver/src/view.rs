//! The `Instance` view: instance records joined with the status their agent reports,
//! served read-only (`kubectl get instances -l app=web`, `-w` too).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::response::Response;
use baton_api::{Instance, InstanceRecord, StatusRecord};
use baton_store::{EventKind, KeyValue, Keyspace, Revision};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::kinds::Kind;
use crate::request::Query;
use crate::status::{ApiError, ApiResult, Target};
use crate::table::Format;
use crate::watch::{Encoder, respond, start_revision, transition};

/// Instance records, statuses and live agents, with the revision that last changed each.
#[derive(Default)]
struct Join {
    records: HashMap<(String, String), (InstanceRecord, Revision)>,
    statuses: HashMap<(String, String), (StatusRecord, Revision)>,
    agents: HashMap<String, Revision>,
}

impl Join {
    fn view(&self, key: &(String, String)) -> Option<Value> {
        let (record, record_rev) = self.records.get(key)?;
        let status = self.statuses.get(key);
        let agent = self.agents.get(&key.0);
        let rev = [Some(*record_rev), status.map(|(_, r)| *r), agent.copied()].into_iter().flatten().max().unwrap_or(0);
        Some(view_value(record, status.map(|(s, _)| s), agent.is_some(), rev))
    }

    fn views(&self) -> Vec<Value> {
        let mut views: Vec<Value> = self.records.keys().filter_map(|k| self.view(k)).collect();
        views.sort_by(|a, b| {
            let key = |v: &Value| (v["metadata"]["namespace"].to_string(), v["metadata"]["name"].to_string());
            key(a).cmp(&key(b))
        });
        views
    }

    /// Applies one store change; returns the views before and after it of the instances it
    /// concerns (all of an agent's when the agent comes or goes).
    fn apply(&mut self, keys: &Keyspace, event: &baton_store::WatchEvent) -> Vec<(Option<Value>, Option<Value>)> {
        if let Some(agent) = keys.parse_agent_key(&event.kv.key) {
            let slots: Vec<(String, String)> = self.records.keys().filter(|(a, _)| a == agent).cloned().collect();
            let before: Vec<Option<Value>> = slots.iter().map(|slot| self.view(slot)).collect();
            match event.kind {
                EventKind::Put => _ = self.agents.insert(agent.to_string(), event.kv.mod_revision),
                EventKind::Delete => _ = self.agents.remove(agent),
            }
            return slots.iter().zip(before).map(|(slot, before)| (before, self.view(slot))).collect();
        }
        self.apply_instance(keys, event).into_iter().collect()
    }

    fn apply_instance(
        &mut self,
        keys: &Keyspace,
        event: &baton_store::WatchEvent,
    ) -> Option<(Option<Value>, Option<Value>)> {
        let key = &event.kv.key;
        if let Some((agent, id)) = keys.parse_instance_key(key) {
            let slot = (agent.to_string(), id.to_string());
            let before = self.view(&slot).or_else(|| {
                // Not loaded (it came and went before this watch): rebuild from the event.
                let prev = event.prev_kv.as_ref()?;
                let record: InstanceRecord = serde_json::from_slice(&prev.value).ok()?;
                Some(view_value(&record, None, true, prev.mod_revision))
            });
            match event.kind {
                EventKind::Put => {
                    let record: InstanceRecord = serde_json::from_slice(&event.kv.value).ok()?;
                    self.records.insert(slot.clone(), (record, event.kv.mod_revision));
                    Some((before, self.view(&slot)))
                }
                EventKind::Delete => {
                    self.records.remove(&slot);
                    let before = before.map(|mut v| {
                        v["metadata"]["resourceVersion"] = json!(event.revision().to_string());
                        v
                    });
                    Some((before, None))
                }
            }
        } else if let Some((agent, id)) = keys.parse_status_key(key) {
            let slot = (agent.to_string(), id.to_string());
            let before = self.view(&slot);
            match event.kind {
                EventKind::Put => {
                    let status: StatusRecord = serde_json::from_slice(&event.kv.value).ok()?;
                    self.statuses.insert(slot.clone(), (status, event.kv.mod_revision));
                }
                EventKind::Delete => _ = self.statuses.remove(&slot),
            }
            let after = self.view(&slot);
            before.is_some().then_some((before, after))
        } else {
            None
        }
    }
}

fn view_value(record: &InstanceRecord, status: Option<&StatusRecord>, agent_live: bool, rev: Revision) -> Value {
    serde_json::to_value(Instance::from_records(record, status, agent_live, rev)).expect("an Instance serializes")
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

fn in_namespace(view: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| view.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
}

impl ApiServer {
    /// Reads every instance and status. The revision returned is that of the first read, so
    /// a watch from it re-delivers (rather than misses) anything that changed in between.
    async fn load_instances(&self) -> ApiResult<(Join, Revision)> {
        let records = self.store.range(&self.keys.instances()).await?;
        let statuses = self.store.range(&self.keys.statuses()).await?;
        let agents = self.store.range(&self.keys.agents()).await?;
        let mut join = Join::default();
        for kv in &agents.kvs {
            if let Some(agent) = self.keys.parse_agent_key(&kv.key) {
                join.agents.insert(agent.to_string(), kv.mod_revision);
            }
        }
        for kv in &records.kvs {
            if let (Some((agent, id)), Some(record)) =
                (self.keys.parse_instance_key(&kv.key), parse::<InstanceRecord>(kv))
            {
                join.records.insert((agent.to_string(), id.to_string()), (record, kv.mod_revision));
            }
        }
        for kv in &statuses.kvs {
            if let (Some((agent, id)), Some(status)) = (self.keys.parse_status_key(&kv.key), parse::<StatusRecord>(kv))
            {
                join.statuses.insert((agent.to_string(), id.to_string()), (status, kv.mod_revision));
            }
        }
        Ok((join, records.revision))
    }

    pub async fn list_instances(&self, namespace: Option<&str>) -> ApiResult<(Vec<Value>, Revision)> {
        let (join, revision) = self.load_instances().await?;
        Ok((join.views().into_iter().filter(|v| in_namespace(v, namespace)).collect(), revision))
    }

    pub async fn get_instance(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let (views, _) = self.list_instances(namespace).await?;
        views.into_iter().find(|v| v.pointer("/metadata/name").and_then(Value::as_str) == Some(name)).ok_or_else(|| {
            ApiError::not_found(&Target { group: &kind.group, plural: &kind.plural, kind: &kind.kind, name })
        })
    }

    pub(crate) async fn watch_instances(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        query: &Query,
        format: Format,
        slot: crate::WatchSlot,
    ) -> ApiResult<Response> {
        let encoder = Encoder { kind: kind.clone(), format, include: query.include_object };
        let (mut join, loaded_at) = self.load_instances().await?;
        let mut initial: Vec<Bytes> = Vec::new();
        let from = match start_revision(query)? {
            Some(revision) => revision + 1,
            None => {
                for view in join.views().iter().filter(|v| in_namespace(v, namespace) && query.selectors.matches(v)) {
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
        let convert = move |event: &baton_store::WatchEvent| {
            let matches = |v: &Value| in_namespace(v, namespace.as_deref()) && selectors.matches(v);
            join.apply(&keys, event)
                .into_iter()
                .filter_map(|(before, after)| {
                    let type_ = transition(before.as_ref().map(matches), after.as_ref().map(matches))?;
                    let object = if type_ == "DELETED" { before.or(after) } else { after };
                    object.map(|o| events.event(type_, &o))
                })
                .collect::<Vec<_>>()
        };
        // One watch over the whole keyspace keeps instance and status changes in revision
        // order; other keys are skipped.
        let live = self.follow(&self.keys.root_prefix(), from, encoder, convert).await?;
        Ok(respond(initial, live, query, &self.shutdown, slot))
    }
}
