//! The records the controller and the agents exchange through the store.
//!
//! | key                                  | written by | record            |
//! |--------------------------------------|------------|-------------------|
//! | `/baton/agents/<agent>`              | agent      | [`AgentRecord`]    |
//! | `/baton/instances/<agent>/<id>`      | controller | [`InstanceRecord`] |
//! | `/baton/status/<agent>/<id>`         | agent      | [`StatusRecord`]   |
//! | `/baton/unreachable/<agent>`         | controller | [`UnreachableMarker`] |
//! | `/baton/apps/<ns>/<app>/backoff`     | controller | [`BackoffRecord`]  |
//!
//! Values are JSON so that `etcdctl get` shows something a human can read. An instance
//! record carries everything its agent needs to run it: the agent never reads the App.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::health::{CheckResult, HealthCheck, ReadinessCheck};
use crate::resources::ResourceAmounts;

/// What an agent offers: registered under the agent's lease, so it disappears when the
/// agent dies.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub name: String,
    /// Where the agent's instances can be reached (an IP address or host name).
    pub host: String,
    /// Total resources the agent gives to instances.
    pub resources: ResourceAmounts,
    /// Attributes for constraints, e.g. `rack=r1`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Host port ranges the agent hands out as dynamic ports.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// The Baton version the agent runs.
    pub version: String,
    pub started_at: Timestamp,
    /// Where the agent serves its sandboxes (instances' output) to the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxEndpoint>,
}

/// An agent's sandbox endpoint: HTTPS with a certificate the agent made itself. The record is
/// written by the agent under its lease in the store, which the API server trusts; so the API
/// server trusts exactly this certificate for this agent, and needs no other PKI.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxEndpoint {
    /// `https://<host>:<port>`.
    pub url: String,
    /// The agent's certificate (PEM).
    pub certificate: String,
}

/// The controller's note that an agent with instances stopped reporting, and since when.
/// Kept in the store (`/baton/unreachable/<agent>`) so that every leader measures
/// `unreachableStrategy` deadlines from the same moment.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnreachableMarker {
    pub since: Timestamp,
}

/// An app's launch backoff and its last failure, kept in the store
/// (`/baton/apps/<ns>/<app>/backoff`) so a new leader honours it. Each failure is counted in
/// the same write that removes the failed instance's record, so none is counted twice.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackoffRecord {
    /// The app it belongs to (a re-created app of the same name starts afresh).
    pub uid: String,
    /// The version whose failures are counted; another version starts afresh.
    pub version: String,
    /// Failures in a row.
    pub failures: u32,
    /// No launch before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
}

/// A user's request to kill an instance (`kubectl delete instance`), kept in the store
/// (`/baton/kills/<ns>/<instance>`) until the instance is gone: the controller stops it
/// (and launches a replacement, as for any missing instance).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    /// Who asked.
    pub user: String,
    pub requested_at: Timestamp,
    /// SIGTERM to SIGKILL, instead of the app's (`kubectl delete --grace-period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u32>,
}

/// How an instance failed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub instance: String,
    pub agent: String,
    pub version: String,
    pub phase: Phase,
    /// What the agent said: the exit status and the end of stderr.
    pub message: String,
    pub time: Timestamp,
}

/// An inclusive range of host ports, written `31000-31999`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(self) -> usize {
        usize::from(self.end.saturating_sub(self.begin)) + usize::from(self.begin <= self.end)
    }

    pub fn is_empty(self) -> bool {
        self.begin > self.end
    }

    pub fn contains(self, port: u16) -> bool {
        self.begin <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.begin, self.end)
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Parses `31000-31999` or a single port `8080`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("port range {s:?}: {p:?} is not a port number (1-65535)"))
        };
        let (begin, end) = match s.split_once('-') {
            Some((b, e)) => (parse(b)?, parse(e)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        if begin > end {
            return Err(format!("port range {s:?}: the first port is greater than the last"));
        }
        Ok(PortRange { begin, end })
    }
}

/// Which app an instance belongs to. The uid tells a re-created app of the same name apart
/// from the one that was deleted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct AppRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the controller wants of an instance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Goal {
    Running,
    Stopped,
}

/// How an instance's process is started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Run by `sh -c`.
    Shell(String),
    /// Executed directly: program and arguments.
    Exec(Vec<String>),
}

