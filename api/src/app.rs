//! `App`: Marathon's application, as a Kubernetes custom resource.
//!
//! Field names follow Marathon's where Marathon had the concept, so a Marathon app maps onto
//! an App almost field by field. Every field here works end to end; the API server rejects
//! any other field (see [`crate::validation`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::health::{HealthCheck, HealthPolicy, ReadinessCheck};
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
    category = "all",
    category = "baton",
    derive = "PartialEq",
    doc = "An application: a command run as a number of instances on Baton's agents.",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Running, Deploying, Scaling, Unhealthy, Waiting, Pending, BackingOff, Stopped or Deleting"
    ),
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
        name = "Healthy",
        type_ = "integer",
        json_path = ".status.healthy",
        description = "Instances that run and pass their health checks"
    ),
    printcolumn(
        name = "Unhealthy",
        type_ = "integer",
        json_path = ".status.unhealthy",
        description = "Instances that run and fail a health check"
    ),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.failures",
        description = "Instances of the current version that failed in a row (the launch backoff counts them)"
    ),
    printcolumn(
        name = "Staged",
        type_ = "integer",
        json_path = ".status.staged",
        description = "Instances launched but not yet running",
        priority = 1
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Instances wanted, scaled by the app's groups",
        priority = 1
    ),
    printcolumn(
        name = "Id",
        type_ = "string",
        json_path = ".status.id",
        description = "The app's group and name",
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
    #[schemars(length(max = crate::limits::MAX_ARG_BYTES))]
    pub cmd: Option<String>,

    /// A program and its arguments, executed directly without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// The user the process (and its command health checks) runs as: a user name known on
    /// the agents' machines, as Marathon's `user`. Switching users needs an agent running as
    /// root; an agent that cannot reports the instance Failed, saying why. Unset: the
    /// agent's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,

    /// Artifacts the agent fetches into each instance's sandbox before starting it (as
    /// Marathon's `fetch`): `http://`, `https://` or `file://` URIs; archives (`.tar`,
    /// `.tar.gz`, `.tgz`, `.zip`) are extracted. An instance is `Staging` while fetching; a
    /// failure ends it `Failed` with reason `FetchFailed`, naming the URI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::validation::MAX_FETCH))]
    pub fetch: Vec<Fetch>,

    /// What each instance needs: `cpus`, `mem` (MiB), `disk` (MiB).
    #[serde(default)]
    pub resources: Resources,

    /// Host ports each instance gets, found in `$PORT0…` and `$PORT_<NAME>`. `port: 0` asks
    /// for a dynamic port from the agent's range; a fixed `port` is the host port itself
    /// when `requirePorts` is set, and otherwise a service port (the instance gets a dynamic
    /// host port, also in `$PORT_<port>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::validation::MAX_PORTS))]
    pub ports: Vec<PortDefinition>,

    /// Fixed `ports` are the host ports: an instance goes only where they are free.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_ports: bool,

    /// How instances are placed beyond constraints.
    #[serde(default, skip_serializing_if = "Placement::is_default")]
    pub placement: Placement,

    /// Placement constraints, Marathon's `[field, OPERATOR, value?]`: `[[hostname, UNIQUE]]`,
    /// `[[rack, GROUP_BY, "3"]]`, `[[rack, LIKE, "r[1-3]"]]`… (see `docs/apps.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::limits::MAX_CONSTRAINTS))]
    pub constraints: Vec<Vec<String>>,

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

    /// How a new version replaces the running one.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,

    /// How long to wait before launching again after instances fail.
    #[serde(default)]
    pub backoff: Backoff,

    /// Probes the agents run on every instance (Marathon's fields and defaults): an
    /// instance is healthy while it passes all of them, and is killed and replaced after
    /// `maxConsecutiveFailures` failures in a row, within `healthPolicy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::validation::MAX_HEALTH_CHECKS))]
    pub health_checks: Vec<HealthCheck>,

    /// At most one: a new instance counts towards a deployment's progress only once it
    /// passes. Never kills.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub readiness_checks: Vec<ReadinessCheck>,

    /// How many failing instances may be killed at once when much of the app is unhealthy.
    #[serde(default)]
    pub health_policy: HealthPolicy,

    /// The group the app belongs to, an absolute path such as `/shop/frontend` (default
    /// `/`). The app's id is the group plus its name: `/shop/frontend/web`. It inherits the
    /// dependencies and scale factor of the AppGroups at its group and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,

    /// Apps or groups this app needs: it starts, or moves to a new version, only once each
    /// is available (every instance healthy at its current version); when they are deleted
    /// together, it stops first. Absolute paths, or relative to the app's group (`db`,
    /// `../shared/cache`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::limits::MAX_DEPENDENCIES))]
    pub dependencies: Vec<String>,
}

