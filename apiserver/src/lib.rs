//! `baton apiserver`: a Kubernetes-compatible API for Baton's kinds, stored in Baton's store.
//!
//! kubectl and kube-rs talk to it exactly as to a Kubernetes API server (see
//! `docs/kube-api-compat.md` in the shared docs for what they need on the wire): discovery,
//! CRUD with `resourceVersion` concurrency, list and watch from a revision, merge and JSON
//! patches, the `status` and `scale` subresources, Table output with the printer columns,
//! and `Status` errors that name the field and the value. Stored kinds live under
//! `/baton/registry/…`; the `Instance` view is built from the controller's and agents'
//! records. This crate knows nothing of scheduling: it stores, validates and serves.
#![deny(warnings, rust_2018_idioms)]
// Only the fuzz tests' counting allocator (a test build) uses `unsafe`.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use baton_store::{Keyspace, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod admission;
pub mod auth;
pub mod delegated;
mod discovery;
pub mod dns;
#[cfg(test)]
mod fuzz;
mod graph;
mod hub;
pub mod kinds;
pub mod kubeconfig;
mod list;
mod managed;
pub mod metrics;
mod namespaces;
mod objects;
mod openapi;
mod openapi_v2;
mod protobuf;
mod quota;
pub mod registrar;
mod request;
mod sandbox;
mod selectors;
pub mod setup;
pub mod status;
mod store_proxy;
mod strategic;
mod table;
pub mod tls;
mod view;
mod watch;

use kinds::Kind;
use managed::Part;
use request::Query;
use status::{ApiError, ApiResult};
use table::{Format, negotiate};

/// The largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The largest body any route takes (the store proxy's, for tenants' controllers); the
/// middleware reads every body whole up to this before a route holds it to its own limit.
const MAX_BUFFERED_BYTES: usize = store_proxy::MAX_REQUEST_BYTES;
const _: () = assert!(MAX_BUFFERED_BYTES >= MAX_BODY_BYTES);

/// How much of a too-large body is read and dropped before answering 413. A client writes
/// its whole body before it reads the answer: cut off mid-body it sees a broken pipe, not
/// the Status that says what was wrong. Beyond this the connection is closed at once.
const MAX_DRAINED_BYTES: u64 = 4 * MAX_BODY_BYTES as u64;

/// Who may use the server: bearer tokens and authorization rules. (Client certificates
/// are verified by TLS; [`serve`] passes their identity on.)
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tokens: auth::Tokens,
    pub rules: auth::Rules,
    /// Kubernetes, asked about what the rules do not allow (behind the aggregation layer).
    pub delegated: Option<Arc<delegated::Delegated>>,
}

/// Limits that keep one client from crowding out the others.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Watches one user may hold open at once.
    pub watches_per_user: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    /// What objects may hold (see [`baton_api::limits`]).
    pub input: baton_api::limits::InputLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            watches_per_user: 1000,
            bookmark_interval: std::time::Duration::from_secs(60),
            input: Default::default(),
        }
    }
}

/// What a connection's client certificate established.
#[derive(Debug, Clone)]
struct PeerIdentity(tls::ClientIdentity);

/// The API server: a store, the kinds it serves, who may use it, and a token that ends
/// open watches on shutdown.
pub struct ApiServer {
    store: Arc<dyn Store>,
    keys: Keyspace,
    kinds: Vec<Kind>,
    openapi: openapi::OpenApi,
    security: Security,
    limits: Limits,
    /// Open watches per user.
    watches: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The shared watch of each stored kind.
    hubs: hub::Hubs,
    /// Admission's reads, shared by concurrent writes.
    reads: admission::SharedReads,
    /// The lease objects with a TTL are written with, and when it was granted.
    ttl_lease: tokio::sync::Mutex<Option<(baton_store::LeaseId, std::time::Instant)>>,
    metrics: Arc<metrics::ApiMetrics>,
    shutdown: CancellationToken,
    /// Signs tenants' controllers' credentials (read from the store at start).
    controller_secret: std::sync::OnceLock<Vec<u8>>,
}

