//! The store, as far as a tenant's controller may reach it (DESIGN.md §10): the
//! [`Store`](baton_store::Store) operations over HTTP (`/baton/store/v1/…`, see
//! [`baton_store::wire`]), for the identity of one tenant's controller only, limited to what
//! that scope plans with:
//!
//! - it reads agents, unreachable markers and drain records (where things can run);
//! - it reads, stops and removes its scope's instances — never another scope's, never
//!   creates one (the platform alone places), and of its own changes only what a stop or a
//!   removal changes (goal, reason, grace, slot, end noted, term): not what runs, where, or
//!   with what;
//! - it reads the statuses of those instances;
//! - it reads and writes backoffs and kill requests of its tenant's namespaces (those
//!   labelled `baton.dev/tenant=NAME`), and its own election key, with leases granted here
//!   (each recorded as its scope's, so it cannot renew or revoke another's).
//!
//! Everything else is invisible: a range or watch leaves it out, a get finds nothing, a
//! transaction that touches it is refused (403) before anything is written.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use baton_api::{InstanceRecord, RunSpec, Scope};
use baton_store::wire::{self, WireError};
use baton_store::{
    Compare, EventKind, KeyValue, Keyspace, Op, OpResponse, PageRequest, Revision, Txn, TxnResponse, WatchEvent,
};

use crate::ApiServer;
use crate::auth::Identity;
use crate::kinds::NAMESPACES;

/// How often an idle watch says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The largest request body.
pub(crate) const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// What one tenant controller may reach.
struct Reach {
    keys: Keyspace,
    scope: Scope,
    /// The namespaces labelled with its tenant, when the request came in.
    namespaces: BTreeSet<String>,
}

/// What a key is, to a tenant's controller.
#[derive(Debug, PartialEq, Eq)]
enum Class<'k> {
    /// Agents, unreachable markers, drain records: readable.
    Public,
    Instance(&'k str, &'k str),
    /// `instance-agents/<id>`: written with its instance, never read.
    Index(&'k str),
    Status(&'k str, &'k str),
    /// Backoffs and kill requests, by namespace.
    Namespaced(&'k str),
    Leader(&'k str),
    Hidden,
}

fn forbidden(message: impl Into<String>) -> WireError {
    WireError::Forbidden { message: message.into() }
}

impl Reach {
    fn classify<'k>(&self, key: &'k str) -> Class<'k> {
        let k = &self.keys;
        if k.parse_agent_key(key).is_some()
            || k.parse_unreachable_key(key).is_some()
            || k.parse_drain_key(key).is_some()
        {
            Class::Public
        } else if let Some((agent, id)) = k.parse_instance_key(key) {
            Class::Instance(agent, id)
        } else if let Some(id) = k.parse_instance_agent_key(key) {
            Class::Index(id)
        } else if let Some((agent, id)) = k.parse_status_key(key) {
            Class::Status(agent, id)
        } else if let Some(rest) = key.strip_prefix(&k.apps()).or_else(|| key.strip_prefix(&k.kill_requests())) {
            match rest.split_once('/') {
                Some((namespace, _)) if !namespace.is_empty() => Class::Namespaced(namespace),
                _ => Class::Hidden,
            }
        } else if let Some(scope) = key.strip_prefix(&k.leader("")) {
            Class::Leader(scope)
        } else {
            Class::Hidden
        }
    }

    fn ours(&self, record: &InstanceRecord) -> bool {
        record.run.scope == self.scope
    }

    fn owns_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    fn owns_leader(&self, scope: &str) -> bool {
        scope == self.scope.to_string()
    }

    /// Whether the controller sees `kv`; `slots` are the visible instances (for statuses).
    fn visible(&self, kv: &KeyValue, slots: &HashSet<(String, String)>) -> bool {
        match self.classify(&kv.key) {
            Class::Public => true,
            Class::Instance(..) => parse::<InstanceRecord>(&kv.value).is_some_and(|r| self.ours(&r)),
            Class::Status(agent, id) => slots.contains(&(agent.to_string(), id.to_string())),
            Class::Namespaced(namespace) => self.owns_namespace(namespace),
            Class::Leader(scope) => self.owns_leader(scope),
            Class::Index(_) | Class::Hidden => false,
        }
    }
}

fn parse<T: DeserializeOwned>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

