//! Health checks, readiness checks and the pool-aware health policy.
//!
//! Field names and defaults are Marathon's, so a Marathon app's `healthChecks` and
//! `readinessChecks` carry over as they are. Probes run on the agent that runs the instance;
//! the agent reports each result in the instance's status ([`CheckResult`]); the controller
//! decides from those results which instances to kill, within the app's [`HealthPolicy`].

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a health check probes an instance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum HealthProtocol {
    /// `GET path`: healthy on a status from 200 to 399 within the timeout.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// As HTTP, over TLS; the certificate is not verified.
    #[serde(rename = "HTTPS")]
    Https,
    /// Healthy when a TCP connection opens within the timeout.
    #[serde(rename = "TCP")]
    Tcp,
    /// Healthy when `command.value`, run by `sh -c` in the instance's sandbox and
    /// environment, exits with status 0 within the timeout.
    #[serde(rename = "COMMAND")]
    Command,
}

impl HealthProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthProtocol::Http => "HTTP",
            HealthProtocol::Https => "HTTPS",
            HealthProtocol::Tcp => "TCP",
            HealthProtocol::Command => "COMMAND",
        }
    }

    /// HTTP or HTTPS.
    pub fn is_http(self) -> bool {
        matches!(self, HealthProtocol::Http | HealthProtocol::Https)
    }
}

/// The command of a `COMMAND` health check (Marathon's `{"value": "…"}`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct CommandCheck {
    /// Run by `sh -c` in the instance's sandbox, with the instance's environment.
    pub value: String,
}

/// One health check of an app (Marathon's `healthChecks[]`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP` (default), `HTTPS`, `TCP` or `COMMAND`.
    #[serde(default)]
    pub protocol: HealthProtocol,
    /// The path an HTTP or HTTPS check asks for (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the app's `ports` to probe (default 0). Exclusive with `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i32>,
    /// A fixed port number to probe instead of one of the app's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Failures are ignored for this long after the instance starts, until it first passes
    /// (default 300): they neither count nor mark the check failing.
    #[serde(default = "default_grace_period")]
    pub grace_period_seconds: i64,
    /// Seconds between probes (default 60).
    #[serde(default = "default_interval")]
    pub interval_seconds: i64,
    /// A probe that takes longer fails (default 20).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: i64,
    /// Seconds after the instance starts before the first probe (default 15).
    #[serde(default = "default_delay")]
    pub delay_seconds: i64,
    /// The instance is killed (within the app's `healthPolicy`) after this many failures in
    /// a row past its grace period (default 3); 0 never kills.
    #[serde(default = "default_max_consecutive_failures")]
    pub max_consecutive_failures: i64,
    /// An HTTP status from 100 to 199 is discarded: the health stays as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_http1xx: bool,
    /// What a `COMMAND` check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
}

fn default_grace_period() -> i64 {
    300
}
fn default_interval() -> i64 {
    60
}
fn default_timeout() -> i64 {
    20
}
fn default_delay() -> i64 {
    15
}
fn default_max_consecutive_failures() -> i64 {
    3
}

impl CheckResult {
    /// Whether this check has passed steadily: it never failed, or has passed as many probes
    /// in a row since its last failure as it takes failures to kill (`check`'s
    /// `maxConsecutiveFailures`, at least 1). An instance that just recovered does not yet
    /// count towards `minHealthyRatio`, so instances still failing from the same cause are
    /// not killed in the moment between the first recoveries and their own.
    pub fn is_steady(&self, check: &HealthCheck) -> bool {
        self.passing == Some(true)
            && (self.last_failure.is_none() || self.consecutive_successes >= check.kill_after().unwrap_or(1))
    }
}

impl HealthCheck {
    /// The path an HTTP(S) check asks for.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// Failures in a row that make the instance due to be killed; `None`: never.
    pub fn kill_after(&self) -> Option<u32> {
        (self.max_consecutive_failures > 0).then(|| self.max_consecutive_failures.min(i64::from(u32::MAX)) as u32)
    }

    /// A one-line description, e.g. `HTTP GET / on port index 0`.
    pub fn describe(&self) -> String {
        let target = match (self.port, self.port_index) {
            (Some(port), _) => format!("port {port}"),
            (None, index) => format!("port index {}", index.unwrap_or(0)),
        };
        match self.protocol {
            HealthProtocol::Http | HealthProtocol::Https => {
                format!("{} GET {} on {target}", self.protocol.as_str(), self.path())
            }
            HealthProtocol::Tcp => format!("TCP connect to {target}"),
            HealthProtocol::Command => "COMMAND".to_string(),
        }
    }
}

/// How a readiness check probes an instance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum ReadinessProtocol {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// The certificate is not verified.
    #[serde(rename = "HTTPS")]
    Https,
}

/// A readiness check (Marathon's `readinessChecks[]`): a new instance counts towards a
/// deployment's progress only once it passes. It is probed from the start of the instance
/// until it first passes, and never kills.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    /// A name for messages (default `readinessCheck`).
    #[serde(default = "default_readiness_name")]
    pub name: String,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default)]
    pub protocol: ReadinessProtocol,
    /// The path asked for (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The name of the app's port to probe (default `http-api`, as in Marathon).
    #[serde(default = "default_port_name")]
    pub port_name: String,
    /// Seconds between probes (default 30).
    #[serde(default = "default_readiness_interval")]
    pub interval_seconds: i64,
    /// A probe that takes longer fails (default 10).
    #[serde(default = "default_readiness_timeout")]
    pub timeout_seconds: i64,
    /// The HTTP statuses that mean ready (default `[200]`).
    #[serde(default = "default_ready_codes")]
    pub http_status_codes_for_ready: Vec<i32>,
}

