//! `Maintenance`: agents taken out of service to be patched and rebooted, scheduled days ahead
//! on fixed partitions of the cluster (DESIGN.md §9), or at once for named agents.
//!
//! A Maintenance covers agents (by attribute selector and/or by name), partitions them by one
//! attribute (e.g. `rack`), and opens windows: recurring ones (`schedule`: the first opening,
//! how often, how long; each takes the next partition in turn) and/or explicit ones
//! (`windows`). While a window is open, its partition's agents are in maintenance — at most
//! `maxAgents` at once: nothing new is placed on them, each of their instances gets a
//! replacement elsewhere first and stops only once the replacement is healthy and ready. A
//! drained agent is released when it restarts (it was patched) or when the window closes.
//! With neither schedule nor windows, the covered agents are drained at once and stay out
//! until the Maintenance is deleted (a failing disk).
//!
//! The controller keeps each agent's state in the store ([`DrainRecord`],
//! `/baton/maintenance/<agent>`), so a new leader continues the same drain; the
//! Maintenance's status is the schedule for the horizon and what is draining now.
//!
//! [`windows`] is pure: the schedule is computed from the spec, the agents and a moment.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names;
use crate::validation::FieldError;

/// At most this many agents named in `spec.agents`.
pub const MAX_NAMED_AGENTS: usize = 1000;
/// At most this many explicit windows.
pub const MAX_WINDOWS: usize = 100;
/// At most this many partitions in `spec.partitions`.
pub const MAX_PARTITIONS: usize = 1000;
/// The furthest a schedule is computed ahead.
pub const MAX_HORIZON_DAYS: u32 = 90;
/// The shortest time between two recurring windows.
pub const MIN_EVERY: SignedDuration = SignedDuration::from_mins(10);
/// At most this many windows in the status's schedule.
pub const MAX_SCHEDULED_WINDOWS: usize = 200;
/// The state of an agent of an open window that waits for `maxAgents`.
pub const STATE_WAITING: &str = "Waiting";
/// At most this many agent names per window in the status's schedule (`agentCount` has them all).
pub const MAX_LISTED_AGENTS: usize = 50;

/// Agents taken out of service for maintenance, on a schedule or at once.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Maintenance",
    plural = "maintenances",
    shortname = "mnt",
    status = "MaintenanceStatus",
    category = "baton",
    derive = "PartialEq",
    doc = "Agents taken out of service for maintenance: drained (every instance replaced elsewhere first) in \
           windows scheduled days ahead on fixed partitions of the cluster, or at once.",
    printcolumn(
        name = "Partition-By",
        type_ = "string",
        json_path = ".spec.partitionBy",
        description = "The attribute that partitions the agents"
    ),
    printcolumn(
        name = "Window",
        type_ = "string",
        json_path = ".status.window",
        description = "The partition whose window is open now (all: every covered agent)"
    ),
    printcolumn(
        name = "Draining",
        type_ = "integer",
        json_path = ".status.draining",
        description = "Agents in maintenance with instances still on them"
    ),
    printcolumn(
        name = "Drained",
        type_ = "integer",
        json_path = ".status.drained",
        description = "Agents in maintenance with nothing left on them"
    ),
    printcolumn(
        name = "Blocked",
        type_ = "integer",
        json_path = ".status.blockedInstances",
        description = "Instances whose move waits (room, a budget, a replacement not yet healthy)"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextWindow",
        description = "When the next window opens"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// Agents covered: those with every one of these attributes (`rack: r1`). With neither
    /// `selector` nor `agents`, every agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,

    /// Agents covered by name (with those the selector picks). With no `schedule` and no
    /// `windows`, these are drained at once and stay out until the Maintenance is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NAMED_AGENTS))]
    pub agents: Vec<String>,

    /// The attribute that partitions the covered agents into fixed maintenance domains, e.g.
    /// `rack`. Each window takes one partition; apps spread across partitions by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,

    /// The order in which recurring windows take the partitions (default: the values of
    /// `partitionBy` among the covered agents, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PARTITIONS))]
    pub partitions: Vec<String>,

    /// Recurring windows, each taking the next partition in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Explicit windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WINDOWS))]
    pub windows: Vec<Window>,

    /// At most this many agents in maintenance at once (draining or drained, not yet
    /// released). Absent: every agent of the open window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_agents: Option<u32>,

    /// How many days ahead the schedule is computed and checked (default 7).
    #[serde(default = "seven_days")]
    #[schemars(range(min = 1, max = 90))]
    pub horizon_days: u32,

    /// After an agent has drained this long (e.g. `6h`), its remaining instances are stopped
    /// without waiting for replacements — recorded in the status, an event and a metric.
    /// Absent: a drain that cannot proceed waits, and says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_after: Option<String>,
}

