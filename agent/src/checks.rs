//! An instance's health and readiness checks: probing on schedule, and folding each result
//! into the instance's status with Marathon's rules.
//!
//! - A health check first probes `delaySeconds` after the instance started, then every
//!   `intervalSeconds`; a probe that takes longer than `timeoutSeconds` fails.
//! - A failure within `gracePeriodSeconds` of the start, before the check ever passed, is
//!   ignored (only its output shows): the check stays without a verdict (`Unknown`). After
//!   that, each failure counts towards `consecutiveFailures`; a pass resets it.
//! - `healthyAt` is when the instance first passed every check steadily (see
//!   [`baton_api::CheckResult::is_steady`]) and its readiness check: from then on it is no
//!   longer a replacement in progress for the health policy.
//! - A 1xx status with `ignoreHttp1xx` is discarded: the verdict stays as it was.
//! - The readiness check probes from the start every `intervalSeconds` until it first
//!   passes, then stops: once ready, an instance stays ready (readiness never kills).
//!
//! The agent only reports; the controller decides what to kill, looking at the whole pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use baton_api::health::{HealthCheck, HealthProtocol, ReadinessCheck, ReadinessProtocol};
use baton_api::{CheckResult, InstanceRecord, StatusRecord};

use crate::probe::{self, Outcome};

/// Which check a result is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The health check at this index of the record's.
    Health(usize),
    Readiness,
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub which: Which,
    pub outcome: Outcome,
    pub at: Timestamp,
}

/// The running probes of one instance; dropping it stops them.
pub struct Checks {
    _tasks: JoinSet<()>,
    results: mpsc::UnboundedReceiver<Report>,
}

impl Checks {
    /// Starts probing the instance of `record` (whose process runs in `sandbox`, with the
    /// instance environment `env`).
    pub fn start(record: &InstanceRecord, sandbox: &Path, env: BTreeMap<String, String>) -> Self {
        let (sender, results) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for (index, check) in record.run.health_checks.iter().enumerate() {
            let probe = HealthProbe {
                check: check.clone(),
                host: record.host.clone(),
                port: health_port(record, check),
                sandbox: sandbox.to_path_buf(),
                env: env.clone(),
                user: record.run.user.clone(),
            };
            let sender = sender.clone();
            tasks.spawn(async move {
                tokio::time::sleep(secs(probe.check.delay_seconds)).await;
                let mut ticker = tokio::time::interval(secs(probe.check.interval_seconds).max(Duration::from_secs(1)));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let outcome = probe.run().await;
                    let report = Report { which: Which::Health(index), outcome, at: Timestamp::now() };
                    if sender.send(report).is_err() {
                        return;
                    }
                }
            });
        }
        if let Some(check) = record.run.readiness_checks.first() {
            let check = check.clone();
            let host = record.host.clone();
            let port =
                record.ports.iter().find(|p| p.name.as_deref() == Some(check.port_name.as_str())).map(|p| p.port);
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(secs(check.interval_seconds).max(Duration::from_secs(1)));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let outcome = readiness(&check, &host, port).await;
                    let ready = matches!(outcome, Outcome::Pass(_));
                    if sender.send(Report { which: Which::Readiness, outcome, at: Timestamp::now() }).is_err() || ready
                    {
                        return;
                    }
                }
            });
        }
        Self { _tasks: tasks, results }
    }

    /// The next result; pending forever when the instance has no checks.
    pub async fn next(&mut self) -> Report {
        match self.results.recv().await {
            Some(report) => report,
            None => std::future::pending().await,
        }
    }
}

/// Gives `status` a result slot per check of `record` (keeping those it has).
pub fn prepare(status: &mut StatusRecord, record: &InstanceRecord) {
    status.health.resize(record.run.health_checks.len(), CheckResult::default());
    if record.run.readiness_checks.is_empty() {
        status.readiness = None;
    } else {
        status.readiness.get_or_insert_default();
    }
}

/// Folds a probe's result into the instance's status.
pub fn apply(status: &mut StatusRecord, record: &InstanceRecord, report: Report) {
    prepare(status, record);
    let Report { which, outcome, at } = report;
    match which {
        Which::Health(index) => {
            let (Some(check), Some(result)) = (record.run.health_checks.get(index), status.health.get_mut(index))
            else {
                return;
            };
            let grace = SignedDuration::from_secs(check.grace_period_seconds.max(0));
            let in_grace = result.last_success.is_none() && status.started_at.is_some_and(|start| at < start + grace);
            match outcome {
                Outcome::Pass(output) => {
                    result.passing = Some(true);
                    result.consecutive_failures = 0;
                    result.consecutive_successes = result.consecutive_successes.saturating_add(1);
                    result.last_success = Some(at);
                    result.last_output = Some(output);
                }
                // Within the grace period a failure is ignored; only its output shows.
                Outcome::Fail(output) if in_grace => result.last_output = Some(output),
                Outcome::Fail(output) => {
                    result.passing = Some(false);
                    result.consecutive_failures = result.consecutive_failures.saturating_add(1);
                    result.consecutive_successes = 0;
                    result.last_failure = Some(at);
                    result.last_output = Some(output);
                }
                Outcome::Discard(output) => result.last_output = Some(output),
            }
        }
        Which::Readiness => {
            let result = status.readiness.get_or_insert_default();
            if result.passing == Some(true) {
                return; // Ready stays ready.
            }
            match outcome {
                Outcome::Pass(output) => {
                    result.passing = Some(true);
                    result.consecutive_failures = 0;
                    result.last_success = Some(at);
                    result.last_output = Some(output);
                }
                Outcome::Fail(output) | Outcome::Discard(output) => {
                    result.passing = Some(false);
                    result.consecutive_failures = result.consecutive_failures.saturating_add(1);
                    result.last_failure = Some(at);
                    result.last_output = Some(output);
                }
            }
        }
    }
    if status.healthy_at.is_none()
        && status.passes_steadily(&record.run.health_checks)
        && status.is_ready(!record.run.readiness_checks.is_empty())
    {
        status.healthy_at = Some(at);
    }
}

