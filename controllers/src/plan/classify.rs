//! Classify, then decide: an app's instances split into disjoint named sets, each decision
//! reads only the sets it needs.

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};

use baton_api::{Goal, KillSelection, Phase, UnreachableStrategy};

use rustc_hash::FxHashMap;

use crate::snapshot::{InstanceState, Key, Snapshot};

/// An app's instances, in disjoint sets.
#[derive(Debug, Default, Clone)]
pub struct AppInstances<'s> {
    /// Wanted running, not over, on a live agent, at the app's current version.
    pub current: Vec<&'s InstanceState>,
    /// Wanted running, not over, on a live agent, at an older version: a deployment is in
    /// progress.
    pub old: Vec<&'s InstanceState>,
    /// Wanted running, on an agent that stopped reporting less than `inactiveAfterSeconds`
    /// ago: each still holds its place.
    pub unreachable: Vec<&'s InstanceState>,
    /// Wanted running, on an agent gone longer than `inactiveAfterSeconds` (but less than
    /// `expungeAfterSeconds`): replaced, but counted again if the agent comes back.
    pub inactive: Vec<&'s InstanceState>,
    /// Being stopped: the agent has not reported the end yet.
    pub stopping: Vec<&'s InstanceState>,
    /// Wanted running at the current version, but their process ended on its own (failed,
    /// or exited), not counted yet: each is a failure for the launch backoff.
    pub failed: Vec<&'s InstanceState>,
    /// Wanted running, but lost (the process ended while its agent was not running), not
    /// reported yet.
    pub lost: Vec<&'s InstanceState>,
    /// Over and done with. Those that ended on their own (failed, finished, lost) are kept a
    /// while for their status and logs ([`Retention`]); those the controller stopped go at
    /// once, unless they hold a replacement slot.
    pub finished: Vec<&'s InstanceState>,
    /// On an agent gone longer than `expungeAfterSeconds`: their records go at once.
    pub expunged: Vec<&'s InstanceState>,
    /// The earliest moment a set changes by time alone.
    pub next_change: Option<Timestamp>,
    /// Counted while classifying, so that later stages need not visit every instance again
    /// (at 100,000 instances each such pass is ~100,000 cache misses).
    pub observed: Tally,
}

/// What classifying counted. As observed: a tick's later stages take instances out of
/// `current` and `old` (kills, moves; those moving are put back), never add others, and
/// these do not follow (see [`AppInstances::health_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// How many were in `current` and in `old`.
    pub current: usize,
    pub old: usize,
    pub counts: HealthCounts,
    /// Some instance of `current` or `old` is due to be killed for its health.
    pub kill_due: bool,
}

/// How the instances of `current` and `old` run: what an app's status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Their process runs.
    pub running: usize,
    /// Healthy (passing their health checks) and ready.
    pub ready: usize,
    /// Of `current`, healthy and ready: what counts towards capacity.
    pub available: usize,
    /// Running, and passing every health check; failing one; neither known yet.
    pub passing: usize,
    pub failing: usize,
    pub unknown: usize,
}

impl HealthCounts {
    fn add(&mut self, instance: &InstanceState, current: bool) {
        if !instance.is_running() {
            return;
        }
        self.running += 1;
        let healthy = instance.is_healthy();
        self.ready += usize::from(healthy);
        self.available += usize::from(healthy && current);
        if instance.passes_health_checks() {
            self.passing += 1;
        } else if instance.fails_health_checks() {
            self.failing += 1;
        } else {
            self.unknown += 1;
        }
    }

    fn plus(&mut self, other: Self) {
        let Self { running, ready, available, passing, failing, unknown } = other;
        self.running += running;
        self.ready += ready;
        self.available += available;
        self.passing += passing;
        self.failing += failing;
        self.unknown += unknown;
    }

    fn of(sets: &AppInstances<'_>) -> Self {
        let mut counts = Self::default();
        sets.current.iter().for_each(|i| counts.add(i, true));
        sets.old.iter().for_each(|i| counts.add(i, false));
        counts
    }
}

/// Whether an instance's agent reports, and since when it does not: known once per agent,
/// so that classifying an instance looks nothing up while every agent reports.
pub struct Reachability {
    /// Agents holding instances that do not report, and since when.
    gone: FxHashMap<String, Timestamp>,
    now: Timestamp,
}

