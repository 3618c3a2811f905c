//! Tenants, as the platform's controller serves them (DESIGN.md §10): the namespaces a Tenant
//! lists are created, labelled `baton.dev/tenant=NAME` (so their apps are the tenant's scope);
//! the tenant's own controller runs as an App of the platform's (`tenant-NAME` in
//! `baton-system`), with a credential limited to those namespaces; its status says what its
//! apps ask for against its quota and whether its controller is up. A namespace that exists
//! with another scope is not taken over — moving a namespace's running apps between
//! controllers is not something to do by surprise — and the status names it.
//!
//! A deleted Tenant goes in order, held by its finalizer: its namespaces are deleted (their
//! apps' instances stopped by its controller, still running), then, once no namespace and no
//! instance of its scope is left, its controller's App, then the Tenant.
//!
//! Pure, and only the platform's: the quota itself is enforced where objects are admitted.

use std::collections::BTreeMap;

use baton_api::ResourceAmounts;
use baton_api::tenant::{
    CONTROLLER_LABEL, SYSTEM_NAMESPACE, TENANT_FINALIZER, Usage, controller_app_name, controller_token, dominant_share,
    summary,
};
use baton_api::{App, AppGroup, Scope, Tenant, TenantStatus};
use serde_json::json;
use sha2::Digest;

use super::vocabulary::{ControllerApp, NamespaceCreate, TenantFinalizer, TenantStatusUpdate};
use crate::snapshot::Snapshot;

/// How the platform runs tenants' controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerTemplate {
    /// The `baton` executable, as a path on the agents' machines.
    pub executable: String,
    /// The API server's URL, as the agents' machines reach it.
    pub server: String,
    /// The CA that signed the API server's certificate (PEM), if the agents' machines do not
    /// trust it already.
    pub ca_pem: Option<String>,
    /// The platform's secret that signs controllers' credentials.
    pub secret: Vec<u8>,
}

/// The annotation holding a digest of what the platform asked of a controller's App: it is
/// rewritten only when that changes.
pub const CONTROLLER_DIGEST: &str = "baton.dev/controller-digest";

/// What the tenants stage decided.
#[derive(Debug, Default)]
pub struct Served {
    pub namespace_creates: Vec<NamespaceCreate>,
    pub namespace_deletes: Vec<String>,
    pub statuses: Vec<TenantStatusUpdate>,
    pub finalizers: Vec<TenantFinalizer>,
    pub controller_apps: Vec<ControllerApp>,
}

