//! `Agent`: the read-only, cluster-scoped view of one agent that `baton apiserver` builds
//! from the store (`kubectl get agents`): what it offers, what its instances take, and
//! whether it reports. It is not a CRD: nobody writes it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::records::{AgentRecord, InstanceRecord, UnreachableMarker};
use crate::resources::ResourceAmounts;

/// Kind of the view.
pub const AGENT_KIND: &str = "Agent";
/// State of an agent that reports (its key is alive).
pub const STATE_READY: &str = "Ready";
/// State of an agent that stopped reporting while instances were assigned to it.
pub const STATE_UNREACHABLE: &str = "Unreachable";

/// One agent as `kubectl get agents` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.Agent")]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// `baton.dev/v1alpha1`.
    pub api_version: String,
    /// `Agent`.
    pub kind: String,
    /// The name is the agent's; its attributes that are valid label values are also its
    /// labels, so `kubectl get agents -l rack=r1` works.
    pub metadata: ObjectMeta,
    pub spec: AgentSpec,
    pub status: AgentStatus,
}

/// What the agent offers, as it registered (empty while it does not report).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.AgentSpec")]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Where its instances are reached.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Attributes for constraints, e.g. `rack: r1`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Host port ranges it hands out, e.g. `31000-31999`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The Baton version it runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// Amounts of resources, in the units apps ask for them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.AgentResources")]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    /// Cpus.
    pub cpus: f64,
    /// Memory in MiB.
    pub mem: u64,
    /// Disk in MiB.
    pub disk: u64,
    /// Whole GPUs.
    pub gpus: u64,
}

impl From<ResourceAmounts> for Amounts {
    fn from(amounts: ResourceAmounts) -> Self {
        Amounts {
            cpus: amounts.millicpus as f64 / 1000.0,
            mem: amounts.mem_mib,
            disk: amounts.disk_mib,
            gpus: amounts.gpus,
        }
    }
}

/// How the agent is doing.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.AgentStatus")]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// `Ready` while it reports, `Unreachable` once it stopped with instances assigned.
    pub state: String,
    /// What it gives to instances (absent while it does not report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Amounts>,
    /// What the instances assigned to it and not over take.
    pub allocated: Amounts,
    /// Instances assigned to it and not over.
    pub instances: u32,
    /// Since when it does not report (set by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Time>,
    /// Its state in a Maintenance, while it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<AgentMaintenance>,
}

/// An agent's part in a Maintenance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[schemars(rename = "dev.baton.v1alpha1.AgentMaintenance")]
#[serde(rename_all = "camelCase")]
pub struct AgentMaintenance {
    /// The Maintenance that takes it, or `defragmentation for NAMESPACE/APP`.
    pub name: String,
    /// `Draining`, `Drained` or `Released`.
    pub state: String,
    /// Since when it is in this state.
    pub since: Time,
}

impl AgentMaintenance {
    pub fn of(record: &crate::maintenance::DrainRecord) -> Self {
        let name = match &record.for_app {
            Some(app) => format!("defragmentation for {app}"),
            None => record.maintenance.clone(),
        };
        Self { name, state: record.state.as_str().into(), since: Time(record.since) }
    }
}

