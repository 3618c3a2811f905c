//! The API server over HTTP, on a real embedded store: the semantics kubectl and kube-rs
//! rely on, request by request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use baton_apiserver::auth::{Rules, Tokens};
use baton_apiserver::{ApiServer, Limits, Security};
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{Keyspace, Store, StoreExt};
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
        let security = Security {
            tokens: Tokens::parse("admin-token,admin,baton:admins\nalice-token,alice,team-a\nbob-token,bob\n").unwrap(),
            rules: Rules::parse("rules:\n- groups: [team-a]\n  namespaces: [default]\n  access: read\n").unwrap(),
        };
        let router =
            ApiServer::new(store.clone(), Keyspace::default(), security, Limits { watches_per_user: 3 }).router();
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
    assert_eq!(columns, ["Name", "Instances", "Running", "Staged", "Version", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "db");
    assert_eq!(table["rows"][0]["cells"][1], 2);
}

#[tokio::test]
async fn watch_replays_from_a_version_and_follows() {
    let api = Api::new().await;
    let created = api.create("web", 1).await;
    let patch = json!({"spec": {"instances": 2}});
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
    let (code, _) = api.call(Method::DELETE, &format!("{path}/web-abc"), None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
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
