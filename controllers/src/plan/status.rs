//! The status an app should have, computed from the same classification as the decisions,
//! and compared with the status it has so the executor writes only what changed.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use baton_api::app::{
    AppStatus, CONDITION_AVAILABLE, CONDITION_DEPENDENCIES, CONDITION_HEALTHY, CONDITION_PENDING,
    CONDITION_PROGRESSING, LastFailure, PendingSummary, Rejection, ReplacementSlot,
};
use baton_api::{App, BackoffRecord};

use super::classify::{AppInstances, HealthCounts};
use super::vocabulary::Basis;
use crate::snapshot::{HealthState, InstanceState};

/// Why an app is not fully placed, for its `Pending` condition and `status.pending`.
pub struct Unplaced {
    pub count: usize,
    /// e.g. "3 agents: insufficient mem".
    pub why: String,
    /// `(reason, agents)`, the most common first.
    pub rejections: Vec<(String, usize)>,
}

/// Instances due to be killed for failing health checks that the health policy spares.
pub struct Withheld {
    pub instances: Vec<String>,
    /// Instances that pass their health checks.
    pub healthy: usize,
    /// Instances being replaced.
    pub in_flight: usize,
    pub policy: super::health::Policy,
    /// `minHealthyRatio` as written.
    pub ratio: f64,
}

/// A replacement slot the app holds after this tick (see [`super::slots`]).
pub struct HeldSlot<'s> {
    /// The instance killed for its health.
    pub killed: &'s InstanceState,
    /// What fills it, if anything does.
    pub filler: Option<Filler<'s>>,
}

/// The instance filling a replacement slot.
pub enum Filler<'s> {
    /// Launched before this tick.
    Running(&'s InstanceState),
    /// Launched this tick, by id.
    Launched(String),
}

impl HeldSlot<'_> {
    /// The slot as `status.replacements` shows it: what it waits for, in words that stay the
    /// same from tick to tick while nothing changes.
    fn describe(&self, progress: &Progress<'_>) -> ReplacementSlot {
        let killed = self.killed.id().to_string();
        let (replacement, waiting_for) = match &self.filler {
            Some(Filler::Launched(id)) => (Some(id.clone()), format!("{id} to start")),
            Some(Filler::Running(r)) => {
                let in_a_row = r.record.run.health_checks.iter().filter_map(|c| c.kill_after()).max().unwrap_or(1);
                let waits = match r.health_state() {
                    HealthState::NotRunning => "to start".to_string(),
                    HealthState::Failing => "to pass its health checks (it fails them)".to_string(),
                    HealthState::Unknown => "to pass its health checks".to_string(),
                    HealthState::Healthy => format!("to pass its health checks {in_a_row} times in a row"),
                };
                (Some(r.id().to_string()), format!("{} {waits}", r.id()))
            }
            None => {
                let why = if let Some(until) = progress.backing_off {
                    format!("a launch after the backoff, at {}", whole_second(until))
                } else if let Some(unplaced) = &progress.unplaced {
                    format!("an agent with room: {}", unplaced.why)
                } else if progress.gated {
                    "the app's dependencies, before a launch".to_string()
                } else if !self.killed.is_terminal() {
                    format!("{killed} to stop, before its replacement starts (maximumOverCapacity)")
                } else {
                    "a launch".to_string()
                };
                (None, why)
            }
        };
        ReplacementSlot { killed, replacement, waiting_for }
    }
}

/// `t` rounded up to the second: an absolute time that reads well and stays the same.
fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second() + i64::from(t.subsec_nanosecond() > 0)).unwrap_or(t)
}

/// A deleted app's instances stopping.
pub struct Deletion {
    /// Apps deleted with it that depend on it and still run: it stops after them.
    pub dependents: Vec<String>,
    /// Its instances whose process may still run.
    pub left: usize,
}

/// What this tick decided for the app, beyond its instance sets.
pub struct Progress<'a> {
    /// Instances wanted: `spec.instances` scaled by the app's groups.
    pub wanted: usize,
    pub unplaced: Option<Unplaced>,
    pub backoff: Option<&'a BackoffRecord>,
    /// Launches wait until then.
    pub backing_off: Option<Timestamp>,
    pub now: Timestamp,
    pub health: Option<&'a Withheld>,
    /// The replacement slots held after this tick.
    pub slots: &'a [HeldSlot<'a>],
    /// Dependencies that are not available.
    pub waits: &'a [super::groups::Wait],
    /// Whether they hold the app back (it is starting or moving to a new version).
    pub gated: bool,
    pub deletion: Option<&'a Deletion>,
}