/// Counts one open watch of a user; uncounts it when dropped (the stream ends).
pub(crate) struct WatchSlot {
    server: Arc<ApiServer>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut watches = self.server.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = watches.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
        self.server.metrics.watches.dec();
    }
}

/// A request for a kind's objects, as routed from its path.
struct Route<'a> {
    group: &'a str,
    version: &'a str,
    plural: &'a str,
    namespace: Option<&'a str>,
    /// After the plural: nothing, `[name]` or `[name, subresource]`.
    rest: &'a [&'a str],
    /// The raw query string.
    query: Option<&'a str>,
}

/// A successful answer: status code, JSON body, and `Warning` headers.
pub struct Reply {
    code: StatusCode,
    body: Value,
    warnings: Vec<String>,
}

impl Reply {
    pub fn json(code: StatusCode, body: Value) -> Self {
        Self { code, body, warnings: Vec::new() }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    fn render(self, format: Format, kind: &Kind, include: table::IncludeObject) -> Response {
        let body = match format {
            // A Status or a Scale is never a table.
            Format::Table(version) if self.body.get("kind").and_then(Value::as_str) == Some(kind.kind.as_str()) => {
                let rv = self.body.pointer("/metadata/resourceVersion").cloned();
                let metadata = json!({"resourceVersion": rv});
                table::table(kind, version, std::slice::from_ref(&self.body), metadata, include)
            }
            _ => self.body,
        };
        let mut response = (self.code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        for warning in self.warnings {
            let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        response
    }
}

impl ApiServer {
    /// A server over `store`, ready to serve: the `default` namespace exists and deletions
    /// of namespaces an earlier run left unfinished are finished.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: Keyspace,
        security: Security,
        limits: Limits,
    ) -> Result<Arc<Self>, ApiError> {
        Self::start_serving(store, keys, security, limits, kinds::all()).await
    }

    /// Starts a server of `kinds` alone (e.g. [`kinds::aggregated_views`]).
    pub async fn start_serving(
        store: Arc<dyn Store>,
        keys: Keyspace,
        security: Security,
        limits: Limits,
        kinds: Vec<Kind>,
    ) -> Result<Arc<Self>, ApiError> {
        let server = Self::with_kinds(store, keys, security, limits, kinds);
        server.ensure_namespaces().await?;
        server.ensure_instance_index().await?;
        server.ensure_sandbox_token().await?;
        let secret = baton_store::secret(server.store.as_ref(), &server.keys.tenant_controller_secret()).await?;
        let _ = server.controller_secret.set(secret);
        Ok(server)
    }

    fn with_kinds(
        store: Arc<dyn Store>,
        keys: Keyspace,
        security: Security,
        limits: Limits,
        kinds: Vec<Kind>,
    ) -> Arc<Self> {
        let metrics: Arc<metrics::ApiMetrics> = Default::default();
        Arc::new(Self {
            reads: admission::SharedReads::new(store.clone(), metrics.admission_reads.clone()),
            store,
            keys,
            openapi: openapi::OpenApi::build(&kinds),
            kinds,
            security,
            limits,
            watches: Default::default(),
            hubs: Default::default(),
            ttl_lease: Default::default(),
            metrics,
            shutdown: CancellationToken::new(),
            controller_secret: Default::default(),
        })
    }

    /// What the server counts, to register with a Prometheus registry.
    pub fn metrics(&self) -> Arc<metrics::ApiMetrics> {
        self.metrics.clone()
    }

    /// Checks that the store answers every `every`, into the `store_up` metric, until the
    /// server shuts down.
    pub fn watch_store(self: &Arc<Self>, every: std::time::Duration) {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let key = server.keys.leader("apiserver-probe");
                let probe = server.store.get(&key);
                let up = matches!(tokio::time::timeout(every, probe).await, Ok(Ok(_)));
                server.metrics.store_up.set(i64::from(up));
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = server.shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Takes a watch slot for `user`, or refuses with 429 when they hold too many.
    fn watch_slot(self: &Arc<Self>, user: &str) -> ApiResult<WatchSlot> {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let open = watches.entry(user.to_string()).or_default();
        if *open >= self.limits.watches_per_user {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("user {user:?} has {open} watches open, the most allowed; close some and try again"),
            ));
        }
        *open += 1;
        self.metrics.watches.inc();
        Ok(WatchSlot { server: self.clone(), user: user.to_string() })
    }

    /// Ends every open watch (so a graceful shutdown can complete).
    pub fn close_watches(&self) {
        self.shutdown.cancel();
    }

    /// The HTTP routes, behind authentication and authorization.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(dispatch)
            .layer(axum::middleware::from_fn_with_state(self.clone(), authenticate))
            .layer(axum::middleware::from_fn_with_state(self.clone(), count))
            .with_state(self.clone())
    }

