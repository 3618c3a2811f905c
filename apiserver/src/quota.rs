//! Tenants' quotas, checked where objects are admitted, atomically with the write (DESIGN.md
//! §10): a write of an App or AppGroup in a tenant's namespace that would take what the
//! tenant's apps ask for in all (instances × resources, scale factors applied) past its quota
//! is refused with a 403 naming the resource, the request, the usage and the limit, as
//! Kubernetes' ResourceQuota does. Only increases are checked: scaling down, or deleting,
//! always passes, even over a lowered quota.
//!
//! Every admitted write that may change the tenant's usage compares `/baton/quota/<tenant>` as
//! it was read before the usage was counted and bumps it, in the write's own transaction: of
//! two concurrent writes that each fit alone but not together, the second finds the key moved
//! and is counted again — racing requests never overshoot.
//!
//! A Tenant's own writes are checked against the others: a namespace belongs to one tenant at
//! most, and no two tenants' service domains overlap (`/baton/quota-tenants` keeps two
//! concurrent claims honest).

use baton_api::tenant::{Tenant, Usage, domains_overlap, show};
use baton_api::{App, AppGroup, FieldError};
use baton_store::{Keyspace, Op};
use serde_json::{Value, json};

use crate::admission::{Admission, Context, Guard, Proposed, Read};
use crate::graph::{load, unchanged};
use crate::status::{ApiError, ApiResult};

/// The quota check, for the two kinds whose writes change what apps ask for.
pub enum QuotaCheck {
    Apps,
    Groups,
}

impl QuotaCheck {
    /// The fields of `object` that change what the tenant's apps ask for.
    fn shape(&self, object: &Value) -> Value {
        let spec = &object["spec"];
        match self {
            QuotaCheck::Apps => json!([spec["instances"], spec["resources"], spec["group"]]),
            QuotaCheck::Groups => json!([spec["path"], spec["scaleFactor"]]),
        }
    }
}

/// Where Tenants are stored.
fn tenants_prefix(keys: &Keyspace) -> String {
    keys.registry(baton_api::GROUP, "tenants", None)
}

/// Every Tenant.
async fn tenants(context: Context<'_>) -> ApiResult<Vec<Tenant>> {
    let listed = context.range(&tenants_prefix(context.keys)).await?;
    Ok(listed.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// What the apps of `tenant`'s namespaces ask for without and with this write (`namespace`,
/// `name`, the object as it would be stored), counted from one read of each namespace, from
/// the store (after the quota's guard key was read).
async fn usage(
    context: Context<'_>,
    tenant: &Tenant,
    write: (&str, &str, &Value),
    groups: bool,
) -> ApiResult<(Usage, Usage)> {
    let (mut without, mut with) = (Usage::default(), Usage::default());
    let (written_in, name, object) = write;
    let context = context.fresh();
    for namespace in &tenant.spec.namespaces {
        let apps: Vec<App> = load(context, namespace, "apps").await?;
        let all_groups: Vec<AppGroup> = load(context, namespace, "appgroups").await?;
        let now = Usage::of_namespace(&apps, &all_groups);
        without = without.plus(now);
        if written_in != namespace {
            with = with.plus(now);
            continue;
        }
        let decode = |e: serde_json::Error| ApiError::internal(format!("a decoded object no longer reads: {e}"));
        let (mut apps, mut all_groups) = (apps, all_groups);
        if groups {
            all_groups.retain(|g| g.metadata.name.as_deref() != Some(name));
            all_groups.push(serde_json::from_value(object.clone()).map_err(decode)?);
        } else {
            apps.retain(|a| a.metadata.name.as_deref() != Some(name));
            apps.push(serde_json::from_value(object.clone()).map_err(decode)?);
        }
        with = with.plus(Usage::of_namespace(&apps, &all_groups));
    }
    Ok((without, with))
}

impl QuotaCheck {
    /// The namespace of a write that may change what its apps ask for.
    fn changed_in<'a>(&self, write: &Proposed<'a>) -> Option<&'a str> {
        write.namespace.filter(|_| write.changes(|object| self.shape(object)))
    }
}

#[async_trait::async_trait]
impl Admission for QuotaCheck {
    /// The Tenants (one may hold the namespace); the rest depends on which does.
    fn reads(&self, keys: &Keyspace, write: &Proposed<'_>) -> Vec<Read> {
        match self.changed_in(write) {
            Some(_) => vec![Read::Prefix(tenants_prefix(keys))],
            None => Vec::new(),
        }
    }