/// The port a health check probes: its fixed `port`, or the instance's port at `portIndex`.
fn health_port(record: &InstanceRecord, check: &HealthCheck) -> Option<u16> {
    match check.port {
        Some(port) => u16::try_from(port).ok(),
        None => {
            let index = usize::try_from(check.port_index.unwrap_or(0)).ok()?;
            record.ports.get(index).map(|p| p.port)
        }
    }
}

struct HealthProbe {
    check: HealthCheck,
    host: String,
    port: Option<u16>,
    sandbox: PathBuf,
    env: BTreeMap<String, String>,
    /// A command check runs as the instance's user: it is the app's code too.
    user: Option<String>,
}

impl HealthProbe {
    async fn run(&self) -> Outcome {
        let check = &self.check;
        let timeout = secs(check.timeout_seconds).max(Duration::from_secs(1));
        if check.protocol == HealthProtocol::Command {
            let script = check.command.as_ref().map_or("", |c| c.value.as_str());
            return probe::command(script, &self.sandbox, &self.env, self.user.as_deref(), timeout).await;
        }
        let Some(port) = self.port else {
            return Outcome::Fail(format!("the instance has no port for {}", check.describe()));
        };
        match check.protocol {
            HealthProtocol::Tcp => probe::tcp(&self.host, port, timeout).await,
            HealthProtocol::Http | HealthProtocol::Https => {
                let tls = check.protocol == HealthProtocol::Https;
                match probe::http_status(&self.host, port, check.path(), tls, timeout).await {
                    Ok(code) => http_verdict(code, check.ignore_http1xx),
                    Err(e) => Outcome::Fail(e),
                }
            }
            HealthProtocol::Command => unreachable!("handled above"),
        }
    }
}

/// 200–399 passes; 1xx is discarded when asked; anything else fails.
pub fn http_verdict(code: u16, ignore_http1xx: bool) -> Outcome {
    match code {
        200..=399 => Outcome::Pass(format!("HTTP {code}")),
        100..=199 if ignore_http1xx => Outcome::Discard(format!("HTTP {code} (ignored)")),
        _ => Outcome::Fail(format!("HTTP {code}")),
    }
}

async fn readiness(check: &ReadinessCheck, host: &str, port: Option<u16>) -> Outcome {
    let Some(port) = port else {
        return Outcome::Fail(format!("the instance has no port named {:?}", check.port_name));
    };
    let timeout = secs(check.timeout_seconds).max(Duration::from_secs(1));
    let tls = check.protocol == ReadinessProtocol::Https;
    match probe::http_status(host, port, &check.path, tls, timeout).await {
        Ok(code) if check.http_status_codes_for_ready.contains(&i32::from(code)) => {
            Outcome::Pass(format!("HTTP {code}"))
        }
        Ok(code) => Outcome::Fail(format!("HTTP {code}")),
        Err(e) => Outcome::Fail(e),
    }
}