    /// Who is asking: a bearer token, else the connection's client certificate.
    fn identify(&self, request: &axum::extract::Request) -> Option<auth::Identity> {
        // The front proxy authenticated the user; its headers say who (nothing else counts).
        if let Some(tls::ClientIdentity::FrontProxy(proxy)) = request.extensions().get::<PeerIdentity>().map(|p| &p.0) {
            let (user, groups) = proxy.identity(request.headers())?;
            return Some(auth::Identity { user, groups });
        }
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match bearer {
            Some(token) if token.starts_with("baton-tenant-controller.") => {
                let tenant = baton_api::tenant::verify_controller_token(self.controller_secret.get()?, token)?;
                Some(auth::Identity {
                    user: baton_api::tenant::controller_user(tenant),
                    groups: vec![baton_api::tenant::CONTROLLERS_GROUP.to_string()],
                })
            }
            Some(token) => self.security.tokens.identify(token),
            None => match request.extensions().get::<PeerIdentity>().map(|p| &p.0) {
                Some(tls::ClientIdentity::Verified { user, groups }) => {
                    Some(auth::Identity { user: user.clone(), groups: groups.clone() })
                }
                _ => None,
            },
        }
    }

    /// Whether Kubernetes allows it, when the server asks Kubernetes (a kind it serves only).
    async fn delegated_allows(&self, identity: &auth::Identity, attributes: &auth::Attributes) -> bool {
        let Some(delegated) = &self.security.delegated else { return false };
        let Some(kind) = self.kinds.iter().find(|k| k.group == attributes.group && k.plural == attributes.resource)
        else {
            return false;
        };
        delegated.allows(identity, attributes, &kind.version).await
    }

