//! Posts the plan's events to the API server as core/v1 Events, off the reconcile loop.
//!
//! Like Kubernetes' event recorder, an event that repeats (same object, reason and message)
//! bumps the `count` and `lastTimestamp` of the event already posted instead of adding
//! another. An event's name is derived from what makes it the same event, so this holds
//! across restarts and leader changes too: a create that finds the event there bumps it.
//! Events are queued; if the API server falls behind, events beyond the queue are dropped
//! (and counted in the log) rather than slowing the controller down.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::plan::events::{Event, Regarding};

/// Events waiting to be posted.
const QUEUE: usize = 1024;
/// Repeats remembered for aggregation.
const REMEMBERED: usize = 4096;
/// Who reports, in `source.component`.
pub const COMPONENT: &str = "baton-controller";
/// The namespace of events about cluster-scoped objects (agents), as Kubernetes does for
/// nodes.
const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// Queues events for posting.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Event>,
}

/// What makes two events the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    kind: &'static str,
    name: String,
    reason: &'static str,
    message: String,
}

impl Key {
    /// The event's name: the object's, then a hash of what makes the event the same one.
    fn event_name(&self, uid: &str) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for part in [self.kind, uid, self.reason, self.message.as_str()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let suffix: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{}.{suffix}", self.name)
    }
}

impl Recorder {
    /// Starts the task that posts events as `instance` (the controller's id).
    pub fn start(client: kube::Client, instance: String, shutdown: CancellationToken) -> Self {
        let (queue, mut events) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            let mut poster = Poster { client, instance, posted: HashMap::new() };
            loop {
                let event = tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                    _ = shutdown.cancelled() => return,
                };
                poster.post(event).await;
            }
        });
        Self { queue }
    }

    /// Queues events; drops them if the queue is full.
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let mut dropped = 0;
        for event in events {
            if self.queue.try_send(event).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "the API server is behind on events; some were not recorded");
        }
    }
}

struct Poster {
    client: kube::Client,
    instance: String,
    /// Events posted: the name of each and how often it happened.
    posted: HashMap<Key, (String, i32)>,
}

impl Poster {
    async fn post(&mut self, event: Event) {
        let (namespace, reference) = match &event.regarding {
            Regarding::App(app) => (
                app.namespace.clone(),
                ObjectReference {
                    api_version: Some(baton_api::API_VERSION.into()),
                    kind: Some("App".into()),
                    name: Some(app.name.clone()),
                    namespace: Some(app.namespace.clone()),
                    uid: Some(app.uid.clone()),
                    ..ObjectReference::default()
                },
            ),
            Regarding::Agent(agent) => (
                CLUSTER_EVENTS_NAMESPACE.to_string(),
                ObjectReference {
                    api_version: Some(baton_api::API_VERSION.into()),
                    kind: Some(baton_api::agent::AGENT_KIND.into()),
                    name: Some(agent.clone()),
                    uid: Some(agent.clone()),
                    ..ObjectReference::default()
                },
            ),
            Regarding::Maintenance(name, uid) => (
                CLUSTER_EVENTS_NAMESPACE.to_string(),
                ObjectReference {
                    api_version: Some(baton_api::API_VERSION.into()),
                    kind: Some("Maintenance".into()),
                    name: Some(name.clone()),
                    uid: Some(uid.clone()),
                    ..ObjectReference::default()
                },
            ),
        };
        let key = Key {
            namespace: namespace.clone(),
            kind: match event.regarding {
                Regarding::App(_) => "App",
                Regarding::Agent(_) => "Agent",
                Regarding::Maintenance(..) => "Maintenance",
            },
            name: reference.name.clone().unwrap_or_default(),
            reason: event.reason,
            message: event.message.clone(),
        };
        let api: kube::Api<KubeEvent> = kube::Api::namespaced(self.client.clone(), &namespace);
        let now = Time(Timestamp::now());
        let name = key.event_name(reference.uid.as_deref().unwrap_or_default());
        // Known to be posted: count it, unless it expired or was deleted meanwhile (then it is
        // posted anew).
        if let Some((_, count)) = self.posted.get(&key).cloned()
            && let Some(count) = self.bump(&api, &name, count, &now).await
        {
            self.posted.insert(key, (name, count));
            return;
        }
        let object = KubeEvent {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace), ..ObjectMeta::default() },
            involved_object: reference,
            reason: Some(event.reason.into()),
            message: Some(event.message.clone()),
            type_: Some(event.type_.as_str().into()),
            source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
            reporting_component: Some(format!("{}/controller", baton_api::GROUP)),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            count: Some(1),
            ..KubeEvent::default()
        };
        let params = PostParams { field_manager: Some(COMPONENT.into()), ..PostParams::default() };
        let count = match api.create(&params, &object).await {
            Ok(_) => 1,
            // Posted before (by an earlier run, or another leader): it happened once more.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let seen = match api.get(&name).await {
                    Ok(existing) => existing.count.unwrap_or(1),
                    Err(e) => {
                        tracing::warn!(error = %e, reason = event.reason, "could not read an event to update");
                        return;
                    }
                };
                match self.bump(&api, &name, seen, &now).await {
                    Some(count) => count,
                    None => return,
                }
            }
            // The namespace is being deleted, or is gone: nothing to report on.
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => return,
            Err(e) => {
                tracing::warn!(error = %e, reason = event.reason, "could not record an event");
                return;
            }
        };
        if self.posted.len() >= REMEMBERED {
            self.posted.clear();
        }
        self.posted.insert(key, (name, count));
    }

    /// Counts one more occurrence of the event `name` seen `count` times; the new count, or
    /// `None` if the event is gone (or could not be written: logged).
    async fn bump(&self, api: &kube::Api<KubeEvent>, name: &str, count: i32, now: &Time) -> Option<i32> {
        let patch = json!({"count": count + 1, "lastTimestamp": now});
        let params = PatchParams { field_manager: Some(COMPONENT.into()), ..PatchParams::default() };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Some(count + 1),
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(e) => {
                tracing::warn!(error = %e, event = name, "could not update an event");
                None
            }
        }
    }
}