fn reply<T: serde::Serialize>(result: Result<T, WireError>) -> Response {
    match result {
        Ok(value) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json_text(&value)).into_response(),
        Err(error) => {
            let code = match &error {
                WireError::Forbidden { .. } => StatusCode::FORBIDDEN,
                WireError::LeaseNotFound { .. } => StatusCode::NOT_FOUND,
                WireError::Compacted { .. } => StatusCode::GONE,
                WireError::TooManyOps { .. } | WireError::InvalidTtl { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                WireError::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, [(header::CONTENT_TYPE, "application/json")], json_text(&error)).into_response()
        }
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"reason\":\"backend\",\"message\":\"{e}\"}}"))
}

fn store_error(error: baton_store::Error) -> WireError {
    WireError::from(&error)
}

impl ApiServer {
    /// `POST /baton/store/v1/<operation>` from a tenant's controller.
    pub(crate) async fn store_proxy(self: &Arc<Self>, identity: &Identity, operation: &str, body: Body) -> Response {
        let Some(tenant) = baton_api::tenant::controller_of(&identity.user) else {
            return reply::<()>(Err(forbidden(format!(
                "user {:?} is not a tenant's controller: only tenants' controllers reach the store through the API server",
                identity.user
            ))));
        };
        let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
            Ok(body) => body,
            Err(e) => return reply::<()>(Err(WireError::Backend { message: format!("reading the request: {e}") })),
        };
        let reach = match self.reach(tenant).await {
            Ok(reach) => reach,
            Err(e) => return reply::<()>(Err(e)),
        };
        macro_rules! request {
            ($t:ty) => {
                match serde_json::from_slice::<$t>(&body) {
                    Ok(request) => request,
                    Err(e) => {
                        return (StatusCode::BAD_REQUEST, format!("the {operation} request is not valid: {e}"))
                            .into_response();
                    }
                }
            };
        }
        match operation {
            "get" => reply(self.proxy_get(&reach, &request!(wire::GetRequest).key).await),
            "range" => {
                let request = request!(wire::RangeRequest);
                let page = PageRequest { prefix: request.prefix, ..PageRequest::default() };
                reply(
                    self.proxy_page(&reach, page)
                        .await
                        .map(|p| baton_store::RangeResponse { kvs: p.kvs, revision: p.revision }),
                )
            }
            "page" => reply(self.proxy_page(&reach, request!(PageRequest)).await),
            "txn" => reply(self.proxy_txn(&reach, request!(Txn)).await),
            "watch" => {
                let request = request!(wire::WatchRequest);
                match self.watch_slot(&identity.user) {
                    Ok(slot) => self.proxy_watch(reach, request, slot).await,
                    Err(e) => reply::<()>(Err(WireError::Backend { message: e.message })),
                }
            }
            "lease/grant" => {
                let request = request!(wire::GrantRequest);
                reply(self.proxy_grant(&reach, Duration::from_millis(request.ttl_ms)).await)
            }
            "lease/keepalive" => {
                let lease = request!(wire::LeaseRequest).lease;
                reply(self.proxy_keep_alive(&reach, lease).await)
            }
            "lease/revoke" => {
                let lease = request!(wire::LeaseRequest).lease;
                reply(self.proxy_revoke(&reach, lease).await)
            }
            _ => (StatusCode::NOT_FOUND, format!("no store operation {operation:?}")).into_response(),
        }
    }

    /// The namespaces labelled with `tenant`'s name now.
    async fn reach(&self, tenant: &str) -> Result<Reach, WireError> {
        let prefix = self.keys.registry("core", NAMESPACES, None);
        let listed = self.store.range(&prefix).await.map_err(store_error)?;
        let namespaces = listed
            .kvs
            .iter()
            .filter_map(|kv| parse::<serde_json::Value>(&kv.value))
            .filter(|ns| {
                ns.pointer(&format!("/metadata/labels/{}", baton_api::scope::TENANT_LABEL.replace('/', "~1")))
                    .and_then(serde_json::Value::as_str)
                    == Some(tenant)
            })
            .filter_map(|ns| ns.pointer("/metadata/name").and_then(serde_json::Value::as_str).map(str::to_string))
            .collect();
        Ok(Reach { keys: self.keys.clone(), scope: Scope::Tenant(tenant.to_string()), namespaces })
    }

    /// The visible instances among `kvs`' statuses, read at `revision`.
    async fn slots_for(
        &self,
        reach: &Reach,
        kvs: &[KeyValue],
        revision: Revision,
    ) -> Result<HashSet<(String, String)>, WireError> {
        if !kvs.iter().any(|kv| matches!(reach.classify(&kv.key), Class::Status(..))) {
            return Ok(HashSet::new());
        }
        self.visible_slots(reach, revision).await
    }

    /// Every instance of the scope as of `revision` (0: now).
    async fn visible_slots(&self, reach: &Reach, revision: Revision) -> Result<HashSet<(String, String)>, WireError> {
        let request = PageRequest {
            prefix: self.keys.instances(),
            revision: (revision > 0).then_some(revision),
            ..PageRequest::default()
        };
        let page = self.store.range_page(&request).await.map_err(store_error)?;
        Ok(page
            .kvs
            .iter()
            .filter_map(|kv| {
                let (agent, id) = self.keys.parse_instance_key(&kv.key)?;
                let record = parse::<InstanceRecord>(&kv.value)?;
                reach.ours(&record).then(|| (agent.to_string(), id.to_string()))
            })
            .collect())
    }

    async fn proxy_get(&self, reach: &Reach, key: &str) -> Result<Option<KeyValue>, WireError> {
        let Some(kv) = self.store.get(key).await.map_err(store_error)? else { return Ok(None) };
        let slots = self.slots_for(reach, std::slice::from_ref(&kv), 0).await?;
        Ok(reach.visible(&kv, &slots).then_some(kv))
    }

    /// A page of what the identity may see. A page whose keys are all out of reach is not
    /// returned empty with more to come (the caller, continuing after its last key, would
    /// have none to continue from): the next pages are read, at the same revision, until one
    /// has a visible key or none is left.
    async fn proxy_page(&self, reach: &Reach, mut request: PageRequest) -> Result<baton_store::RangePage, WireError> {
        loop {
            let mut page = self.store.range_page(&request).await.map_err(store_error)?;
            let last = page.kvs.last().map(|kv| kv.key.clone());
            let slots = self.slots_for(reach, &page.kvs, page.revision).await?;
            page.kvs.retain(|kv| reach.visible(kv, &slots));
            match last {
                Some(last) if page.kvs.is_empty() && page.more => {
                    request.after = Some(last);
                    request.revision = Some(page.revision);
                }
                _ => return Ok(page),
            }
        }
    }

    /// Checks every compare and operation; adds, for each instance it changes, a compare on
    /// the revision it was checked at, so the check and the write are one.
    async fn proxy_txn(&self, reach: &Reach, mut txn: Txn) -> Result<TxnResponse, WireError> {
        txn.check_size().map_err(store_error)?;
        for compare in &txn.compares {
            match reach.classify(&compare.key) {
                Class::Public | Class::Instance(..) | Class::Status(..) => {}
                Class::Namespaced(ns) if reach.owns_namespace(ns) => {}
                Class::Leader(scope) if reach.owns_leader(scope) => {}
                _ => return Err(forbidden(format!("{} is outside scope {}", compare.key, reach.scope))),
            }
        }
        let mut checked = Vec::new();
        for branch in [&txn.success, &txn.failure] {
            checked.extend(self.check_branch(reach, branch).await?);
        }
        if txn.compares.len() + checked.len() > baton_store::MAX_TXN_OPS {
            return Err(WireError::TooManyOps {
                ops: txn.compares.len() + checked.len(),
                max: baton_store::MAX_TXN_OPS,
            });
        }
        txn.compares.extend(checked);
        let mut response = self.store.txn(txn).await.map_err(store_error)?;
        for answer in &mut response.responses {
            match answer {
                OpResponse::Get(Some(kv)) => {
                    let slots = self.slots_for(reach, std::slice::from_ref(kv), 0).await?;
                    if !reach.visible(kv, &slots) {
                        *answer = OpResponse::Get(None);
                    }
                }
                // What a range read outside the scope is left out, as in a plain range.
                OpResponse::Range { kvs, .. } => {
                    let slots = self.slots_for(reach, kvs, 0).await?;
                    kvs.retain(|kv| reach.visible(kv, &slots));
                }
                _ => {}
            }
        }
        Ok(response)
    }

    /// The compares that pin what the branch's writes were checked against.
    async fn check_branch(&self, reach: &Reach, ops: &[Op]) -> Result<Vec<Compare>, WireError> {
        let mut pins = Vec::new();
        // Instances the branch writes (with the agent of a put) and deletes, by id.
        let mut put_ids: Vec<(&str, &str)> = Vec::new();
        let mut deleted_ids: Vec<&str> = Vec::new();
        for op in ops {
            let (key, value) = match op {
                Op::Get { .. } | Op::Range { .. } => continue,
                Op::DeletePrefix { prefix } => {
                    return Err(forbidden(format!("deleting the prefix {prefix} is not allowed")));
                }
                Op::Put { key, value, .. } => (key.as_str(), Some(value.as_slice())),
                Op::Delete { key } => (key.as_str(), None),
            };
            match reach.classify(key) {
                Class::Instance(agent, id) => {
                    let current = self.store.get(key).await.map_err(store_error)?;
                    let current_record = current.as_ref().and_then(|kv| parse::<InstanceRecord>(&kv.value));
                    let Some((kv, old)) = current.as_ref().zip(current_record).filter(|(_, r)| reach.ours(r)) else {
                        return Err(forbidden(format!(
                            "{key} is not an instance of scope {} (only the platform creates instances)",
                            reach.scope
                        )));
                    };
                    if let Some(value) = value {
                        let new = parse::<InstanceRecord>(value)
                            .ok_or_else(|| forbidden(format!("{key}: the value is not an instance record")))?;
                        if let Err(why) = only_stop_fields_change(&old, &new) {
                            return Err(forbidden(format!("{key}: {why}")));
                        }
                        put_ids.push((id, agent));
                    } else {
                        deleted_ids.push(id);
                    }
                    pins.push(Compare::mod_revision(key, kv.mod_revision));
                }
                Class::Index(_) => {}
                Class::Namespaced(ns) if reach.owns_namespace(ns) => {}
                Class::Leader(scope) if reach.owns_leader(scope) => {
                    if let Op::Put { lease, .. } = op {
                        self.owned_lease(reach, *lease).await?;
                    }
                }
                _ => return Err(forbidden(format!("{key} is outside scope {}", reach.scope))),
            }
        }
        // An index entry changes only with its instance, in the same branch.
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    if let Class::Index(id) = reach.classify(key)
                        && !put_ids.iter().any(|(i, agent)| *i == id && agent.as_bytes() == value.as_slice())
                    {
                        return Err(forbidden(format!("{key} is written only with its instance's record")));
                    }
                }
                Op::Delete { key } => {
                    if let Class::Index(id) = reach.classify(key)
                        && !deleted_ids.contains(&id)
                    {
                        return Err(forbidden(format!("{key} is deleted only with its instance's record")));
                    }
                }
                _ => {}
            }
        }
        Ok(pins)
    }

    async fn owned_lease(&self, reach: &Reach, lease: i64) -> Result<(), WireError> {
        let owner = self.store.get(&self.keys.lease_owner(lease)).await.map_err(store_error)?;
        if lease == 0 || owner.is_none_or(|kv| kv.value != reach.scope.to_string().as_bytes()) {
            return Err(forbidden(format!("lease {lease:x} was not granted to scope {}", reach.scope)));
        }
        Ok(())
    }

    async fn proxy_grant(&self, reach: &Reach, ttl: Duration) -> Result<wire::Granted, WireError> {
        let lease = self.store.grant_lease(ttl).await.map_err(store_error)?;
        let owner = Op::put_with_lease(self.keys.lease_owner(lease), reach.scope.to_string(), lease);
        self.store.txn(Txn::new().and_then([owner])).await.map_err(store_error)?;
        Ok(wire::Granted { lease })
    }

    async fn proxy_keep_alive(&self, reach: &Reach, lease: i64) -> Result<wire::KeptAlive, WireError> {
        // Not its own (or expired, which leaves no owner): not found, as the store says of an
        // expired one.
        if self.owned_lease(reach, lease).await.is_err() {
            return Err(WireError::LeaseNotFound { lease });
        }
        let ttl = self.store.keep_alive(lease).await.map_err(store_error)?;
        Ok(wire::KeptAlive { ttl_ms: ttl.as_millis() as u64 })
    }

    async fn proxy_revoke(&self, reach: &Reach, lease: i64) -> Result<(), WireError> {
        self.owned_lease(reach, lease).await?;
        self.store.revoke_lease(lease).await.map_err(store_error)
    }

    /// A watch: one line per batch of visible changes, a heartbeat when idle, an error line
    /// at the end if the store's watch failed.
    async fn proxy_watch(
        self: &Arc<Self>,
        reach: Reach,
        request: wire::WatchRequest,
        slot: crate::WatchSlot,
    ) -> Response {
        let from = request.from;
        let mut slots = match self.visible_slots(&reach, from.saturating_sub(1)).await {
            Ok(slots) => slots,
            Err(e) => return reply::<()>(Err(e)),
        };
        let mut watch = match self.store.watch(&request.prefix, from).await {
            Ok(watch) => watch,
            Err(e) => return reply::<()>(Err(store_error(e))),
        };
        let shutdown = self.shutdown.clone();
        // Fed by a task through a small channel, so a slow reader slows the task.
        let (tx, lines) = tokio::sync::mpsc::channel(16);
        let lines = futures::stream::unfold(lines, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let batch = tokio::select! {
                    batch = watch.next() => batch,
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        if tx.send(line(&wire::WatchLine { events: Vec::new(), error: None })).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ = shutdown.cancelled() => return,
                };
                let events = match batch {
                    Some(Ok(batch)) => batch.events,
                    Some(Err(e)) => {
                        let _ =
                            tx.send(line(&wire::WatchLine { events: Vec::new(), error: Some(store_error(e)) })).await;
                        return;
                    }
                    None => return,
                };
                let visible: Vec<WatchEvent> =
                    events.into_iter().filter(|event| follow(&reach, &mut slots, event)).collect();
                if !visible.is_empty()
                    && tx.send(line(&wire::WatchLine { events: visible, error: None })).await.is_err()
                {
                    return;
                }
            }
        });
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(lines)).into_response()
    }
}