impl Reachability {
    /// For the agents of every instance of the snapshot.
    pub fn new(snapshot: &Snapshot, now: Timestamp) -> Self {
        Self::of(snapshot, snapshot.instances.values().map(|i| i.record.agent.as_str()), now)
    }

    /// For `agents` (those holding instances; those that report are left out).
    pub fn of<'a>(snapshot: &Snapshot, agents: impl IntoIterator<Item = &'a str>, now: Timestamp) -> Self {
        let gone = agents
            .into_iter()
            .filter(|agent| !snapshot.agents.contains_key(*agent))
            .map(|agent| (agent.to_string(), snapshot.unreachable.get(agent).map_or(now, |marker| marker.since)))
            .collect();
        Self { gone, now }
    }

    /// `None` while the agent reports; else since when it does not (as marked in the store,
    /// or now if this is the first tick to notice).
    pub fn unreachable_since(&self, agent: &str) -> Option<Timestamp> {
        if self.gone.is_empty() {
            return None;
        }
        self.gone.get(agent).copied()
    }
}

impl<'s> AppInstances<'s> {
    /// Splits `instances` of an app whose current version is `version`.
    pub fn classify(
        instances: impl IntoIterator<Item = &'s InstanceState>,
        version: &str,
        strategy: UnreachableStrategy,
        reach: &Reachability,
    ) -> Self {
        let now = reach.now;
        let version_key = Key::of(version);
        let mut sets = Self::default();
        let instances = instances.into_iter();
        // Usually every one is current: one allocation, not one per doubling.
        sets.current.reserve(instances.size_hint().0);
        let inactive_after = SignedDuration::from_secs(strategy.inactive_after_seconds.max(0));
        let expunge_after = SignedDuration::from_secs(strategy.expunge_after_seconds.max(0));
        for instance in instances {
            let goal = instance.goal();
            let set = if instance.is_terminal() {
                let ended_on_its_own = matches!(instance.phase(), Some(Phase::Failed | Phase::Finished));
                let unnoted = goal == Goal::Running && !instance.record.end_noted;
                if unnoted && ended_on_its_own && instance.runs_version(version, version_key) {
                    &mut sets.failed
                } else if unnoted && instance.phase() == Some(Phase::Lost) {
                    &mut sets.lost
                } else {
                    &mut sets.finished
                }
            } else if let Some(since) = reach.unreachable_since(&instance.record.agent) {
                let (inactive_at, expunge_at) = (since + inactive_after, since + expunge_after);
                if expunge_at <= now {
                    &mut sets.expunged
                } else if goal == Goal::Stopped {
                    sets.note_change(expunge_at);
                    &mut sets.stopping
                } else if inactive_at <= now {
                    sets.note_change(expunge_at);
                    &mut sets.inactive
                } else {
                    sets.note_change(inactive_at);
                    &mut sets.unreachable
                }
            } else if goal == Goal::Stopped {
                &mut sets.stopping
            } else {
                let current = instance.runs_version(version, version_key);
                sets.observed.counts.add(instance, current);
                sets.observed.kill_due |= instance.kill_due();
                if current { &mut sets.current } else { &mut sets.old }
            };
            set.push(instance);
        }
        (sets.observed.current, sets.observed.old) = (sets.current.len(), sets.old.len());
        sets
    }

    /// Its nine sets, in the order they are declared: for what treats every set alike (every
    /// field named, so that a set added is not left out).
    pub fn sets(&self) -> [&Vec<&'s InstanceState>; 9] {
        let Self {
            current,
            old,
            unreachable,
            inactive,
            stopping,
            failed,
            lost,
            finished,
            expunged,
            next_change: _,
            observed: _,
        } = self;
        [current, old, unreachable, inactive, stopping, failed, lost, finished, expunged]
    }

    fn sets_mut(&mut self) -> [&mut Vec<&'s InstanceState>; 9] {
        let Self {
            current,
            old,
            unreachable,
            inactive,
            stopping,
            failed,
            lost,
            finished,
            expunged,
            next_change: _,
            observed: _,
        } = self;
        [current, old, unreachable, inactive, stopping, failed, lost, finished, expunged]
    }

