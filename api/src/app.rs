//! `App`: Marathon's application, as a Kubernetes custom resource.
//!
//! Field names follow Marathon's where Marathon had the concept, so a Marathon app maps onto
//! an App almost field by field. Every field here works end to end; the API server rejects
//! any other field (see [`crate::validation`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::Resources;

/// The desired state of an app: what to run, how many times, with what.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "App",
    plural = "apps",
    namespaced,
    status = "AppStatus",
    category = "baton",
    derive = "PartialEq",
    doc = "An application: a command run as a number of instances on Baton's agents.",
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".spec.instances",
        description = "Instances the spec asks for"
    ),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.running",
        description = "Instances whose process runs"
    ),
    printcolumn(
        name = "Staged",
        type_ = "integer",
        json_path = ".status.staged",
        description = "Instances launched but not yet running",
        priority = 1
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Version the instances should run",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(spec_replicas_path = ".spec.instances", status_replicas_path = ".status.instances")
)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// How many instances to run (default 1). `kubectl scale app/NAME --replicas=N` sets it.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 0))]
    pub instances: i32,

    /// A shell command, run as `sh -c CMD`. Exactly one of `cmd` and `args` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,

    /// A program and its arguments, executed directly without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// What each instance needs: `cpus`, `mem` (MiB), `disk` (MiB).
    #[serde(default)]
    pub resources: Resources,

    /// Host ports each instance gets. `port: 0` (the only value today) asks for a dynamic
    /// port from the agent's range; the instance finds it in `$PORT0…` and `$PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortDefinition>,

    /// Environment variables for every instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,

    /// Labels copied onto every instance (`kubectl get instances -l KEY=VALUE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Seconds between SIGTERM and SIGKILL when an instance is stopped (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub task_kill_grace_period_seconds: Option<i64>,

    /// What happens to instances on an agent that stopped reporting.
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,

    /// Which instances go first when there are more than the spec asks for.
    #[serde(default)]
    pub kill_selection: KillSelection,
}

/// Marathon's `unreachableStrategy`: an instance whose agent stopped reporting is replaced
/// after `inactiveAfterSeconds` and forgotten after `expungeAfterSeconds`. If its agent comes
/// back before then, the instance counts again and the extra instances are stopped (per
/// `killSelection`); after it, the instance is stopped when its agent comes back.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreachableStrategy {
    /// Seconds an instance may be unreachable before a replacement is launched (default 300).
    #[serde(default = "default_inactive_after")]
    #[schemars(range(min = 0))]
    pub inactive_after_seconds: i64,
    /// Seconds an instance may be unreachable before it is forgotten (default 600); at least
    /// `inactiveAfterSeconds`.
    #[serde(default = "default_expunge_after")]
    #[schemars(range(min = 0))]
    pub expunge_after_seconds: i64,
}

fn default_inactive_after() -> i64 {
    300
}

fn default_expunge_after() -> i64 {
    600
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        Self { inactive_after_seconds: default_inactive_after(), expunge_after_seconds: default_expunge_after() }
    }
}

/// Which instances are stopped first when an app has too many (Marathon's `killSelection`).
/// Either way, instances that are unreachable go first, then those not running yet.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum KillSelection {
    /// The most recently launched first (default).
    #[default]
    YoungestFirst,
    /// The earliest launched first.
    OldestFirst,
}

/// One host port of an instance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// Optional name; the instance gets the port in `$PORT_<NAME>` (upper case, `-` → `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 0 = a dynamic host port chosen from the agent's port range.
    #[serde(default)]
    pub port: i32,
}

