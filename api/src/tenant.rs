//! `Tenant`: a team's share of the cluster (DESIGN.md §10). A Tenant names the namespaces it
//! owns (the platform's controller creates them, labelled `baton.dev/tenant=NAME`, so their
//! apps are the tenant's scope) and its quota: what its apps may ask for in all, checked when
//! an App or AppGroup is written, atomically with the write.
//!
//! [`Usage`] is pure: the API server uses it to admit writes, the controller to report what a
//! tenant uses.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::groups::{AppGroup, Graph};
use crate::names;
use crate::resources::ResourceAmounts;
use crate::validation::FieldError;
use crate::{App, Resources};

/// The longest service domain: `INSTANCE.APP.NAMESPACE.` (up to 140 characters with the
/// longest app and namespace names) and it stay within DNS' 253.
pub const MAX_SERVICE_DOMAIN: usize = 110;

/// At most this many namespaces per tenant.
pub const MAX_TENANT_NAMESPACES: usize = 100;

/// A team's share of the cluster: its namespaces and its quota.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    status = "TenantStatus",
    category = "baton",
    derive = "PartialEq",
    doc = "A team's share of the cluster: the namespaces it owns and the quota its apps may use in all.",
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".status.namespaceList",
        description = "The namespaces it owns"
    ),
    printcolumn(
        name = "Used",
        type_ = "string",
        json_path = ".status.usedSummary",
        description = "What its apps ask for in all, of the quota"
    ),
    printcolumn(
        name = "Guarantee",
        type_ = "string",
        json_path = ".status.guaranteeSummary",
        description = "What it always gets (reclaimed from tenants above theirs), and agents reserved for it"
    ),
    printcolumn(
        name = "Controller",
        type_ = "string",
        json_path = ".status.controller",
        description = "Its controller's instances ready, of those asked for (none: it runs no controller of the platform's)"
    ),
    printcolumn(
        name = "Share",
        type_ = "string",
        json_path = ".status.dominantShare",
        description = "Its dominant share: the largest fraction of the cluster's cpus, mem, disk or gpus its instances hold"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Domain",
        type_ = "string",
        json_path = ".spec.serviceDomain",
        priority = 1,
        description = "Its apps' names in DNS: APP.NAMESPACE.DOMAIN"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The namespaces it owns. The platform's controller creates those that do not exist,
    /// labelled `baton.dev/tenant=NAME`; a namespace belongs to one tenant at most.
    #[schemars(length(min = 1, max = MAX_TENANT_NAMESPACES))]
    pub namespaces: Vec<String>,

    /// What all its apps may ask for at once (instances × resources, scale factors applied).
    /// A resource left out is not limited.
    #[serde(default, skip_serializing_if = "Quota::is_empty")]
    pub quota: Quota,

    /// Its weight in fair sharing (default 1, up to 1,000,000): when tenants' launches compete
    /// for room, the one with the smallest dominant share divided by its weight goes first; 0
    /// gets only what no other tenant asks for.
    #[serde(default = "one")]
    #[schemars(range(max = 1_000_000))]
    pub weight: u32,

    /// Users (as the API server authenticates them) who may read and write everything in its
    /// namespaces — and nothing outside them, beyond what the authorization rules give.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TENANT_MEMBERS))]
    pub users: Vec<String>,

    /// Groups whose members may do the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TENANT_MEMBERS))]
    pub groups: Vec<String>,

    /// What it always gets: resources its instances may hold even when other tenants have
    /// taken the cluster (they are reclaimed from tenants above their own guarantees), and/or
    /// agents reserved for it.
    #[serde(default, skip_serializing_if = "Guarantee::is_empty")]
    pub guarantee: Guarantee,

    /// Its own controller, which the platform's controller runs as an app (`tenant-NAME` in
    /// `baton-system`), with a credential limited to the tenant's namespaces.
    #[serde(default)]
    pub controller: ControllerSettings,

    /// The DNS domain its apps are found under, as each service Marathon had its own name in
    /// Mesos-DNS: the API server's DNS answers `APP.NAMESPACE.DOMAIN` with the hosts of the
    /// app's ready instances, `_PORT._tcp.APP.NAMESPACE.DOMAIN` with SRV records, and
    /// `INSTANCE.APP.NAMESPACE.DOMAIN` with one instance's host. A DNS subdomain that no other
    /// tenant's domain equals or contains, nor lies within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SERVICE_DOMAIN))]
    pub service_domain: Option<String>,
}