impl Agent {
    /// The view of agent `name` from its record (if it reports), the instances assigned to
    /// it that are not over, the controller's unreachable marker, and the latest store
    /// revision among them.
    pub fn from_records(
        name: &str,
        record: Option<&AgentRecord>,
        live_instances: &[&InstanceRecord],
        marker: Option<&UnreachableMarker>,
        resource_version: i64,
    ) -> Self {
        let allocated = live_instances.iter().fold(ResourceAmounts::default(), |sum, i| sum.plus(i.run.resources));
        let labels: BTreeMap<String, String> = record
            .map(|r| {
                r.attributes
                    .iter()
                    .filter(|(k, v)| {
                        crate::names::label_key_problem(k).is_none() && crate::names::label_value_problem(v).is_none()
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let state = if record.is_some() { STATE_READY } else { STATE_UNREACHABLE };
        Agent {
            api_version: crate::API_VERSION.to_string(),
            kind: AGENT_KIND.to_string(),
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                uid: Some(name.to_string()),
                labels: (!labels.is_empty()).then_some(labels),
                creation_timestamp: record.map(|r| Time(r.started_at)),
                resource_version: Some(resource_version.to_string()),
                ..ObjectMeta::default()
            },
            spec: record
                .map(|r| AgentSpec {
                    host: r.host.clone(),
                    attributes: r.attributes.clone(),
                    ports: r.ports.iter().map(ToString::to_string).collect(),
                    version: r.version.clone(),
                })
                .unwrap_or_else(|| AgentSpec {
                    host: live_instances.first().map(|i| i.host.clone()).unwrap_or_default(),
                    ..AgentSpec::default()
                }),
            status: AgentStatus {
                state: state.to_string(),
                capacity: record.map(|r| r.resources.into()),
                allocated: allocated.into(),
                instances: live_instances.len() as u32,
                unreachable_since: marker.filter(|_| record.is_none()).map(|m| Time(m.since)),
                maintenance: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AppRef, Command, Goal, RunSpec};
    use jiff::Timestamp;
    use std::sync::Arc;

    fn agent() -> AgentRecord {
        AgentRecord {
            name: "a1".into(),
            host: "10.0.0.1".into(),
            resources: ResourceAmounts { millicpus: 4000, mem_mib: 8192, disk_mib: 0, gpus: 0 },
            attributes: [("rack".to_string(), "r1".to_string()), ("note".to_string(), "not a label!".to_string())]
                .into(),
            ports: vec![crate::PortRange { begin: 31000, end: 31999 }],
            version: "0.1.0".into(),
            started_at: Timestamp::UNIX_EPOCH,
            sandbox: None,
        }
    }

    fn instance(millicpus: u64) -> InstanceRecord {
        InstanceRecord {
            id: format!("web-{millicpus}"),
            agent: "a1".into(),
            host: "10.0.0.1".into(),
            created_at: Timestamp::UNIX_EPOCH,
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: vec![],
            term: 1,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: AppRef { namespace: "default".into(), name: "web".into(), uid: "u".into() },
                scope: Default::default(),
                version: "v".into(),
                whole_agent: false,
                command: Command::Shell("x".into()),
                user: None,
                fetch: Vec::new(),
                env: Default::default(),
                labels: Default::default(),
                resources: ResourceAmounts { millicpus, mem_mib: 128, disk_mib: 0, gpus: 0 },
                kill_grace_seconds: 3,
                health_checks: Vec::new(),
                readiness_checks: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_reporting_agent_shows_capacity_allocation_and_label_attributes() {
        let (a, b) = (instance(500), instance(250));
        let view = Agent::from_records("a1", Some(&agent()), &[&a, &b], None, 7);
        assert_eq!(view.status.state, STATE_READY);
        assert_eq!(view.status.allocated, Amounts { cpus: 0.75, mem: 256, disk: 0, gpus: 0 });
        assert_eq!(view.status.capacity.unwrap().cpus, 4.0);
        assert_eq!(view.status.instances, 2);
        let labels = view.metadata.labels.unwrap();
        assert_eq!(labels.get("rack").map(String::as_str), Some("r1"));
        assert!(!labels.contains_key("note"), "attributes that are not label values are not labels");
        assert_eq!(view.spec.ports, ["31000-31999"]);
    }

    #[test]
    fn a_gone_agent_with_instances_is_unreachable() {
        let a = instance(500);
        let marker = UnreachableMarker { since: Timestamp::UNIX_EPOCH };
        let view = Agent::from_records("a1", None, &[&a], Some(&marker), 9);
        assert_eq!(view.status.state, STATE_UNREACHABLE);
        assert_eq!(view.status.capacity, None);
        assert_eq!(view.spec.host, "10.0.0.1", "the host its instances were reached on");
        assert!(view.status.unreachable_since.is_some());
    }
}