fn secs(seconds: i64) -> Duration {
    Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_api::records::{AppRef, AssignedPort, Command};
    use baton_api::{Goal, Phase, ResourceAmounts, RunSpec};
    use std::sync::Arc;

    fn record(checks: serde_json::Value, readiness: serde_json::Value) -> InstanceRecord {
        InstanceRecord {
            id: "web-1".into(),
            agent: "a1".into(),
            host: "127.0.0.1".into(),
            created_at: Timestamp::UNIX_EPOCH,
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: vec![AssignedPort { name: Some("http".into()), port: 31000, requested: 0 }],
            term: 1,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: AppRef { namespace: "default".into(), name: "web".into(), uid: "u".into() },
                scope: Default::default(),
                version: "v".into(),
                whole_agent: false,
                command: Command::Shell("true".into()),
                user: None,
                fetch: Vec::new(),
                env: Default::default(),
                labels: Default::default(),
                resources: ResourceAmounts::default(),
                kill_grace_seconds: 3,
                health_checks: serde_json::from_value(checks).unwrap(),
                readiness_checks: serde_json::from_value(readiness).unwrap(),
            }),
        }
    }

    fn started() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        started() + SignedDuration::from_secs(seconds)
    }

    fn running(record: &InstanceRecord) -> StatusRecord {
        let mut status = StatusRecord::new(Phase::Running);
        status.started_at = Some(started());
        prepare(&mut status, record);
        status
    }

    fn report(which: Which, pass: bool, seconds: i64) -> Report {
        let outcome = if pass { Outcome::Pass("HTTP 200".into()) } else { Outcome::Fail("HTTP 500".into()) };
        Report { which, outcome, at: at(seconds) }
    }

    #[test]
    fn failures_in_the_grace_period_are_not_counted_until_the_first_pass() {
        let r = record(serde_json::json!([{"gracePeriodSeconds": 10}]), serde_json::json!([]));
        let mut status = running(&r);
        apply(&mut status, &r, report(Which::Health(0), false, 5));
        assert_eq!((status.health[0].passing, status.health[0].consecutive_failures), (None, 0), "in grace");
        assert_eq!(status.health[0].last_output.as_deref(), Some("HTTP 500"), "what it saw is still shown");
        assert_eq!(status.health[0].last_failure, None, "but it is not a failure");
        apply(&mut status, &r, report(Which::Health(0), false, 11));
        assert_eq!((status.health[0].passing, status.health[0].consecutive_failures), (Some(false), 1));
        apply(&mut status, &r, report(Which::Health(0), true, 12));
        assert_eq!((status.health[0].passing, status.health[0].consecutive_failures), (Some(true), 0));
        assert_eq!(status.health[0].consecutive_successes, 1);
        let check = &r.run.health_checks[0];
        assert!(!status.health[0].is_steady(check), "1 pass after a failure; 3 make it steady");
        assert_eq!(status.healthy_at, None, "healthy, not yet steadily");
        apply(&mut status, &r, report(Which::Health(0), true, 13));
        apply(&mut status, &r, report(Which::Health(0), true, 14));
        assert!(status.health[0].is_steady(check));
        assert_eq!(status.healthy_at, Some(at(14)));
        // Failing in the grace period only, then passing: steady at the first pass.
        let mut slow = running(&r);
        apply(&mut slow, &r, report(Which::Health(0), false, 1));
        apply(&mut slow, &r, report(Which::Health(0), true, 2));
        assert_eq!(slow.healthy_at, Some(at(2)));
        // Once it passed, the grace period is over even within its time.
        let mut early = running(&r);
        apply(&mut early, &r, report(Which::Health(0), true, 1));
        apply(&mut early, &r, report(Which::Health(0), false, 2));
        apply(&mut early, &r, report(Which::Health(0), false, 3));
        assert_eq!((early.health[0].passing, early.health[0].consecutive_failures), (Some(false), 2));
        assert_eq!(early.healthy_at, Some(at(1)), "the first time healthy stays");
    }

    #[test]
    fn an_ignored_1xx_leaves_the_verdict_as_it_was() {
        let r = record(serde_json::json!([{"gracePeriodSeconds": 0, "ignoreHttp1xx": true}]), serde_json::json!([]));
        let mut status = running(&r);
        apply(&mut status, &r, report(Which::Health(0), true, 1));
        apply(&mut status, &r, Report { which: Which::Health(0), outcome: http_verdict(102, true), at: at(2) });
        assert_eq!((status.health[0].passing, status.health[0].consecutive_failures), (Some(true), 0));
        assert_eq!(status.health[0].last_output.as_deref(), Some("HTTP 102 (ignored)"));
        assert_eq!(http_verdict(102, false), Outcome::Fail("HTTP 102".into()));
        assert_eq!(http_verdict(302, false), Outcome::Pass("HTTP 302".into()));
        assert_eq!(http_verdict(399, false), Outcome::Pass("HTTP 399".into()));
        assert_eq!(http_verdict(400, false), Outcome::Fail("HTTP 400".into()));
    }

    #[test]
    fn every_check_must_pass_and_readiness_too_before_the_instance_is_healthy() {
        let r = record(
            serde_json::json!([{"gracePeriodSeconds": 0}, {"protocol": "TCP", "gracePeriodSeconds": 0}]),
            serde_json::json!([{"portName": "http"}]),
        );
        let mut status = running(&r);
        apply(&mut status, &r, report(Which::Health(0), true, 1));
        assert_eq!(status.healthy_at, None, "the second check has no verdict yet");
        apply(&mut status, &r, report(Which::Health(1), true, 2));
        assert_eq!(status.healthy_at, None, "not ready yet");
        apply(&mut status, &r, report(Which::Readiness, false, 3));
        assert_eq!(status.readiness.as_ref().unwrap().consecutive_failures, 1);
        apply(&mut status, &r, report(Which::Readiness, true, 4));
        assert_eq!(status.healthy_at, Some(at(4)));
        apply(&mut status, &r, report(Which::Readiness, false, 5));
        assert_eq!(status.readiness.as_ref().unwrap().passing, Some(true), "ready stays ready");
    }
}