/// A host port assigned to an instance, in the app's port order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AssignedPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host port.
    pub port: u16,
    /// The app's `port` for it (0: dynamic): when it differs from the host port, the
    /// instance also finds the host port in `$PORT_<requested>`, as in Marathon.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requested: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// One instance, assigned to one agent: everything the agent needs to run it.
///
/// What it runs (its [`RunSpec`]) is its app version's, alike for every instance of that
/// version: held in one `Arc` that the records of a version share (the planner makes one per
/// version and tick; the controller's cache makes those it parses one). In the store the
/// record is one flat JSON object, as it always was.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Unique in the installation; also the name of the `Instance` view.
    pub id: String,
    pub agent: String,
    pub host: String,
    pub created_at: Timestamp,
    pub goal: Goal,
    /// Why the goal became `Stopped` (scale down, app deleted…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Box<str>>,
    /// The instance killed for its health that this one was launched to replace: the
    /// health policy's replacement slot it fills (see the controller's `plan::slots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Box<str>>,
    /// Killed for its health, this instance took a replacement slot of the health policy:
    /// its record is kept until an instance replacing it has been steadily healthy. False for
    /// an instance killed while it was itself filling a slot (that takes no second one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub holds_slot: bool,
    /// Ended on its own, and the controller has noted it: counted it as a failure in its app's
    /// launch backoff (in the same write), or reported it lost. So an end is noted once while
    /// the record is kept for its status and logs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub end_noted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AssignedPort>,
    /// The leader term (the election key's create revision) that last wrote this record.
    pub term: i64,
    /// The store revision of the view the last write of this record was planned on (0: not
    /// known): with `term`, what the controller knew when it acted, for audits of its
    /// decisions (the chaos checker replays the store to that revision).
    #[serde(skip_serializing_if = "is_no_revision")]
    pub planned_at: i64,
    /// What it runs, as every instance of its app version does.
    #[serde(flatten)]
    pub run: Arc<RunSpec>,
}

// A controller keeps every instance's record and status, each in an `Arc` (16 bytes more):
// at these sizes they take the allocator's 192- and 224-byte classes; 8 bytes more took each
// to the next (224, 256).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<InstanceRecord>() <= 176 && std::mem::size_of::<StatusRecord>() <= 208);

/// What every instance of one app version runs, alike (Marathon's name for an app's
/// definition): the part of an [`InstanceRecord`] its version's records share.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub app: AppRef,
    /// The scope of the app it runs for: only that scope's controller stops, rewrites or
    /// counts it (records written before scopes are the platform's).
    pub scope: crate::Scope,
    /// The app version this instance runs (see [`crate::app::AppSpec::version`]).
    pub version: String,
    /// It takes its whole agent (`placement.wholeAgent`): nothing else goes on the agent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub whole_agent: bool,
    pub command: Command,
    /// The user the process runs as (the app's `user`); `None`: the agent's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What the agent fetches into the sandbox before starting the process (the app's
    /// `fetch`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<crate::app::Fetch>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub resources: ResourceAmounts,
    pub kill_grace_seconds: u32,
    /// The probes the agent runs on the instance, as the app had them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<ReadinessCheck>,
}

/// An [`InstanceRecord`] as stored: one flat object. (Read through `#[serde(flatten)]`, a
/// record would be buffered whole before its run spec is read: twice the parse.)
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord {
    id: String,
    app: AppRef,
    #[serde(default)]
    scope: crate::Scope,
    agent: String,
    host: String,
    version: String,
    created_at: Timestamp,
    goal: Goal,
    #[serde(default)]
    stop_reason: Option<Box<str>>,
    #[serde(default)]
    replaces: Option<Box<str>>,
    #[serde(default)]
    holds_slot: bool,
    #[serde(default)]
    whole_agent: bool,
    #[serde(default)]
    end_noted: bool,
    command: Command,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    fetch: Vec<crate::app::Fetch>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    resources: ResourceAmounts,
    #[serde(default)]
    ports: Vec<AssignedPort>,
    kill_grace_seconds: u32,
    #[serde(default)]
    health_checks: Vec<HealthCheck>,
    #[serde(default)]
    readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    term: i64,
    #[serde(default)]
    planned_at: i64,
}