    fn kind(&self, group: &str, version: &str, plural: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// The kinds of the core group (`/api/v1`), or of the named groups (`/apis`).
    fn kinds_of(&self, core: bool) -> Vec<Kind> {
        self.kinds.iter().filter(|k| k.group.is_empty() == core).cloned().collect()
    }

    fn is_core_namespaced(&self, plural: &str) -> bool {
        self.kinds.iter().any(|k| k.group.is_empty() && k.namespaced && k.plural == plural)
    }

    async fn handle(
        self: &Arc<Self>,
        user: &str,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
    ) -> ApiResult<Response> {
        let path = uri.path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let ok = |value: Value| {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response())
        };
        let discovery = |aggregated: Value, legacy: Value| match discovery::aggregated_version(accept) {
            Some(version) => {
                let mut doc = aggregated;
                doc["apiVersion"] = json!(format!("apidiscovery.k8s.io/{version}"));
                Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, discovery::aggregated_content_type(version))],
                    doc.to_string(),
                )
                    .into_response())
            }
            None => ok(legacy),
        };
        let query = uri.query();
        let is_resource = (segments.len() > 3 && segments[0] == "apis") || (segments.len() > 2 && segments[0] == "api");
        if method != Method::GET && !is_resource {
            return Err(ApiError::method_not_allowed(&path));
        }
        let (core, named) = (self.kinds_of(true), self.kinds_of(false));
        match segments.as_slice() {
            ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
            ["version"] => ok(discovery::version()),
            ["api"] => discovery(discovery::aggregated(&core, "v2"), discovery::core_versions()),
            ["api", "v1"] => ok(discovery::resource_list(&core)),
            ["apis"] => discovery(discovery::aggregated(&named, "v2"), discovery::group_list(&named)),
            ["apis", group] if named.first().is_some_and(|k| k.group == *group) => ok(discovery::group(&named)),
            ["apis", group, version] if named.first().is_some_and(|k| k.group == *group && k.version == *version) => {
                ok(discovery::resource_list(&named))
            }
            ["openapi", "v2"] => Ok(openapi_v2(accept, self.openapi.v2())),
            ["openapi", "v3"] => ok(self.openapi.index().clone()),
            ["openapi", "v3", rest @ ..] => match self.openapi.document(&rest.join("/")) {
                Some(document) => ok(document.clone()),
                None => Err(ApiError::not_found_path(&path)),
            },
            ["api", "v1", "namespaces", namespace, plural, rest @ ..] if self.is_core_namespaced(plural) => {
                let route = Route { group: "", version: "v1", plural, namespace: Some(namespace), rest, query };
                self.resource(user, method, route, &headers, body).await
            }
            ["api", "v1", plural, rest @ ..] => {
                let route = Route { group: "", version: "v1", plural, namespace: None, rest, query };
                self.resource(user, method, route, &headers, body).await
            }
            ["apis", group, version, "namespaces", namespace, plural, rest @ ..] => {
                let route = Route { group, version, plural, namespace: Some(namespace), rest, query };
                self.resource(user, method, route, &headers, body).await
            }
            ["apis", group, version, plural, rest @ ..] => {
                let route = Route { group, version, plural, namespace: None, rest, query };
                self.resource(user, method, route, &headers, body).await
            }
            _ => Err(ApiError::not_found_path(&path)),
        }
    }

    async fn resource(
        self: &Arc<Self>,
        user: &str,
        method: Method,
        route: Route<'_>,
        headers: &HeaderMap,
        body: Body,
    ) -> ApiResult<Response> {
        let Route { group, version, plural, namespace, rest, query: raw_query } = route;
        let path = if group.is_empty() {
            format!("/api/{version}/{plural}")
        } else {
            format!("/apis/{group}/{version}/{plural}")
        };
        let kind = self.kind(group, version, plural).ok_or_else(|| ApiError::not_found_path(&path))?.clone();
        let (name, subresource) = match rest {
            [] => (None, None),
            [name] => (Some(*name), None),
            [name, sub] => (Some(*name), Some(*sub)),
            _ => return Err(ApiError::not_found_path(&path)),
        };
        let scope_fits = if kind.namespaced { namespace.is_some() || name.is_none() } else { namespace.is_none() };
        let sub_exists = match subresource {
            None => true,
            Some("status") => kind.status_subresource,
            Some("scale") => kind.scale.is_some(),
            Some("log") => matches!(kind.source, kinds::Source::InstanceView),
            Some(_) => false,
        };
        if !scope_fits || !sub_exists {
            return Err(ApiError::not_found_path(&path));
        }
        if let (Some("log"), Some(name)) = (subresource, name) {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(&format!("{path}/{name}/log")));
            }
            return self.instance_log(&kind, namespace, name, raw_query).await;
        }
        if let Some(ns) = namespace
            && let Some(problem) = baton_api::names::dns_label_problem(ns)
        {
            return Err(ApiError::bad_request(format!("namespace {ns:?} is not a valid namespace name: {problem}")));
        }
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let format = negotiate(accept)?;
        let mut query = Query::parse(raw_query)?;
        query.selectors.fields.resolve(&kind.plural, &kind.fields)?;
        query.client = manager_from_user_agent(headers);
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let view = kind.is_read_only();
        let part = match subresource {
            Some("status") => Part::Status,
            Some("scale") => Part::Scale,
            _ => Part::Main,
        };
        let reply = match (method.clone(), name) {
            (Method::GET, None) if query.watch => {
                let slot = self.watch_slot(user)?;
                return if view {
                    self.watch_view(&kind, namespace, &query, format, slot).await
                } else {
                    self.watch_registry(&kind, namespace, &query, format, slot).await
                };
            }
            (Method::GET, None) => {
                let list = self.list(&kind, namespace, &query).await?;
                let body = match format {
                    Format::Table(version) => {
                        table::table(&kind, version, &list.items, list.metadata, query.include_object)
                    }
                    Format::Json => json!({
                        "apiVersion": kind.api_version(),
                        "kind": format!("{}List", kind.kind),
                        "metadata": list.metadata,
                        "items": list.items,
                    }),
                };
                return Ok(
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
                );
            }
            (Method::GET, Some(name)) => {
                let object = match (view, part) {
                    (true, _) => self.get_view(&kind, namespace, name).await?,
                    (false, Part::Scale) => self.get_scale(&kind, namespace, name).await?,
                    (false, _) => self.get_object(&kind, namespace, name).await?,
                };
                Reply::json(StatusCode::OK, object)
            }
            (Method::DELETE, Some(name)) if view && part == Part::Main => {
                let options = delete_options(content_type, body, &mut query).await?;
                self.kill_instance(&kind, namespace, name, user, &query, &options).await?
            }
            _ if view => return Err(ApiError::method_not_allowed(&format!("{} (a read-only view)", kind.plural))),
            (Method::POST, None) => {
                let body = read_body(body).await?;
                self.create(&kind, namespace, &query, request::parse_body(content_type, &body)?).await?
            }
            (Method::PUT, Some(name)) => {
                let body = read_body(body).await?;
                self.replace(&kind, namespace, name, part, &query, request::parse_body(content_type, &body)?).await?
            }
            (Method::PATCH, Some(name)) => {
                let body = read_body(body).await?;
                self.patch(&kind, namespace, name, part, &query, request::parse_patch(content_type, &body)?).await?
            }
            (Method::DELETE, Some(name)) if part == Part::Main => {
                let options = delete_options(content_type, body, &mut query).await?;
                if kind.is_namespace() {
                    Reply::json(StatusCode::OK, self.delete_namespace(name, query.dry_run).await?)
                } else {
                    self.delete(&kind, namespace, name, &query, &options).await?
                }
            }
            _ => return Err(ApiError::method_not_allowed(&format!("{method} {path}"))),
        };
        Ok(reply.render(format, &kind, query.include_object))
    }
}

