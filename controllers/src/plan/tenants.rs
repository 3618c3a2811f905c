//! Tenants, as the platform's controller serves them (DESIGN.md §10): the namespaces a Tenant
//! lists are created, labelled `baton.dev/tenant=NAME` (so their apps are the tenant's scope),
//! and its status says what its apps ask for against its quota. A namespace that exists with
//! another scope is not taken over — moving a namespace's running apps between controllers is
//! not something to do by surprise — and the status names it.
//!
//! Pure, and only the platform's: the quota itself is enforced where objects are admitted.

use std::collections::BTreeMap;

use baton_api::ResourceAmounts;
use baton_api::tenant::{Usage, dominant_share, summary};
use baton_api::{App, AppGroup, Scope, TenantStatus};

use super::vocabulary::{NamespaceCreate, TenantStatusUpdate};
use crate::snapshot::Snapshot;

/// Namespaces to create and Tenant statuses to write.
pub fn tenants(snapshot: &Snapshot) -> (Vec<NamespaceCreate>, Vec<TenantStatusUpdate>) {
    let (mut creates, mut statuses) = (Vec::new(), Vec::new());
    if !snapshot.scope.places() || snapshot.tenants.is_empty() {
        return (creates, statuses);
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
    // What each tenant's live instances hold, of the cluster's capacity.
    let capacity = snapshot.agents.values().fold(ResourceAmounts::default(), |sum, a| sum.plus(a.resources));
    let mut held: BTreeMap<&Scope, ResourceAmounts> = BTreeMap::new();
    for instance in snapshot.foreign.iter().filter(|i| !i.is_terminal()) {
        let entry = held.entry(&instance.record.scope).or_default();
        *entry = entry.plus(instance.record.resources);
    }
    let mut tenants: Vec<_> = snapshot.tenants.iter().collect();
    tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for tenant in tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        let scope = Scope::Tenant(name.clone());
        let (mut owned, mut taken) = (Vec::new(), Vec::new());
        for namespace in &tenant.spec.namespaces {
            match snapshot.namespaces.get(namespace) {
                None => {
                    creates.push(NamespaceCreate { name: namespace.clone(), tenant: name.clone() });
                    owned.push(namespace.as_str());
                }
                Some(s) if *s == scope => owned.push(namespace.as_str()),
                Some(_) => taken.push(namespace.clone()),
            }
        }
        let usage = owned.iter().fold(Usage::default(), |sum, ns| {
            let apps = apps.get(ns).map(Vec::as_slice).unwrap_or_default();
            let groups = groups.get(ns).map(Vec::as_slice).unwrap_or_default();
            sum.plus(Usage::of_namespace(apps.iter().copied(), groups.iter().copied()))
        });
        let status = TenantStatus {
            observed_generation: tenant.metadata.generation,
            namespace_list: owned.join(","),
            used: usage.to_used(),
            used_summary: summary(&usage, &tenant.spec.quota),
            dominant_share: dominant_share(held.get(&scope).copied().unwrap_or_default(), capacity),
            namespaces_taken: taken,
        };
        if tenant.status.as_ref() != Some(&status) {
            statuses.push(TenantStatusUpdate { name, status });
        }
    }
    (creates, statuses)
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
        };
        s.tenants.push(Arc::new(Tenant::new("a", spec)));
        let (creates, statuses) = tenants(&s);
        assert_eq!(creates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["team-a-dev"]);
        let status = &statuses[0].status;
        assert_eq!(status.namespace_list, "team-a,team-a-dev");
        assert_eq!(status.namespaces_taken, ["shared"], "the platform's namespace is not taken over");
        assert_eq!(status.used_summary, "cpus=1.5/4 instances=3/10");
        assert_eq!(status.used.instances, 3);
    }
}
