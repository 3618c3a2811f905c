//! Namespaces: every namespaced object lives in one, which must exist and be `Active` for
//! objects to be created in it. `default` always exists. Deleting a namespace marks it
//! `Terminating`, deletes every object in it (those with finalizers are marked deleted and
//! left to their owners) and removes the namespace once nothing is left in it, as the
//! Kubernetes namespace controller does.

use axum::http::StatusCode;
use baton_store::{Compare, KeyValue, Op, Txn};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::kinds::{Kind, NAMESPACES};
use crate::objects::{MAX_ATTEMPTS, now_seconds, object_of, without_version};
use crate::status::{ApiError, ApiResult, Target};

/// The namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "default";

const PHASE_TERMINATING: &str = "Terminating";

fn namespace_target(name: &str) -> Target<'_> {
    Target { group: "", plural: NAMESPACES, kind: "Namespace", name }
}

/// A new Namespace object.
fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now_seconds().to_string(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn is_terminating(namespace: &Value) -> bool {
    namespace.pointer("/status/phase").and_then(Value::as_str) == Some(PHASE_TERMINATING)
}

impl ApiServer {
    pub(crate) fn namespace_key(&self, name: &str) -> String {
        self.keys.registry_object("core", NAMESPACES, None, name)
    }

    fn namespaced_registry_kinds(&self) -> impl Iterator<Item = &Kind> {
        self.kinds.iter().filter(|k| k.namespaced && !k.is_read_only())
    }

    /// Creates `default`, and a namespace for every namespace objects are stored in
    /// without one (objects written before namespaces were served); finishes deleting
    /// namespaces a previous run left `Terminating`.
    pub async fn ensure_namespaces(&self) -> ApiResult<()> {
        let mut in_use = std::collections::BTreeSet::from([DEFAULT_NAMESPACE.to_string()]);
        for kind in self.namespaced_registry_kinds() {
            let prefix = self.keys.registry(kind.store_group(), &kind.plural, None);
            for kv in self.store.range(&prefix).await?.kvs {
                if let Some((namespace, _)) = kv.key[prefix.len()..].split_once('/') {
                    in_use.insert(namespace.to_string());
                }
            }
        }
        for name in &in_use {
            let key = self.namespace_key(name);
            let txn =
                Txn::new().when([Compare::absent(&key)]).and_then([Op::put(&key, namespace_object(name).to_string())]);
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(namespace = %name, "created namespace");
            }
        }
        let prefix = self.keys.registry("core", NAMESPACES, None);
        for kv in self.store.range(&prefix).await?.kvs {
            let namespace = object_of(&kv)?;
            if is_terminating(&namespace)
                && let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str)
            {
                self.finish_namespace(name).await?;
            }
        }
        Ok(())
    }

    /// Refuses to create an object in a namespace that does not exist (404) or is being
    /// deleted (403), as Kubernetes' namespace lifecycle admission does.
    /// `stored`: the namespace's key as read.
    pub fn check_namespace_open(kind: &Kind, namespace: &str, name: &str, stored: Option<&KeyValue>) -> ApiResult<()> {
        let Some(kv) = stored else {
            return Err(ApiError::not_found(&namespace_target(namespace)));
        };
        if is_terminating(&object_of(kv)?) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it is \
                     being terminated",
                    kind.qualified_plural()
                ),
            ));
        }
        Ok(())
    }

    /// `DELETE` of a namespace: marks it `Terminating` (202 with the namespace) and deletes
    /// its contents in the background.
    pub async fn delete_namespace(self: &std::sync::Arc<Self>, name: &str, dry_run: bool) -> ApiResult<Value> {
        if name == DEFAULT_NAMESPACE {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("namespaces {name:?} is forbidden: this namespace may not be deleted"),
            ));
        }
        let key = self.namespace_key(name);
        for _ in 0..MAX_ATTEMPTS {
            let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(&namespace_target(name)))?;
            let mut namespace = object_of(&kv)?;
            if is_terminating(&namespace) || dry_run {
                return Ok(namespace);
            }
            namespace["metadata"]["deletionTimestamp"] = json!(now_seconds().to_string());
            namespace["status"] = json!({"phase": PHASE_TERMINATING});
            let txn = Txn::new()
                .when([Compare::mod_revision(&key, kv.mod_revision)])
                .and_then([Op::put(&key, without_version(&namespace))]);
            let response = self.store.txn(txn).await?;
            if response.succeeded {
                namespace["metadata"]["resourceVersion"] = json!(response.revision.to_string());
                let server = self.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = server.finish_namespace(&name).await {
                        tracing::warn!(namespace = %name, error = %e.message, "deleting the namespace's objects failed; \
                                       it stays Terminating until the API server restarts or an object in it is deleted");
                    }
                });
                return Ok(namespace);
            }
        }
        Err(ApiError::conflict(&namespace_target(name), "too many concurrent writers; try again"))
    }

    /// Deletes what a `Terminating` namespace holds; removes the namespace once it is
    /// empty. Objects with finalizers get a deletion timestamp and are waited for: when the
    /// last of them goes, [`ApiServer::object_removed`] calls this again.
    pub async fn finish_namespace(&self, name: &str) -> ApiResult<()> {
        let mut remaining = 0;
        let kinds: Vec<Kind> = self.namespaced_registry_kinds().cloned().collect();
        for kind in &kinds {
            let prefix = self.keys.registry(kind.store_group(), &kind.plural, Some(name));
            for kv in self.store.range(&prefix).await?.kvs {
                let mut object = object_of(&kv)?;
                let finalizers =
                    object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
                let when = [Compare::mod_revision(&kv.key, kv.mod_revision)];
                if !finalizers {
                    // A changed object is left for the next pass (or its own deletion).
                    if !self.store.txn(Txn::new().when(when).and_then([Op::delete(&kv.key)])).await?.succeeded {
                        remaining += 1;
                    }
                    continue;
                }
                remaining += 1;
                if object.pointer("/metadata/deletionTimestamp").is_none() {
                    object["metadata"]["deletionTimestamp"] = json!(now_seconds().to_string());
                    object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    let op = Op::put(&kv.key, without_version(&object));
                    self.store.txn(Txn::new().when(when).and_then([op])).await?;
                }
            }
        }
        if remaining == 0 {
            let key = self.namespace_key(name);
            if let Some(kv) = self.store.get(&key).await?
                && is_terminating(&object_of(&kv)?)
            {
                // The dependency graph's serialization keys go with the namespace.
                let graph = self.keys.dependency_graph(name);
                let txn = Txn::new().when([Compare::mod_revision(&key, kv.mod_revision)]).and_then([
                    Op::delete(&key),
                    Op::delete(&graph),
                    Op::delete_prefix(format!("{graph}/")),
                ]);
                if self.store.txn(txn).await?.succeeded {
                    tracing::info!(namespace = %name, "deleted namespace");
                }
            }
        }
        Ok(())
    }

    /// Called after an object in `namespace` is finally removed: finishes the namespace if
    /// it is `Terminating`.
    pub async fn object_removed(&self, namespace: Option<&str>) {
        let Some(namespace) = namespace else { return };
        let terminating = match self.store.get(&self.namespace_key(namespace)).await {
            Ok(Some(kv)) => object_of(&kv).is_ok_and(|ns| is_terminating(&ns)),
            _ => false,
        };
        if terminating && let Err(e) = self.finish_namespace(namespace).await {
            tracing::warn!(namespace, error = %e.message, "finishing the namespace's deletion failed");
        }
    }
}
