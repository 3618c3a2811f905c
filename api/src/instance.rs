//! `Instance`: the read-only view of one instance that `baton apiserver` builds from the
//! store (`kubectl get instances -l app=web`). It is not a CRD: nobody writes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::records::{Goal, InstanceRecord, StatusRecord};

/// Kind of the view.
pub const INSTANCE_KIND: &str = "Instance";
/// Phase shown before the agent has reported anything.
pub const PHASE_ASSIGNED: &str = "Assigned";
/// Phase shown while the instance's agent does not report (its last report was not final).
pub const PHASE_UNREACHABLE: &str = "Unreachable";
/// Health of an instance that counts towards its app's capacity.
pub const HEALTHY: &str = "Healthy";

/// One instance as `kubectl get instances` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.Instance")]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: InstanceSpec,
    pub status: InstanceViewStatus,
}

/// Where the instance runs and what it runs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.InstanceSpec")]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The app's name (in the instance's namespace).
    pub app: String,
    pub agent: String,
    pub host: String,
    /// Assigned host ports, in the app's port order.
    #[serde(default)]
    pub ports: Vec<u16>,
    pub version: String,
    pub goal: Goal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// What the agent reported.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.InstanceStatus")]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    /// `Assigned` until the agent reports, then the agent's phase.
    pub phase: String,
    /// `Healthy` when the instance counts towards its app's capacity: its process runs
    /// (and, for apps with health checks, passes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<Timestamp>,
    /// When the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Instance {
    /// Builds the view of an instance from its record, its status if the agent reported one,
    /// whether its agent reports, and the store revision that last changed any of them.
    pub fn from_records(
        record: &InstanceRecord,
        status: Option<&StatusRecord>,
        agent_live: bool,
        resource_version: i64,
    ) -> Self {
        let mut labels: BTreeMap<String, String> = record.labels.clone();
        labels.insert(crate::APP_LABEL.to_string(), record.app.name.clone());
        let phase = match status {
            Some(s) if s.phase.is_terminal() => s.phase.as_str().to_string(),
            _ if !agent_live => PHASE_UNREACHABLE.to_string(),
            Some(s) => s.phase.as_str().to_string(),
            None => PHASE_ASSIGNED.to_string(),
        };
        Instance {
            api_version: crate::API_VERSION.to_string(),
            kind: INSTANCE_KIND.to_string(),
            metadata: ObjectMeta {
                name: Some(record.id.clone()),
                namespace: Some(record.app.namespace.clone()),
                uid: Some(record.id.clone()),
                labels: Some(labels),
                creation_timestamp: Some(Time(record.created_at)),
                resource_version: Some(resource_version.to_string()),
                owner_references: Some(vec![OwnerReference {
                    api_version: crate::API_VERSION.to_string(),
                    kind: "App".to_string(),
                    name: record.app.name.clone(),
                    uid: record.app.uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            spec: InstanceSpec {
                app: record.app.name.clone(),
                agent: record.agent.clone(),
                host: record.host.clone(),
                ports: record.ports.iter().map(|p| p.port).collect(),
                version: record.version.clone(),
                goal: record.goal,
                stop_reason: record.stop_reason.clone(),
            },
            status: InstanceViewStatus {
                health: (phase == crate::Phase::Running.as_str()).then(|| HEALTHY.to_string()),
                phase,
                pid: status.and_then(|s| s.pid),
                started_at: status.and_then(|s| s.started_at),
                finished_at: status.and_then(|s| s.finished_at),
                exit_code: status.and_then(|s| s.exit_code),
                signal: status.and_then(|s| s.signal),
                message: status.and_then(|s| s.message.clone()),
            },
        }
    }
}