/// Authenticates every request but the health checks (401 otherwise) and authorizes it
/// (403 otherwise); the identity goes on to the handlers.
/// Counts every answer by method and status code.
async fn count(
    State(server): State<Arc<ApiServer>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let labels = metrics::RequestLabels { method, code: response.status().as_u16() };
    server.metrics.requests.get_or_create(&labels).inc();
    response
}

async fn authenticate(
    State(server): State<Arc<ApiServer>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let needs = auth::needs(request.method(), request.uri().path(), request.uri().query());
    if needs == auth::Needs::Nothing {
        return match buffered(request).await {
            Ok(request) => next.run(request).await,
            Err(response) => response,
        };
    }
    let Some(identity) = server.identify(&request) else {
        let message = match request.extensions().get::<PeerIdentity>().map(|p| &p.0) {
            Some(tls::ClientIdentity::Rejected(why)) => format!("Unauthorized: {why}"),
            Some(tls::ClientIdentity::FrontProxy(proxy)) => {
                format!("Unauthorized: the front proxy named no user ({})", proxy.username_headers.join(", "))
            }
            _ => "Unauthorized: give a bearer token or a client certificate".to_string(),
        };
        return refuse(request, ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)).await;
    };
    if let auth::Needs::Authorization(attributes) = &needs
        && !server.security.rules.allows(&identity, attributes)
        && !server.tenant_grants(&identity, attributes).await
        && !server.delegated_allows(&identity, attributes).await
    {
        let message = auth::forbidden_message(&identity, attributes);
        return refuse(request, ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)).await;
    }
    request.extensions_mut().insert(identity);
    match buffered(request).await {
        Ok(request) => next.run(request).await,
        Err(response) => response,
    }
}

