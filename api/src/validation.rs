//! Validation of user input, reported as Kubernetes field errors.
//!
//! Each problem is a [`FieldError`] naming the field path and the offending value; the API
//! server turns a list of them into a 422 `Status` whose message reads exactly as kubectl
//! users know it: `spec.instances: Invalid value: -1: must be greater than or equal to 0`.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::app::{App, AppSpec};
use crate::constraints::Constraint;
use crate::health::HealthProtocol;
use crate::limits::{
    InputLimits, MAX_ANNOTATIONS_BYTES, MAX_ARG_BYTES, MAX_COMMAND_BYTES, MAX_CONSTRAINTS, MAX_ENV_BYTES,
    MAX_LABEL_VALUE_CHARS,
};
use crate::names;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path, e.g. `spec.ports[1].name`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// What is wrong or what would be right; may be empty.
    pub detail: String,
}

/// The kinds of field error Kubernetes reports (`k8s.io/apimachinery/pkg/util/validation/field`).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// The field must be set.
    Required,
    /// The value is not acceptable.
    Invalid(Value),
    /// The value has the wrong JSON type (a string where a number belongs).
    TypeInvalid(Value),
    /// The field may not be set (in this combination).
    Forbidden,
    /// The value repeats one that must be unique.
    Duplicate(Value),
    /// The value is not one of a fixed set.
    NotSupported(Value, Vec<String>),
    /// The field does not exist in the schema.
    Unknown,
    /// The value is longer or larger than allowed.
    TooLong,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Required, detail: detail.into() }
    }

    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Invalid(value.into()), detail: detail.into() }
    }

    /// The value is too long or too large: `Too long: …`.
    pub fn too_long(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::TooLong, detail: detail.into() }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Forbidden, detail: detail.into() }
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Duplicate(value.into()), detail: String::new() }
    }

    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(value.into(), supported.iter().map(|s| s.to_string()).collect()),
            detail: String::new(),
        }
    }

    pub fn unknown(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Unknown, detail: detail.into() }
    }

    pub fn type_invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::TypeInvalid(value.into()), detail: detail.into() }
    }

    /// The `reason` of this error's `Status.details.causes` entry.
    pub fn cause_reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) | FieldErrorKind::Unknown => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid(_) => "FieldValueTypeInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }

    /// The message without the field path (what `Status.details.causes[].message` holds).
    pub fn message(&self) -> String {
        let head = match &self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Invalid(v) => format!("Invalid value: {}", short_json(v)),
            FieldErrorKind::TypeInvalid(v) => format!("Invalid value: {}", short_json(v)),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {}", short_json(v)),
            FieldErrorKind::NotSupported(v, supported) => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                format!("Unsupported value: {}: supported values: {}", short_json(v), list.join(", "))
            }
            FieldErrorKind::Unknown => "Unknown field".to_string(),
            FieldErrorKind::TooLong => "Too long".to_string(),
        };
        if self.detail.is_empty() { head } else { format!("{head}: {}", self.detail) }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// JSON for a message, cut short so a huge value cannot flood an error.
fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        let cut = (0..=120).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

/// Everything wrong with an App, under the default limits, in field order. Empty means
/// valid.
pub fn validate_app(app: &App) -> Vec<FieldError> {
    validate_app_with(app, &InputLimits::default())
}

/// Everything wrong with an App under `limits`, in field order. Empty means valid.
pub fn validate_app_with(app: &App, limits: &InputLimits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = &app.metadata.name
        && let Some(problem) = names::dns_label_problem(name)
    {
        errors.push(FieldError::invalid("metadata.name", name.as_str(), problem));
    }
    validate_app_spec(&app.spec, limits, &mut errors);
    crate::groups::validate_app_paths(app, &mut errors);
    errors
}

/// Environment variables the agent sets itself; an app may not override them.
/// Whether the agent sets `name` itself. `PORT_<n>` covers both `PORT_<NAME>` and the
/// service-port variables.
fn reserved_env(name: &str) -> bool {
    let port_n =
        name.strip_prefix("PORT").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
    name == "PORT"
        || name == "PORTS"
        || name == "HOST"
        || port_n
        || name.starts_with("PORT_")
        || name.starts_with("BATON_")
}

/// The most ports one instance may ask for.
pub const MAX_PORTS: usize = 64;

/// The most artifacts one app may fetch.
pub const MAX_FETCH: usize = 32;

/// The longest fetch URI, in bytes (what browsers and proxies commonly accept).
pub const MAX_URI_BYTES: usize = 8192;