/// The status `app` should have now.
pub fn desired(app: &App, version: &str, sets: &AppInstances<'_>, progress: &Progress<'_>) -> AppStatus {
    let wanted = progress.wanted;
    let HealthCounts { running, ready, available, passing: healthy, failing: unhealthy, unknown: health_unknown } =
        sets.health_counts();
    let unreachable = sets.unreachable.len() + sets.inactive.len();
    let placed = sets.current.len() + sets.old.len();
    let previous = app.status.as_ref();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_string();
        // The transition time moves only when the condition's status does.
        let since = previous
            .and_then(|s| s.condition(type_))
            .filter(|c| c.status == status)
            .map_or(Time(progress.now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: app.metadata.generation,
        }
    };
    let is_available = available >= wanted && sets.old.is_empty();
    let available_condition = condition(
        CONDITION_AVAILABLE,
        is_available,
        if is_available { "AllInstancesAvailable" } else { "InstancesUnavailable" },
        format!("{available} of {wanted} instances are healthy at the current version"),
    );
    let pending = match &progress.unplaced {
        Some(u) => condition(
            CONDITION_PENDING,
            true,
            "Unschedulable",
            format!("{} of {wanted} instances cannot be placed: {}", u.count, u.why),
        ),
        None => condition(CONDITION_PENDING, false, "AllPlaced", "every instance is placed on an agent".into()),
    };
    let waiting_for = if progress.gated { progress.waits.iter().map(|w| w.path.clone()).collect() } else { Vec::new() };
    let mut conditions = Vec::with_capacity(6); // Five, and at times `Planned`.
    conditions.extend([
        available_condition,
        progressing(version, sets, progress, &condition),
        pending,
        health_condition(app, wanted, running, unhealthy, progress.health, &condition),
    ]);
    if progress.deletion.is_none() {
        conditions.push(dependencies_condition(version, sets, progress, &condition));
    }
    let state = state(sets, progress, unhealthy, available);
    AppStatus {
        launch_request: None,
        observed_generation: app.metadata.generation,
        observed_instances: Some(app.spec.instances),
        id: Some(app.path().to_string()),
        state: Some(state.to_string()),
        failures: progress.backoff.map_or(0, |b| b.failures.min(i32::MAX as u32) as i32),
        desired: wanted as i32,
        waiting_for,
        instances: (placed + unreachable) as i32,
        running: running as i32,
        staged: (placed - running) as i32,
        healthy: healthy as i32,
        unhealthy: unhealthy as i32,
        health_unknown: health_unknown as i32,
        replacements: progress.slots.iter().map(|s| s.describe(progress)).collect(),
        unreachable: unreachable as i32,
        updated: sets.current.len() as i32,
        ready: ready as i32,
        available: available as i32,
        version: Some(version.to_string()),
        pending: progress.unplaced.as_ref().map(|u| PendingSummary {
            instances: u.count as i32,
            rejections: u
                .rejections
                .iter()
                .map(|(reason, agents)| Rejection { reason: reason.clone(), agents: *agents as i32 })
                .collect(),
        }),
        last_failure: progress.backoff.and_then(|b| b.last_failure.as_ref()).map(LastFailure::from),
        conditions,
    }
}

/// What the app is doing, in one word (`status.state`, the `STATE` column): the first that
/// holds of Deleting, Stopped, Waiting, Pending, BackingOff, Deploying, Unhealthy, Scaling,
/// else Running.
fn state(sets: &AppInstances<'_>, progress: &Progress<'_>, unhealthy: usize, available: usize) -> &'static str {
    let wanted = progress.wanted;
    let settled = sets.current.len() == wanted && available >= wanted && sets.stopping.is_empty();
    if progress.deletion.is_some() {
        "Deleting"
    } else if wanted == 0 && sets.live() == 0 {
        "Stopped"
    } else if progress.gated {
        "Waiting"
    } else if progress.unplaced.is_some() {
        "Pending"
    } else if progress.backing_off.is_some() && !settled {
        "BackingOff"
    } else if !sets.old.is_empty() {
        "Deploying"
    } else if unhealthy > 0 || progress.health.is_some() {
        "Unhealthy"
    } else if !settled {
        "Scaling"
    } else {
        "Running"
    }
}

/// `Dependencies`: `True` while everything the app depends on is available; `False` with
/// what is not — `Waiting` when that holds back its start or its move to a new version,
/// `Unavailable` when the app runs its current version anyway.
fn dependencies_condition(
    version: &str,
    sets: &AppInstances<'_>,
    progress: &Progress<'_>,
    condition: &dyn Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    let waits = super::groups::Wait::describe(progress.waits);
    if progress.gated {
        let what = if sets.old.is_empty() { "starting".to_string() } else { format!("moving to version {version}") };
        return condition(CONDITION_DEPENDENCIES, false, "Waiting", format!("waiting for {waits} before {what}"));
    }
    if !progress.waits.is_empty() {
        return condition(
            CONDITION_DEPENDENCIES,
            false,
            "Unavailable",
            format!("not available: {waits}; the app keeps running, but a new version would wait for them"),
        );
    }
    condition(CONDITION_DEPENDENCIES, true, "Available", "every dependency is available".into())
}