/// Whether two service domains overlap: equal, or one within the other (`a.example` and
/// `team.a.example`), so that a name could belong to either. Case does not matter in DNS.
pub fn domains_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('.').to_ascii_lowercase(), b.trim_end_matches('.').to_ascii_lowercase());
    let within = |inner: &str, outer: &str| inner.strip_suffix(outer).is_some_and(|rest| rest.ends_with('.'));
    a == b || within(&a, &b) || within(&b, &a)
}

/// What a tenant always gets.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guarantee {
    /// Cpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub cpus: Option<f64>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub mem: Option<f64>,
    /// Disk, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub disk: Option<f64>,
    /// Whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpus: Option<i64>,
    /// Agents reserved for it, by attribute (`{pool: team-a}`: every agent whose `pool`
    /// attribute is `team-a`): they take only its instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, String>,
}

impl Guarantee {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The guaranteed amounts (milli-cpus, MiB, MiB, GPUs); `None` where nothing is.
    pub fn amounts(&self) -> [Option<u64>; 4] {
        let quota = Quota { cpus: self.cpus, mem: self.mem, disk: self.disk, gpus: self.gpus, instances: None };
        let [cpus, mem, disk, gpus, _] = quota.limits();
        [cpus, mem, disk, gpus]
    }

    /// Whether an agent with these attributes is reserved by this guarantee.
    pub fn reserves(&self, attributes: &BTreeMap<String, String>) -> bool {
        !self.agents.is_empty() && self.agents.iter().all(|(k, v)| attributes.get(k) == Some(v))
    }

    /// `cpus=2 mem=4096 agents=pool=a`, or `none`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> =
            self.amounts().iter().enumerate().filter_map(|(i, amount)| Some(show(i, (*amount)?))).collect();
        if !self.agents.is_empty() {
            let selector: Vec<String> = self.agents.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("agents={}", selector.join(",")));
        }
        if parts.is_empty() { "none".into() } else { parts.join(" ") }
    }
}

/// How the platform runs a tenant's controller.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSettings {
    /// How many instances of it run (default 1, at most 5): one leads, the others stand by.
    /// 0: the platform runs none (run `baton controller --scope tenant/NAME` yourself).
    #[serde(default = "one")]
    #[schemars(range(max = MAX_CONTROLLER_REPLICAS))]
    pub replicas: u32,
    /// Cpus for each (default 0.1).
    #[serde(default = "controller_cpus")]
    #[schemars(range(min = 0.0))]
    pub cpus: f64,
    /// Memory for each, MiB (default 128).
    #[serde(default = "controller_mem")]
    #[schemars(range(min = 32.0))]
    pub mem: f64,
}

/// The most instances of a tenant's controller.
pub const MAX_CONTROLLER_REPLICAS: u32 = 5;

fn controller_cpus() -> f64 {
    0.1
}

fn controller_mem() -> f64 {
    128.0
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self { replicas: 1, cpus: controller_cpus(), mem: controller_mem() }
    }
}

/// The namespace the platform runs tenants' controllers in.
pub const SYSTEM_NAMESPACE: &str = "baton-system";

/// The finalizer the platform's controller puts on every Tenant: a deleted Tenant's
/// namespaces, apps and instances go first, then its controller, then the Tenant.
pub const TENANT_FINALIZER: &str = "baton.dev/tenant";

/// The label on a tenant controller's App naming its tenant.
pub const CONTROLLER_LABEL: &str = "baton.dev/tenant-controller";

/// The name of a tenant's controller App in [`SYSTEM_NAMESPACE`].
pub fn controller_app_name(tenant: &str) -> String {
    format!("tenant-{tenant}")
}

