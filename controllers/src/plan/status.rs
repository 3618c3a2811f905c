//! The status an app should have, computed from the same classification as the decisions,
//! and compared with the status it has so the executor writes only what changed.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use baton_api::App;
use baton_api::app::{AppStatus, CONDITION_AVAILABLE, CONDITION_PENDING};

use super::classify::AppInstances;

/// Why an app is not fully placed, for its `Pending` condition.
pub struct Unplaced {
    pub count: usize,
    /// e.g. "3 agents: insufficient mem".
    pub why: String,
}

/// The status `app` should have now.
pub fn desired(
    app: &App,
    version: &str,
    sets: &AppInstances<'_>,
    unplaced: Option<&Unplaced>,
    now: Timestamp,
) -> AppStatus {
    let wanted = app.spec.instances.max(0) as usize;
    let reachable = sets.current.iter().chain(&sets.old);
    let running = reachable.filter(|i| i.is_running()).count();
    let unreachable = sets.unreachable.len() + sets.inactive.len();
    let instances = sets.current.len() + sets.old.len() + unreachable;
    let current_running = sets.current_running();
    let available = sets.old.is_empty() && current_running >= wanted;
    let previous = app.status.as_ref();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_string();
        // The transition time moves only when the condition's status does.
        let since = previous
            .and_then(|s| s.condition(type_))
            .filter(|c| c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: app.metadata.generation,
        }
    };
    let available = condition(
        CONDITION_AVAILABLE,
        available,
        if available { "AllInstancesRunning" } else { "InstancesNotRunning" },
        format!("{current_running} of {wanted} instances run the current version"),
    );
    let pending = match unplaced {
        Some(u) => condition(
            CONDITION_PENDING,
            true,
            "Unschedulable",
            format!("{} of {wanted} instances cannot be placed: {}", u.count, u.why),
        ),
        None => condition(CONDITION_PENDING, false, "AllPlaced", "every instance is placed on an agent".into()),
    };
    AppStatus {
        observed_generation: app.metadata.generation,
        instances: instances as i32,
        running: running as i32,
        staged: (sets.current.len() + sets.old.len() - running) as i32,
        unreachable: unreachable as i32,
        version: Some(version.to_string()),
        conditions: vec![available, pending],
    }
}

/// `Some(desired)` when it differs from what the app has.
pub fn changed(app: &App, desired: AppStatus) -> Option<AppStatus> {
    (app.status.as_ref() != Some(&desired)).then_some(desired)
}
