//! Watches: one JSON event per line, fed by a store watch from the requested revision.
//!
//! - `resourceVersion` empty or `0`: an ADDED event for every current object, then changes.
//! - `resourceVersion=N`: every change after N, then live changes. If N is older than the
//!   history the store keeps, the answer is 200 with one in-stream ERROR event carrying a
//!   410 `Expired` Status (kube-rs relists on that; an HTTP 410 would make it retry forever).
//! - `sendInitialEvents=true`: ADDED for all, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"`.
//! - Selectors apply to both sides of a change: an object that stops matching is DELETED
//!   for this watcher, one that starts matching is ADDED.
//! - `timeoutSeconds` closes the stream after that long; without it, the stream stays open
//!   until the client goes away.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton_store::{EventKind, Revision, WatchEvent};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{Value, json};

use std::sync::Arc;

use crate::ApiServer;
use crate::hub::Change;
use crate::kinds::Kind;
use crate::objects::object_of;
use crate::request::Query;
use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult};
use crate::table::{Format, IncludeObject, table};
use tokio_util::sync::CancellationToken;

/// Encodes watch events in the format the client asked for.
#[derive(Clone)]
pub struct Encoder {
    pub kind: Kind,
    pub format: Format,
    pub include: IncludeObject,
}

impl Encoder {
    /// One event line.
    pub fn event(&self, type_: &str, object: &Value) -> Bytes {
        let object = match self.format {
            Format::Json => object.clone(),
            Format::Table(version) => {
                let metadata = json!({"resourceVersion": object.pointer("/metadata/resourceVersion")});
                table(&self.kind, version, std::slice::from_ref(object), metadata, self.include)
            }
        };
        line(&json!({"type": type_, "object": object}))
    }

    /// A BOOKMARK at `revision`; `initial_events_end` marks the end of a streaming list.
    pub fn bookmark(&self, revision: Revision, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": metadata}}),
        )
    }

    /// An in-stream ERROR event; the stream ends after it.
    pub fn error(&self, error: &ApiError) -> Bytes {
        line(&json!({"type": "ERROR", "object": error.to_status()}))
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Which event a change is for a watcher with `selectors`, given whether the object matched
/// before and matches after (`None`: it did not exist on that side).
pub fn transition(before: Option<bool>, after: Option<bool>) -> Option<&'static str> {
    match (before, after) {
        (None | Some(false), Some(true)) => Some("ADDED"),
        (Some(true), Some(true)) => Some("MODIFIED"),
        (Some(true), None | Some(false)) => Some("DELETED"),
        _ => None,
    }
}

/// The revision a watch starts after: parsed from `resourceVersion`, or `None` for "send
/// the current state first".
pub fn start_revision(query: &Query) -> ApiResult<Option<Revision>> {
    match query.resource_version.as_deref() {
        None | Some("0") => Ok(None),
        Some(rv) if query.send_initial_events => {
            rv.parse::<Revision>().map_err(|_| bad_version(rv))?;
            Ok(None)
        }
        Some(rv) => rv.parse::<Revision>().map(Some).map_err(|_| bad_version(rv)),
    }
}

fn bad_version(rv: &str) -> ApiError {
    ApiError::bad_request(format!(
        "resourceVersion {rv:?} is not a resource version this server issued (a whole number)"
    ))
}

/// Streams `initial` events, then `live` ones, closing after the query's timeout or when
/// the server shuts down.
pub fn respond(
    initial: Vec<Bytes>,
    live: BoxStream<'static, Bytes>,
    query: &Query,
    shutdown: &CancellationToken,
    slot: crate::WatchSlot,
) -> Response {
    // The slot lives as long as the stream: the watch counts until it ends.
    let events = stream::iter(initial).chain(live).take_until(shutdown.clone().cancelled_owned()).map(move |event| {
        let _ = &slot;
        event
    });
    let events: BoxStream<'static, Bytes> = match query.timeout_seconds {
        Some(seconds) => events.take_until(tokio::time::sleep(Duration::from_secs(seconds))).boxed(),
        None => events.boxed(),
    };
    let body = Body::from_stream(events.map(Ok::<_, std::convert::Infallible>));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