/// Namespaces to create and delete, Tenant statuses and finalizers, controllers' Apps.
pub fn tenants(snapshot: &Snapshot, template: Option<&ControllerTemplate>) -> Served {
    let mut served = Served::default();
    if !snapshot.scope.places() {
        return served;
    }
    // Every app and group, by namespace (referenced, not copied).
    let mut apps: BTreeMap<&str, Vec<&App>> = BTreeMap::new();
    for app in snapshot.apps.iter().chain(&snapshot.other_apps) {
        apps.entry(app.metadata.namespace.as_deref().unwrap_or_default()).or_default().push(app);
    }
    let mut groups: BTreeMap<&str, Vec<&AppGroup>> = BTreeMap::new();
    for group in snapshot.groups.iter().chain(&snapshot.other_groups) {
        groups.entry(group.metadata.namespace.as_deref().unwrap_or_default()).or_default().push(group);
    }
    // Controllers' Apps, by tenant.
    let controllers: BTreeMap<&str, &App> = apps
        .get(SYSTEM_NAMESPACE)
        .into_iter()
        .flatten()
        .filter_map(|app| Some((app.metadata.labels.as_ref()?.get(CONTROLLER_LABEL)?.as_str(), *app)))
        .collect();
    // What each tenant's live instances hold, of the cluster's capacity; and which scopes
    // have any instance record left.
    let capacity = snapshot.agents.values().fold(ResourceAmounts::default(), |sum, a| sum.plus(a.resources));
    let mut held: BTreeMap<&Scope, ResourceAmounts> = BTreeMap::new();
    for instance in &snapshot.foreign {
        let entry = held.entry(&instance.record.run.scope).or_default();
        if !instance.is_terminal() {
            *entry = entry.plus(instance.record.run.resources);
        }
    }
    let mut tenants: Vec<_> = snapshot.tenants.iter().collect();
    tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for tenant in tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        let scope = Scope::Tenant(name.clone());
        let deleting = tenant.metadata.deletion_timestamp.is_some();
        let finalizers = tenant.metadata.finalizers.clone().unwrap_or_default();
        let has_finalizer = finalizers.iter().any(|f| f == TENANT_FINALIZER);
        let controller = controllers.get(name.as_str()).copied();
        if deleting {
            let left: Vec<String> = snapshot
                .namespaces
                .iter()
                .filter(|(_, s)| **s == scope)
                .map(|(namespace, _)| namespace.clone())
                .collect();
            let instances_left = held.contains_key(&scope);
            if !left.is_empty() || instances_left {
                served.namespace_deletes.extend(left);
            } else if let Some(app) = controller {
                if app.metadata.deletion_timestamp.is_none() {
                    served.controller_apps.push(ControllerApp::Delete { name: controller_app_name(&name) });
                }
            } else if has_finalizer {
                let rest = finalizers.iter().filter(|f| *f != TENANT_FINALIZER).cloned().collect();
                served.finalizers.push(TenantFinalizer::of(tenant, rest));
            }
            continue;
        }
        if !has_finalizer {
            let mut with = finalizers.clone();
            with.push(TENANT_FINALIZER.to_string());
            served.finalizers.push(TenantFinalizer::of(tenant, with));
        }
        let (mut owned, mut taken) = (Vec::new(), Vec::new());
        for namespace in &tenant.spec.namespaces {
            match snapshot.namespaces.get(namespace) {
                None => {
                    served.namespace_creates.push(NamespaceCreate { name: namespace.clone(), tenant: name.clone() });
                    owned.push(namespace.as_str());
                }
                Some(s) if *s == scope => owned.push(namespace.as_str()),
                Some(_) => taken.push(namespace.clone()),
            }
        }
        let wanted = template.filter(|_| tenant.spec.controller.replicas > 0);
        match (wanted, controller) {
            (Some(template), _) => {
                let app = controller_app(template, tenant, &owned);
                let digest = app.metadata.annotations.as_ref().and_then(|a| a.get(CONTROLLER_DIGEST));
                let current = controller.and_then(|c| c.metadata.annotations.as_ref()?.get(CONTROLLER_DIGEST));
                if digest != current {
                    served.controller_apps.push(ControllerApp::Apply(Box::new(app)));
                }
            }
            (None, Some(app)) if app.metadata.deletion_timestamp.is_none() => {
                served.controller_apps.push(ControllerApp::Delete { name: controller_app_name(&name) });
            }
            (None, _) => {}
        }
        let usage = owned.iter().fold(Usage::default(), |sum, ns| {
            let apps = apps.get(ns).map(Vec::as_slice).unwrap_or_default();
            let groups = groups.get(ns).map(Vec::as_slice).unwrap_or_default();
            sum.plus(Usage::of_namespace(apps.iter().copied(), groups.iter().copied()))
        });
        let controller_status = match (wanted, controller) {
            (None, _) => "none".to_string(),
            (Some(_), app) => {
                let healthy = app.and_then(|a| a.status.as_ref()).map_or(0, |s| s.healthy);
                format!("{healthy}/{}", tenant.spec.controller.replicas)
            }
        };
        let status = TenantStatus {
            observed_generation: tenant.metadata.generation,
            namespace_list: owned.join(","),
            used: usage.to_used(),
            used_summary: summary(&usage, &tenant.spec.quota),
            dominant_share: dominant_share(held.get(&scope).copied().unwrap_or_default(), capacity),
            namespaces_taken: taken,
            guarantee_summary: tenant.spec.guarantee.summary(),
            controller: controller_status,
        };
        if tenant.status.as_ref() != Some(&status) {
            served.statuses.push(TenantStatusUpdate { name, status });
        }
    }
    served
}