/// The longest `fetch[].destPath`, in bytes (Linux's PATH_MAX).
pub const MAX_DEST_PATH_BYTES: usize = 4096;

/// What is wrong with a fetch URI, if anything: only `http://`, `https://` and
/// `file:///absolute` are fetched.
fn fetch_uri_problem(uri: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Some("must be a URI: http://, https:// or file://");
    };
    if uri.chars().any(|c| c.is_control() || c == ' ') {
        return Some("must not contain spaces or control characters (percent-encode them)");
    }
    match scheme {
        "http" | "https" => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            host.is_empty().then_some("must name a host")
        }
        "file" => (!rest.starts_with('/')).then_some("a file:// URI must name an absolute path: file:///path"),
        _ => Some("the scheme must be http, https or file"),
    }
}

/// What is wrong with a sandbox-relative path, if anything: it must stay in the sandbox.
fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("must not be empty")
    } else if path.starts_with('/') {
        Some("must be relative to the sandbox")
    } else if path.split('/').any(|part| part == "..") {
        Some("must not contain '..': it must stay in the sandbox")
    } else if path.contains('\0') {
        Some("must not contain NUL characters")
    } else if path.ends_with('/') || path.split('/').all(|p| p.is_empty() || p == ".") {
        Some("must name a file")
    } else {
        None
    }
}

fn validate_fetch(spec: &AppSpec, errors: &mut Vec<FieldError>) {
    if spec.fetch.len() > MAX_FETCH {
        errors.push(FieldError::too_long(
            "spec.fetch",
            format!("has {} items; at most {MAX_FETCH} are allowed", spec.fetch.len()),
        ));
        return;
    }
    for (i, fetch) in spec.fetch.iter().enumerate() {
        let field = format!("spec.fetch[{i}].uri");
        if fetch.uri.len() > MAX_URI_BYTES {
            errors.push(too_big(field, "the URI", fetch.uri.len(), MAX_URI_BYTES));
            continue;
        }
        if let Some(problem) = fetch_uri_problem(&fetch.uri) {
            errors.push(FieldError::invalid(field, fetch.uri.as_str(), problem));
            continue;
        }
        match &fetch.dest_path {
            Some(dest) if dest.len() > MAX_DEST_PATH_BYTES => {
                errors.push(too_big(format!("spec.fetch[{i}].destPath"), "the path", dest.len(), MAX_DEST_PATH_BYTES))
            }
            Some(dest) => {
                if let Some(problem) = relative_path_problem(dest) {
                    errors.push(FieldError::invalid(format!("spec.fetch[{i}].destPath"), dest.as_str(), problem));
                }
            }
            None if fetch.file_name().is_none() => errors.push(FieldError::required(
                format!("spec.fetch[{i}].destPath"),
                format!("the URI {:?} names no file; say where to put it", fetch.uri),
            )),
            None => {}
        }
    }
}

/// The metadata every object may carry, whatever its kind, as Kubernetes checks it: label
/// keys and values, annotation keys, and the annotations' total size.
pub fn validate_metadata(metadata: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(labels) = metadata.get("labels").and_then(Value::as_object) {
        for (key, value) in labels {
            let field = format!("metadata.labels[{key}]");
            if let Some(problem) = names::label_key_problem(key) {
                errors.push(FieldError::invalid("metadata.labels", key.as_str(), problem));
            } else if let Some(value) = value.as_str()
                && let Some(problem) = names::label_value_problem(value)
            {
                let problem = if value.len() > MAX_LABEL_VALUE_CHARS {
                    format!("has {} characters; {problem}", value.chars().count())
                } else {
                    problem
                };
                errors.push(FieldError::invalid(field, value, problem));
            }
        }
    }
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            if let Some(problem) = names::label_key_problem(&key.to_lowercase()) {
                errors.push(FieldError::invalid("metadata.annotations", key.as_str(), problem));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > MAX_ANNOTATIONS_BYTES {
            errors.push(FieldError::too_long(
                "metadata.annotations",
                format!("the annotations take {total} bytes; at most {MAX_ANNOTATIONS_BYTES} are allowed"),
            ));
        }
    }
    errors
}

/// `what`'s size past `limit` bytes, said plainly.
fn too_big(field: impl Into<String>, what: &str, bytes: usize, limit: usize) -> FieldError {
    FieldError::too_long(field, format!("{what} takes {bytes} bytes; at most {limit} are allowed"))
}