impl ApiServer {
    /// Bookmark ticks for a watch that allows them.
    fn bookmark_ticks(&self, query: &Query) -> Option<tokio::time::Interval> {
        let period = self.limits.bookmark_interval;
        query.allow_bookmarks.then(|| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        })
    }

    /// Follows the store under `prefix` from revision `from`, turning each change into
    /// events with `convert`. History that is gone becomes an in-stream 410 ERROR
    /// event, as does any later failure of the store watch; the stream ends after it.
    /// With `allowWatchBookmarks`, a BOOKMARK every [`crate::Limits::bookmark_interval`]
    /// carries the last revision this watch has seen (including changes no event was sent
    /// for), so a client that resumes from it does not replay them.
    pub async fn follow<C>(
        &self,
        prefix: &str,
        from: Revision,
        encoder: Encoder,
        query: &Query,
        convert: C,
    ) -> ApiResult<BoxStream<'static, Bytes>>
    where
        C: FnMut(&WatchEvent) -> Vec<Bytes> + Send + 'static,
    {
        let watch = match self.store.watch(prefix, from).await {
            Ok(watch) => watch,
            Err(e @ baton_store::Error::Compacted { .. }) => {
                return Ok(stream::iter([encoder.error(&ApiError::from(e))]).boxed());
            }
            Err(e) => return Err(e.into()),
        };
        let source = watch.map(|batch| batch.map(|b| b.events).map_err(ApiError::from)).boxed();
        let state = Follow {
            source,
            ticks: self.bookmark_ticks(query),
            seen: from - 1,
            convert,
            revision_of: WatchEvent::revision,
            encoder,
            done: false,
        };
        Ok(stream::unfold(state, Follow::next).flat_map(stream::iter).boxed())
    }

    /// `GET …/<plural>?watch=true` for a stored kind: from the kind's shared watch when it
    /// still holds the changes asked for, else from a store watch of its own.
    pub(crate) async fn watch_registry(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        query: &Query,
        format: Format,
        slot: crate::WatchSlot,
    ) -> ApiResult<Response> {
        let encoder = Encoder { kind: kind.clone(), format, include: query.include_object };
        let prefix = self.keys.registry(kind.store_group(), &kind.plural, namespace);
        let mut initial = Vec::new();
        let from = match start_revision(query)? {
            Some(revision) => revision + 1,
            None => {
                let range = self.store.range(&prefix).await?;
                for kv in &range.kvs {
                    let object = object_of(kv)?;
                    if query.selectors.matches(&object) {
                        initial.push(encoder.event("ADDED", &object));
                    }
                }
                if query.send_initial_events && query.allow_bookmarks {
                    initial.push(encoder.bookmark(range.revision, true));
                }
                range.revision + 1
            }
        };
        let selectors = query.selectors.clone();
        let all_prefix = self.keys.registry(kind.store_group(), &kind.plural, None);
        let hub = self.hubs.get(&self.store, &all_prefix, from).await?;
        let live = match hub.subscribe(from) {
            Some(subscription) => {
                let namespace = namespace.map(str::to_string);
                let events = encoder.clone();
                let convert = move |change: &Arc<Change>| {
                    change_event(&events, &selectors, namespace.as_deref(), change).into_iter().collect()
                };
                let replay = stream::iter((!subscription.replay.is_empty()).then_some(Ok(subscription.replay)));
                // A watcher too slow for the shared watch is closed; it resumes from the
                // last revision it saw.
                let live = stream::unfold(Some(subscription.live), |live| async move {
                    let mut live = live?;
                    let batch = next_changes(&mut live).await?;
                    Some((batch, Some(live)))
                })
                .map(move |batch| Ok(batch.into_iter().filter(|change| change.revision >= from).collect()));
                let state = Follow {
                    source: replay.chain(live).boxed(),
                    ticks: self.bookmark_ticks(query),
                    seen: from - 1,
                    convert,
                    revision_of: |change: &Arc<Change>| change.revision,
                    encoder,
                    done: false,
                };
                stream::unfold(state, Follow::next).flat_map(stream::iter).boxed()
            }
            None => {
                let events = encoder.clone();
                let convert =
                    move |event: &WatchEvent| registry_event(&events, &selectors, event).into_iter().collect();
                self.follow(&prefix, from, encoder, query, convert).await?
            }
        };
        Ok(respond(initial, live, query, &self.shutdown, slot))
    }
}

/// Changes waiting at most for a batch: one write per batch to the client, not per change.
const BATCH: usize = 256;