/// The user a tenant controller's credential authenticates as.
pub fn controller_user(tenant: &str) -> String {
    format!("{CONTROLLER_USER_PREFIX}{tenant}")
}

const CONTROLLER_USER_PREFIX: &str = "baton:tenant-controller:";

/// The tenant whose controller `user` is.
pub fn controller_of(user: &str) -> Option<&str> {
    user.strip_prefix(CONTROLLER_USER_PREFIX)
}

/// The group of every tenant's controller.
pub const CONTROLLERS_GROUP: &str = "baton:tenant-controllers";

const TOKEN_PREFIX: &str = "baton-tenant-controller.";

/// The bearer token of `tenant`'s controller: `baton-tenant-controller.NAME.MAC`, the MAC an
/// HMAC-SHA256 of the tenant's name under the platform's secret. Only who holds the secret
/// (the platform's controller and the API server) can make one; deleting the secret from
/// the store (and restarting them) revokes every one.
pub fn controller_token(secret: &[u8], tenant: &str) -> String {
    format!("{TOKEN_PREFIX}{tenant}.{}", hex(&controller_mac(secret, tenant)))
}

/// The tenant a controller token is for, if `secret` made it.
pub fn verify_controller_token<'t>(secret: &[u8], token: &'t str) -> Option<&'t str> {
    use hmac::Mac;
    let (tenant, mac) = token.strip_prefix(TOKEN_PREFIX)?.rsplit_once('.')?;
    let mac = unhex(mac)?;
    let mut expected = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).ok()?;
    expected.update(b"tenant-controller/");
    expected.update(tenant.as_bytes());
    // Constant time.
    expected.verify_slice(&mac).ok()?;
    Some(tenant)
}

fn controller_mac(secret: &[u8], tenant: &str) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"tenant-controller/");
    mac.update(tenant.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// At most this many users, and as many groups, per tenant.
pub const MAX_TENANT_MEMBERS: usize = 100;

impl Tenant {
    /// Whether `user` (a member of `groups`) may act in `namespace` as this tenant's member.
    pub fn grants(&self, user: &str, groups: &[String], namespace: &str) -> bool {
        self.spec.namespaces.iter().any(|n| n == namespace)
            && (self.spec.users.iter().any(|u| u == user) || self.spec.groups.iter().any(|g| groups.contains(g)))
    }
}

fn one() -> u32 {
    1
}

/// The largest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Limits on what a tenant's apps ask for in all.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Cpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub cpus: Option<f64>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub mem: Option<f64>,
    /// Disk, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub disk: Option<f64>,
    /// Whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpus: Option<i64>,
    /// Instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub instances: Option<i64>,
}

impl Quota {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The limits in the units usage is counted in; `None` where unlimited.
    pub fn limits(&self) -> [Option<u64>; 5] {
        let as_amounts = Resources {
            cpus: self.cpus.unwrap_or(0.0),
            mem: self.mem.unwrap_or(0.0),
            disk: self.disk.unwrap_or(0.0),
            gpus: self.gpus.unwrap_or(0),
        }
        .amounts();
        [
            self.cpus.map(|_| as_amounts.millicpus),
            self.mem.map(|_| as_amounts.mem_mib),
            self.disk.map(|_| as_amounts.disk_mib),
            self.gpus.map(|_| as_amounts.gpus),
            self.instances.map(|n| n.max(0) as u64),
        ]
    }
}

/// What the controller observed.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Its namespaces, comma-separated, for `kubectl get tenants`.
    #[serde(default)]
    pub namespace_list: String,
    /// What its apps ask for in all, in the quota's units.
    #[serde(default)]
    pub used: Used,
    /// `used/quota` of each limited resource, e.g. `cpus=3/10 instances=12/50`.
    #[serde(default)]
    pub used_summary: String,
    /// Its dominant share now: the largest fraction of the cluster's cpus, memory, disk or
    /// GPUs its instances hold, e.g. `cpus 12.5%` (rounded down to a tenth of a percent).
    #[serde(default)]
    pub dominant_share: String,
    /// Namespaces it lists that exist without its label (another tenant's, or the
    /// platform's): they are not given to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces_taken: Vec<String>,
    /// Its guarantee, e.g. `cpus=2 agents=pool=a` (`none`).
    #[serde(default)]
    pub guarantee_summary: String,
    /// Its controller's instances that pass their health checks, of those asked for
    /// (`1/1`); `none` when the platform runs no controller for it.
    #[serde(default)]
    pub controller: String,
}