/// How instances are placed beyond constraints.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Each instance takes a whole agent: it goes only on an agent with nothing else on it,
    /// and nothing else goes on its agent. When no agent is empty but the cluster has room,
    /// the controller frees one by moving small instances off it (defragmentation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_agent: bool,
}

impl Placement {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How a new version replaces the old one, as Marathon does it: with `n` instances wanted,
/// at least `ceil(n × minimumHealthCapacity)` stay healthy and at most
/// `floor(n × (1 + maximumOverCapacity))` exist at any time. Fractions count in thousandths.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Fraction (0 to 1) of the instances that must stay healthy during a deployment.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub minimum_health_capacity: f64,
    /// Fraction (0 to 1) by which the total may exceed the wanted count during a deployment.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub maximum_over_capacity: f64,
    /// At most this many instances of the app starting (launched, not yet healthy) at once,
    /// for apps whose start-up overloads what they depend on. Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_starts: Option<i32>,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0, max_concurrent_starts: None }
    }
}

impl UpgradeStrategy {
    /// `minimumHealthCapacity` in thousandths.
    pub fn minimum_health_permille(&self) -> u64 {
        permille(self.minimum_health_capacity)
    }

    /// `maximumOverCapacity` in thousandths.
    pub fn maximum_over_permille(&self) -> u64 {
        permille(self.maximum_over_capacity)
    }
}

/// A fraction in thousandths, rounded to the nearest: in floating point `0.1 × 10` is
/// `1.0000000000000002`, whose ceiling is 2; in thousandths it is exactly 1.
pub(crate) fn permille(fraction: f64) -> u64 {
    if fraction.is_finite() && fraction > 0.0 { (fraction * 1000.0).round().min(1000.0) as u64 } else { 0 }
}

/// Marathon's launch backoff: after a failure, the next launch waits `seconds`, then
/// `factor` times longer after each further failure, at most `maxLaunchDelaySeconds`. It is
/// reset when an instance of the current version has run for longer than the delay, and
/// when the app's version changes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The delay after the first failure (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub seconds: f64,
    /// How much longer each further failure makes the delay (default 1.15).
    #[serde(default = "default_backoff_factor")]
    #[schemars(range(min = 1.0))]
    pub factor: f64,
    /// The longest delay (default 300).
    #[serde(default = "default_max_launch_delay")]
    #[schemars(range(min = 0.0))]
    pub max_launch_delay_seconds: f64,
}

fn default_backoff_factor() -> f64 {
    1.15
}

fn default_max_launch_delay() -> f64 {
    300.0
}

impl Default for Backoff {
    fn default() -> Self {
        Self { seconds: 1.0, factor: default_backoff_factor(), max_launch_delay_seconds: default_max_launch_delay() }
    }
}

impl Backoff {
    /// The delay after `failures` failures in a row (0 → none), in milliseconds.
    pub fn delay_millis(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let grown = self.seconds * self.factor.powi(failures.saturating_sub(1).min(1000) as i32);
        let seconds = grown.min(self.max_launch_delay_seconds);
        if seconds.is_finite() && seconds > 0.0 { (seconds * 1000.0).round() as u64 } else { 0 }
    }
}