    /// Adds what classifying a later run of the same app's instances found (in id order, so
    /// each set stays in id order).
    pub fn absorb(&mut self, mut later: Self) {
        for (mine, theirs) in self.sets_mut().into_iter().zip(later.sets_mut()) {
            mine.append(theirs);
        }
        if let Some(at) = later.next_change {
            self.note_change(at);
        }
        let Tally { current: _, old: _, counts, kill_due } = later.observed;
        self.observed.counts.plus(counts);
        self.observed.kill_due |= kill_due;
        (self.observed.current, self.observed.old) = (self.current.len(), self.old.len());
    }

    fn note_change(&mut self, at: Timestamp) {
        self.next_change = Some(self.next_change.map_or(at, |t| t.min(at)));
    }

    /// Instances whose process may still run: wanted, being stopped, or out of reach.
    pub fn live(&self) -> usize {
        self.current.len() + self.old.len() + self.unreachable.len() + self.inactive.len() + self.stopping.len()
    }

    /// Instances of the current version that are healthy.
    pub fn current_healthy(&self) -> usize {
        self.health_counts().available
    }

    /// How the instances of `current` and `old` run: as counted when classified while both
    /// hold as many as then (they only ever lose instances, so then they hold the same), else
    /// counted again.
    pub fn health_counts(&self) -> HealthCounts {
        if (self.current.len(), self.old.len()) == (self.observed.current, self.observed.old) {
            debug_assert_eq!(self.observed.counts, HealthCounts::of(self), "current or old gained an instance");
            return self.observed.counts;
        }
        HealthCounts::of(self)
    }
}

/// How long instances that ended on their own (failed, finished or lost) are kept, with their
/// sandboxes and logs, so that a crash loop's output can be read after the fact (as Mesos
/// keeps sandboxes): the last `per_app` of each app, each for at most `max_age` after it
/// ended. Instances the controller stopped go at once (their app wanted them gone), and
/// records of deleted apps go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub per_app: usize,
    pub max_age: SignedDuration,
}

impl Default for Retention {
    /// The last 5 of each app, for an hour.
    fn default() -> Self {
        Self { per_app: 5, max_age: SignedDuration::from_secs(3600) }
    }
}

impl Retention {
    /// Of an app's ended instances, those whose records go now: the ones the controller
    /// stopped, and of those that ended on their own all but the latest `per_app` younger than
    /// `max_age`. `hold` marks records that stay whatever (replacement slots). Also returns
    /// when the oldest kept one is due to go.
    pub fn apply<'s>(
        &self,
        finished: &[&'s InstanceState],
        hold: impl Fn(&InstanceState) -> bool,
        now: Timestamp,
    ) -> (Vec<&'s InstanceState>, Option<Timestamp>) {
        let ended_at = |i: &InstanceState| i.status.as_ref().and_then(|s| s.finished_at).unwrap_or(i.record.created_at);
        let on_its_own = |i: &&InstanceState| matches!(i.phase(), Some(Phase::Failed | Phase::Finished | Phase::Lost));
        let (mut kept, mut remove): (Vec<&'s InstanceState>, Vec<&'s InstanceState>) =
            finished.iter().copied().filter(|i| !hold(i)).partition(on_its_own);
        kept.sort_by(|a, b| (ended_at(b), b.id()).cmp(&(ended_at(a), a.id())));
        let mut due: Option<Timestamp> = None;
        for (rank, instance) in kept.into_iter().enumerate() {
            let expires = ended_at(instance) + self.max_age;
            if rank >= self.per_app || expires <= now {
                remove.push(instance);
            } else {
                due = Some(due.map_or(expires, |d| d.min(expires)));
            }
        }
        (remove, due)
    }
}

/// The order in which instances are stopped when there are too many: those not running yet
/// first, then those failing their health checks (stopping either costs no capacity), then
/// those whose health is not known yet (they may be warming up), then healthy ones; within
/// each, by `killSelection`, then by id.
pub fn kill_order(selection: KillSelection) -> impl Fn(&&InstanceState, &&InstanceState) -> Ordering {
    move |a, b| {
        let by_age = match selection {
            KillSelection::YoungestFirst => b.record.created_at.cmp(&a.record.created_at),
            KillSelection::OldestFirst => a.record.created_at.cmp(&b.record.created_at),
        };
        a.health_state().cmp(&b.health_state()).then(by_age).then_with(|| a.record.id.cmp(&b.record.id))
    }
}
