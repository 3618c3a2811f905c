//! Authorization delegated to Kubernetes, as every API server behind the aggregation layer
//! does: a request Baton's own rules do not allow is asked of the Kubernetes API server as a
//! `SubjectAccessReview` (the user and groups the front proxy named, the verb, group,
//! resource, namespace, name and subresource), so Kubernetes' RBAC — the `baton-view`,
//! `baton-edit` and `baton-admin` ClusterRoles the Helm chart installs — decides. Answers are
//! kept for [`TTL`], as Kubernetes' delegating authorizer keeps them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};

use crate::auth::{Attributes, Identity};

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(10);
/// The most answers kept; past it the oldest half is dropped.
const MAX_KEPT: usize = 10_000;

/// Asks Kubernetes.
pub struct Delegated {
    client: kube::Client,
    kept: Mutex<HashMap<String, (bool, Instant)>>,
}

/// The review asking whether `identity` may do what `attributes` say, in `version` of its
/// group.
pub fn review(identity: &Identity, attributes: &Attributes, version: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(identity.user.clone()),
            groups: Some(identity.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(attributes.group.clone()),
                version: Some(version.to_string()),
                resource: Some(attributes.resource.clone()),
                subresource: attributes.subresource.clone(),
                namespace: attributes.namespace.clone(),
                name: attributes.name.clone(),
                verb: Some(attributes.verb.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl std::fmt::Debug for Delegated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegated").finish_non_exhaustive()
    }
}

impl Delegated {
    pub fn new(client: kube::Client) -> Self {
        Delegated { client, kept: Mutex::new(HashMap::new()) }
    }

    /// Whether Kubernetes allows it. An error asking is a refusal (logged), not kept.
    pub async fn allows(&self, identity: &Identity, attributes: &Attributes, version: &str) -> bool {
        let review = review(identity, attributes, version);
        let key = serde_json::to_string(&review.spec).unwrap_or_default();
        let now = Instant::now();
        if let Some((allowed, at)) = self.kept.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now.duration_since(*at) < TTL
        {
            return *allowed;
        }
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let allowed = match api.create(&kube::api::PostParams::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(user = %identity.user, error = %e, "could not ask Kubernetes whether a request is allowed");
                return false;
            }
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= MAX_KEPT {
            let mut ages: Vec<Instant> = kept.values().map(|(_, at)| *at).collect();
            ages.sort();
            let cutoff = ages[ages.len() / 2];
            kept.retain(|_, (_, at)| *at > cutoff);
        }
        kept.insert(key, (allowed, now));
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Needs, needs};

    #[test]
    fn a_request_becomes_the_review_kubernetes_rbac_answers() {
        let who = Identity { user: "alice".into(), groups: vec!["dev".into(), "system:authenticated".into()] };
        let Needs::Authorization(what) = needs(
            &http::Method::GET,
            "/apis/views.baton.dev/v1alpha1/namespaces/shop/instances/web-1/log",
            Some("follow=true"),
        ) else {
            panic!("a log read needs authorization")
        };
        let asked = serde_json::to_value(review(&who, &what, "v1alpha1")).unwrap();
        assert_eq!(
            asked,
            serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
                "spec": {
                    "user": "alice", "groups": ["dev", "system:authenticated"],
                    "resourceAttributes": {
                        "group": "views.baton.dev", "version": "v1alpha1", "resource": "instances",
                        "subresource": "log", "namespace": "shop", "name": "web-1", "verb": "get",
                    },
                },
            })
        );
        let Needs::Authorization(list) =
            needs(&http::Method::GET, "/apis/views.baton.dev/v1alpha1/agents", Some("watch=1"))
        else {
            panic!("a watch needs authorization")
        };
        let spec = review(&who, &list, "v1alpha1").spec.resource_attributes.unwrap();
        assert_eq!((spec.verb.as_deref(), spec.namespace, spec.name), (Some("watch"), None, None));
    }
}