/// The annotation whose value, when changed, restarts every instance (`kubectl annotate app
/// web baton.dev/restartedAt=$(date +%s) --overwrite`), as `kubectl rollout restart` does.
pub const RESTARTED_AT_ANNOTATION: &str = "baton.dev/restartedAt";

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
    /// The `spec.instances` this status was computed from (so a change of it shows as
    /// scaling, with an event).
    #[serde(default)]
    pub observed_instances: Option<i32>,
    /// The app's id: its group and name (`/shop/db`).
    #[serde(default)]
    pub id: Option<String>,
    /// What the app is doing, in one word: `Running` (every instance healthy at the current
    /// version), `Deploying` (a new version rolls out), `Scaling` (instances start or stop
    /// to reach the count, or are not healthy yet), `Unhealthy` (instances fail their health
    /// checks), `Waiting` (for its dependencies), `Pending` (instances cannot be placed),
    /// `BackingOff` (instances keep failing; launches wait), `Stopped` (no instance wanted)
    /// or `Deleting`. The conditions say why.
    #[serde(default)]
    pub state: Option<String>,
    /// Instances of the current version that failed in a row (ended on their own); 0 once
    /// one has run for longer than the backoff delay.
    #[serde(default)]
    pub failures: i32,
    /// Instances wanted: `spec.instances` scaled by the app's AppGroups.
    #[serde(default)]
    pub desired: i32,
    /// The dependencies that are not available, which hold back the app's start or its move
    /// to a new version (the `Dependencies` condition says why).
    #[serde(default)]
    pub waiting_for: Vec<String>,
    /// Instances placed on an agent and not yet terminated.
    #[serde(default)]
    pub instances: i32,
    /// Instances whose process runs.
    #[serde(default)]
    pub running: i32,
    /// Instances launched whose process does not run yet.
    #[serde(default)]
    pub staged: i32,
    /// Instances whose process runs and passes every health check (every running one, for
    /// an app without health checks).
    #[serde(default)]
    pub healthy: i32,
    /// Instances whose process runs and fails a health check.
    #[serde(default)]
    pub unhealthy: i32,
    /// Instances whose process runs and whose health is not known yet: no probe result, or
    /// failures only within the grace period. Neither healthy nor failed: a rollout stops
    /// them only within its capacity budget.
    #[serde(default)]
    pub health_unknown: i32,
    /// The health policy's replacement slots in use: each instance killed for its health
    /// holds one until an instance replacing it has been steadily healthy.
    #[serde(default)]
    pub replacements: Vec<ReplacementSlot>,
    /// Instances on agents that stopped reporting.
    #[serde(default)]
    pub unreachable: i32,
    /// Instances at the current version.
    #[serde(default)]
    pub updated: i32,
    /// Instances that are healthy and ready to serve, whatever their version.
    #[serde(default)]
    pub ready: i32,
    /// Ready instances at the current version.
    #[serde(default)]
    pub available: i32,
    /// Instances that cannot be placed, and why: how many agents were rejected for each
    /// reason. Absent when every instance is placed.
    #[serde(default)]
    pub pending: Option<PendingSummary>,
    /// How the last instance of the current version that failed ended.
    #[serde(default)]
    pub last_failure: Option<LastFailure>,
    /// The version the instances should run: a hash of the fields that change what runs.
    #[serde(default)]
    pub version: Option<String>,
    /// Set by a tenant's controller: instances it asks the platform to place (it places
    /// nothing itself). Served by the instances of the version created after `revision`.
    #[serde(default)]
    pub launch_request: Option<LaunchRequest>,
    /// `Available` (all instances ready at the current version), `Progressing` (a
    /// deployment or scaling under way, or stuck and why), `Pending` (some instances
    /// cannot be placed, with the reason) and `Healthy` (instances fail their health checks,
    /// and kills the health policy withholds, with the reason).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A tenant's controller's request to the platform's, the one arbiter of capacity.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaunchRequest {
    /// The app version to launch.
    pub version: String,
    /// How many instances.
    pub count: i32,
    /// The store revision the tenant's controller decided on: instances of the version
    /// created after it count as served.
    pub revision: i64,
}

/// Why some instances of an app cannot be placed.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingSummary {
    /// Instances waiting for an agent.
    pub instances: i32,
    /// Agents rejected, per reason ("insufficient mem", "constraint hostname UNIQUE"…).
    pub rejections: Vec<Rejection>,
}

/// How an instance failed (Marathon's `lastTaskFailure`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailure {
    /// The instance's name.
    pub instance: String,
    /// The agent it ran on.
    pub agent: String,
    /// The app version it ran.
    pub version: String,
    /// `Failed` or `Finished`.
    pub phase: String,
    /// The exit status and the end of stderr.
    pub message: String,
    pub time: Time,
}

impl From<&crate::records::Failure> for LastFailure {
    fn from(f: &crate::records::Failure) -> Self {
        Self {
            instance: f.instance.clone(),
            agent: f.agent.clone(),
            version: f.version.clone(),
            phase: f.phase.as_str().to_string(),
            message: f.message.clone(),
            time: Time(f.time),
        }
    }
}

/// A replacement slot of the health policy in use, and what it waits for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementSlot {
    /// The instance killed for failing its health checks.
    pub killed: String,
    /// The instance launched to replace it, while one is starting or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// What must happen before the slot is free again: the killed instance to stop, a launch
    /// (after the backoff, at a given time), the replacement to start, or to pass its health
    /// checks steadily.
    pub waiting_for: String,
}