/// A user name as `useradd` takes it by default (`[a-z_][a-z0-9_-]{0,31}`).
fn is_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn validate_app_spec(spec: &AppSpec, limits: &InputLimits, errors: &mut Vec<FieldError>) {
    if spec.instances < 0 {
        errors.push(FieldError::invalid("spec.instances", spec.instances, "must be greater than or equal to 0"));
    } else if spec.instances > limits.max_instances_per_app {
        errors.push(FieldError::invalid(
            "spec.instances",
            spec.instances,
            format!("must be at most {} (this cluster's limit per app)", limits.max_instances_per_app),
        ));
    }

    if let Some(user) = &spec.user
        && !is_user_name(user)
    {
        errors.push(FieldError::invalid(
            "spec.user",
            user.as_str(),
            "must be a user name: a lowercase letter or '_', then at most 31 lowercase letters, digits, '_' or '-'",
        ));
    }
    validate_fetch(spec, errors);
    match (&spec.cmd, &spec.args) {
        (None, None) => errors.push(FieldError::required("spec.cmd", "one of spec.cmd or spec.args is required")),
        (Some(_), Some(_)) => errors.push(FieldError::forbidden("spec.args", "may not be set together with spec.cmd")),
        (Some(cmd), None) => {
            if cmd.trim().is_empty() {
                errors.push(FieldError::invalid("spec.cmd", cmd.as_str(), "must not be empty"));
            } else if cmd.len() > MAX_ARG_BYTES {
                errors.push(too_big("spec.cmd", "the command", cmd.len(), MAX_ARG_BYTES));
            } else if cmd.contains('\0') {
                errors.push(FieldError::invalid("spec.cmd", cmd.as_str(), "must not contain NUL characters"));
            }
        }
        (None, Some(args)) => {
            if args.is_empty() {
                errors.push(FieldError::required("spec.args", "must name at least the program to run"));
            } else if args[0].trim().is_empty() {
                errors.push(FieldError::invalid(
                    "spec.args[0]",
                    args[0].as_str(),
                    "the program to run must not be empty",
                ));
            }
            let total: usize = args.iter().map(|a| a.len() + 1).sum();
            if total > MAX_COMMAND_BYTES {
                errors.push(too_big("spec.args", "the arguments together", total, MAX_COMMAND_BYTES));
            }
            for (i, arg) in args.iter().enumerate() {
                if arg.len() > MAX_ARG_BYTES {
                    errors.push(too_big(format!("spec.args[{i}]"), "the argument", arg.len(), MAX_ARG_BYTES));
                } else if arg.contains('\0') {
                    errors.push(FieldError::invalid(
                        format!("spec.args[{i}]"),
                        arg.as_str(),
                        "must not contain NUL characters",
                    ));
                }
            }
        }
    }

    let r = &spec.resources;
    let positive = |field: &str, value: f64, errors: &mut Vec<FieldError>| {
        if !(value.is_finite() && value > 0.0) {
            errors.push(FieldError::invalid(field, value, "must be greater than 0"));
        }
    };
    positive("spec.resources.cpus", r.cpus, errors);
    positive("spec.resources.mem", r.mem, errors);
    if !(r.disk.is_finite() && r.disk >= 0.0) {
        errors.push(FieldError::invalid("spec.resources.disk", r.disk, "must be greater than or equal to 0"));
    }

    if spec.ports.len() > MAX_PORTS {
        errors.push(FieldError::invalid(
            "spec.ports",
            spec.ports.len(),
            format!("must have at most {MAX_PORTS} ports"),
        ));
    }
    let mut port_names = BTreeSet::new();
    let mut fixed_ports = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}].port");
        if !(0..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(field, port.port, "must be between 0 (a dynamic port) and 65535"));
        } else if port.port != 0 && !fixed_ports.insert(port.port) {
            errors.push(FieldError::duplicate(field, port.port));
        }
        if let Some(name) = &port.name {
            let field = format!("spec.ports[{i}].name");
            if let Some(problem) = port_name_problem(name) {
                errors.push(FieldError::invalid(field, name.as_str(), problem));
            } else if !port_names.insert(env_port_suffix(name)) {
                errors.push(FieldError::duplicate(field, name.as_str()));
            }
        }
    }

    if spec.constraints.len() > MAX_CONSTRAINTS {
        errors.push(FieldError::invalid(
            "spec.constraints",
            spec.constraints.len(),
            format!("has {} constraints; at most {MAX_CONSTRAINTS} are allowed", spec.constraints.len()),
        ));
    }
    for (i, parts) in spec.constraints.iter().enumerate().take(MAX_CONSTRAINTS) {
        if let Err(problem) = Constraint::parse(parts) {
            errors.push(FieldError::invalid(format!("spec.constraints[{i}]"), serde_json::json!(parts), problem));
        }
    }

    if spec.resources.gpus < 0 {
        errors.push(FieldError::invalid(
            "spec.resources.gpus",
            spec.resources.gpus,
            "must be greater than or equal to 0",
        ));
    }

    let strategy = spec.upgrade_strategy;
    let fraction = |field: &str, value: f64, errors: &mut Vec<FieldError>| {
        if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
            errors.push(FieldError::invalid(field, value, "must be between 0 and 1"));
        }
    };
    fraction("spec.upgradeStrategy.minimumHealthCapacity", strategy.minimum_health_capacity, errors);
    fraction("spec.upgradeStrategy.maximumOverCapacity", strategy.maximum_over_capacity, errors);
    if let Some(starts) = strategy.max_concurrent_starts
        && starts < 1
    {
        errors.push(FieldError::invalid(
            "spec.upgradeStrategy.maxConcurrentStarts",
            starts,
            "must be at least 1 (leave it out for no limit)",
        ));
    }

    let backoff = spec.backoff;
    if !(backoff.seconds.is_finite() && backoff.seconds >= 0.0) {
        errors.push(FieldError::invalid("spec.backoff.seconds", backoff.seconds, "must be greater than or equal to 0"));
    }
    if !(backoff.factor.is_finite() && backoff.factor >= 1.0) {
        errors.push(FieldError::invalid("spec.backoff.factor", backoff.factor, "must be at least 1"));
    }
    if !(backoff.max_launch_delay_seconds.is_finite() && backoff.max_launch_delay_seconds >= 0.0) {
        errors.push(FieldError::invalid(
            "spec.backoff.maxLaunchDelaySeconds",
            backoff.max_launch_delay_seconds,
            "must be greater than or equal to 0",
        ));
    }

    // As the process gets them: NAME=value and a NUL each.
    let env_bytes: usize = spec.env.iter().map(|(name, value)| name.len() + value.len() + 2).sum();
    if env_bytes > MAX_ENV_BYTES {
        errors.push(too_big("spec.env", "the environment", env_bytes, MAX_ENV_BYTES));
    }
    for (name, value) in &spec.env {
        let field = format!("spec.env[{name}]");
        if name.len() + value.len() + 2 > MAX_ARG_BYTES {
            errors.push(too_big(field, "the variable", name.len() + value.len() + 2, MAX_ARG_BYTES));
            continue;
        }
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            errors.push(FieldError::invalid(
                field,
                name.as_str(),
                "an environment variable name must be non-empty and contain no '=' or NUL",
            ));
        } else if reserved_env(name) {
            errors.push(FieldError::forbidden(
                field,
                "set by the agent for every instance (PORT, PORTS, PORT<N>, PORT_<NAME>, HOST, BATON_*)",
            ));
        } else if value.contains('\0') {
            errors.push(FieldError::invalid(field, value.as_str(), "must not contain NUL characters"));
        }
    }

    for (key, value) in &spec.labels {
        if let Some(problem) = names::label_key_problem(key) {
            errors.push(FieldError::invalid("spec.labels", key.as_str(), problem));
        } else if key == crate::APP_LABEL {
            errors.push(FieldError::forbidden(
                format!("spec.labels[{key}]"),
                "set by Baton to the app's name on every instance",
            ));
        } else if let Some(problem) = names::label_value_problem(value) {
            errors.push(FieldError::invalid(format!("spec.labels[{key}]"), value.as_str(), problem));
        }
    }

    let unreachable = spec.unreachable_strategy;
    if unreachable.inactive_after_seconds < 0 {
        errors.push(FieldError::invalid(
            "spec.unreachableStrategy.inactiveAfterSeconds",
            unreachable.inactive_after_seconds,
            "must be greater than or equal to 0",
        ));
    } else if unreachable.expunge_after_seconds < unreachable.inactive_after_seconds {
        errors.push(FieldError::invalid(
            "spec.unreachableStrategy.expungeAfterSeconds",
            unreachable.expunge_after_seconds,
            format!("must be greater than or equal to inactiveAfterSeconds ({})", unreachable.inactive_after_seconds),
        ));
    }

    if let Some(grace) = spec.task_kill_grace_period_seconds
        && !(0..=3600).contains(&grace)
    {
        errors.push(FieldError::invalid("spec.taskKillGracePeriodSeconds", grace, "must be between 0 and 3600"));
    }

    validate_health(spec, errors);
}