impl From<WireRecord> for InstanceRecord {
    fn from(wire: WireRecord) -> Self {
        let run = RunSpec {
            app: wire.app,
            scope: wire.scope,
            version: wire.version,
            whole_agent: wire.whole_agent,
            command: wire.command,
            user: wire.user,
            fetch: wire.fetch,
            env: wire.env,
            labels: wire.labels,
            resources: wire.resources,
            kill_grace_seconds: wire.kill_grace_seconds,
            health_checks: wire.health_checks,
            readiness_checks: wire.readiness_checks,
        };
        InstanceRecord {
            id: wire.id,
            agent: wire.agent,
            host: wire.host,
            created_at: wire.created_at,
            goal: wire.goal,
            stop_reason: wire.stop_reason,
            replaces: wire.replaces,
            holds_slot: wire.holds_slot,
            end_noted: wire.end_noted,
            ports: wire.ports,
            term: wire.term,
            planned_at: wire.planned_at,
            run: Arc::new(run),
        }
    }
}

impl<'de> Deserialize<'de> for InstanceRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireRecord::deserialize(deserializer).map(InstanceRecord::from)
    }
}

fn is_no_revision(revision: &i64) -> bool {
    *revision == 0
}

/// The life of an instance's process, as its agent reports it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The agent accepted the instance and is preparing its sandbox.
    Staging,
    /// The process runs.
    Running,
    /// The process was sent SIGTERM and has not exited yet.
    Killing,
    /// The process exited with status 0 on its own.
    Finished,
    /// The process exited with a non-zero status or a signal on its own, or could not start.
    Failed,
    /// The process was stopped because its goal became `Stopped`.
    Killed,
    /// The process is gone and the agent cannot say how it ended (e.g. the agent restarted).
    Lost,
}

impl Phase {
    /// A terminal phase never changes again: the instance is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Finished | Phase::Failed | Phase::Killed | Phase::Lost)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Staging => "Staging",
            Phase::Running => "Running",
            Phase::Killing => "Killing",
            Phase::Finished => "Finished",
            Phase::Failed => "Failed",
            Phase::Killed => "Killed",
            Phase::Lost => "Lost",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent reports about one instance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusRecord {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The process' start time in clock ticks after boot (`/proc/<pid>/stat`, field 22):
    /// with the pid it identifies the process even after the pid is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// A human-readable reason, e.g. the end of stderr when the process failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Asked to stop, the process did not end within its grace period after SIGTERM, and
    /// SIGKILL followed after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_after_seconds: Option<u32>,
    /// The results of the instance's health checks, in the order of its record's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<CheckResult>,
    /// When the instance first passed every health check steadily (and its readiness
    /// check): from then on it is not a replacement in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_at: Option<Timestamp>,
    /// The result of its readiness check; `passing` stays true once it passed. (Boxed, as
    /// `usage` is: few instances have one, and inline they took 160 of a status' 352 bytes.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Box<CheckResult>>,
    /// Why the agent ended it, in one word, when the agent did (not the controller):
    /// `OOMKilled` (over its memory limit), `DiskLimitExceeded` (its sandbox over its disk),
    /// `FetchFailed` (an artifact could not be fetched), `PortInUse` (another process holds
    /// one of its host ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Box<str>>,
    /// What it uses, as the agent last measured (from its cgroup and sandbox); absent where
    /// the agent does not measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<Usage>>,
}

/// `reason` of an instance the kernel killed for going over its memory limit.
pub const REASON_OOM_KILLED: &str = "OOMKilled";
/// `reason` of an instance stopped because its sandbox outgrew its `disk`.
pub const REASON_DISK_LIMIT_EXCEEDED: &str = "DiskLimitExceeded";
/// `reason` of an instance that never started because an artifact could not be fetched.
pub const REASON_FETCH_FAILED: &str = "FetchFailed";
/// `reason` of an instance that never started because another process held one of its host
/// ports.
pub const REASON_PORT_IN_USE: &str = "PortInUse";

/// What one instance uses, measured by its agent.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU time used since it started, in milliseconds (its cgroup's counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// CPU used between the last two measurements, in thousandths of a cpu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
    /// Memory in use (its cgroup's, less the file cache it could give back), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The size of its sandbox on disk, bytes (measured only for instances with `disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl StatusRecord {
    /// A status in `phase` with nothing else known yet.
    pub fn new(phase: Phase) -> Self {
        Self {
            phase,
            pid: None,
            pid_start_ticks: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            message: None,
            forced_after_seconds: None,
            health: Vec::new(),
            healthy_at: None,
            readiness: None,
            reason: None,
            usage: None,
        }
    }