/// The App that runs `tenant`'s controller for its `namespaces`: health-checked on
/// `/healthz`, ready on `/readyz` (its caches loaded), upgraded new-first.
pub fn controller_app(template: &ControllerTemplate, tenant: &Tenant, namespaces: &[&str]) -> App {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let settings = tenant.spec.controller;
    let mut env = BTreeMap::from([
        ("TENANT_CONTROLLER_SERVER".to_string(), template.server.clone()),
        ("TENANT_CONTROLLER_TOKEN".to_string(), controller_token(&template.secret, &name)),
    ]);
    if let Some(ca) = &template.ca_pem {
        env.insert("TENANT_CONTROLLER_CA".to_string(), ca.clone());
    }
    let cmd = format!(
        "exec {} controller --tenant {name} --namespaces {} --metrics-listen 0.0.0.0:$PORT0",
        shell_quote(&template.executable),
        namespaces.join(","),
    );
    let spec = json!({
        "instances": settings.replicas,
        "cmd": cmd,
        "resources": {"cpus": settings.cpus, "mem": settings.mem},
        "ports": [{"name": "http-api"}],
        "env": env,
        "healthChecks": [{
            "protocol": "HTTP", "path": "/healthz", "portIndex": 0,
            "gracePeriodSeconds": 60, "intervalSeconds": 5, "timeoutSeconds": 5, "delaySeconds": 1,
            "maxConsecutiveFailures": 3,
        }],
        "readinessChecks": [{"path": "/readyz", "portName": "http-api", "intervalSeconds": 2, "timeoutSeconds": 2}],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
        "backoff": {"seconds": 1, "factor": 1.5, "maxLaunchDelaySeconds": 30},
    });
    let digest = sha2::Sha256::digest(spec.to_string().as_bytes());
    let digest: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let object = json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "App",
        "metadata": {
            "name": controller_app_name(&name),
            "namespace": SYSTEM_NAMESPACE,
            "labels": {CONTROLLER_LABEL: name},
            "annotations": {CONTROLLER_DIGEST: digest},
        },
        "spec": spec,
    });
    serde_json::from_value(object).expect("a tenant controller's App is well-formed")
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use baton_api::Scope;
    use baton_api::tenant::{Quota, Tenant, TenantSpec};

    use super::tenants;
    use crate::testing::{app, snapshot};

    #[test]
    fn missing_namespaces_are_created_and_usage_is_reported_against_the_quota() {
        let mut web = (*app("web").instances(3).cpus(0.5).build()).clone();
        web.metadata.namespace = Some("team-a".into());
        let mut s = snapshot(&[], Vec::new(), Vec::new());
        s.other_apps.push(Arc::new(web));
        s.namespaces.insert("team-a".into(), Scope::Tenant("a".into()));
        s.namespaces.insert("shared".into(), Scope::Platform);
        let spec = TenantSpec {
            namespaces: vec!["team-a".into(), "team-a-dev".into(), "shared".into()],
            quota: Quota { cpus: Some(4.0), instances: Some(10), ..Quota::default() },
            weight: 1,
            users: Vec::new(),
            groups: Vec::new(),
            guarantee: Default::default(),
            controller: Default::default(),
            service_domain: None,
        };
        s.tenants.push(Arc::new(Tenant::new("a", spec)));
        let served = tenants(&s, None);
        assert_eq!(served.namespace_creates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["team-a-dev"]);
        let status = &served.statuses[0].status;
        assert_eq!(status.namespace_list, "team-a,team-a-dev");
        assert_eq!(status.namespaces_taken, ["shared"], "the platform's namespace is not taken over");
        assert_eq!(status.used_summary, "cpus=1.5/4 instances=3/10");
        assert_eq!(status.used.instances, 3);
    }
}
