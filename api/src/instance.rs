//! `Instance`: the read-only view of one instance that `baton apiserver` builds from the
//! store (`kubectl get instances -l app=web`). It is not a CRD: nobody writes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::health::CheckResult;
use crate::records::{Goal, InstanceRecord, StatusRecord};

/// Kind of the view.
pub const INSTANCE_KIND: &str = "Instance";
/// Phase shown before the agent has reported anything.
pub const PHASE_ASSIGNED: &str = "Assigned";
/// Phase shown while the instance's agent does not report (its last report was not final).
pub const PHASE_UNREACHABLE: &str = "Unreachable";
/// Health of a running instance that passes every health check (or has none) and its
/// readiness check: it counts towards its app's capacity.
pub const HEALTHY: &str = "Healthy";
/// Health of a running instance that fails a health check.
pub const UNHEALTHY: &str = "Unhealthy";
/// Health of a running instance that passes its health checks but not yet its readiness
/// check.
pub const NOT_READY: &str = "NotReady";
/// Health of a running instance whose checks have no result yet.
pub const UNKNOWN: &str = "Unknown";

/// One instance as `kubectl get instances` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.Instance")]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `baton.dev/v1alpha1`.
    pub api_version: String,
    /// `Instance`.
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
    /// The agent the instance was placed on.
    pub agent: String,
    /// That agent's host, where the instance's ports are reached.
    pub host: String,
    /// Assigned host ports, in the app's port order.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The app version the instance runs (the app's `status.version` when current).
    pub version: String,
    pub goal: Goal,
    /// Why the controller stopped the instance: `ScaledDown`, `AppDeleted`, `Upgraded`
    /// (replaced by a new version), `Unhealthy` or `Killed` (a user asked); absent while it
    /// should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The instance killed for failing its health checks that this one was launched to
    /// replace (the app's `status.replacements` shows the slot until this one is steadily
    /// healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// What the agent reported.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.InstanceStatus")]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    /// `Assigned` until the agent reports, then the agent's phase.
    pub phase: String,
    /// For a running instance: `Healthy` when it counts towards its app's capacity (it
    /// passes its health checks, if any, and its readiness check, if any), `Unhealthy` when
    /// it fails a health check, `NotReady` when only its readiness check has not passed yet,
    /// `Unknown` before the first results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Each health check and the agent's results of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<CheckView>,
    /// The readiness check and its results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check: Option<CheckView>,
    /// The process id on the agent's machine.
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
    /// The process' exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What the agent has to say: why the process could not start, how it ended and the
    /// end of its stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the agent ended it, when it did: `OOMKilled` (over its memory limit),
    /// `DiskLimitExceeded` (its sandbox over its disk), `FetchFailed` (an artifact could not
    /// be fetched) or `PortInUse` (another process held one of its host ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it uses, as its agent last measured (with cgroups; disk for instances with
    /// `disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
}

/// One check of an instance: what it probes and how it went.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.InstanceCheck")]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    /// e.g. `HTTP GET /health on port index 0`.
    pub check: String,
    #[serde(flatten)]
    pub result: CheckResult,
}

/// The health column of a running instance.
fn health(record: &InstanceRecord, status: &StatusRecord) -> &'static str {
    let checks = record.run.health_checks.len();
    if status.fails_a_health_check() {
        UNHEALTHY
    } else if !status.passes_health_checks(checks) {
        UNKNOWN
    } else if !status.is_ready(!record.run.readiness_checks.is_empty()) {
        NOT_READY
    } else {
        HEALTHY
    }
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
        let mut labels: BTreeMap<String, String> = BTreeMap::clone(&record.run.labels);
        labels.insert(crate::APP_LABEL.to_string(), record.run.app.name.clone());
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
                namespace: Some(record.run.app.namespace.clone()),
                uid: Some(record.id.clone()),
                labels: Some(labels),
                creation_timestamp: Some(Time(record.created_at)),
                resource_version: Some(resource_version.to_string()),
                owner_references: Some(vec![OwnerReference {
                    api_version: crate::API_VERSION.to_string(),
                    kind: "App".to_string(),
                    name: record.run.app.name.clone(),
                    uid: record.run.app.uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            spec: InstanceSpec {
                app: record.run.app.name.clone(),
                agent: record.agent.clone(),
                host: record.host.clone(),
                ports: record.ports.iter().map(|p| p.port).collect(),
                version: record.run.version.clone(),
                goal: record.goal,
                stop_reason: record.stop_reason.as_deref().map(String::from),
                replaces: record.replaces.as_deref().map(String::from),
            },
            status: InstanceViewStatus {
                health: status
                    .filter(|_| phase == crate::Phase::Running.as_str())
                    .map(|s| health(record, s).to_string()),
                health_checks: record
                    .run
                    .health_checks
                    .iter()
                    .enumerate()
                    .map(|(i, check)| CheckView {
                        check: check.describe(),
                        result: status.and_then(|s| s.health.get(i)).cloned().unwrap_or_default(),
                    })
                    .collect(),
                readiness_check: record.run.readiness_checks.first().map(|check| CheckView {
                    check: check.describe(),
                    result: status.and_then(|s| s.readiness.as_deref().cloned()).unwrap_or_default(),
                }),
                phase,
                pid: status.and_then(|s| s.pid),
                started_at: status.and_then(|s| s.started_at),
                finished_at: status.and_then(|s| s.finished_at),
                exit_code: status.and_then(|s| s.exit_code),
                signal: status.and_then(|s| s.signal),
                message: status.and_then(|s| s.message.clone()),
                reason: status.and_then(|s| s.reason.as_deref().map(String::from)),
                usage: status.and_then(|s| s.usage.as_deref().copied()).map(UsageView::of),
            },
        }
    }
}

/// What an instance uses, as its agent last measured, in Kubernetes quantities (as the
/// metrics API's `usage`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.InstanceUsage")]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    /// CPU between the agent's last two measurements, e.g. `250m` (a quarter of a cpu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory in use, less the file cache it could give back, e.g. `45Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Its sandbox on disk (measured for instances with `disk`), e.g. `3Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// CPU time used since it started, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
}

impl UsageView {
    pub fn of(usage: crate::records::Usage) -> Self {
        UsageView {
            cpu: usage.millicpus.map(|m| format!("{m}m")),
            memory: usage.memory_bytes.map(bytes_quantity),
            disk: usage.disk_bytes.map(bytes_quantity),
            cpu_millis: usage.cpu_millis,
        }
    }
}

/// CPU time as users read it, to a tenth of a second: `12.3s`.
pub fn cpu_time_text(millis: u64) -> String {
    format!("{}.{}s", millis / 1000, millis % 1000 / 100)
}

/// Bytes as a binary quantity, rounded up to whole Ki, Mi or Gi: `512Ki`, `45Mi`, `3Gi`.
pub fn bytes_quantity(bytes: u64) -> String {
    const KI: u64 = 1 << 10;
    let up = |unit: u64| bytes.div_ceil(unit);
    if bytes == 0 {
        "0".to_string()
    } else if bytes < 1 << 20 {
        format!("{}Ki", up(KI))
    } else if bytes < 10 << 30 {
        format!("{}Mi", up(1 << 20))
    } else {
        format!("{}Gi", up(1 << 30))
    }
}