/// How many agents were rejected for one reason.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Why: `insufficient mem`, `constraint hostname UNIQUE`, `no free port`…
    pub reason: String,
    /// How many agents were rejected for it.
    pub agents: i32,
}

/// Condition type: a deployment or scaling is under way (`False`/`Complete` when done,
/// `False`/`Stuck` with the reason when no progress is possible).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: every instance the spec asks for runs the current version.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: some instances cannot be placed on any agent; the message says why.
pub const CONDITION_PENDING: &str = "Pending";
/// `Planned` is False when the controller does not plan the app as written: it asks for more
/// instances than the cluster's maximum per app (`TooManyInstances`), or deciding about it
/// failed (`PlanningFailed`). Absent otherwise.
pub const CONDITION_PLANNED: &str = "Planned";
/// Condition type: every running instance passes its health checks (`False`/`Unhealthy`
/// when some fail, `False`/`KillsWithheld` when the health policy spares some that are due
/// to be killed, and why).
pub const CONDITION_HEALTHY: &str = "Healthy";
/// Condition type: everything the app depends on is available (`False`/`Waiting` with what
/// is not, which holds back its start or its move to a new version).
pub const CONDITION_DEPENDENCIES: &str = "Dependencies";

/// The finalizer the controller puts on every App: the App goes once its instances have
/// stopped, and apps deleted together stop in dependency order.
pub const STOP_FINALIZER: &str = "baton.dev/stop-instances";

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

/// One artifact to fetch into an instance's sandbox (Marathon's `fetch` item).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    /// Where from: `http://…`, `https://…` or `file:///absolute/path` (on the agent's machine).
    #[schemars(length(max = crate::validation::MAX_URI_BYTES))]
    pub uri: String,
    /// Extract it when it is an archive (`.tar`, `.tar.gz`, `.tgz`, `.zip`), into the
    /// directory it is fetched to (default true).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub extract: bool,
    /// Make the fetched file executable (`chmod 0755`); for a program fetched as is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// Keep it in the agent's cache, keyed by URI, and use the cached copy for later
    /// instances instead of fetching again (default false: fetched for every instance).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// Where in the sandbox to put it, relative (default: the URI's last path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Fetch {
    /// The sandbox-relative path it is fetched to: `destPath`, or the URI's last path segment
    /// (without query or fragment). `None` when neither names a file.
    pub fn file_name(&self) -> Option<String> {
        if let Some(dest) = &self.dest_path {
            return Some(dest.clone());
        }
        let path = self.uri.split(['?', '#']).next().unwrap_or_default();
        let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
        // `file:///x` has an empty host; `http://host` alone has no path.
        let (_, path) = after_scheme.split_once('/')?;
        let last = path.rsplit('/').next().unwrap_or_default();
        let last = percent_decoded(last).filter(|d| !d.contains(['/', '\0'])).unwrap_or_else(|| last.to_string());
        (!last.is_empty() && last != "." && last != "..").then_some(last)
    }
}

/// `%XX` escapes decoded; `None` when one is malformed or the result is not UTF-8.
pub fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The fields of a spec that change what an instance runs. Their hash is the app's
/// version; `instances` is deliberately not among them, so scaling restarts nothing.
#[derive(Serialize)]
struct RunDefinition<'a> {
    // Left out when false, so other apps keep their versions.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    whole_agent: bool,
    cmd: &'a Option<String>,
    args: &'a Option<Vec<String>>,
    // Left out when unset, so apps without it keep their versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: &'a Option<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    fetch: &'a [Fetch],
    resources: &'a Resources,
    ports: &'a [PortDefinition],
    require_ports: bool,
    env: &'a BTreeMap<String, String>,
    labels: &'a BTreeMap<String, String>,
    constraints: &'a [Vec<String>],
    restarted_at: Option<&'a str>,
    // Left out when empty, so apps without checks keep the versions they had before checks
    // existed.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    health_checks: &'a [HealthCheck],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    readiness_checks: &'a [ReadinessCheck],
}

impl App {
    /// The version of what this app runs: the first 10 hex digits of the SHA-256 of the
    /// fields that change what runs or where (command, resources, ports, env, labels,
    /// constraints, health and readiness checks) and of the `baton.dev/restartedAt` annotation, in a fixed JSON
    /// encoding, so every controller computes the same version for the same app. Scaling,
    /// the strategies and the kill grace period are not part of it.
    pub fn version(&self) -> String {
        let restarted_at =
            self.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT_ANNOTATION)).map(String::as_str);
        self.spec.version_with(restarted_at)
    }
}