/// The most health checks an app may have.
pub const MAX_HEALTH_CHECKS: usize = 8;
/// The longest a probe's interval, timeout, delay or grace period may be (a day).
const MAX_CHECK_SECONDS: i64 = 86_400;

fn validate_health(spec: &AppSpec, errors: &mut Vec<FieldError>) {
    let seconds = |field: String, value: i64, min: i64, errors: &mut Vec<FieldError>| {
        if !(min..=MAX_CHECK_SECONDS).contains(&value) {
            errors.push(FieldError::invalid(field, value, format!("must be between {min} and {MAX_CHECK_SECONDS}")));
        }
    };
    if spec.health_checks.len() > MAX_HEALTH_CHECKS {
        errors.push(FieldError::invalid(
            "spec.healthChecks",
            spec.health_checks.len(),
            format!("must have at most {MAX_HEALTH_CHECKS} checks"),
        ));
    }
    for (i, check) in spec.health_checks.iter().enumerate() {
        let field = |name: &str| format!("spec.healthChecks[{i}].{name}");
        seconds(field("gracePeriodSeconds"), check.grace_period_seconds, 0, errors);
        seconds(field("intervalSeconds"), check.interval_seconds, 1, errors);
        seconds(field("timeoutSeconds"), check.timeout_seconds, 1, errors);
        seconds(field("delaySeconds"), check.delay_seconds, 0, errors);
        if check.timeout_seconds > check.interval_seconds && check.interval_seconds >= 1 {
            errors.push(FieldError::invalid(
                field("timeoutSeconds"),
                check.timeout_seconds,
                format!("must not be greater than intervalSeconds ({})", check.interval_seconds),
            ));
        }
        if check.max_consecutive_failures < 0 {
            errors.push(FieldError::invalid(
                field("maxConsecutiveFailures"),
                check.max_consecutive_failures,
                "must be greater than or equal to 0 (0: never kill)",
            ));
        }
        let protocol = check.protocol;
        if protocol == HealthProtocol::Command {
            match &check.command {
                None => errors.push(FieldError::required(field("command"), "a COMMAND check needs command.value")),
                Some(command) if command.value.trim().is_empty() || command.value.contains('\0') => {
                    errors.push(FieldError::invalid(
                        field("command.value"),
                        command.value.as_str(),
                        "must be a non-empty shell command without NUL characters",
                    ))
                }
                Some(_) => {}
            }
            for (name, set) in [
                ("path", check.path.is_some()),
                ("portIndex", check.port_index.is_some()),
                ("port", check.port.is_some()),
            ] {
                if set {
                    errors.push(FieldError::forbidden(field(name), "only HTTP, HTTPS and TCP checks probe a port"));
                }
            }
        } else {
            if check.command.is_some() {
                errors.push(FieldError::forbidden(field("command"), "only a COMMAND check runs a command"));
            }
            match (check.port_index, check.port) {
                (Some(_), Some(_)) => {
                    errors.push(FieldError::forbidden(field("port"), "may not be set together with portIndex"))
                }
                (_, Some(port)) if !(1..=65535).contains(&port) => {
                    errors.push(FieldError::invalid(field("port"), port, "must be between 1 and 65535"))
                }
                (_, Some(_)) => {}
                (index, None) => {
                    let index = index.unwrap_or(0);
                    if index < 0 || index as usize >= spec.ports.len() {
                        let detail = if spec.ports.is_empty() {
                            "the app has no ports: add spec.ports or give the check a port".to_string()
                        } else {
                            format!(
                                "must name one of the app's {} ports (0 to {})",
                                spec.ports.len(),
                                spec.ports.len() - 1
                            )
                        };
                        errors.push(FieldError::invalid(field("portIndex"), index, detail));
                    }
                }
            }
        }
        if let Some(path) = &check.path {
            if !protocol.is_http() {
                errors.push(FieldError::forbidden(field("path"), "only HTTP and HTTPS checks ask for a path"));
            } else if let Some(problem) = http_path_problem(path) {
                errors.push(FieldError::invalid(field("path"), path.as_str(), problem));
            }
        }
        if check.ignore_http1xx && !protocol.is_http() {
            errors.push(FieldError::forbidden(field("ignoreHttp1xx"), "only HTTP and HTTPS checks get a status"));
        }
    }

    if spec.readiness_checks.len() > 1 {
        errors.push(FieldError::invalid(
            "spec.readinessChecks",
            spec.readiness_checks.len(),
            "at most one readiness check is supported",
        ));
    }
    for (i, check) in spec.readiness_checks.iter().enumerate() {
        let field = |name: &str| format!("spec.readinessChecks[{i}].{name}");
        seconds(field("intervalSeconds"), check.interval_seconds, 1, errors);
        seconds(field("timeoutSeconds"), check.timeout_seconds, 1, errors);
        if let Some(problem) = http_path_problem(&check.path) {
            errors.push(FieldError::invalid(field("path"), check.path.as_str(), problem));
        }
        if !spec.ports.iter().any(|p| p.name.as_deref() == Some(check.port_name.as_str())) {
            let names: Vec<&str> = spec.ports.iter().filter_map(|p| p.name.as_deref()).collect();
            let detail = if names.is_empty() {
                "the app has no named ports: name one in spec.ports".to_string()
            } else {
                format!("must name one of the app's ports ({})", names.join(", "))
            };
            errors.push(FieldError::invalid(field("portName"), check.port_name.as_str(), detail));
        }
        if check.http_status_codes_for_ready.is_empty() {
            errors.push(FieldError::required(field("httpStatusCodesForReady"), "at least one HTTP status means ready"));
        }
        for (j, code) in check.http_status_codes_for_ready.iter().enumerate() {
            if !(100..=599).contains(code) {
                errors.push(FieldError::invalid(
                    format!("spec.readinessChecks[{i}].httpStatusCodesForReady[{j}]"),
                    *code,
                    "must be an HTTP status from 100 to 599",
                ));
            }
        }
    }

    let policy = &spec.health_policy;
    if !(policy.min_healthy_ratio.is_finite() && (0.0..=1.0).contains(&policy.min_healthy_ratio)) {
        errors.push(FieldError::invalid(
            "spec.healthPolicy.minHealthyRatio",
            policy.min_healthy_ratio,
            "must be between 0 and 1",
        ));
    }
    if let Err(problem) = policy.replacements(0) {
        errors.push(FieldError::invalid(
            "spec.healthPolicy.maxConcurrentReplacements",
            serde_json::to_value(&policy.max_concurrent_replacements).unwrap_or_default(),
            format!("{problem}: use a number (e.g. 2) or a percentage of instances (e.g. \"10%\")"),
        ));
    }
}