fn seven_days() -> u32 {
    7
}

/// Recurring windows: the first opens at `start`, then one every `every`, each open for
/// `duration`; the n-th takes partition n modulo the number of partitions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// When the first window opens (RFC 3339, e.g. `2026-12-02T02:00:00Z`).
    pub start: Time,
    /// Time between openings, e.g. `24h` (at least 10m).
    pub every: String,
    /// How long each window is open, e.g. `4h` (at most `every`).
    pub duration: String,
}

/// One explicit window.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub start: Time,
    pub end: Time,
    /// The partition it takes (absent: every covered agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// What the controller computed and observed.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// The partition whose window is open now (`all`: every covered agent); empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub window: String,
    /// Agents in maintenance with instances left on them.
    #[serde(default)]
    pub draining: u32,
    /// Agents in maintenance with nothing left on them.
    #[serde(default)]
    pub drained: u32,
    /// Instances on agents in maintenance whose move waits.
    #[serde(default)]
    pub blocked_instances: u32,
    /// Instances stopped by `forceAfter` without a healthy replacement, in all.
    #[serde(default)]
    pub forced_instances: u32,
    /// When the next window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Time>,
    /// The agents of the open window, and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentState>,
    /// What holds the drain back now: per app, the budget or the room it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<Blocker>,
    /// The windows of the horizon, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduledWindow>,
    /// Apps a coming window would take below their minimum healthy capacity, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_risk: Vec<Risk>,
    /// `Valid` is False, with the field errors, for a Maintenance stored under older rules
    /// that no longer holds: it takes no agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One agent of the open window.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The agent's name.
    pub name: String,
    /// `Waiting` (for `maxAgents`), `Draining`, `Drained` or `Released`.
    pub state: String,
    /// Instances on it (of every app).
    #[serde(default)]
    pub instances: u32,
    /// Since when it is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Why instances of one app have not moved yet.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Blocker {
    /// `namespace/name` of the app.
    pub app: String,
    /// Its instances on agents in maintenance that wait, by id (the first few).
    pub instances: Vec<String>,
    /// How many wait in all.
    pub count: u32,
    /// `Replacing` (a replacement is not healthy and ready yet), `MaxConcurrentStarts`,
    /// `MinimumHealthCapacity`, `NoRoom` or `Unplaceable`.
    pub reason: String,
    /// What it waits for, in words.
    pub message: String,
}

/// One window of the horizon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledWindow {
    pub start: Time,
    pub end: Time,
    /// The partition it takes (`all`: every covered agent).
    pub partition: String,
    /// The agents it takes, as they are now (the first few).
    pub agents: Vec<String>,
    /// How many agents it takes.
    pub agent_count: u32,
}

/// An app a coming window would take below its minimum if its instances there could not be
/// replaced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// When the window opens.
    pub window: Time,
    /// The partition it takes.
    pub partition: String,
    /// `namespace/name`.
    pub app: String,
    /// Its instances on the partition's agents.
    pub instances: u32,
    /// `ceil(instances wanted × minimumHealthCapacity)`.
    pub minimum: u32,
    /// `NoRoom`: the other agents lack the room for its replacements; `Constraints`: no agent
    /// outside the partition satisfies its constraints.
    pub reason: String,
}

/// An agent's state in a maintenance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum DrainState {
    /// Its instances move away; nothing new is placed on it.
    Draining,
    /// Nothing of the apps is left on it: it can be patched and rebooted.
    Drained,
    /// Back in service (it restarted after being drained); it stays out of this window.
    Released,
}

impl DrainState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DrainState::Draining => "Draining",
            DrainState::Drained => "Drained",
            DrainState::Released => "Released",
        }
    }

    /// Whether nothing new goes on it.
    pub fn cordons(self) -> bool {
        !matches!(self, DrainState::Released)
    }
}

/// The controller's record of one agent in maintenance (`/baton/maintenance/<agent>`),
/// written in its fenced transactions: a new leader continues from it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainRecord {
    /// The Maintenance that takes it; empty when it is freed for an app (`forApp`).
    #[serde(default)]
    pub maintenance: String,
    /// Defragmentation: the app (`namespace/name`) it is freed for — only that app may go on
    /// it once it is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_app: Option<String>,
    /// Defragmentation: the uids of the apps moved off it, which may not come back within
    /// an hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    pub state: DrainState,
    /// When it entered this state.
    pub since: Timestamp,
    /// When the window that took it opened (`None`: an immediate drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Timestamp>,
    /// When it started draining (what `forceAfter` counts from).
    pub draining_since: Timestamp,
}

