//! kube-rs against `baton apiserver` on etcd, as any Rust controller would use it: typed
//! CRUD, the status and scale subresources, a watcher that relists when its history was
//! compacted, and the finalizer helper.

use std::path::PathBuf;
use std::time::Duration;

use baton_api::{App, AppSpec};
use baton_e2e::{Cluster, ClusterOptions};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// Only etcd and the API server: nothing else writes the apps.
fn api_only() -> Cluster {
    Cluster::start(&baton_binary(), ClusterOptions { controllers: 0, agents: 0, ..ClusterOptions::default() })
}

fn app(name: &str, instances: i32) -> App {
    let spec: AppSpec = serde_json::from_value(json!({"cmd": "sleep 100", "instances": instances})).unwrap();
    App::new(name, spec)
}

#[test]
fn typed_crud_status_and_scale() {
    let cluster = api_only();
    cluster.block_on(async {
        let apps: Api<App> = Api::namespaced(cluster.kube_client().await, "default");
        let created = apps.create(&PostParams::default(), &app("web", 2)).await.expect("create");
        assert_eq!(created.metadata.generation, Some(1));
        assert_eq!(created.spec.resources.mem, 128.0, "defaults come back");
        let listed = apps.list(&Default::default()).await.expect("list");
        assert_eq!(listed.items.len(), 1);

        let mut changed = created.clone();
        changed.spec.instances = 3;
        let replaced = apps.replace("web", &PostParams::default(), &changed).await.expect("replace");
        assert_eq!(replaced.metadata.generation, Some(2));
        let stale = apps.replace("web", &PostParams::default(), &changed).await.expect_err("a stale replace fails");
        assert!(matches!(stale, kube::Error::Api(ref s) if s.code == 409), "{stale}");

        let patch = Patch::Merge(json!({"status": {"running": 3, "instances": 3}, "spec": {"instances": 9}}));
        let status = apps.patch_status("web", &PatchParams::default(), &patch).await.expect("patch_status");
        assert_eq!((status.status.as_ref().map(|s| s.running), status.spec.instances), (Some(3), 3));

        let scale = apps.get_scale("web").await.expect("get_scale");
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
        let replicas = Patch::Merge(json!({"spec": {"replicas": 5}}));
        apps.patch_scale("web", &PatchParams::default(), &replicas).await.expect("patch_scale");
        assert_eq!(apps.get("web").await.expect("get").spec.instances, 5);

        let applied = Patch::Apply(json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App",
                                          "metadata": {"name": "api"}, "spec": {"cmd": "sleep 1", "instances": 1}}));
        let api = apps.patch("api", &PatchParams::apply("tests"), &applied).await.expect("server-side apply creates");
        assert_eq!(api.metadata.managed_fields.as_ref().map(|m| m[0].manager.clone()), Some(Some("tests".into())));

        // A deleted App is held by the controller's finalizer until its instances are
        // stopped; no controller runs here, so the test lets it go as the controller would.
        apps.delete("web", &DeleteParams::default()).await.expect("delete");
        let held = apps.get("web").await.expect("held by its finalizer");
        assert!(held.metadata.deletion_timestamp.is_some(), "{held:?}");
        assert_eq!(held.metadata.finalizers, Some(vec![baton_api::app::STOP_FINALIZER.to_string()]));
        let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        apps.patch("web", &PatchParams::default(), &release).await.expect("the finalizer removed");
        let gone = apps.get("web").await.expect_err("deleted");
        assert!(matches!(gone, kube::Error::Api(ref s) if s.code == 404), "{gone}");
    });
}

/// What the watcher said, by app name.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    Listed(String),
    InitDone,
    Applied(String),
    Deleted(String),
}

/// The watcher's reports up to the first that is `wanted`.
fn next(
    cluster: &Cluster,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    what: &str,
    wanted: &dyn Fn(&Seen) -> bool,
) -> Vec<Seen> {
    cluster.block_on(async {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await {
                Ok(Some(event)) => {
                    let done = wanted(&event);
                    got.push(event);
                    if done {
                        return got;
                    }
                }
                _ => panic!("the watcher did not report {what} within {WAIT:?}; it said {got:?}"),
            }
        }
    })
}