/// `Healthy`: `True` while no running instance fails a health check; `False`/`Unhealthy`
/// when some do; `False`/`KillsWithheld` when the health policy spares some that are due.
fn health_condition(
    app: &App,
    wanted: usize,
    running: usize,
    unhealthy: usize,
    withheld: Option<&Withheld>,
    condition: &dyn Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    if let Some(w) = withheld {
        return condition(
            CONDITION_HEALTHY,
            false,
            "KillsWithheld",
            format!(
                "not killing {} that fail their health checks: only {} of {wanted} instances are healthy \
                 (minHealthyRatio {}) and {} being replaced (maxConcurrentReplacements {}): {}",
                super::events::plural(w.instances.len(), "instance"),
                w.healthy,
                w.ratio,
                if w.in_flight == 1 { "1 is".to_string() } else { format!("{} are", w.in_flight) },
                w.policy.replacements,
                super::events::listing(&w.instances)
            ),
        );
    }
    if unhealthy > 0 {
        return condition(
            CONDITION_HEALTHY,
            false,
            "Unhealthy",
            format!("{unhealthy} of {running} running instances fail their health checks"),
        );
    }
    let message = if app.spec.health_checks.is_empty() {
        "no health checks: running instances count as healthy".to_string()
    } else {
        format!("no running instance fails its health checks ({running} running)")
    };
    condition(CONDITION_HEALTHY, true, "AllHealthy", message)
}

/// `Progressing`: `False`/`Stuck` when no progress is possible or `WaitingForDependencies`,
/// else `True` with what is under way — `Deleting` (or `WaitingForDependents`), `Backoff`,
/// `Deploying`, `Scaling` — or `Complete`.
fn progressing(
    version: &str,
    sets: &AppInstances<'_>,
    progress: &Progress<'_>,
    condition: &dyn Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    let wanted = progress.wanted;
    let available = sets.current_healthy();
    if let Some(deletion) = progress.deletion {
        return match deletion.dependents.as_slice() {
            [] => condition(
                CONDITION_PROGRESSING,
                true,
                "Deleting",
                format!("stopping {}", super::events::plural(deletion.left, "instance")),
            ),
            dependents => condition(
                CONDITION_PROGRESSING,
                true,
                "WaitingForDependents",
                format!("deleted: stopping after the apps that depend on it: {}", super::events::listing(dependents)),
            ),
        };
    }
    if progress.gated {
        let waits = super::groups::Wait::describe(progress.waits);
        return condition(CONDITION_PROGRESSING, false, "WaitingForDependencies", format!("waiting for {waits}"));
    }
    let in_flight =
        !sets.old.is_empty() || !sets.stopping.is_empty() || sets.current.len() != wanted || available < wanted;
    if let Some(unplaced) = &progress.unplaced {
        return condition(
            CONDITION_PROGRESSING,
            false,
            "Stuck",
            format!("{} of {wanted} instances cannot be placed: {}", unplaced.count, unplaced.why),
        );
    }
    if let (Some(until), Some(backoff)) = (progress.backing_off, progress.backoff)
        && in_flight
    {
        // An absolute time: the message stays the same from tick to tick.
        let until = whole_second(until);
        let last = backoff.last_failure.as_ref().map(|f| format!("; the last: {}", f.message)).unwrap_or_default();
        return condition(
            CONDITION_PROGRESSING,
            true,
            "Backoff",
            format!("launching again at {until} after {} failure(s) in a row{last}", backoff.failures),
        );
    }
    if !sets.old.is_empty() {
        return condition(
            CONDITION_PROGRESSING,
            true,
            "Deploying",
            format!(
                "{} of {wanted} instances updated to version {version}, {available} healthy",
                sets.current.len().min(wanted)
            ),
        );
    }
    if in_flight {
        return condition(CONDITION_PROGRESSING, true, "Scaling", format!("{available} of {wanted} instances healthy"));
    }
    condition(CONDITION_PROGRESSING, true, "Complete", format!("{wanted} instances run version {version}"))
}

/// The [`Basis`] of `app`'s status with `progress`; `None` when out of the ordinary, or the
/// App has no resourceVersion or uid (not read from the API server).
pub fn basis(app: &App, sets: &AppInstances<'_>, progress: &Progress<'_>) -> Option<Basis> {
    let Progress { wanted, unplaced, backoff, backing_off, now: _, health, slots, waits, gated, deletion } = progress;
    let ordinary = unplaced.is_none()
        && backoff.is_none()
        && backing_off.is_none()
        && health.is_none()
        && slots.is_empty()
        && waits.is_empty()
        && !gated
        && deletion.is_none();
    let resource_version = app.metadata.resource_version.clone().filter(|_| ordinary && app.metadata.uid.is_some())?;
    let health = sets.health_counts();
    let sets = sets.sets().map(|set| set.len());
    Some(Basis { resource_version, wanted: *wanted, sets, health })
}

/// `Some(desired)` when it differs from what the app has.
pub fn changed(app: &App, desired: AppStatus) -> Option<AppStatus> {
    (app.status.as_ref() != Some(&desired)).then_some(desired)
}