/// One window, resolved against the agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenWindow {
    /// `None`: an immediate drain (no schedule, no windows): open until deleted.
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// `None`: every covered agent.
    pub partition: Option<String>,
}

impl OpenWindow {
    /// `all`, or the partition's value.
    pub fn partition_name(&self) -> &str {
        self.partition.as_deref().unwrap_or("all")
    }
}

impl MaintenanceSpec {
    /// Whether `attributes` (of agent `name`) are covered.
    pub fn covers(&self, name: &str, attributes: &BTreeMap<String, String>) -> bool {
        let by_name = self.agents.iter().any(|a| a == name);
        let by_selector = !self.selector.is_empty() && self.selector.iter().all(|(k, v)| attributes.get(k) == Some(v));
        by_name || by_selector || (self.selector.is_empty() && self.agents.is_empty())
    }

    /// The partition of an agent with `attributes` (`None` without `partitionBy`, or if the
    /// agent lacks the attribute).
    pub fn partition_of<'a>(&self, attributes: &'a BTreeMap<String, String>) -> Option<&'a str> {
        attributes.get(self.partition_by.as_deref()?).map(String::as_str)
    }

    /// Whether it drains at once (no schedule, no windows).
    pub fn is_immediate(&self) -> bool {
        self.schedule.is_none() && self.windows.is_empty()
    }

    /// How long a drain may take before what is left is forced off.
    pub fn force_after(&self) -> Option<SignedDuration> {
        self.force_after.as_deref().and_then(|text| text.parse().ok())
    }

    /// The windows that overlap `[from, until)`, in order of opening, partitions resolved in
    /// the order `partitions` gives (the values of the covered agents, when the spec names none).
    pub fn windows(&self, partitions: &[String], from: Timestamp, until: Timestamp) -> Vec<OpenWindow> {
        if self.is_immediate() {
            return vec![OpenWindow { start: None, end: None, partition: None }];
        }
        let mut windows: Vec<OpenWindow> = self
            .windows
            .iter()
            .filter(|w| w.end.0 > from && w.start.0 < until)
            .map(|w| OpenWindow { start: Some(w.start.0), end: Some(w.end.0), partition: w.partition.clone() })
            .collect();
        if let Some(schedule) = &self.schedule
            && let (Ok(every), Ok(duration)) =
                (schedule.every.parse::<SignedDuration>(), schedule.duration.parse::<SignedDuration>())
            && every >= MIN_EVERY
            && duration > SignedDuration::ZERO
        {
            let first = schedule.start.0;
            let every_secs = every.as_secs();
            // The first window that may still be open at `from`.
            let since = from.duration_since(first).as_secs() - duration.as_secs();
            let mut n = if since <= 0 { 0 } else { since / every_secs };
            while windows.len() < MAX_SCHEDULED_WINDOWS {
                let Some(start) = i32::try_from(n)
                    .ok()
                    .and_then(|n| every.checked_mul(n))
                    .and_then(|offset| first.checked_add(offset).ok())
                else {
                    break;
                };
                if start >= until {
                    break;
                }
                let end = start.saturating_add(duration).unwrap_or(start);
                if end > from {
                    // Without partitions, a window takes every covered agent.
                    let partition =
                        (!partitions.is_empty()).then(|| partitions[(n as usize) % partitions.len()].clone());
                    windows.push(OpenWindow { start: Some(start), end: Some(end), partition });
                }
                n += 1;
            }
        }
        windows.sort_by(|a, b| (a.start, &a.partition).cmp(&(b.start, &b.partition)));
        windows.truncate(MAX_SCHEDULED_WINDOWS);
        windows
    }

    /// The partitions in schedule order: `spec.partitions`, or the values `agents` have.
    pub fn partition_order<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        if !self.partitions.is_empty() {
            return self.partitions.clone();
        }
        if self.partition_by.is_none() {
            return Vec::new();
        }
        let values: BTreeSet<&str> = values.into_iter().collect();
        values.into_iter().map(str::to_string).collect()
    }
}