#[test]
fn a_watcher_relists_when_its_history_was_compacted() {
    let mut cluster = api_only();
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel();
    let apps: Api<App> = cluster.block_on(async { Api::namespaced(cluster.kube_client().await, "default") });
    let handle = {
        let apps = apps.clone();
        cluster.spawn(async move {
            let mut stream = watcher(apps, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let name = |app: &App| app.metadata.name.clone().unwrap_or_default();
                let note = match event {
                    Ok(watcher::Event::Init) => Seen::Init,
                    Ok(watcher::Event::InitApply(app)) => Seen::Listed(name(&app)),
                    Ok(watcher::Event::InitDone) => Seen::InitDone,
                    Ok(watcher::Event::Apply(app)) => Seen::Applied(name(&app)),
                    Ok(watcher::Event::Delete(app)) => Seen::Deleted(name(&app)),
                    Err(_) => continue, // The API server is down for a while: it retries.
                };
                if seen.send(note).is_err() {
                    return;
                }
            }
        })
    };
    next(&cluster, &mut events, "its first list", &|e| *e == Seen::InitDone);
    cluster.block_on(apps.create(&PostParams::default(), &app("a", 1))).expect("create a");
    next(&cluster, &mut events, "a", &|e| *e == Seen::Applied("a".into()));

    // While the API server is down, the history the watcher would resume from is compacted.
    cluster.apiserver.kill();
    for i in 0..20 {
        cluster
            .block_on(baton_store::StoreExt::put(cluster.store().as_ref(), &format!("/baton/other/{i}"), b"x".to_vec()))
            .unwrap();
    }
    let compacted = cluster.compact_etcd();
    cluster.restart_apiserver();
    cluster.block_on(apps.create(&PostParams::default(), &app("b", 1))).expect("create b");
    let after = next(
        &cluster,
        &mut events,
        "a relist that includes b",
        &|e| matches!(e, Seen::Listed(n) | Seen::Applied(n) if n == "b"),
    );
    assert!(after.contains(&Seen::Init), "the watcher relisted after the 410 (compacted at {compacted}): {after:?}");
    handle.abort();
}

#[test]
fn the_finalizer_helper_cleans_up_before_deletion() {
    use kube::runtime::finalizer::{Event, finalizer};
    const FINALIZER: &str = "tests.baton.dev/cleanup";
    let cluster = api_only();
    cluster.block_on(async {
        let apps: Api<App> = Api::namespaced(cluster.kube_client().await, "default");
        apps.create(&PostParams::default(), &app("web", 1)).await.expect("create");
        // Without the controller's finalizer (no controller runs here): only the helper's holds it.
        let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        apps.patch("web", &PatchParams::default(), &release).await.expect("the controller's finalizer removed");
        let cleaned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reconcile = |apps: Api<App>, cleaned: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
            let current = std::sync::Arc::new(apps.get("web").await.expect("get"));
            finalizer(&apps, FINALIZER, current, |event| async move {
                if let Event::Cleanup(_) = event {
                    cleaned.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok::<_, kube::Error>(kube::runtime::controller::Action::await_change())
            })
            .await
            .expect("the finalizer step");
        };
        // First: the finalizer is added (a JSON patch whose `test` of a missing path is null).
        reconcile(apps.clone(), cleaned.clone()).await;
        let held = apps.get("web").await.expect("get");
        assert_eq!(held.metadata.finalizers, Some(vec![FINALIZER.to_string()]));

        // Deleting only marks it; the next step cleans up and removes the finalizer.
        apps.delete("web", &DeleteParams::default()).await.expect("delete");
        assert!(apps.get("web").await.expect("still there").metadata.deletion_timestamp.is_some());
        reconcile(apps.clone(), cleaned.clone()).await;
        assert!(cleaned.load(std::sync::atomic::Ordering::SeqCst), "cleanup ran");
        let gone = apps.get("web").await.expect_err("gone once its finalizer is removed");
        assert!(matches!(gone, kube::Error::Api(ref s) if s.code == 404), "{gone}");
    });
}