/// What the controller observed about an app. Every field is always serialized (`null`
/// when unknown), so a merge patch of the whole status also clears what is gone.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Instances placed on an agent and not yet terminated.
    #[serde(default)]
    pub instances: i32,
    /// Instances whose process runs.
    #[serde(default)]
    pub running: i32,
    /// Instances launched whose process does not run yet.
    #[serde(default)]
    pub staged: i32,
    /// Instances on agents that stopped reporting.
    #[serde(default)]
    pub unreachable: i32,
    /// The version the instances should run: a hash of the fields that change what runs.
    #[serde(default)]
    pub version: Option<String>,
    /// `Available` (all instances run the current version) and `Pending` (some instances
    /// cannot be placed, with the reason).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Condition type: every instance the spec asks for runs the current version.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: some instances cannot be placed on any agent; the message says why.
pub const CONDITION_PENDING: &str = "Pending";

fn default_instances() -> i32 {
    1
}

impl App {
    /// `namespace/name`, for messages and map keys.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or(""), self.metadata.name.as_deref().unwrap_or(""))
    }
}

impl AppSpec {
    /// The kill grace period, with Marathon's (and Mesos') default of 3 seconds.
    pub fn kill_grace_seconds(&self) -> u32 {
        self.task_kill_grace_period_seconds.map_or(3, |s| s.clamp(0, 3600) as u32)
    }
}

impl AppStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The fields of a spec that change what an instance runs. Their hash is the app's
/// version; `instances` is deliberately not among them, so scaling restarts nothing.
#[derive(Serialize)]
struct RunDefinition<'a> {
    cmd: &'a Option<String>,
    args: &'a Option<Vec<String>>,
    resources: &'a Resources,
    ports: &'a [PortDefinition],
    env: &'a BTreeMap<String, String>,
    labels: &'a BTreeMap<String, String>,
}

impl AppSpec {
    /// The version of what this spec runs: the first 10 hex digits of the SHA-256 of the
    /// fields that change what runs (command, resources, ports, env, labels), in a fixed
    /// JSON encoding, so every controller computes the same version for the same spec.
    pub fn version(&self) -> String {
        use sha2::{Digest, Sha256};
        let run = RunDefinition {
            cmd: &self.cmd,
            args: &self.args,
            resources: &self.resources,
            ports: &self.ports,
            env: &self.env,
            labels: &self.labels,
        };
        // Serializing plain structs, strings, numbers and BTreeMaps cannot fail.
        let bytes = serde_json::to_vec(&run).expect("run definition serializes");
        let digest = Sha256::digest(&bytes);
        digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        serde_json::from_value(serde_json::json!({"cmd": "sleep 100", "instances": 2})).unwrap()
    }

    #[test]
    fn defaults_are_marathons() {
        let s = spec();
        assert_eq!(s.resources, Resources { cpus: 1.0, mem: 128.0, disk: 0.0 });
        assert_eq!(s.kill_grace_seconds(), 3);
        assert_eq!(
            s.unreachable_strategy,
            UnreachableStrategy { inactive_after_seconds: 300, expunge_after_seconds: 600 }
        );
        assert_eq!(s.kill_selection, KillSelection::YoungestFirst);
        let one: AppSpec = serde_json::from_value(serde_json::json!({"cmd": "x"})).unwrap();
        assert_eq!(one.instances, 1);
    }

    #[test]
    fn scaling_keeps_the_version_and_changing_what_runs_changes_it() {
        let base = spec();
        let v = base.version();
        assert_eq!(v.len(), 10);
        let lifecycle_only = AppSpec {
            instances: 7,
            task_kill_grace_period_seconds: Some(9),
            kill_selection: KillSelection::OldestFirst,
            unreachable_strategy: UnreachableStrategy { inactive_after_seconds: 1, expunge_after_seconds: 2 },
            ..base.clone()
        };
        assert_eq!(lifecycle_only.version(), v);
        let mut env = base.clone();
        env.env.insert("A".into(), "1".into());
        assert_ne!(env.version(), v);
        let mut cmd = base.clone();
        cmd.cmd = Some("sleep 200".into());
        assert_ne!(cmd.version(), v);
        let mut mem = base;
        mem.resources.mem = 256.0;
        assert_ne!(mem.version(), v);
    }
}