/// Whether the controller sees `event`, keeping `slots` (its scope's instances) current.
fn follow(reach: &Reach, slots: &mut HashSet<(String, String)>, event: &WatchEvent) -> bool {
    match reach.classify(&event.kv.key) {
        Class::Instance(agent, id) => {
            let slot = (agent.to_string(), id.to_string());
            let record = match event.kind {
                EventKind::Put => &event.kv,
                EventKind::Delete => match &event.prev_kv {
                    Some(prev) => prev,
                    None => return slots.contains(&slot),
                },
            };
            let ours = parse::<InstanceRecord>(&record.value).is_some_and(|r| reach.ours(&r));
            // A deleted instance's slot stays until its status goes (the agent deletes it after).
            if ours {
                slots.insert(slot);
            }
            ours
        }
        Class::Status(agent, id) => {
            let slot = (agent.to_string(), id.to_string());
            let seen = slots.contains(&slot);
            if seen && event.kind == EventKind::Delete {
                slots.remove(&slot);
            }
            seen
        }
        _ => {
            let kv = match (&event.kind, &event.prev_kv) {
                (EventKind::Delete, Some(prev)) => prev,
                _ => &event.kv,
            };
            reach.visible(kv, slots)
        }
    }
}

fn line(value: &wire::WatchLine) -> Result<axum::body::Bytes, std::convert::Infallible> {
    let mut text = json_text(value);
    text.push('\n');
    Ok(axum::body::Bytes::from(text))
}