/// Checks a Maintenance: field errors naming the field and the value.
pub fn validate_maintenance(maintenance: &Maintenance) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = &maintenance.spec;
    if let Some(name) = &maintenance.metadata.name
        && let Some(problem) = names::dns_subdomain_problem(name)
    {
        errors.push(FieldError::invalid("metadata.name", name.as_str(), problem));
    }
    if spec.agents.len() > MAX_NAMED_AGENTS {
        errors.push(FieldError::too_long(
            "spec.agents",
            format!("has {} agents; at most {MAX_NAMED_AGENTS} are allowed", spec.agents.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, agent) in spec.agents.iter().enumerate() {
        if let Some(problem) = names::dns_subdomain_problem(agent) {
            errors.push(FieldError::invalid(format!("spec.agents[{i}]"), agent.as_str(), problem));
        } else if !seen.insert(agent) {
            errors.push(FieldError::duplicate(format!("spec.agents[{i}]"), agent.as_str()));
        }
    }
    for (key, value) in &spec.selector {
        if key.is_empty() || key.len() > 253 {
            errors.push(FieldError::invalid(
                format!("spec.selector[{key}]"),
                key.as_str(),
                "must be an attribute name of 1 to 253 characters",
            ));
        }
        if value.len() > 253 {
            errors.push(FieldError::too_long(format!("spec.selector[{key}]"), "at most 253 characters"));
        }
    }
    if let Some(attribute) = &spec.partition_by
        && (attribute.is_empty() || attribute.len() > 253)
    {
        errors.push(FieldError::invalid(
            "spec.partitionBy",
            attribute.as_str(),
            "must be an attribute name of 1 to 253 characters",
        ));
    }
    if !spec.partitions.is_empty() && spec.partition_by.is_none() {
        errors.push(FieldError::required("spec.partitionBy", "spec.partitions needs the attribute they are values of"));
    }
    if spec.partitions.len() > MAX_PARTITIONS {
        errors.push(FieldError::too_long(
            "spec.partitions",
            format!("has {} partitions; at most {MAX_PARTITIONS} are allowed", spec.partitions.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, partition) in spec.partitions.iter().enumerate() {
        if !seen.insert(partition) {
            errors.push(FieldError::duplicate(format!("spec.partitions[{i}]"), partition.as_str()));
        }
    }
    if let Some(schedule) = &spec.schedule {
        let every = duration_field("spec.schedule.every", &schedule.every, &mut errors);
        let duration = duration_field("spec.schedule.duration", &schedule.duration, &mut errors);
        if let Some(every) = every
            && every < MIN_EVERY
        {
            errors.push(FieldError::invalid("spec.schedule.every", schedule.every.as_str(), "must be at least 10m"));
        }
        if let (Some(every), Some(duration)) = (every, duration)
            && duration > every
        {
            errors.push(FieldError::invalid(
                "spec.schedule.duration",
                schedule.duration.as_str(),
                format!("must not be longer than spec.schedule.every ({})", schedule.every),
            ));
        }
        if schedule.start.0.as_second() < 0 {
            errors.push(FieldError::invalid(
                "spec.schedule.start",
                schedule.start.0.to_string(),
                "must not be before 1970",
            ));
        }
    }
    if spec.windows.len() > MAX_WINDOWS {
        errors.push(FieldError::too_long(
            "spec.windows",
            format!("has {} windows; at most {MAX_WINDOWS} are allowed", spec.windows.len()),
        ));
    }
    for (i, window) in spec.windows.iter().enumerate() {
        if window.end.0 <= window.start.0 {
            errors.push(FieldError::invalid(
                format!("spec.windows[{i}].end"),
                window.end.0.to_string(),
                format!("must be after start ({})", window.start.0),
            ));
        }
        if window.partition.is_some() && spec.partition_by.is_none() {
            errors.push(FieldError::required(
                "spec.partitionBy",
                format!("spec.windows[{i}].partition needs the attribute it is a value of"),
            ));
        }
    }
    if spec.max_agents == Some(0) {
        errors.push(FieldError::invalid("spec.maxAgents", 0, "must be at least 1"));
    }
    if !(1..=MAX_HORIZON_DAYS).contains(&spec.horizon_days) {
        errors.push(FieldError::invalid(
            "spec.horizonDays",
            spec.horizon_days,
            format!("must be between 1 and {MAX_HORIZON_DAYS}"),
        ));
    }
    if let Some(force_after) = &spec.force_after
        && let Some(duration) = duration_field("spec.forceAfter", force_after, &mut errors)
        && duration <= SignedDuration::ZERO
    {
        errors.push(FieldError::invalid("spec.forceAfter", force_after.as_str(), "must be positive"));
    }
    errors
}

/// Parses a duration such as `4h` or `90m`; records a field error if it is not one.
fn duration_field(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<SignedDuration> {
    match text.parse::<SignedDuration>() {
        Ok(duration) if duration > SignedDuration::ZERO => Some(duration),
        Ok(_) => {
            errors.push(FieldError::invalid(field, text, "must be positive"));
            None
        }
        Err(_) => {
            errors.push(FieldError::invalid(field, text, "must be a duration such as 4h, 90m or 1h30m"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn spec(every: &str, duration: &str) -> MaintenanceSpec {
        MaintenanceSpec {
            selector: BTreeMap::new(),
            agents: Vec::new(),
            partition_by: Some("rack".into()),
            partitions: Vec::new(),
            schedule: Some(Schedule {
                start: Time(at("2026-12-01T02:00:00Z")),
                every: every.into(),
                duration: duration.into(),
            }),
            windows: Vec::new(),
            max_agents: None,
            horizon_days: 7,
            force_after: None,
        }
    }

    #[test]
    fn recurring_windows_take_the_partitions_in_turn() {
        let spec = spec("24h", "4h");
        let partitions = spec.partition_order(["r2", "r1", "r3", "r1"]);
        assert_eq!(partitions, ["r1", "r2", "r3"]);
        // From inside the second window: it is the first listed.
        let windows = spec.windows(&partitions, at("2026-12-02T03:00:00Z"), at("2026-12-05T03:00:00Z"));
        let got: Vec<(String, &str)> =
            windows.iter().map(|w| (w.start.unwrap().to_string(), w.partition_name())).collect();
        assert_eq!(
            got,
            [
                ("2026-12-02T02:00:00Z".to_string(), "r2"),
                ("2026-12-03T02:00:00Z".to_string(), "r3"),
                ("2026-12-04T02:00:00Z".to_string(), "r1"),
                ("2026-12-05T02:00:00Z".to_string(), "r2"),
            ]
        );
        assert_eq!(windows[0].end, Some(at("2026-12-02T06:00:00Z")));
        // Before the first window.
        let early = spec.windows(&partitions, at("2026-11-30T00:00:00Z"), at("2026-12-01T03:00:00Z"));
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].partition_name(), "r1");
    }

    #[test]
    fn no_schedule_drains_at_once_until_deleted() {
        let spec = MaintenanceSpec { schedule: None, agents: vec!["a1".into()], ..spec("24h", "4h") };
        let windows = spec.windows(&[], at("2026-12-02T03:00:00Z"), at("2026-12-09T03:00:00Z"));
        assert_eq!(windows, [OpenWindow { start: None, end: None, partition: None }]);
        assert!(spec.covers("a1", &BTreeMap::new()));
        assert!(!spec.covers("a2", &BTreeMap::new()));
    }

    #[test]
    fn selector_and_names_cover_agents() {
        let mut spec = spec("24h", "4h");
        assert!(spec.covers("any", &BTreeMap::new()), "no selector, no names: every agent");
        spec.selector = [("pool".to_string(), "web".to_string())].into();
        assert!(spec.covers("a", &[("pool".to_string(), "web".to_string())].into()));
        assert!(!spec.covers("a", &[("pool".to_string(), "db".to_string())].into()));
        spec.agents = vec!["b".into()];
        assert!(spec.covers("b", &BTreeMap::new()));
    }

    #[test]
    fn bad_specs_name_the_field_and_the_value() {
        let mut spec = spec("5m", "1 fortnight");
        spec.max_agents = Some(0);
        spec.horizon_days = 400;
        spec.windows = vec![Window {
            start: Time(at("2026-12-02T00:00:00Z")),
            end: Time(at("2026-12-01T00:00:00Z")),
            partition: None,
        }];
        spec.force_after = Some("soon".into());
        let maintenance = Maintenance::new("racks", spec);
        let errors: Vec<String> =
            validate_maintenance(&maintenance).iter().map(|e| format!("{}: {}", e.field, e.message())).collect();
        let all = errors.join("\n");
        for needle in [
            "spec.schedule.every",
            "5m",
            "spec.schedule.duration",
            "1 fortnight",
            "spec.maxAgents",
            "spec.horizonDays",
            "spec.windows[0].end",
            "spec.forceAfter",
            "soon",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
        assert!(validate_maintenance(&Maintenance::new("racks", self::spec("24h", "4h"))).is_empty());
    }
}