    /// Whether every one of `checks` health checks passed its last probe (true when there
    /// are none). Says nothing about whether the process runs.
    pub fn passes_health_checks(&self, checks: usize) -> bool {
        checks == 0 || (self.health.len() == checks && self.health.iter().all(|r| r.passing == Some(true)))
    }

    /// Whether it passes every one of `checks` steadily (see [`CheckResult::is_steady`]).
    pub fn passes_steadily(&self, checks: &[HealthCheck]) -> bool {
        self.health.len() == checks.len() && checks.iter().zip(&self.health).all(|(check, r)| r.is_steady(check))
    }

    /// Whether some health check failed its last probe.
    pub fn fails_a_health_check(&self) -> bool {
        self.health.iter().any(|r| r.passing == Some(false))
    }

    /// Whether the readiness check passed (true when there is none).
    pub fn is_ready(&self, has_readiness_check: bool) -> bool {
        !has_readiness_check || self.readiness.as_ref().is_some_and(|r| r.passing == Some(true))
    }

    /// Whether the controller could decide differently on `later` (a later status of the
    /// same instance, whose record has `checks`) than on this one. What its decisions read:
    /// everything but the check results (phase, pid, times, exit, message, `healthyAt`); of
    /// each health check whether it passes, passes steadily, is due to be killed (failures
    /// in a row ≥ `maxConsecutiveFailures`) and has proven itself (passes in a row ≥ the
    /// same); whether the readiness check passes. The probe counters and times in between
    /// change none of it: agents write those at most every refresh period.
    pub fn differs_for_decisions(&self, later: &StatusRecord, checks: &[HealthCheck]) -> bool {
        // Usage informs people, not decisions.
        let rest = |s: &StatusRecord| StatusRecord { health: Vec::new(), readiness: None, usage: None, ..s.clone() };
        let facts = |s: &StatusRecord| -> Vec<(Option<bool>, bool, bool, bool)> {
            checks
                .iter()
                .zip(&s.health)
                .map(|(check, result)| {
                    let limit = check.kill_after();
                    (
                        result.passing,
                        result.is_steady(check),
                        limit.is_some_and(|n| result.consecutive_failures >= n),
                        result.consecutive_successes >= limit.unwrap_or(1),
                    )
                })
                .collect()
        };
        let ready = |s: &StatusRecord| s.readiness.as_ref().map(|r| r.passing);
        rest(self) != rest(later)
            || self.health.len() != later.health.len()
            || facts(self) != facts(later)
            || ready(self) != ready(later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_record_is_one_flat_object_in_the_store() {
        // As a controller before run specs wrote it, every field there is.
        let stored = serde_json::json!({
            "id": "web-1", "app": {"namespace": "shop", "name": "web", "uid": "u1"}, "scope": "tenant/team-a",
            "agent": "a1", "host": "10.0.0.1", "version": "v7", "createdAt": "2026-01-01T00:00:00Z",
            "goal": "Stopped", "stopReason": "ScaledDown", "replaces": "web-0", "holdsSlot": true,
            "wholeAgent": true, "endNoted": true, "command": {"exec": ["/bin/web", "--port", "8080"]},
            "user": "nobody", "fetch": [{"uri": "https://example.com/web.tgz", "extract": true}],
            "env": {"MODE": "production"}, "labels": {"tier": "web"},
            "resources": {"millicpus": 500, "memMib": 512, "diskMib": 10, "gpus": 0},
            "ports": [{"name": "http", "port": 31000, "requested": 8080}], "killGraceSeconds": 7,
            "healthChecks": [{"protocol": "TCP", "maxConsecutiveFailures": 3}],
            "readinessChecks": [{"name": "ready", "portName": "http", "path": "/ready"}],
            "term": 12, "plannedAt": 345,
        });
        let record: InstanceRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(
            (record.id.as_str(), record.run.app.name.as_str(), record.run.version.as_str()),
            ("web-1", "web", "v7")
        );
        assert_eq!(record.run.scope, crate::Scope::Tenant("team-a".into()));
        assert_eq!((record.run.kill_grace_seconds, record.planned_at), (7, 345));
        let written = serde_json::to_value(&record).unwrap();
        let parsed_again: InstanceRecord = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(parsed_again, record, "read back as written");
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(&written), keys(&stored), "the same flat keys, no nested run spec");

        // What is left out takes its default, and defaults are left out when written.
        let minimal = serde_json::json!({
            "id": "web-2", "app": {"namespace": "shop", "name": "web", "uid": "u1"}, "agent": "a1",
            "host": "10.0.0.1", "version": "v7", "createdAt": "2026-01-01T00:00:00Z", "goal": "Running",
            "command": {"shell": "sleep 1"}, "resources": {"millicpus": 100, "memMib": 32, "diskMib": 0, "gpus": 0},
            "killGraceSeconds": 3,
        });
        let record: InstanceRecord = serde_json::from_value(minimal.clone()).unwrap();
        assert_eq!(record.run.scope, crate::Scope::Platform);
        assert!(record.run.env.is_empty() && record.ports.is_empty() && !record.holds_slot);
        let mut expected = minimal;
        expected["scope"] = "platform".into();
        expected["term"] = 0.into();
        assert_eq!(serde_json::to_value(&record).unwrap(), expected);
    }

    #[test]
    fn only_what_decisions_read_makes_a_status_differ() {
        let check: HealthCheck = serde_json::from_value(serde_json::json!({"maxConsecutiveFailures": 3})).unwrap();
        let checks = [check];
        let mut before = StatusRecord::new(Phase::Running);
        before.health = vec![CheckResult { passing: Some(true), consecutive_successes: 10, ..CheckResult::default() }];
        let with = |change: &dyn Fn(&mut CheckResult)| {
            let mut later = before.clone();
            change(&mut later.health[0]);
            later
        };
        let t = Timestamp::UNIX_EPOCH;
        // One more pass, a new time and output: nothing a plan reads.
        let probed = with(&|r| {
            r.consecutive_successes += 1;
            r.last_success = Some(t);
            r.last_output = Some("HTTP 200".into());
        });
        assert!(!before.differs_for_decisions(&probed, &checks));
        // A failure: no longer passing.
        let failed = with(&|r| {
            r.passing = Some(false);
            r.consecutive_failures = 1;
            r.consecutive_successes = 0;
        });
        assert!(before.differs_for_decisions(&failed, &checks));
        // Failing again, below the limit: no; at the limit (due to be killed): yes.
        let twice = StatusRecord {
            health: vec![CheckResult { consecutive_failures: 2, ..failed.health[0].clone() }],
            ..failed.clone()
        };
        assert!(!failed.differs_for_decisions(&twice, &checks));
        let due = StatusRecord {
            health: vec![CheckResult { consecutive_failures: 3, ..failed.health[0].clone() }],
            ..failed.clone()
        };
        assert!(twice.differs_for_decisions(&due, &checks));
        // Passing again after a failure: steady (and proven) only after 3 in a row.
        let back = |n| {
            let result = CheckResult {
                passing: Some(true),
                consecutive_failures: 0,
                consecutive_successes: n,
                last_failure: Some(t),
                ..CheckResult::default()
            };
            StatusRecord { health: vec![result], ..before.clone() }
        };
        assert!(!back(1).differs_for_decisions(&back(2), &checks));
        assert!(back(2).differs_for_decisions(&back(3), &checks));
        // Anything outside the checks counts.
        let ended = StatusRecord { phase: Phase::Failed, ..before.clone() };
        assert!(before.differs_for_decisions(&ended, &checks));
        let ready = StatusRecord {
            readiness: Some(Box::new(CheckResult { passing: Some(true), ..CheckResult::default() })),
            ..before.clone()
        };
        assert!(before.differs_for_decisions(&ready, &checks));
    }

    #[test]
    fn port_ranges_parse_and_refuse_with_the_input_named() {
        assert_eq!("31000-31999".parse::<PortRange>(), Ok(PortRange { begin: 31000, end: 31999 }));
        assert_eq!("8080".parse::<PortRange>(), Ok(PortRange { begin: 8080, end: 8080 }));
        assert_eq!(PortRange { begin: 31000, end: 31999 }.len(), 1000);
        let err = "32000-31000".parse::<PortRange>().unwrap_err();
        assert!(err.contains("32000-31000"), "{err}");
        let err = "0-10".parse::<PortRange>().unwrap_err();
        assert!(err.contains("\"0\""), "{err}");
        assert!("a-b".parse::<PortRange>().is_err());
    }

    #[test]
    fn terminal_phases() {
        for p in [Phase::Finished, Phase::Failed, Phase::Killed, Phase::Lost] {
            assert!(p.is_terminal(), "{p}");
        }
        for p in [Phase::Staging, Phase::Running, Phase::Killing] {
            assert!(!p.is_terminal(), "{p}");
        }
    }
}
