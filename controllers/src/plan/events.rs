//! The events a plan reports: what the controller does and what it declines to do, in the
//! words `kubectl describe app` shows. Pure: built from the same data as the decisions.

use baton_api::{App, AppRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::health::Due;
pub use super::vocabulary::{Event, EventType, Regarding};
use super::vocabulary::{Launch, Stop, StopReason};

/// Names shown in a message before the rest are counted.
const LISTED: usize = 5;

/// `a, b, c and 4 more`.
pub(super) fn listing(items: &[String]) -> String {
    let shown = items.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    match items.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

pub(super) fn plural(n: usize, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

/// The app's reference.
pub fn app_ref(app: &App) -> AppRef {
    AppRef {
        namespace: app.metadata.namespace.clone().unwrap_or_default(),
        name: app.metadata.name.clone().unwrap_or_default(),
        uid: app.metadata.uid.clone().unwrap_or_default(),
    }
}

impl Event {
    /// An event about `app`.
    fn about(app: &App, type_: EventType, reason: &'static str, message: String, of_writes: bool) -> Self {
        Event { regarding: Regarding::App(app_ref(app)), type_, reason, message, of_writes }
    }
}

/// `Launched`: the instances placed this tick, and where. Launches in place of instances that
/// failed (a crash loop) say so in the same words each time, so the event's count grows
/// instead of a new event per failure (`kubectl get instances` names them).
pub fn launched(app: &App, version: &str, launches: &[Launch], relaunching: bool) -> Option<Event> {
    if launches.is_empty() {
        return None;
    }
    if relaunching {
        let message = match launches.len() {
            1 => format!("launched 1 instance of version {} in place of a failed one", short(version)),
            n => format!("launched {n} instances of version {} in place of failed ones", short(version)),
        };
        return Some(Event::about(app, EventType::Normal, "Launched", message, true));
    }
    let placed: Vec<String> = launches.iter().map(|l| format!("{} on {}", l.record.id, l.record.agent)).collect();
    Some(Event::about(
        app,
        EventType::Normal,
        "Launched",
        format!("launched {} of version {}: {}", plural(launches.len(), "instance"), short(version), listing(&placed)),
        true,
    ))
}

/// `Killing`: the instances stopped this tick, one event per reason.
pub fn killing(app: &App, version: &str, wanted: usize, stops: &[Stop]) -> Vec<Event> {
    // Health kills and users' kills have their own events.
    [StopReason::ScaledDown, StopReason::Upgraded, StopReason::AppDeleted, StopReason::Moved, StopReason::MoveForced]
        .into_iter()
        .filter_map(|reason| {
            let ids: Vec<String> = stops.iter().filter(|s| s.reason == reason).map(|s| s.record.id.clone()).collect();
            if ids.is_empty() {
                return None;
            }
            let why = match reason {
                StopReason::ScaledDown => format!("more than the {wanted} wanted"),
                StopReason::Upgraded => format!("replaced by version {}", short(version)),
                StopReason::AppDeleted => "the app was deleted".to_string(),
                StopReason::Unhealthy => "failing health checks".to_string(),
                StopReason::Killed => "a user asked".to_string(),
                StopReason::Moved => {
                    "their agents are in maintenance or being freed for a whole-agent instance; their replacements are \
                     healthy"
                        .to_string()
                }
                StopReason::MoveForced => {
                    "their agents drained longer than the maintenance's forceAfter; not replaced yet".to_string()
                }
                StopReason::Preempted => "another tenant below its guarantee needs the room".to_string(),
            };
            let (type_, name) = match reason {
                StopReason::MoveForced => (EventType::Warning, "DrainForced"),
                _ => (EventType::Normal, "Killing"),
            };
            Some(Event::about(
                app,
                type_,
                name,
                format!("stopping {} ({why}): {}", plural(ids.len(), "instance"), listing(&ids)),
                true,
            ))
        })
        .collect()
}

/// `Killing`: instances users asked to kill, `(id, agent, user)`; replacements follow as
/// for any missing instance.
pub fn user_kills(app: &App, killed: &[(String, String, String)]) -> Event {
    let each: Vec<String> =
        killed.iter().map(|(id, agent, user)| format!("{id} on {agent} (requested by {user})")).collect();
    Event::about(
        app,
        EventType::Normal,
        "Killing",
        format!("killing {}: {}", plural(killed.len(), "instance"), listing(&each)),
        true,
    )
}

/// `Killing` (a Warning): instances killed for failing their health checks, with how.
pub fn health_kills(app: &App, killed: &[Due<'_>]) -> Event {
    let each: Vec<String> = killed
        .iter()
        .map(|d| {
            let output = if d.output.is_empty() { String::new() } else { format!("; last: {}", d.output) };
            format!("{} on {} ({} failures in a row{output})", d.instance.id(), d.instance.record.agent, d.failures)
        })
        .collect();
    Event::about(
        app,
        EventType::Warning,
        "Killing",
        format!(
            "killing {} that failed health checks maxConsecutiveFailures times in a row: {}",
            plural(killed.len(), "instance"),
            listing(&each)
        ),
        true,
    )
}

/// `KillsWithheld`: the health policy spares instances that are due to be killed, reported
/// when that starts or its reason changes (not at every tick).
pub fn kills_withheld(app: &App, healthy: &Condition) -> Option<Event> {
    (healthy.reason == "KillsWithheld").then(|| warning_when_new(app, healthy, "KillsWithheld"))?
}

/// A warning with `condition`'s message, unless the app's status already had the same
/// condition (same status, reason and message): reported once, not at every tick.
fn warning_when_new(app: &App, condition: &Condition, reason: &'static str) -> Option<Event> {
    when_new(app, condition, EventType::Warning, reason)
}

/// An event with `condition`'s message, unless the app's status already had the same
/// condition.
fn when_new(app: &App, condition: &Condition, type_: EventType, reason: &'static str) -> Option<Event> {
    let before = app.status.as_ref().and_then(|s| s.condition(&condition.type_));
    if before
        .is_some_and(|b| b.status == condition.status && b.reason == condition.reason && b.message == condition.message)
    {
        return None;
    }
    Some(Event::about(app, type_, reason, condition.message.clone(), false))
}

/// `Scaled`: `spec.instances`, or the scale factor of the app's groups, changed since the
/// last status.
pub fn scaled(app: &App, wanted: usize) -> Option<Event> {
    let status = app.status.as_ref()?;
    let before = status.observed_instances?;
    let now = app.spec.instances;
    let message = if before != now {
        let scaled =
            if wanted as i32 != now { format!(" ({wanted} with its groups' scale factors)") } else { String::new() };
        format!("scaled from {before} to {now} instances{scaled}")
    } else if status.desired != wanted as i32 && status.id.is_some() {
        // (A status without an id predates `desired`, whose 0 there means nothing.)
        format!("scaled from {} to {wanted} instances by its groups' scale factors", status.desired)
    } else {
        return None;
    };
    Some(Event::about(app, EventType::Normal, "Scaled", message, false))
}

/// `WaitingForDependencies`: the app's start or move to a new version waits, reported when
/// that starts or what it waits for changes.
pub fn waiting(app: &App, dependencies: &Condition) -> Option<Event> {
    (dependencies.reason == "Waiting")
        .then(|| when_new(app, dependencies, EventType::Normal, "WaitingForDependencies"))?
}

/// `WaitingForDependents`: a deleted app keeps running until the apps deleted with it that
/// depend on it have stopped.
pub fn waiting_for_dependents(app: &App, progressing: &Condition) -> Option<Event> {
    (progressing.reason == "WaitingForDependents")
        .then(|| when_new(app, progressing, EventType::Normal, "WaitingForDependents"))?
}

/// `FailedScheduling`: instances cannot be placed, reported when that starts or the reason
/// changes (not at every tick).
pub fn failed_scheduling(app: &App, pending: &Condition) -> Option<Event> {
    (pending.status == "True").then(|| warning_when_new(app, pending, "FailedScheduling"))?
}

/// `BackOff`: instances of the current version ended on their own; launches back off. The
/// same failure gives the same words each time (no counts, ids or times), so a crash loop is
/// one event whose count grows; the app's status has the failures in a row and when the next
/// launch may be.
pub fn back_off(app: &App, version: &str, failed: usize, message: &str, delayed: bool) -> Event {
    let who = match failed {
        1 => "an instance".to_string(),
        n => format!("{n} instances"),
    };
    let then = if delayed { "; launches back off" } else { "" };
    Event::about(
        app,
        EventType::Warning,
        "BackOff",
        format!("{who} of version {} failed: {message}{then}", short(version)),
        false,
    )
}

/// `Lost`: instances whose process ended while their agent was not running (an agent restart
/// found them gone instead of adopting them); each is replaced as any missing instance.
pub fn lost(app: &App, lost: &[&crate::snapshot::InstanceState]) -> Event {
    let each: Vec<String> = lost
        .iter()
        .map(|i| {
            let why = i.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
            format!("{} on {} ({why})", i.record.id, i.record.agent)
        })
        .collect();
    Event::about(
        app,
        EventType::Warning,
        "Lost",
        format!("lost {}, replaced: {}", plural(lost.len(), "instance"), listing(&each)),
        true,
    )
}

/// `GracePeriodExceeded`: instances that did not stop within their grace period after
/// SIGTERM and were killed with SIGKILL (reported as their records go).
pub fn forced_kills(app: &App, gone: &[&crate::snapshot::InstanceState]) -> Option<Event> {
    let forced: Vec<String> = gone
        .iter()
        .filter_map(|i| {
            let grace = i.status.as_ref()?.forced_after_seconds?;
            Some(format!("{} on {} (grace period {grace} s)", i.record.id, i.record.agent))
        })
        .collect();
    (!forced.is_empty()).then(|| {
        Event::about(
            app,
            EventType::Warning,
            "GracePeriodExceeded",
            format!(
                "{} did not stop within the grace period after SIGTERM and {} killed with SIGKILL: {}",
                plural(forced.len(), "instance"),
                if forced.len() == 1 { "was" } else { "were" },
                listing(&forced)
            ),
            true,
        )
    })
}

/// `AgentUnreachable`: an agent with instances stopped reporting.
pub fn agent_unreachable(agent: &str, instances: usize) -> Event {
    Event {
        regarding: Regarding::Agent(agent.to_string()),
        type_: EventType::Warning,
        reason: "AgentUnreachable",
        message: format!(
            "agent {agent} stopped reporting; its {} count as unreachable and are replaced after each app's \
             unreachableStrategy.inactiveAfterSeconds",
            plural(instances, "instance")
        ),
        of_writes: false,
    }
}

/// The first 10 characters of a version hash: enough to tell versions apart in a message.
fn short(version: &str) -> &str {
    &version[..version.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_listings_are_counted() {
        let items: Vec<String> = (0..8).map(|i| format!("i{i}")).collect();
        assert_eq!(listing(&items), "i0, i1, i2, i3, i4 and 3 more");
        assert_eq!(listing(&items[..2]), "i0, i1");
        assert_eq!(plural(1, "instance"), "1 instance");
        assert_eq!(plural(3, "failure"), "3 failures");
    }
}