/// Whether `new` differs from `old` only in what stopping or retiring an instance changes.
fn only_stop_fields_change(old: &InstanceRecord, new: &InstanceRecord) -> Result<(), String> {
    if old.goal == baton_api::Goal::Stopped && new.goal != baton_api::Goal::Stopped {
        return Err("a stopped instance is not started again (the platform launches a new one)".into());
    }
    let run = RunSpec { kill_grace_seconds: old.run.kill_grace_seconds, ..(*new.run).clone() };
    let same_otherwise = InstanceRecord {
        goal: old.goal,
        stop_reason: old.stop_reason.clone(),
        holds_slot: old.holds_slot,
        end_noted: old.end_noted,
        term: old.term,
        planned_at: old.planned_at,
        run: Arc::new(run),
        ..new.clone()
    };
    if same_otherwise != *old {
        return Err("only the goal, stop reason, kill grace, slot, end noted, term and planned-at revision of an \
                    instance may change"
            .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach() -> Reach {
        Reach {
            keys: Keyspace::default(),
            scope: Scope::Tenant("a".into()),
            namespaces: BTreeSet::from(["team-a".to_string()]),
        }
    }

    #[test]
    fn keys_are_classified_by_what_they_hold() {
        let r = reach();
        let k = &r.keys;
        assert_eq!(r.classify(&k.agent("n1")), Class::Public);
        assert_eq!(r.classify(&k.drain("n1")), Class::Public);
        assert_eq!(r.classify(&k.instance("n1", "web-1")), Class::Instance("n1", "web-1"));
        assert_eq!(r.classify(&k.instance_agent("web-1")), Class::Index("web-1"));
        assert_eq!(r.classify(&k.status("n1", "web-1")), Class::Status("n1", "web-1"));
        assert_eq!(r.classify(&k.app_backoff("team-a", "web")), Class::Namespaced("team-a"));
        assert_eq!(r.classify(&k.kill_request("team-b", "web-1")), Class::Namespaced("team-b"));
        assert_eq!(r.classify(&k.leader("tenant/a")), Class::Leader("tenant/a"));
        assert_eq!(r.classify(&k.sandbox_token()), Class::Hidden);
        assert_eq!(r.classify(&k.tenant_controller_secret()), Class::Hidden);
        assert_eq!(r.classify(&k.registry_object("baton.dev", "apps", Some("team-a"), "web")), Class::Hidden);
        assert!(r.owns_leader("tenant/a") && !r.owns_leader("tenant/ab") && !r.owns_leader("platform"));
        assert!(r.owns_namespace("team-a") && !r.owns_namespace("team-b"));
    }

    #[test]
    fn compares_on_hidden_keys_are_not_a_way_in() {
        // Statuses need the slot set; anything else is decided by the key and value.
        let r = reach();
        let kv = |key: String| KeyValue {
            key,
            value: b"{}".to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        let none = HashSet::new();
        assert!(!r.visible(&kv(r.keys.status("n1", "web-1")), &none));
        assert!(r.visible(&kv(r.keys.status("n1", "web-1")), &HashSet::from([("n1".into(), "web-1".into())])));
        assert!(!r.visible(&kv(r.keys.leader("platform")), &none));
        assert!(!r.visible(&kv(r.keys.instance("n1", "x")), &none), "an unreadable record is not the scope's");
    }

    fn record(id: &str, scope: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "app": {"namespace": "team-a", "name": "web", "uid": "u"}, "scope": scope,
            "agent": "n1", "host": "h", "version": "v", "createdAt": "2026-01-01T00:00:00Z", "goal": "Running",
            "command": {"shell": "true"}, "resources": {"millicpus": 1, "memMib": 1, "diskMib": 0},
            "killGraceSeconds": 1,
        }))
        .unwrap()
    }

    fn event(kind: EventKind, key: String, value: Vec<u8>, prev: Option<Vec<u8>>) -> WatchEvent {
        let kv = |value: Vec<u8>| KeyValue {
            key: key.clone(),
            value,
            create_revision: 1,
            mod_revision: 2,
            version: 1,
            lease: 0,
        };
        WatchEvent { kind, kv: kv(value), prev_kv: prev.map(kv) }
    }

    #[test]
    fn a_watch_passes_the_scopes_instances_and_their_statuses_only() {
        let r = reach();
        let k = r.keys.clone();
        let mut slots = HashSet::new();
        let ours = record("web-1", "tenant/a");
        let theirs = record("web-2", "tenant/b");
        let status = b"{}".to_vec();
        let seen: Vec<bool> = [
            event(EventKind::Put, k.instance("n1", "web-1"), ours.clone(), None),
            event(EventKind::Put, k.instance("n1", "web-2"), theirs.clone(), None),
            event(EventKind::Put, k.status("n1", "web-1"), status.clone(), None),
            event(EventKind::Put, k.status("n1", "web-2"), status.clone(), None),
            event(EventKind::Delete, k.instance("n1", "web-1"), Vec::new(), Some(ours)),
            event(EventKind::Delete, k.instance("n1", "web-2"), Vec::new(), Some(theirs)),
            // The agent deletes the status after the record: still the scope's.
            event(EventKind::Delete, k.status("n1", "web-1"), Vec::new(), Some(status.clone())),
            event(EventKind::Delete, k.status("n1", "web-2"), Vec::new(), Some(status)),
            event(EventKind::Put, k.leader("tenant/b"), b"x".to_vec(), None),
            event(EventKind::Put, k.agent("n1"), b"{}".to_vec(), None),
        ]
        .iter()
        .map(|e| follow(&r, &mut slots, e))
        .collect();
        assert_eq!(seen, [true, false, true, false, true, false, true, false, false, true]);
        assert!(slots.is_empty(), "a slot goes with its status: {slots:?}");
    }
}