impl ReadinessCheck {
    /// A one-line description, e.g. `readinessCheck: HTTP GET /ready on port http-api`.
    pub fn describe(&self) -> String {
        let protocol = match self.protocol {
            ReadinessProtocol::Http => "HTTP",
            ReadinessProtocol::Https => "HTTPS",
        };
        format!("{}: {protocol} GET {} on port {}", self.name, self.path, self.port_name)
    }
}

fn default_readiness_name() -> String {
    "readinessCheck".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_port_name() -> String {
    "http-api".into()
}
fn default_readiness_interval() -> i64 {
    30
}
fn default_readiness_timeout() -> i64 {
    10
}
fn default_ready_codes() -> Vec<i32> {
    vec![200]
}

/// The pool-aware kill policy. An instance that fails a health check
/// `maxConsecutiveFailures` times in a row is killed and replaced — but while fewer than
/// `minHealthyRatio` of the app's instances are healthy, only as long as fewer than
/// `maxConcurrentReplacements` replacement slots are held: each health kill holds one until
/// an instance replacing it has been steadily healthy, however often replacements fail in
/// between. So when every instance fails at once, a few are replaced at a time, and the
/// rest are left alone to recover when the cause goes away.
///
/// Marathon's behaviour, killing every failing instance at once: `minHealthyRatio: 0`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthPolicy {
    /// Fraction (0 to 1) of `instances` that must be healthy for failing instances to be
    /// killed without a limit (default 0.75).
    #[serde(default = "default_min_healthy_ratio")]
    pub min_healthy_ratio: f64,
    /// Below `minHealthyRatio`, at most this many replacement slots are held at once (a
    /// health kill holds one until its replacement is steadily healthy): a number, or a
    /// percentage of `instances` rounded up (default `10%`). 0 kills none.
    #[serde(default = "default_max_concurrent_replacements")]
    pub max_concurrent_replacements: IntOrString,
}

fn default_min_healthy_ratio() -> f64 {
    0.75
}

fn default_max_concurrent_replacements() -> IntOrString {
    IntOrString::String("10%".into())
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            min_healthy_ratio: default_min_healthy_ratio(),
            max_concurrent_replacements: default_max_concurrent_replacements(),
        }
    }
}

impl HealthPolicy {
    /// `minHealthyRatio` in thousandths.
    pub fn min_healthy_permille(&self) -> u64 {
        crate::app::permille(self.min_healthy_ratio)
    }

    /// The replacement budget for `instances` wanted, or why the value is invalid.
    pub fn replacements(&self, instances: usize) -> Result<usize, String> {
        match &self.max_concurrent_replacements {
            IntOrString::Int(n) if *n >= 0 => Ok(*n as usize),
            IntOrString::Int(n) => Err(format!("{n} is negative")),
            IntOrString::String(s) => {
                let percent = s
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u64>().ok())
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{s:?} is neither a number nor a percentage from 0% to 100%"))?;
                Ok((instances as u64 * percent).div_ceil(100) as usize)
            }
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The results of one check of one instance, as its agent reports them.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Whether the last counted probe passed; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passing: Option<bool>,
    /// Failures in a row, not counting those within the grace period.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Passes in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_successes: u32,
    /// When a probe last passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_success: Option<jiff::Timestamp>,
    /// When a probe last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_failure: Option<jiff::Timestamp>,
    /// What the last probe saw: `HTTP 500`, `connection refused`, a command's output…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_marathons() {
        let check: HealthCheck = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(check.protocol, HealthProtocol::Http);
        assert_eq!(check.path(), "/");
        assert_eq!(
            (
                check.grace_period_seconds,
                check.interval_seconds,
                check.timeout_seconds,
                check.delay_seconds,
                check.max_consecutive_failures
            ),
            (300, 60, 20, 15, 3)
        );
        assert!(!check.ignore_http1xx);
        let readiness: ReadinessCheck = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            (readiness.name.as_str(), readiness.path.as_str(), readiness.port_name.as_str()),
            ("readinessCheck", "/", "http-api")
        );
        assert_eq!((readiness.interval_seconds, readiness.timeout_seconds), (30, 10));
        assert_eq!(readiness.http_status_codes_for_ready, [200]);
        let command: HealthCheck =
            serde_json::from_value(serde_json::json!({"protocol": "COMMAND", "command": {"value": "true"}})).unwrap();
        assert_eq!(command.protocol, HealthProtocol::Command);
    }

    #[test]
    fn the_replacement_budget_is_a_number_or_a_percentage_rounded_up() {
        let policy = |v: IntOrString| HealthPolicy { max_concurrent_replacements: v, ..HealthPolicy::default() };
        assert_eq!(HealthPolicy::default().replacements(10), Ok(1));
        assert_eq!(HealthPolicy::default().replacements(11), Ok(2), "10% of 11 rounds up to 2");
        assert_eq!(policy(IntOrString::Int(3)).replacements(10), Ok(3));
        assert_eq!(policy(IntOrString::String("25%".into())).replacements(10), Ok(3));
        assert_eq!(policy(IntOrString::String("0%".into())).replacements(10), Ok(0));
        assert!(policy(IntOrString::String("120%".into())).replacements(10).is_err());
        assert!(policy(IntOrString::String("x".into())).replacements(10).is_err());
        assert!(policy(IntOrString::Int(-1)).replacements(10).is_err());
        assert_eq!(HealthPolicy::default().min_healthy_permille(), 750);
    }

    #[test]
    fn kill_after_zero_is_never() {
        let mut check: HealthCheck = serde_json::from_value(serde_json::json!({"protocol": "TCP"})).unwrap();
        assert_eq!(check.kill_after(), Some(3));
        check.max_consecutive_failures = 0;
        assert_eq!(check.kill_after(), None);
        assert_eq!(check.describe(), "TCP connect to port index 0");
    }
}