/// The answer to a request refused before its body was read: the body is read and dropped
/// first. A connection closed with request bytes still unread is reset by TCP, and the client
/// may lose the answer with it (Loop run 23: `io: Peer disconnected` on a refused PUT). Bytes
/// past [`MAX_DRAINED_BYTES`] are not read: the connection then closes after the answer.
async fn refuse(request: axum::extract::Request, error: ApiError) -> Response {
    let mut response = error.into_response();
    let drained = matches!(
        read_to_end(request.into_body(), 0).await,
        Ok(BodyRead::Kept(_) | BodyRead::TooLong { drained: true })
    );
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request with its whole body read (at most [`MAX_BUFFERED_BYTES`]; each route then
/// holds it to its own limit), so that no answer — a 405, a 404 before the body is looked
/// at — leaves bytes unread on the connection (see [`refuse`]); a longer body is answered 413
/// here.
async fn buffered(request: axum::extract::Request) -> Result<axum::extract::Request, Response> {
    let (parts, body) = request.into_parts();
    match read_to_end(body, MAX_BUFFERED_BYTES).await {
        Ok(BodyRead::Kept(bytes)) => Ok(axum::extract::Request::from_parts(parts, Body::from(bytes))),
        Ok(BodyRead::TooLong { .. }) => {
            let mut response = ApiError::too_large(MAX_BUFFERED_BYTES).into_response();
            // Not all of it may have been read (past MAX_DRAINED_BYTES).
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
        Err(e) => Err(e.into_response()),
    }
}

impl ApiServer {
    /// Whether a Tenant lets `who`, one of its users or a member of one of its groups, do what
    /// `what` asks in one of its namespaces (read and write, there only). Read from the store
    /// when the authorization rules alone refuse.
    ///
    /// A tenant's controller may do the same in its tenant's namespaces (Apps, AppGroups,
    /// Instances, Events), and read Maintenances; nothing else.
    async fn tenant_grants(&self, who: &auth::Identity, what: &auth::Attributes) -> bool {
        let controller_of = baton_api::tenant::controller_of(&who.user);
        let Some(namespace) = what.namespace.as_deref() else {
            return controller_of.is_some()
                && what.access == auth::Access::Read
                && what.group == baton_api::GROUP
                && what.resource == "maintenances";
        };
        if controller_of.is_some() && !["apps", "appgroups", "instances", "events"].contains(&what.resource.as_str()) {
            return false;
        }
        let parse = |kv: &baton_store::KeyValue| serde_json::from_slice::<baton_api::Tenant>(&kv.value).ok();
        if let Some(name) = controller_of {
            // A controller's every request comes here: read its one Tenant, not all of them.
            let key = self.keys.registry_object(baton_api::GROUP, "tenants", None, name);
            let Ok(Some(kv)) = self.store.get(&key).await else { return false };
            return parse(&kv).is_some_and(|tenant| tenant.spec.namespaces.iter().any(|n| n == namespace));
        }
        let prefix = self.keys.registry(baton_api::GROUP, "tenants", None);
        let Ok(listed) = self.store.range(&prefix).await else { return false };
        listed.kvs.iter().filter_map(parse).any(|tenant| tenant.grants(&who.user, &who.groups, namespace))
    }
}

async fn dispatch(
    State(server): State<Arc<ApiServer>>,
    identity: Option<axum::Extension<auth::Identity>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(operation) = uri.path().strip_prefix(baton_store::wire::PATH).and_then(|p| p.strip_prefix('/')) {
        return match (&identity, method) {
            (Some(identity), Method::POST) => server.store_proxy(&identity.0, operation, body).await,
            (None, _) => ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized").into_response(),
            (Some(_), method) => ApiError::method_not_allowed(&format!("{method} {}", uri.path())).into_response(),
        };
    }
    let user = identity.map(|i| i.0.user).unwrap_or_default();
    let started = std::time::Instant::now();
    let (logged_method, logged_uri) = (method.clone(), uri.clone());
    // The body was read whole before (see `buffered`): whatever the answer, nothing is left
    // unread on the connection.
    let response = server.handle(&user, method, uri, headers, body).await.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(method = %logged_method, uri = %logged_uri, status = response.status().as_u16(),
                    micros = started.elapsed().as_micros() as u64, "request");
    response
}

/// The field manager of a write that names none: the client's name from its User-Agent
/// (`kubectl/v1.32.4 (linux/amd64) …` → `kubectl`), as Kubernetes does.
fn manager_from_user_agent(headers: &HeaderMap) -> String {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let name: String = agent.split('/').next().unwrap_or_default().chars().take(128).collect();
    if name.trim().is_empty() { "unknown".into() } else { name.trim().to_string() }
}

/// A DELETE's `DeleteOptions` (`{}` without a body); a `dryRun` in them goes to `query`.
async fn delete_options(content_type: Option<&str>, body: Body, query: &mut Query) -> ApiResult<Value> {
    let body = read_body(body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let options = request::parse_body(content_type, &body)?;
    query.merge_delete_options(&options)?;
    Ok(options)
}

/// The request body, at most [`MAX_BODY_BYTES`]; a longer one is a 413.
async fn read_body(body: Body) -> ApiResult<axum::body::Bytes> {
    match read_to_end(body, MAX_BODY_BYTES).await? {
        BodyRead::Kept(bytes) => Ok(bytes),
        BodyRead::TooLong { .. } => Err(ApiError::too_large(MAX_BODY_BYTES)),
    }
}

/// A request body read to its end.
enum BodyRead {
    /// All of it, at most the bytes asked to keep.
    Kept(axum::body::Bytes),
    /// Longer: dropped, and read to its end unless that was past [`MAX_DRAINED_BYTES`] — so
    /// the client, which writes its whole body before it reads, gets to read the answer.
    TooLong { drained: bool },
}

/// Reads `body` to its end, keeping it if it is at most `keep` bytes.
async fn read_to_end(body: Body, keep: usize) -> ApiResult<BodyRead> {
    use axum::body::HttpBody as _;
    use futures::StreamExt as _;
    if body.size_hint().lower() > MAX_DRAINED_BYTES {
        return Ok(BodyRead::TooLong { drained: false });
    }
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        seen += chunk.len() as u64;
        if seen <= keep as u64 {
            kept.extend_from_slice(&chunk);
        } else if seen > MAX_DRAINED_BYTES {
            return Ok(BodyRead::TooLong { drained: false });
        }
    }
    Ok(if seen > keep as u64 { BodyRead::TooLong { drained: true } } else { BodyRead::Kept(kept.into()) })
}

/// `/openapi/v2`: in protobuf (as kubectl asks) or JSON.
fn openapi_v2(accept: Option<&str>, document: &Value) -> Response {
    const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    if accept.is_some_and(|a| a.contains("protobuf")) {
        return (StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], openapi_v2::encode(document)).into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response()
}

/// Serves the API over TLS on `listener` until `shutdown` completes. A client certificate
/// (verified by `tls`) identifies the connection's user; open watches are ended first, then
/// connections are given 10 s to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<ApiServer>,
    tls: tls::ServerTls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let router = server.router();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let trust = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let peer_identity = PeerIdentity(trust.identify(stream.get_ref().1.peer_certificates()));
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer_identity.clone());
                router.clone().oneshot(request.map(Body::new))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    server.close_watches();
    if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open 10 s after shutdown began; closing them");
    }
    Ok(())
}
