//! Classify, then decide: an app's instances split into disjoint named sets, each decision
//! reads only the sets it needs.

use jiff::{SignedDuration, Timestamp};

use baton_api::Goal;

use crate::snapshot::InstanceState;

/// How long a failed instance waits before it is replaced, so a command that crashes at
/// once does not spin (Marathon's default backoff starts at 1 second).
pub const RESTART_DELAY: SignedDuration = SignedDuration::from_secs(1);

/// An app's instances, in disjoint sets.
#[derive(Debug, Default)]
pub struct AppInstances<'s> {
    /// Wanted running, not over, at the app's current version.
    pub current: Vec<&'s InstanceState>,
    /// Wanted running, not over, at an older version: a deployment is in progress.
    pub old: Vec<&'s InstanceState>,
    /// Being stopped: the agent has not reported the end yet.
    pub stopping: Vec<&'s InstanceState>,
    /// Ended on their own less than [`RESTART_DELAY`] ago: each holds the place of its
    /// replacement until the delay passes.
    pub cooling: Vec<&'s InstanceState>,
    /// Over and done with: their records can go.
    pub finished: Vec<&'s InstanceState>,
}

impl<'s> AppInstances<'s> {
    /// Splits `instances` of an app whose current version is `version`.
    pub fn classify(instances: impl IntoIterator<Item = &'s InstanceState>, version: &str, now: Timestamp) -> Self {
        let mut sets = Self::default();
        for instance in instances {
            let set = match (instance.record.goal, instance.is_terminal()) {
                (Goal::Running, false) if instance.record.version == version => &mut sets.current,
                (Goal::Running, false) => &mut sets.old,
                (Goal::Stopped, false) => &mut sets.stopping,
                (Goal::Running, true) if replace_after(instance).is_some_and(|at| at > now) => &mut sets.cooling,
                (_, true) => &mut sets.finished,
            };
            set.push(instance);
        }
        sets
    }

    /// Instances of the current version that run.
    pub fn current_running(&self) -> usize {
        self.current.iter().filter(|i| i.is_running()).count()
    }

    /// When the first cooling instance may be replaced.
    pub fn next_replacement(&self) -> Option<Timestamp> {
        self.cooling.iter().filter_map(|i| replace_after(i)).min()
    }
}

/// When a terminated instance may be replaced: [`RESTART_DELAY`] after it ended. `None`
/// when the end time is unknown (replace at once).
fn replace_after(instance: &InstanceState) -> Option<Timestamp> {
    let ended = instance.status.as_ref()?.finished_at?;
    ended.checked_add(RESTART_DELAY).ok()
}

/// Orders candidates for a kill: instances not running yet first (stopping them costs no
/// capacity), then the youngest (Marathon's `YoungestFirst`), then by id.
pub fn kill_order(a: &&InstanceState, b: &&InstanceState) -> std::cmp::Ordering {
    a.is_running()
        .cmp(&b.is_running())
        .then_with(|| b.record.created_at.cmp(&a.record.created_at))
        .then_with(|| a.record.id.cmp(&b.record.id))
}