    async fn admit(&self, context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Option<Guard>> {
        let Some(namespace) = self.changed_in(write) else { return Ok(None) };
        let Proposed { target, after, .. } = *write;
        let Some(tenant) =
            tenants(context).await?.into_iter().find(|t| t.spec.namespaces.iter().any(|n| n == namespace))
        else {
            return Ok(None);
        };
        let tenant_name = tenant.metadata.name.clone().unwrap_or_default();
        let key = context.keys.quota_guard(&tenant_name);
        // Read before the apps, so a write after this read is noticed.
        let seen = context.fresh().get(&key).await?;
        let guard = Guard {
            compares: vec![unchanged(&key, seen.as_ref())],
            ops: vec![Op::put(
                &key,
                json!({"changedBy": format!("{}/{namespace}/{}", target.plural, target.name)}).to_string(),
            )],
        };
        let limits = tenant.spec.quota.limits();
        if limits.iter().all(Option::is_none) {
            return Ok(Some(guard));
        }
        let groups = matches!(self, QuotaCheck::Groups);
        let (without, with) = usage(context, &tenant, (namespace, target.name, after), groups).await?;
        let (now, next) = (without.amounts(), with.amounts());
        for (i, limit) in limits.iter().enumerate() {
            let Some(limit) = *limit else { continue };
            // Only what grows is limited.
            if next[i] > now[i] && next[i] > limit {
                let message = format!(
                    "{} {:?} is forbidden: exceeded quota: {tenant_name}, requested: {}, used: {}, limited: {}",
                    target.qualified(),
                    target.name,
                    show(i, next[i] - now[i]),
                    show(i, now[i]),
                    show(i, limit)
                );
                let mut error = ApiError::new(axum::http::StatusCode::FORBIDDEN, "Forbidden", message);
                error.details = Some(target.details());
                return Err(error);
            }
        }
        Ok(Some(guard))
    }
}

/// A namespace belongs to one tenant at most, and so does a DNS name: no two tenants' service
/// domains overlap (equal, or one within the other).
pub struct TenantClaims;

/// Whether a write of a Tenant changes what it claims.
fn claims_change(write: &Proposed<'_>) -> bool {
    write.changes(|tenant| json!([tenant["spec"]["namespaces"], tenant["spec"]["serviceDomain"]]))
}

#[async_trait::async_trait]
impl Admission for TenantClaims {
    /// The claims' guard key with the Tenants.
    fn reads(&self, keys: &Keyspace, write: &Proposed<'_>) -> Vec<Read> {
        match claims_change(write) {
            true => vec![Read::Key(keys.tenants_guard()), Read::Prefix(tenants_prefix(keys))],
            false => Vec::new(),
        }
    }

    async fn admit(&self, context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Option<Guard>> {
        if !claims_change(write) {
            return Ok(None);
        }
        let Proposed { target, after, .. } = *write;
        let key = context.keys.tenants_guard();
        let seen = context.get(&key).await?;
        let tenant: Tenant = serde_json::from_value(after.clone())
            .map_err(|e| ApiError::internal(format!("a decoded Tenant no longer reads: {e}")))?;
        let mut errors = Vec::new();
        for other in tenants(context).await?.iter().filter(|t| t.metadata.name.as_deref() != Some(target.name)) {
            for (i, namespace) in tenant.spec.namespaces.iter().enumerate() {
                if other.spec.namespaces.contains(namespace) {
                    errors.push(FieldError::invalid(
                        format!("spec.namespaces[{i}]"),
                        namespace.as_str(),
                        format!("belongs to the tenant {:?}", other.metadata.name.as_deref().unwrap_or_default()),
                    ));
                }
            }
            if let (Some(domain), Some(theirs)) = (&tenant.spec.service_domain, &other.spec.service_domain)
                && domains_overlap(domain, theirs)
            {
                errors.push(FieldError::invalid(
                    "spec.serviceDomain",
                    domain.as_str(),
                    format!(
                        "overlaps {theirs:?}, the service domain of the tenant {:?}: a name under both could be either's",
                        other.metadata.name.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&target, &errors));
        }
        Ok(Some(Guard {
            compares: vec![unchanged(&key, seen.as_ref())],
            ops: vec![Op::put(&key, json!({"changedBy": format!("tenants/{}", target.name)}).to_string())],
        }))
    }
}
