//! Discovery: what kubectl asks before anything else (`/apis`, `/api`, `/version`,
//! `/openapi/v2`), answered in the format it asked for — aggregated discovery `v2` or
//! `v2beta1` (kubectl 1.28 only knows `v2beta1`; answering `v2` makes it report that the
//! resource type does not exist), or the legacy lists.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// An aggregated discovery version the client accepts, in its order of preference.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for entry in accept.unwrap_or("").split(',') {
        let params: Vec<&str> = entry.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
        } else if params.first().is_some_and(|m| matches!(*m, "application/json" | "*/*")) && params.len() == 1 {
            // Plain JSON comes first: the client prefers the legacy lists.
            return None;
        }
    }
    None
}

/// The Content-Type of an aggregated discovery answer.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

fn scope(kind: &Kind) -> &'static str {
    if kind.namespaced { "Namespaced" } else { "Cluster" }
}

/// `/apis` (or `/api`, given the core kinds) as an `APIGroupDiscoveryList`.
pub fn aggregated(kinds: &[Kind], version: &str) -> Value {
    let group_of = |kind: &Kind| (kind.group.clone(), kind.version.clone());
    let mut groups: Vec<(String, String)> = kinds.iter().map(group_of).collect();
    groups.dedup();
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, group_version)| {
            let resources: Vec<Value> = kinds
                .iter()
                .filter(|k| &k.group == group && &k.version == group_version)
                .map(|kind| {
                    let response_kind = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
                    let mut subresources = Vec::new();
                    if kind.status_subresource {
                        subresources.push(json!({"subresource": "status", "responseKind": response_kind, "verbs": ["get", "patch", "update"]}));
                    }
                    if kind.scale.is_some() {
                        subresources.push(json!({
                            "subresource": "scale",
                            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                            "verbs": ["get", "patch", "update"],
                        }));
                    }
                    json!({
                        "resource": kind.plural,
                        "responseKind": response_kind,
                        "scope": scope(kind),
                        "singularResource": kind.singular,
                        "verbs": kind.verbs(),
                        "shortNames": kind.short_names,
                        "categories": kind.categories,
                        "subresources": subresources,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": group_version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

/// `/api` legacy: the core group's one version.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn group_entry(kinds: &[Kind]) -> Value {
    let kind = &kinds[0];
    let version = json!({"groupVersion": kind.api_version(), "version": kind.version});
    json!({"name": kind.group, "versions": [version.clone()], "preferredVersion": version})
}

/// `/apis` legacy.
pub fn group_list(kinds: &[Kind]) -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_entry(kinds)]})
}

/// `/apis/<group>` legacy.
pub fn group(kinds: &[Kind]) -> Value {
    let mut entry = group_entry(kinds);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    entry
}

/// `/apis/<group>/<version>` legacy.
pub fn resource_list(kinds: &[Kind]) -> Value {
    let mut resources = Vec::new();
    for kind in kinds {
        resources.push(json!({
            "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced, "kind": kind.kind,
            "verbs": kind.verbs(), "shortNames": kind.short_names, "categories": kind.categories,
        }));
        if kind.status_subresource {
            resources.push(
                json!({"name": format!("{}/status", kind.plural), "singularName": "", "namespaced": kind.namespaced,
                                  "kind": kind.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if kind.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", kind.plural), "singularName": "", "namespaced": kind.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kinds[0].api_version(), "resources": resources})
}

/// `/version`. kubectl's version skew check and some SDK-bundled kubectl dispatchers read
/// `minor`: Baton reports the Kubernetes API level it is compatible with.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+baton-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_version_follows_the_clients_preference() {
        let v2_first = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(v2_first)), Some("v2"));
        let kubectl_128 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(kubectl_128)), Some("v2beta1"));
        assert_eq!(aggregated_version(Some("application/json")), None);
        assert_eq!(aggregated_version(None), None);
    }

    #[test]
    fn aggregated_lists_every_resource_with_subresources() {
        let doc = aggregated(&crate::kinds::all(), "v2");
        let resources = &doc["items"][0]["versions"][0]["resources"];
        assert_eq!(resources[0]["resource"], "apps");
        assert_eq!(resources[0]["subresources"][1]["responseKind"]["kind"], "Scale");
        assert_eq!(resources[1]["resource"], "appgroups");
        assert_eq!(resources[2]["resource"], "instances");
        assert_eq!(resources[2]["verbs"], json!(["delete", "get", "list", "watch"]), "delete kills an instance");
        assert_eq!(resources[3]["resource"], "agents");
        assert_eq!(resources[3]["verbs"], json!(["get", "list", "watch"]));
    }
}