impl AppSpec {
    fn version_with(&self, restarted_at: Option<&str>) -> String {
        use sha2::{Digest, Sha256};
        let run = RunDefinition {
            whole_agent: self.placement.whole_agent,
            cmd: &self.cmd,
            args: &self.args,
            user: &self.user,
            fetch: &self.fetch,
            resources: &self.resources,
            ports: &self.ports,
            require_ports: self.require_ports,
            env: &self.env,
            labels: &self.labels,
            constraints: &self.constraints,
            restarted_at,
            health_checks: &self.health_checks,
            readiness_checks: &self.readiness_checks,
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
        assert_eq!(s.resources, Resources { cpus: 1.0, mem: 128.0, disk: 0.0, gpus: 0 });
        assert_eq!(s.kill_grace_seconds(), 3);
        assert_eq!(
            s.unreachable_strategy,
            UnreachableStrategy { inactive_after_seconds: 300, expunge_after_seconds: 600 }
        );
        assert_eq!(s.kill_selection, KillSelection::YoungestFirst);
        assert_eq!(
            s.upgrade_strategy,
            UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0, max_concurrent_starts: None }
        );
        assert_eq!(s.backoff, Backoff { seconds: 1.0, factor: 1.15, max_launch_delay_seconds: 300.0 });
        let one: AppSpec = serde_json::from_value(serde_json::json!({"cmd": "x"})).unwrap();
        assert_eq!(one.instances, 1);
    }

    #[test]
    fn scaling_keeps_the_version_and_changing_what_runs_changes_it() {
        let base = spec();
        let v = base.version_with(None);
        assert_eq!(v.len(), 10);
        let lifecycle_only = AppSpec {
            instances: 7,
            task_kill_grace_period_seconds: Some(9),
            kill_selection: KillSelection::OldestFirst,
            unreachable_strategy: UnreachableStrategy { inactive_after_seconds: 1, expunge_after_seconds: 2 },
            ..base.clone()
        };
        assert_eq!(lifecycle_only.version_with(None), v);
        let strategies = AppSpec {
            upgrade_strategy: UpgradeStrategy { minimum_health_capacity: 0.5, ..Default::default() },
            backoff: Backoff { seconds: 5.0, ..Default::default() },
            health_policy: crate::health::HealthPolicy { min_healthy_ratio: 0.1, ..Default::default() },
            ..base.clone()
        };
        assert_eq!(strategies.version_with(None), v);
        assert_eq!(v, "62fbacd619", "an app without checks keeps the version it had before checks existed");
        let mut checked = base.clone();
        checked.health_checks = vec![serde_json::from_value(serde_json::json!({"protocol": "TCP"})).unwrap()];
        assert_ne!(checked.version_with(None), v);
        let mut env = base.clone();
        env.env.insert("A".into(), "1".into());
        assert_ne!(env.version_with(None), v);
        let mut cmd = base.clone();
        cmd.cmd = Some("sleep 200".into());
        assert_ne!(cmd.version_with(None), v);
        let mut constraints = base.clone();
        constraints.constraints = vec![vec!["hostname".into(), "UNIQUE".into()]];
        assert_ne!(constraints.version_with(None), v);
        let mut mem = base.clone();
        mem.resources.mem = 256.0;
        assert_ne!(mem.version_with(None), v);
        assert_ne!(base.version_with(Some("2026-11-21T10:00:00Z")), v, "a restart annotation rolls every instance");
        assert_ne!(base.version_with(Some("1")), base.version_with(Some("2")));
    }

    #[test]
    fn fractions_count_in_thousandths() {
        let s =
            UpgradeStrategy { minimum_health_capacity: 0.1, maximum_over_capacity: 0.2, max_concurrent_starts: None };
        assert_eq!((s.minimum_health_permille(), s.maximum_over_permille()), (100, 200));
        assert_eq!(UpgradeStrategy::default().minimum_health_permille(), 1000);
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_maximum() {
        let b = Backoff::default();
        assert_eq!(b.delay_millis(0), 0);
        assert_eq!(b.delay_millis(1), 1000);
        assert_eq!(b.delay_millis(2), 1150);
        assert_eq!(b.delay_millis(3), 1322, "1.15² s = 1.3225 s, which floating point holds as 1.32249…");
        assert_eq!(b.delay_millis(200), 300_000, "capped at maxLaunchDelaySeconds");
    }
}