/// What a tenant's apps ask for in all.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Used {
    /// Cpus.
    pub cpus: f64,
    /// Memory, MiB.
    pub mem: u64,
    /// Disk, MiB.
    pub disk: u64,
    /// Whole GPUs.
    pub gpus: u64,
    /// Instances (scale factors applied).
    pub instances: u64,
}

/// What a tenant's apps ask for: instances (scale factors applied) × resources, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub resources: ResourceAmounts,
    pub instances: u64,
}

/// The resources quota counts, in order, with their names.
pub const QUOTA_RESOURCES: [&str; 5] = ["cpus", "mem", "disk", "gpus", "instances"];

impl Usage {
    /// The usage of `apps` (of one namespace, with its `groups`), apps being deleted left out.
    pub fn of_namespace<'a>(
        apps: impl IntoIterator<Item = &'a App> + Clone,
        groups: impl IntoIterator<Item = &'a AppGroup>,
    ) -> Self {
        let graph = Graph::new(apps.clone(), groups);
        apps.into_iter().filter(|a| a.metadata.deletion_timestamp.is_none()).fold(Usage::default(), |sum, app| {
            let n = graph.effective_instances(&app.path(), app.spec.instances).max(0) as u64;
            Usage { resources: sum.resources.plus(app.spec.resources.amounts().times(n)), instances: sum.instances + n }
        })
    }

    pub fn plus(self, other: Usage) -> Usage {
        Usage { resources: self.resources.plus(other.resources), instances: self.instances + other.instances }
    }

    /// In the order of [`QUOTA_RESOURCES`].
    pub fn amounts(&self) -> [u64; 5] {
        let r = self.resources;
        [r.millicpus, r.mem_mib, r.disk_mib, r.gpus, self.instances]
    }

    pub fn to_used(self) -> Used {
        let r = self.resources;
        Used {
            cpus: r.millicpus as f64 / 1000.0,
            mem: r.mem_mib,
            disk: r.disk_mib,
            gpus: r.gpus,
            instances: self.instances,
        }
    }
}

/// An amount of quota resource `index` in the units users write: `2.5` cpus, `512` MiB.
fn number(index: usize, amount: u64) -> String {
    if index == 0 { format!("{}", amount as f64 / 1000.0) } else { amount.to_string() }
}

/// An amount of quota resource `index` as users write it: `cpus=2.5`, `mem=512`, `instances=3`.
pub fn show(index: usize, amount: u64) -> String {
    format!("{}={}", QUOTA_RESOURCES[index], number(index, amount))
}

/// `cpus=3/10 instances=12/50`: each limited resource's usage and limit.
pub fn summary(usage: &Usage, quota: &Quota) -> String {
    let used = usage.amounts();
    let parts: Vec<String> = quota
        .limits()
        .iter()
        .enumerate()
        .filter_map(|(i, limit)| Some(format!("{}/{}", show(i, used[i]), number(i, (*limit)?))))
        .collect();
    if parts.is_empty() { "no quota".into() } else { parts.join(" ") }
}