/// An HTTP request path: starts with '/', no spaces or control characters (it goes into the
/// request line as it is).
fn http_path_problem(path: &str) -> Option<&'static str> {
    let ok = path.starts_with('/') && path.len() <= 1024 && !path.chars().any(|c| c.is_whitespace() || c.is_control());
    (!ok).then_some("must start with '/' and contain no spaces or control characters (at most 1024 characters)")
}

/// Port names are IANA service names, as in Kubernetes: at most 15 lowercase alphanumerics
/// or '-', with at least one letter.
fn port_name_problem(name: &str) -> Option<&'static str> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    (!ok).then_some(
        "must be at most 15 lowercase alphanumeric characters or '-', contain a letter, and not start or end with '-'",
    )
}

/// The `<NAME>` of `$PORT_<NAME>` for a port name: `metrics-http` → `METRICS_HTTP`.
pub fn env_port_suffix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::PortDefinition;
    use crate::resources::Resources;

    fn spec() -> AppSpec {
        AppSpec {
            instances: 3,
            cmd: Some("python3 -m http.server $PORT0".into()),
            args: None,
            user: None,
            fetch: Vec::new(),
            resources: Resources::default(),
            ports: vec![PortDefinition { name: Some("http".into()), port: 0 }],
            placement: Default::default(),
            env: Default::default(),
            labels: Default::default(),
            task_kill_grace_period_seconds: None,
            unreachable_strategy: Default::default(),
            kill_selection: Default::default(),
            require_ports: false,
            constraints: Vec::new(),
            upgrade_strategy: Default::default(),
            backoff: Default::default(),
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            health_policy: Default::default(),
            group: None,
            dependencies: Vec::new(),
        }
    }

    fn check(json: serde_json::Value) -> crate::health::HealthCheck {
        serde_json::from_value(json).unwrap()
    }

    fn errors_of(spec: AppSpec) -> Vec<String> {
        let app = App::new("web", spec);
        validate_app(&app).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_app_has_no_errors() {
        assert!(errors_of(spec()).is_empty());
        for user in ["nobody", "_apt", "www-data", "svc_01"] {
            assert!(errors_of(AppSpec { user: Some(user.into()), ..spec() }).is_empty(), "{user}");
        }
        let fetch: Vec<crate::app::Fetch> = serde_json::from_value(serde_json::json!([
            {"uri": "https://example.com/releases/app-1.2.tgz"},
            {"uri": "http://127.0.0.1:8080/bin/tool?sig=1", "executable": true, "extract": false},
            {"uri": "file:///opt/artifacts/app.zip", "cache": true, "destPath": "lib/app.zip"},
            {"uri": "http://example.com", "destPath": "index.html"},
        ]))
        .unwrap();
        assert_eq!(fetch[0].file_name().as_deref(), Some("app-1.2.tgz"));
        assert_eq!(fetch[1].file_name().as_deref(), Some("tool"), "the query is not part of the name");
        assert!(fetch[0].extract && !fetch[1].extract && fetch[2].cache);
        assert_eq!(errors_of(AppSpec { fetch, ..spec() }), Vec::<String>::new());
    }

    #[test]
    fn a_bad_fetch_is_named_with_its_uri_or_path() {
        let fetch = |json: serde_json::Value| AppSpec { fetch: vec![serde_json::from_value(json).unwrap()], ..spec() };
        let cases = [
            (
                serde_json::json!({"uri": "ftp://host/x.tgz"}),
                "spec.fetch[0].uri: Invalid value: \"ftp://host/x.tgz\": the scheme",
            ),
            (serde_json::json!({"uri": "app.tgz"}), "spec.fetch[0].uri: Invalid value: \"app.tgz\": must be a URI"),
            (serde_json::json!({"uri": "file://relative/x"}), "must name an absolute path"),
            (serde_json::json!({"uri": "http:///x"}), "must name a host"),
            (serde_json::json!({"uri": "http://h/a b"}), "must not contain spaces"),
            (serde_json::json!({"uri": "http://h/"}), "spec.fetch[0].destPath: Required value: the URI"),
            (
                serde_json::json!({"uri": "http://h/x", "destPath": "../../etc/passwd"}),
                "spec.fetch[0].destPath: Invalid value: \"../../etc/passwd\": must not contain '..'",
            ),
            (serde_json::json!({"uri": "http://h/x", "destPath": "/etc/x"}), "must be relative to the sandbox"),
            (serde_json::json!({"uri": "http://h/x", "destPath": "dir/"}), "must name a file"),
            (
                serde_json::json!({"uri": format!("http://h/{}", "a".repeat(MAX_URI_BYTES))}),
                "spec.fetch[0].uri: Too long",
            ),
        ];
        for (json, expected) in cases {
            let errors = errors_of(fetch(json.clone()));
            assert!(errors.iter().any(|e| e.contains(expected)), "{json}: expected {expected:?}, got {errors:?}");
        }
        let many = AppSpec {
            fetch: vec![serde_json::from_value(serde_json::json!({"uri": "http://h/x"})).unwrap(); MAX_FETCH + 1],
            ..spec()
        };
        assert!(errors_of(many).iter().any(|e| e.starts_with("spec.fetch: Too long: has 33 items")));
    }

    #[test]
    fn each_bad_field_is_named_with_its_value() {
        type Change = Box<dyn Fn(&mut AppSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.instances = -1), "spec.instances: Invalid value: -1: must be greater than or equal to 0"),
            (Box::new(|s| s.cmd = None), "spec.cmd: Required value: one of spec.cmd or spec.args is required"),
            (
                Box::new(|s| s.args = Some(vec!["x".into()])),
                "spec.args: Forbidden: may not be set together with spec.cmd",
            ),
            (Box::new(|s| s.resources.mem = 0.0), "spec.resources.mem: Invalid value: 0.0: must be greater than 0"),
            (Box::new(|s| s.resources.cpus = -1.0), "spec.resources.cpus: Invalid value: -1.0: must be greater than 0"),
            (Box::new(|s| s.ports[0].port = 70000), "spec.ports[0].port: Invalid value: 70000: must be between 0"),
            (
                Box::new(|s| {
                    s.ports = vec![PortDefinition { name: None, port: 80 }, PortDefinition { name: None, port: 80 }]
                }),
                "spec.ports[1].port: Duplicate value: 80",
            ),
            (
                Box::new(|s| s.constraints = vec![vec!["hostname".into(), "UNIQ".into()]]),
                "spec.constraints[0]: Invalid value: [\"hostname\",\"UNIQ\"]: unknown operator \"UNIQ\"",
            ),
            (
                Box::new(|s| s.user = Some("Root User".into())),
                "spec.user: Invalid value: \"Root User\": must be a user name",
            ),
            (
                Box::new(|s| s.user = Some("a".repeat(33))),
                "spec.user: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be a user name",
            ),
            (
                Box::new(|s| s.upgrade_strategy.maximum_over_capacity = -0.5),
                "spec.upgradeStrategy.maximumOverCapacity: Invalid value: -0.5: must be between 0 and 1",
            ),
            (
                Box::new(|s| s.upgrade_strategy.minimum_health_capacity = 1.5),
                "spec.upgradeStrategy.minimumHealthCapacity: Invalid value: 1.5",
            ),
            (
                Box::new(|s| s.upgrade_strategy.max_concurrent_starts = Some(0)),
                "spec.upgradeStrategy.maxConcurrentStarts: Invalid value: 0",
            ),
            (Box::new(|s| s.backoff.factor = 0.5), "spec.backoff.factor: Invalid value: 0.5: must be at least 1"),
            (Box::new(|s| s.resources.gpus = -1), "spec.resources.gpus: Invalid value: -1"),
            (
                Box::new(|s| s.ports.push(PortDefinition { name: Some("http".into()), port: 0 })),
                "spec.ports[1].name: Duplicate value: \"http\"",
            ),
            (Box::new(|s| _ = s.env.insert("PORT0".into(), "1".into())), "spec.env[PORT0]: Forbidden"),
            (Box::new(|s| _ = s.labels.insert("app".into(), "x".into())), "spec.labels[app]: Forbidden"),
            (
                Box::new(|s| s.task_kill_grace_period_seconds = Some(-5)),
                "spec.taskKillGracePeriodSeconds: Invalid value: -5",
            ),
            (
                Box::new(|s| s.health_checks = vec![check(serde_json::json!({"portIndex": 1}))]),
                "spec.healthChecks[0].portIndex: Invalid value: 1: must name one of the app's 1 ports (0 to 0)",
            ),
            (
                Box::new(|s| {
                    s.ports.clear();
                    s.health_checks = vec![check(serde_json::json!({"protocol": "TCP"}))]
                }),
                "spec.healthChecks[0].portIndex: Invalid value: 0: the app has no ports",
            ),
            (
                Box::new(|s| s.health_checks = vec![check(serde_json::json!({"protocol": "COMMAND"}))]),
                "spec.healthChecks[0].command: Required value",
            ),
            (
                Box::new(|s| {
                    s.health_checks = vec![check(serde_json::json!({"intervalSeconds": 5, "timeoutSeconds": 10}))]
                }),
                "spec.healthChecks[0].timeoutSeconds: Invalid value: 10: must not be greater than intervalSeconds (5)",
            ),
            (
                Box::new(|s| s.health_checks = vec![check(serde_json::json!({"path": "/a b"}))]),
                "spec.healthChecks[0].path: Invalid value: \"/a b\"",
            ),
            (
                Box::new(|s| s.health_checks = vec![check(serde_json::json!({"protocol": "TCP", "path": "/x"}))]),
                "spec.healthChecks[0].path: Forbidden",
            ),
            (
                Box::new(|s| s.health_checks = vec![check(serde_json::json!({"maxConsecutiveFailures": -1}))]),
                "spec.healthChecks[0].maxConsecutiveFailures: Invalid value: -1",
            ),
            (
                Box::new(|s| {
                    s.readiness_checks = vec![serde_json::from_value(serde_json::json!({"portName": "web"})).unwrap()]
                }),
                "spec.readinessChecks[0].portName: Invalid value: \"web\": must name one of the app's ports (http)",
            ),
            (
                Box::new(|s| s.health_policy.min_healthy_ratio = 2.0),
                "spec.healthPolicy.minHealthyRatio: Invalid value: 2.0",
            ),
            (
                Box::new(|s| {
                    s.health_policy.max_concurrent_replacements =
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("lots".into())
                }),
                "spec.healthPolicy.maxConcurrentReplacements: Invalid value: \"lots\"",
            ),
        ];
        for (change, expected) in cases {
            let mut s = spec();
            change(&mut s);
            let errors = errors_of(s);
            assert_eq!(errors.len(), 1, "expected exactly one error like {expected:?}, got {errors:?}");
            assert!(errors[0].starts_with(expected), "got {:?}, expected it to start with {expected:?}", errors[0]);
        }
    }

    #[test]
    fn app_names_must_be_dns_labels() {
        let app = App::new("Web_1", spec());
        let errors = validate_app(&app);
        assert_eq!(errors[0].field, "metadata.name");
    }

    #[test]
    fn env_port_suffix_uppercases_and_replaces_dashes() {
        assert_eq!(env_port_suffix("metrics-http"), "METRICS_HTTP");
    }
}