/// The next changes of a shared watch: the first to come and those already behind it.
/// `None` when the watch is over, or this watcher fell too far behind (it then resumes
/// from the last revision it saw, as after any closed watch).
async fn next_changes(live: &mut tokio::sync::broadcast::Receiver<Arc<Change>>) -> Option<Vec<Arc<Change>>> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut batch = vec![live.recv().await.ok()?];
    while batch.len() < BATCH {
        match live.try_recv() {
            Ok(change) => batch.push(change),
            Err(TryRecvError::Empty) => break,
            // Behind or closed: the watch ends here, and the client resumes from the last
            // revision it was sent (so this batch is sent again then).
            Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => return None,
        }
    }
    Some(batch)
}

/// The state of a followed watch: batches of items (store events or shared changes).
struct Follow<T, C> {
    source: BoxStream<'static, Result<Vec<T>, ApiError>>,
    ticks: Option<tokio::time::Interval>,
    /// The last revision the source delivered.
    seen: Revision,
    convert: C,
    revision_of: fn(&T) -> Revision,
    encoder: Encoder,
    done: bool,
}

impl<T: Send + 'static, C: FnMut(&T) -> Vec<Bytes> + Send + 'static> Follow<T, C> {
    /// The next lines to send, or `None` when the watch is over.
    async fn next(mut self) -> Option<(Vec<Bytes>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let batch = match &mut self.ticks {
                Some(ticks) => tokio::select! {
                    batch = self.source.next() => batch,
                    _ = ticks.tick() => {
                        let bookmark = self.encoder.bookmark(self.seen, false);
                        return Some((vec![bookmark], self));
                    }
                },
                None => self.source.next().await,
            };
            match batch {
                None => return None,
                Some(Err(e)) => {
                    self.done = true;
                    let error = self.encoder.error(&e);
                    return Some((vec![error], self));
                }
                Some(Ok(items)) => {
                    if let Some(last) = items.last() {
                        self.seen = self.seen.max((self.revision_of)(last));
                    }
                    let lines: Vec<Bytes> = items.iter().flat_map(&mut self.convert).collect();
                    match lines.len() {
                        0 => {}
                        1 => return Some((lines, self)),
                        // One body frame (one TLS record, one write) for the whole batch.
                        _ => return Some((vec![Bytes::from(lines.concat())], self)),
                    }
                }
            }
        }
    }
}

/// The watch event (if any) one shared change means for this watcher. JSON lines are
/// encoded once per change, for every JSON watcher.
fn change_event(encoder: &Encoder, selectors: &Selectors, namespace: Option<&str>, change: &Change) -> Option<Bytes> {
    let matches = |object: &Value| {
        namespace.is_none_or(|ns| object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && selectors.matches(object)
    };
    let type_ = transition(change.before.as_deref().map(matches), change.after.as_deref().map(matches))?;
    match encoder.format {
        Format::Json => change.json_line(type_, |object| encoder.event(type_, object)),
        Format::Table(_) => Some(encoder.event(type_, &change.object(type_)?)),
    }
}

/// The watch event (if any) one store change of a stored object means for this watcher.
fn registry_event(encoder: &Encoder, selectors: &Selectors, event: &WatchEvent) -> Option<Bytes> {
    let before = event.prev_kv.as_ref().and_then(|kv| object_of(kv).ok());
    let after = match event.kind {
        EventKind::Put => object_of(&event.kv).ok(),
        EventKind::Delete => None,
    };
    let type_ =
        transition(before.as_ref().map(|o| selectors.matches(o)), after.as_ref().map(|o| selectors.matches(o)))?;
    let object = match (type_, after, before) {
        ("DELETED", None, Some(mut before)) => {
            // A deleted object carries the revision of its deletion.
            before["metadata"]["resourceVersion"] = json!(event.revision().to_string());
            before
        }
        (_, Some(after), _) => after,
        (_, None, Some(before)) => before,
        (_, None, None) => return None,
    };
    Some(encoder.event(type_, &object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_transitions() {
        assert_eq!(transition(None, Some(true)), Some("ADDED"));
        assert_eq!(transition(None, Some(false)), None);
        assert_eq!(transition(Some(true), Some(true)), Some("MODIFIED"));
        assert_eq!(transition(Some(false), Some(true)), Some("ADDED"));
        assert_eq!(transition(Some(true), Some(false)), Some("DELETED"));
        assert_eq!(transition(Some(true), None), Some("DELETED"));
        assert_eq!(transition(Some(false), None), None);
    }
}