/// Checks a Tenant: field errors naming the field and the value.
pub fn validate_tenant(tenant: &Tenant) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = &tenant.metadata.name
        && let Some(problem) = names::dns_label_problem(name)
    {
        errors.push(FieldError::invalid("metadata.name", name.as_str(), problem));
    }
    let spec = &tenant.spec;
    if spec.namespaces.is_empty() {
        errors.push(FieldError::required("spec.namespaces", "a tenant owns at least one namespace"));
    }
    if spec.namespaces.len() > MAX_TENANT_NAMESPACES {
        errors.push(FieldError::too_long(
            "spec.namespaces",
            format!("has {} namespaces; at most {MAX_TENANT_NAMESPACES} are allowed", spec.namespaces.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, namespace) in spec.namespaces.iter().enumerate() {
        let field = format!("spec.namespaces[{i}]");
        if let Some(problem) = names::dns_label_problem(namespace) {
            errors.push(FieldError::invalid(field, namespace.as_str(), problem));
        } else if !seen.insert(namespace) {
            errors.push(FieldError::duplicate(field, namespace.as_str()));
        } else if ["default", "kube-system", "kube-public", "baton-system"].contains(&namespace.as_str()) {
            errors.push(FieldError::invalid(field, namespace.as_str(), "is the platform's; a tenant cannot own it"));
        }
    }
    for (field, members) in [("spec.users", &spec.users), ("spec.groups", &spec.groups)] {
        if members.len() > MAX_TENANT_MEMBERS {
            errors.push(FieldError::too_long(
                field,
                format!("has {} entries; at most {MAX_TENANT_MEMBERS} are allowed", members.len()),
            ));
        }
        for (i, member) in members.iter().enumerate() {
            if member.is_empty() || member.len() > 253 || member.contains(char::is_control) {
                errors.push(FieldError::invalid(
                    format!("{field}[{i}]"),
                    member.as_str(),
                    "must be 1 to 253 characters, none of them control characters",
                ));
            }
        }
    }
    if let Some(domain) = &spec.service_domain {
        let field = "spec.serviceDomain";
        if domain.len() > MAX_SERVICE_DOMAIN {
            errors.push(FieldError::too_long(
                field,
                format!(
                    "{domain:?} has {} characters; at most {MAX_SERVICE_DOMAIN} are allowed, so that \
                     INSTANCE.APP.NAMESPACE.DOMAIN stays within DNS' 253",
                    domain.len()
                ),
            ));
        } else if let Some(problem) = names::dns_subdomain_problem(domain) {
            errors.push(FieldError::invalid(field, domain.as_str(), problem));
        } else if !domain.contains('.') {
            // A single label would be a top-level domain: names under it leak to public DNS.
            errors.push(FieldError::invalid(
                field,
                domain.as_str(),
                "must have at least two labels, e.g. team-a.baton.internal",
            ));
        }
    }
    if spec.weight > MAX_WEIGHT {
        errors.push(FieldError::invalid("spec.weight", spec.weight, format!("must be at most {MAX_WEIGHT}")));
    }
    let q = &spec.quota;
    check_amounts("spec.quota", [("cpus", q.cpus), ("mem", q.mem), ("disk", q.disk)], &mut errors);
    check_counts("spec.quota", [("gpus", q.gpus), ("instances", q.instances)], &mut errors);
    if let Some(name) = &tenant.metadata.name
        && name.len() > MAX_TENANT_NAME
    {
        errors.push(FieldError::too_long(
            "metadata.name",
            format!(
                "has {} characters; at most {MAX_TENANT_NAME} are allowed (its controller's App is `tenant-NAME`)",
                name.len()
            ),
        ));
    }
    let g = &spec.guarantee;
    check_amounts("spec.guarantee", [("cpus", g.cpus), ("mem", g.mem), ("disk", g.disk)], &mut errors);
    check_counts("spec.guarantee", [("gpus", g.gpus)], &mut errors);
    if g.agents.len() > MAX_SELECTOR_TERMS {
        errors.push(FieldError::too_long(
            "spec.guarantee.agents",
            format!("has {} terms; at most {MAX_SELECTOR_TERMS} are allowed", g.agents.len()),
        ));
    }
    for (key, value) in &g.agents {
        for text in [key, value] {
            if text.is_empty() || text.len() > 253 || text.contains(char::is_control) {
                errors.push(FieldError::invalid(
                    format!("spec.guarantee.agents[{key}]"),
                    text.as_str(),
                    "must be 1 to 253 characters, none of them control characters",
                ));
            }
        }
    }
    let c = &spec.controller;
    if c.replicas > MAX_CONTROLLER_REPLICAS {
        errors.push(FieldError::invalid(
            "spec.controller.replicas",
            c.replicas,
            format!("must be at most {MAX_CONTROLLER_REPLICAS}"),
        ));
    }
    if !c.cpus.is_finite() || !(0.0..=1024.0).contains(&c.cpus) {
        errors.push(FieldError::invalid("spec.controller.cpus", c.cpus, "must be between 0 and 1024"));
    }
    if !c.mem.is_finite() || !(32.0..=1_048_576.0).contains(&c.mem) {
        errors.push(FieldError::invalid("spec.controller.mem", c.mem, "must be between 32 and 1048576 (MiB)"));
    }
    errors
}

/// Amounts (cpus, MiB) between 0 and 10^12.
fn check_amounts<const N: usize>(prefix: &str, fields: [(&str, Option<f64>); N], errors: &mut Vec<FieldError>) {
    for (field, value) in fields {
        if let Some(v) = value
            && (!v.is_finite() || !(0.0..=1e12).contains(&v))
        {
            errors.push(FieldError::invalid(format!("{prefix}.{field}"), v, "must be between 0 and 10^12"));
        }
    }
}

/// Counts (GPUs, instances) between 0 and 10^12.
fn check_counts<const N: usize>(prefix: &str, fields: [(&str, Option<i64>); N], errors: &mut Vec<FieldError>) {
    for (field, value) in fields {
        if let Some(v) = value
            && !(0..=1_000_000_000_000).contains(&v)
        {
            errors.push(FieldError::invalid(format!("{prefix}.{field}"), v, "must be between 0 and 10^12"));
        }
    }
}

/// At most this many attribute terms select a tenant's reserved agents.
pub const MAX_SELECTOR_TERMS: usize = 16;

/// The longest tenant name: `tenant-` and it make its controller's App name, a DNS label.
pub const MAX_TENANT_NAME: usize = 56;

/// `cpus 12.5%`: the largest of `held / capacity` over cpus, mem, disk and gpus, rounded down
/// to a tenth of a percent, compared exactly (in u128); `none` when it holds nothing.
pub fn dominant_share(held: ResourceAmounts, capacity: ResourceAmounts) -> String {
    let pairs = [
        ("cpus", held.millicpus, capacity.millicpus),
        ("mem", held.mem_mib, capacity.mem_mib),
        ("disk", held.disk_mib, capacity.disk_mib),
        ("gpus", held.gpus, capacity.gpus),
    ];
    let best = pairs
        .iter()
        .filter(|(_, h, c)| *c > 0 && *h > 0)
        .max_by(|a, b| (u128::from(a.1) * u128::from(b.2)).cmp(&(u128::from(b.1) * u128::from(a.2))));
    match best {
        None => "none".into(),
        Some((name, h, c)) => {
            let permille = u128::from(*h) * 1000 / u128::from(*c);
            format!("{name} {}.{}%", permille / 10, permille % 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, instances: i32, cpus: f64, group: Option<&str>) -> App {
        let mut spec: crate::AppSpec = serde_json::from_value(
            serde_json::json!({"cmd": "x", "instances": instances, "resources": {"cpus": cpus, "mem": 100}}),
        )
        .unwrap();
        spec.group = group.map(str::to_string);
        let mut app = App::new(name, spec);
        app.metadata.namespace = Some("a".into());
        app
    }

    #[test]
    fn usage_counts_effective_instances_and_skips_apps_being_deleted() {
        let group = AppGroup::new(
            "g",
            crate::AppGroupSpec { path: "/shop".into(), dependencies: Vec::new(), scale_factor: 1.5 },
        );
        let mut gone = app("gone", 5, 1.0, None);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let apps = [app("web", 2, 0.5, Some("/shop")), app("db", 1, 2.0, None), gone];
        let usage = Usage::of_namespace(&apps, &[group]);
        // web: ceil(2 × 1.5) = 3 × 0.5 cpus; db: 1 × 2 cpus.
        assert_eq!(usage.instances, 4);
        assert_eq!(usage.resources.millicpus, 3500);
        assert_eq!(usage.resources.mem_mib, 400);
        let quota = Quota { cpus: Some(4.0), instances: Some(10), ..Quota::default() };
        assert_eq!(summary(&usage, &quota), "cpus=3.5/4 instances=4/10");
        let capacity = ResourceAmounts { millicpus: 28_000, mem_mib: 1024, disk_mib: 0, gpus: 0 };
        assert_eq!(dominant_share(usage.resources, capacity), "mem 39.0%", "400 of 1024 MiB beats 3.5 of 28 cpus");
        assert_eq!(dominant_share(ResourceAmounts::default(), capacity), "none");
    }

    #[test]
    fn bad_tenants_name_the_field_and_the_value() {
        let tenant = Tenant::new(
            "team-a",
            TenantSpec {
                namespaces: vec!["a".into(), "a".into(), "default".into(), "Bad_Name".into()],
                quota: Quota { cpus: Some(-1.0), instances: Some(-3), ..Quota::default() },
                weight: 2_000_000,
                users: vec![String::new()],
                groups: Vec::new(),
                guarantee: Guarantee { cpus: Some(-1.0), ..Guarantee::default() },
                controller: ControllerSettings { replicas: 9, ..ControllerSettings::default() },
                service_domain: Some("Team_A.example".into()),
            },
        );
        let all: Vec<String> =
            validate_tenant(&tenant).iter().map(|e| format!("{}: {}", e.field, e.message())).collect();
        let all = all.join("\n");
        for needle in [
            "spec.namespaces[1]",
            "spec.namespaces[2]",
            "\"default\"",
            "spec.namespaces[3]",
            "spec.quota.cpus",
            "spec.quota.instances",
            "spec.controller.replicas",
            "spec.guarantee.cpus",
            "spec.serviceDomain: Invalid value: \"Team_A.example\"",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
    }

    #[test]
    fn service_domains_are_two_labels_or_more_and_overlap_only_within_each_other() {
        let problems = |domain: &str| {
            let spec = TenantSpec { service_domain: Some(domain.into()), ..Tenant::new("t", empty_spec()).spec };
            validate_tenant(&Tenant::new("t", spec)).into_iter().map(|e| e.message()).collect::<Vec<_>>()
        };
        assert!(problems("team-a.baton.internal").is_empty());
        assert!(problems("internal")[0].contains("at least two labels"), "{:?}", problems("internal"));
        let long = format!("{}.example", "a".repeat(MAX_SERVICE_DOMAIN));
        assert!(problems(&long)[0].contains("at most 110"), "{:?}", problems(&long));
        assert!(domains_overlap("a.example", "A.Example."));
        assert!(domains_overlap("team.a.example", "a.example"));
        assert!(domains_overlap("a.example", "team.a.example"));
        assert!(!domains_overlap("xa.example", "a.example"), "a suffix is not a subdomain");
        assert!(!domains_overlap("a.example", "b.example"));
    }

    fn empty_spec() -> TenantSpec {
        TenantSpec {
            namespaces: vec!["ns".into()],
            quota: Quota::default(),
            weight: 1,
            users: Vec::new(),
            groups: Vec::new(),
            guarantee: Guarantee::default(),
            controller: ControllerSettings::default(),
            service_domain: None,
        }
    }

    #[test]
    fn controller_tokens_are_made_only_with_the_secret() {
        let token = controller_token(b"secret", "team-a");
        assert!(token.starts_with("baton-tenant-controller.team-a."), "{token}");
        assert_eq!(verify_controller_token(b"secret", &token), Some("team-a"));
        assert_eq!(verify_controller_token(b"other", &token), None);
        let forged = token.replace("team-a", "team-b");
        assert_eq!(verify_controller_token(b"secret", &forged), None, "the MAC covers the name");
        assert_eq!(verify_controller_token(b"secret", "baton-tenant-controller.team-a.zz"), None);
        assert_eq!(verify_controller_token(b"secret", "plain-token"), None);
        assert_eq!(controller_of(&controller_user("team-a")), Some("team-a"));
    }
}
