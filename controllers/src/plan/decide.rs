//! Stage 3, decide: for each app, from its observed sets and its gate — what goes (records of
//! ended instances, beyond retention), what is killed (users' kill requests, health kills
//! within the health policy), one bounded step of scaling or deployment ([`super::deploy`]),
//! the launch backoff, and how many instances to launch: its **launch demand**. Nothing is
//! placed here; the place stage places every app's demand through one placer.
//!
//! Also decided here, for the whole snapshot: instances of apps that no longer exist stop
//! (or their records go), backoffs of apps that no longer exist go, and kill requests whose
//! instance is gone are forgotten.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use baton_api::app::STOP_FINALIZER;
use baton_api::{App, BackoffRecord, Failure, Goal, Phase, Scope};

use super::classify::{AppInstances, Reachability, kill_order};
use super::events::{self, Event};
use super::groups::Gate;
use super::maintain::Drains;
use super::observe::ObservedApp;
use super::place::Demand;
use super::slots::Slots;
use super::status::{self, Filler, HeldSlot};
use super::vocabulary::{
    BackoffChange, Counted, FinalizerChange, KillDone, PlanContext, Removal, SlotRelease, Stop, StopReason, min_time,
};
use super::{deploy, health};
use crate::snapshot::{HealthState, InstanceState, Snapshot};

/// Failures counted per app per tick, so that a backoff change and the marks of what it counts
/// fit in one transaction.
const MAX_FAILURES_PER_TICK: usize = 100;

/// What the decide stage decided for one app.
pub struct Decision<'s> {
    pub app: &'s App,
    /// The version its instances should run.
    pub version: String,
    pub stops: Vec<Stop>,
    pub removals: Vec<Removal>,
    pub slot_releases: Vec<SlotRelease>,
    /// Lost instances, reported.
    pub noted: Vec<Counted>,
    pub backoff_change: Option<BackoffChange>,
    pub finalizer: Option<FinalizerChange>,
    /// What was decided, said as events, in the order it was decided.
    pub events: Vec<Event>,
    pub next_wakeup: Option<Timestamp>,
    /// The app's instances after this tick's kills (the killed ones are `stopping`).
    pub sets: AppInstances<'s>,
    pub course: Course<'s>,
    /// Its instances on agents in maintenance that wait to move, and why.
    pub moving: Option<Moving<'s>>,
    /// Deciding about it failed this tick, and why: it does nothing, and says so.
    pub failed: Option<String>,
}

/// Instances on agents in maintenance still there after this tick, and why they wait.
pub struct Moving<'s> {
    pub left: Vec<&'s InstanceState>,
    /// `Replacing`, `MaxConcurrentStarts`, `BackingOff` or `Dependencies` (the report stage
    /// says `NoRoom` when a replacement found no agent).
    pub reason: &'static str,
    pub message: String,
}

/// Whether the app runs or is being deleted, and what follows from it.
pub enum Course<'s> {
    /// Deleted: its instances stop after those of its dependents. `left` of them may still
    /// run; with none left and no record, the finalizer comes off and the App goes (no status).
    Deleting {
        left: usize,
        gone: bool,
    },
    Running(Box<Running<'s>>),
}

/// What the report stage needs of a running app's decisions.
pub struct Running<'s> {
    /// The backoff in force after this tick.
    pub backoff: Option<BackoffRecord>,
    /// Launches wait until then.
    pub backing_off: Option<Timestamp>,
    pub health: HealthKills<'s>,
    /// The replacement slots held after this tick's stops and kills; launches fill the empty
    /// ones.
    pub slots: Vec<HeldSlot<'s>>,
    /// Held back by its dependencies.
    pub gated: bool,
    /// Its launch demand: how many instances to place.
    pub launch: usize,
}

/// What the health policy did for an app this tick.
pub struct HealthKills<'s> {
    /// Due instances spared, and why.
    pub withheld: Option<status::Withheld>,
    /// Instances killed this tick that take a replacement slot of their own (those that
    /// refilled a held slot take none).
    pub new_slots: Vec<&'s InstanceState>,
}

/// Decisions about what belongs to no app of the snapshot.
#[derive(Default)]
pub struct Leftovers {
    pub stops: Vec<Stop>,
    pub removals: Vec<Removal>,
    pub backoffs: Vec<BackoffChange>,
    pub kills_done: Vec<KillDone>,
}

/// What the decide stage decided: one decision per app, in the observed order, and the
/// leftovers.
pub struct Decided<'s> {
    pub apps: Vec<Decision<'s>>,
    pub leftovers: Leftovers,
}

impl<'s> Decided<'s> {
    /// Every app's launch demand, in the apps' order; the apps are `scope`'s.
    pub fn demand<'d>(&'d self, scope: &'d Scope) -> Vec<Demand<'d>> {
        self.apps
            .iter()
            .enumerate()
            .filter_map(|(index, d)| match &d.course {
                Course::Running(running) if running.launch > 0 => {
                    Some(Demand { index, scope, app: d.app, version: &d.version, count: running.launch })
                }
                _ => None,
            })
            .collect()
    }
}

/// The decide stage, over the observed apps (their sets, with their gates) and the instances
/// of apps that no longer exist.
pub fn decide<'s>(
    snapshot: &'s Snapshot,
    reach: &Reachability,
    apps: Vec<ObservedApp<'s>>,
    orphans: &[&'s InstanceState],
    gates: &[Gate],
    drains: &Drains,
    ctx: &PlanContext,
) -> Decided<'s> {
    let leftovers = leftovers(snapshot, orphans, reach);
    // Each app on its own, the apps in parts of about as many instances side by side.
    let parts = crate::parallel::parts_by_weight(apps.len(), ctx.threads, crate::parallel::MIN_PER_PART, |i| {
        apps[i].sets.live() + 1
    });
    let gates: Vec<&[Gate]> = parts.iter().map(|part| &gates[part.clone()]).collect();
    let parts: Vec<_> = crate::parallel::split_owned(apps, &parts).into_iter().zip(gates).collect();
    let apps = crate::parallel::map(parts, |(apps, gates)| {
        apps.into_iter()
            .zip(gates)
            .map(|(app, gate)| match app.app.metadata.deletion_timestamp {
                Some(_) => deleting(app, gate),
                None => isolated(app, gate, snapshot, drains, ctx),
            })
            .collect::<Vec<_>>()
    });
    Decided { apps: crate::parallel::concat(apps), leftovers }
}

fn stop(instance: &InstanceState, reason: StopReason) -> Stop {
    Stop {
        record: (*instance.record).clone(),
        revision: instance.revision,
        reason,
        grace_seconds: None,
        takes_slot: false,
    }
}

fn removal(instance: &InstanceState) -> Removal {
    Removal { agent: instance.record.agent.clone(), id: instance.record.id.clone(), revision: instance.revision }
}

/// A decision about `app` with nothing decided yet.
fn empty<'s>(app: &'s App, version: String) -> Decision<'s> {
    Decision {
        app,
        version,
        stops: Vec::new(),
        removals: Vec::new(),
        slot_releases: Vec::new(),
        noted: Vec::new(),
        backoff_change: None,
        finalizer: None,
        events: Vec::new(),
        next_wakeup: None,
        sets: AppInstances::default(),
        course: Course::Deleting { left: 0, gone: false },
        moving: None,
        failed: None,
    }
}

impl Decision<'_> {
    /// Removes the records of `instances`, reporting those whose process had to be killed
    /// with SIGKILL after its grace period.
    fn remove(&mut self, app: &App, instances: &[&InstanceState]) {
        self.removals.extend(instances.iter().map(|i| removal(i)));
        self.events.extend(events::forced_kills(app, instances));
    }
}

/// A deleted App (it has a deletion timestamp, and the controller's finalizer holds it):
/// its instances stop — after those of the apps deleted with it that depend on it — and once
/// none is left, the finalizer comes off and the App goes.
fn deleting<'s>(observed: ObservedApp<'s>, gate: &Gate) -> Decision<'s> {
    let ObservedApp { app, version, sets, .. } = observed;
    let mut decision = empty(app, version);
    let gone: Vec<&InstanceState> =
        sets.finished.iter().chain(&sets.failed).chain(&sets.lost).chain(&sets.expunged).copied().collect();
    decision.remove(app, &gone);
    decision.next_wakeup = sets.next_change;
    let running: Vec<&InstanceState> = sets.current.iter().chain(&sets.old).copied().collect();
    if gate.dependents.is_empty() {
        decision.stops.extend(running.iter().map(|i| stop(i, StopReason::AppDeleted)));
        // On an agent that is gone, the record goes at once (the agent stops the process if
        // it comes back).
        decision.removals.extend(sets.unreachable.iter().chain(&sets.inactive).map(|i| removal(i)));
    }
    let left = running.len() + sets.unreachable.len() + sets.inactive.len() + sets.stopping.len();
    let records = left + sets.failed.len() + sets.lost.len() + sets.finished.len() + sets.expunged.len();
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    let gone = records == 0 && finalizers.iter().any(|f| f == STOP_FINALIZER);
    if gone {
        let without_ours = finalizers.into_iter().filter(|f| f != STOP_FINALIZER).collect();
        decision.finalizer = Some(FinalizerChange::of(app, without_ours));
    }
    decision.course = Course::Deleting { left, gone };
    decision.sets = sets;
    decision
}

/// A running app: what goes, what is killed, one bounded step, the backoff, the demand.
fn running<'s>(
    observed: ObservedApp<'s>,
    gate: &Gate,
    snapshot: &Snapshot,
    drains: &Drains,
    ctx: &PlanContext,
) -> Decision<'s> {
    let ObservedApp { app, version, sets, .. } = observed;
    #[cfg(test)]
    if POISONED.with(|p| p.borrow().iter().any(|uid| app.metadata.uid.as_deref() == Some(uid.as_str()))) {
        panic!("poisoned for a test");
    }
    let wanted = gate.wanted;
    let spec = &app.spec;
    let mut d = empty(app, version.clone());
    d.finalizer = finalizer(app);

    // Records of instances killed for their health are kept while their replacement slot is
    // held: they are the slot.
    let slots = Slots::of(&sets, wanted);
    let (ended, expires) = ctx.retention.apply(&sets.finished, |i| slots.holds(i), ctx.now);
    let gone: Vec<&InstanceState> = ended.iter().chain(&sets.expunged).copied().collect();
    d.remove(app, &gone);
    d.next_wakeup = min_time(expires, sets.next_change);
    // Released slots are unmarked, unless their record goes now anyway.
    let going: BTreeSet<&str> = gone.iter().map(|i| i.id()).collect();
    d.slot_releases.extend(
        slots
            .released
            .iter()
            .filter(|i| !going.contains(i.id()))
            .map(|i| SlotRelease { record: (*i.record).clone(), revision: i.revision }),
    );
    // Lost instances are reported once (and replaced, as any missing instance).
    if !sets.lost.is_empty() {
        d.events.push(events::lost(app, &sets.lost));
        d.noted.extend(sets.lost.iter().map(|i| Counted { record: (*i.record).clone(), revision: i.revision }));
    }
    let order = kill_order(spec.kill_selection);

    let backoff = backoff(app, snapshot, &version, &sets, ctx, &mut d);
    let mut sets = sets;
    let stops_before = d.stops.len();
    kill_requested(app, &mut sets, snapshot, &mut d);
    let health = kill_unhealthy(app, &mut sets, wanted, &slots, &mut d);
    let (mut leaving_healthy, mut leaving_failing, mut leaving_other) = (Vec::new(), Vec::new(), Vec::new());
    for i in leaving(&mut sets, drains, &mut d) {
        match (i.health_state(), i.ever_healthy()) {
            (HealthState::Healthy, _) => leaving_healthy.push(i),
            (_, true) => leaving_failing.push(i),
            _ => leaving_other.push(i),
        }
    }

    let mut old_healthy: Vec<&'s InstanceState> = Vec::new();
    let mut old_unknown: Vec<&'s InstanceState> = Vec::new();
    let mut old_failing: Vec<&'s InstanceState> = Vec::new();
    let mut old_unhealthy: Vec<&'s InstanceState> = Vec::new();
    for &i in &sets.old {
        match (i.health_state(), i.ever_healthy()) {
            (HealthState::Healthy, _) => old_healthy.push(i),
            (_, true) => old_failing.push(i),
            (HealthState::Unknown, false) => old_unknown.push(i),
            (HealthState::NotRunning | HealthState::Failing, false) => old_unhealthy.push(i),
        }
    }
    let mut step = deploy::step(
        deploy::Counts {
            wanted,
            current: sets.current.len(),
            current_healthy: sets.current_healthy(),
            unreachable: sets.unreachable.len(),
            old_healthy: old_healthy.len(),
            old_unknown: old_unknown.len(),
            old_unhealthy: old_unhealthy.len(),
            old_failing: old_failing.len(),
            stopping: sets.stopping.len(),
            leaving_healthy: leaving_healthy.len(),
            leaving_failing: leaving_failing.len(),
            leaving_other: leaving_other.len(),
        },
        deploy::Strategy::of(spec),
    );
    let backing_off = backoff.as_ref().and_then(|b| b.delay_until).filter(|until| *until > ctx.now);
    if let Some(until) = backing_off {
        step.launch = 0;
        d.next_wakeup = min_time(d.next_wakeup, Some(until));
    }
    // Starting (nothing placed) or moving to a new version waits for the dependencies; an
    // app already running its current version keeps scaling and replacing.
    let starting = sets.current.is_empty() && sets.unreachable.is_empty() && sets.inactive.is_empty() && wanted > 0;
    let gated = !gate.waits.is_empty() && (starting || !sets.old.is_empty());
    if gated {
        step = deploy::Step { excess: step.excess, ..deploy::Step::default() };
        old_unhealthy.clear();
    }

    // The first `n` of `set`: on agents in maintenance first (in drain order), then in kill
    // order (sorted only when some are taken).
    let first = |set: &[&'s InstanceState], n: usize| -> Vec<&'s InstanceState> {
        if n == 0 {
            return Vec::new();
        }
        let mut sorted = set.to_vec();
        sorted
            .sort_by(|a, b| drains.rank(&a.record.agent).cmp(&drains.rank(&b.record.agent)).then_with(|| order(a, b)));
        sorted.truncate(n);
        sorted
    };
    d.stops.extend(old_unhealthy.iter().map(|i| stop(i, StopReason::Upgraded)));
    let upgraded = [
        first(&old_failing, step.stop_old_failing),
        first(&old_unknown, step.stop_old_unknown),
        first(&old_healthy, step.stop_old_healthy),
    ];
    d.stops.extend(upgraded.iter().flatten().map(|i| stop(i, StopReason::Upgraded)));

    // Excess places go in this order: unreachable instances, then current ones (those
    // not running yet, then not healthy, then by killSelection).
    let unreachable = first(&sets.unreachable, step.excess);
    d.stops.extend(unreachable.iter().map(|i| stop(i, StopReason::ScaledDown)));
    let excess = step.excess.saturating_sub(sets.unreachable.len());
    d.stops.extend(first(&sets.current, excess).iter().map(|i| stop(i, StopReason::ScaledDown)));

    // Leaving instances: those that carry nothing go at once; healthy ones as their
    // replacements prove healthy, in drain order (an agent empties before the next).
    let split = |set: &[&'s InstanceState], n: usize| {
        let (moved, left) = set.split_at(n.min(set.len()));
        (moved.to_vec(), left.to_vec())
    };
    let (other_moved, other_left) = split(&leaving_other, step.stop_leaving_other);
    let (failing_moved, failing_left) = split(&leaving_failing, step.stop_leaving_failing);
    let (healthy_moved, healthy_left) = split(&leaving_healthy, step.stop_leaving_healthy);
    let moved: Vec<&'s InstanceState> = [other_moved, failing_moved, healthy_moved].concat();
    d.stops.extend(moved.iter().map(|i| stop(i, StopReason::Moved)));
    let left: Vec<&'s InstanceState> = [healthy_left, failing_left, other_left].concat();
    if !left.is_empty() {
        let starting = sets.current.len() - sets.current_healthy() + step.launch;
        let (reason, message) = if backing_off.is_some() {
            ("BackingOff", "replacements wait for the app's launch backoff".to_string())
        } else if gated {
            ("Dependencies", "replacements wait for the app's dependencies".to_string())
        } else if let Some(max) = spec.upgrade_strategy.max_concurrent_starts.filter(|m| starting >= *m as usize) {
            (
                "MaxConcurrentStarts",
                format!("{starting} instances are starting; maxConcurrentStarts allows {max} at once"),
            )
        } else {
            (
                "Replacing",
                format!(
                    "{} of {wanted} healthy off agents in maintenance; each moving instance stops once its \
                     replacement is healthy and ready",
                    sets.current_healthy()
                ),
            )
        };
        d.moving = Some(Moving { left: left.clone(), reason, message });
    }
    // They still run and serve: the status counts them.
    sets.current.extend(left);
    sets.stopping.extend(moved);

    let slots = slots_after(&slots, &health.new_slots, &d.stops[stops_before..]);
    d.sets = sets;
    d.course = Course::Running(Box::new(Running { backoff, backing_off, health, slots, gated, launch: step.launch }));
    d
}

/// Takes the app's instances on agents in maintenance out of `current` (they hold no place:
/// each is replaced elsewhere first), in drain order; stops at once what is left on agents
/// drained past their Maintenance's `forceAfter`.
fn leaving<'s>(sets: &mut AppInstances<'s>, drains: &Drains, d: &mut Decision<'s>) -> Vec<&'s InstanceState> {
    if drains.is_empty() {
        return Vec::new();
    }
    let mut forced: Vec<&'s InstanceState> = Vec::new();
    for set in [&mut sets.current, &mut sets.old] {
        set.retain(|&i| {
            let force = drains.forces(&i.record.agent);
            if force {
                forced.push(i);
            }
            !force
        });
    }
    d.stops.extend(forced.iter().map(|i| stop(i, StopReason::MoveForced)));
    sets.stopping.extend(forced);
    let (mut leaving, staying): (Vec<&'s InstanceState>, Vec<&'s InstanceState>) =
        sets.current.iter().partition(|i| drains.moves_off(&i.record.agent));
    sets.current = staying;
    leaving.sort_by(|a, b| {
        (drains.rank(&a.record.agent), &a.record.agent, &a.record.id).cmp(&(
            drains.rank(&b.record.agent),
            &b.record.agent,
            &b.record.id,
        ))
    });
    leaving
}

#[cfg(test)]
thread_local! {
    /// Apps (uids) whose decision panics, for the tests of [`isolated`] (on the test's thread:
    /// the small snapshots these tests plan are decided on the caller's thread alone).
    pub static POISONED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`running`], isolated: if deciding about one app fails (a bug, or an object stored under
/// older rules that breaks an assumption), that app does nothing this tick and says why in
/// its status; the rest of the cluster is planned as usual.
fn isolated<'s>(
    observed: ObservedApp<'s>,
    gate: &Gate,
    snapshot: &'s Snapshot,
    drains: &Drains,
    ctx: &PlanContext,
) -> Decision<'s> {
    let (app, version, sets) = (observed.app, observed.version.clone(), observed.sets.clone());
    let decided =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| running(observed, gate, snapshot, drains, ctx)));
    match decided {
        Ok(decision) => decision,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let mut d = empty(app, version);
            d.sets = sets;
            d.failed = Some(why);
            d.course = Course::Running(Box::new(Running {
                backoff: None,
                backing_off: None,
                health: HealthKills { withheld: None, new_slots: Vec::new() },
                slots: Vec::new(),
                gated: false,
                launch: 0,
            }));
            d
        }
    }
}

/// Puts the controller's finalizer on an App that lacks it, so that deleting the App stops
/// its instances (in dependency order) before the App goes.
fn finalizer(app: &App) -> Option<FinalizerChange> {
    let finalizers = app.metadata.finalizers.as_deref().unwrap_or_default();
    if finalizers.iter().any(|f| f == STOP_FINALIZER) {
        return None;
    }
    let with_ours = finalizers.iter().cloned().chain([STOP_FINALIZER.to_string()]).collect();
    Some(FinalizerChange::of(app, with_ours))
}

/// Kills the instances users asked to kill (`kubectl delete instance`), at once and
/// whatever the policies, as Marathon's kill and Kubernetes' pod deletion do; moves them out
/// of the sets that count, so the rest of the tick launches their replacements. One on an
/// agent that stopped reporting loses its record at once (should the agent come back, it
/// stops the process of an instance it no longer has a record of).
fn kill_requested(app: &App, sets: &mut AppInstances<'_>, snapshot: &Snapshot, d: &mut Decision<'_>) {
    if snapshot.kill_requests.is_empty() {
        return;
    }
    let namespace = app.metadata.namespace.clone().unwrap_or_default();
    // This namespace's requests, by instance id.
    let requests: BTreeMap<&str, &baton_api::KillRequest> = snapshot
        .kill_requests
        .range((namespace.clone(), String::new())..)
        .take_while(|((ns, _), _)| *ns == namespace)
        .map(|((_, id), (request, _))| (id.as_str(), request.as_ref()))
        .collect();
    if requests.is_empty() {
        return;
    }
    let request = |i: &InstanceState| requests.get(i.record.id.as_str()).copied();
    let mut killed: Vec<(String, String, String)> = Vec::new();
    for set in [&mut sets.current, &mut sets.old] {
        set.retain(|&i| {
            let Some(request) = request(i) else { return true };
            d.stops.push(Stop { grace_seconds: request.grace_seconds, ..stop(i, StopReason::Killed) });
            killed.push((i.record.id.clone(), i.record.agent.clone(), request.user.clone()));
            sets.stopping.push(i);
            false
        });
    }
    for set in [&mut sets.unreachable, &mut sets.inactive] {
        set.retain(|&i| {
            let Some(request) = request(i) else { return true };
            d.removals.push(removal(i));
            killed.push((i.record.id.clone(), i.record.agent.clone(), request.user.clone()));
            false
        });
    }
    if !killed.is_empty() {
        d.events.push(events::user_kills(app, &killed));
    }
}

/// Kills (stops) the instances due for failing their health checks that the app's health
/// policy allows, and moves them to the app's `stopping` set so the rest of the tick counts
/// them as gone (and launches their replacements).
fn kill_unhealthy<'s>(
    app: &App,
    sets: &mut AppInstances<'s>,
    wanted: usize,
    slots: &Slots<'s>,
    d: &mut Decision<'s>,
) -> HealthKills<'s> {
    // The usual case, known without visiting the instances again: none is due (the sets
    // have only lost instances since they were counted).
    if !sets.observed.kill_due {
        return HealthKills { withheld: None, new_slots: Vec::new() };
    }
    let live: Vec<&'s InstanceState> = sets.current.iter().chain(&sets.old).copied().collect();
    let policy = health::Policy::of(&app.spec, wanted);
    let decision = health::decide(wanted, &live, slots, policy);
    let new_slots: Vec<&'s InstanceState> =
        decision.kill.iter().map(|due| due.instance).filter(|i| !slots.fills(i)).collect();
    if !decision.kill.is_empty() {
        let killed: BTreeSet<&str> = decision.kill.iter().map(|due| due.instance.id()).collect();
        sets.current.retain(|i| !killed.contains(i.id()));
        sets.old.retain(|i| !killed.contains(i.id()));
        sets.stopping.extend(decision.kill.iter().map(|due| due.instance));
        d.stops.extend(
            decision.kill.iter().map(|due| Stop {
                takes_slot: !slots.fills(due.instance),
                ..stop(due.instance, StopReason::Unhealthy)
            }),
        );
        d.events.push(events::health_kills(app, &decision.kill));
    }
    if decision.withheld.is_empty() {
        return HealthKills { withheld: None, new_slots };
    }
    // By id, so the status and its event change only when the set does.
    let mut withheld: Vec<String> = decision.withheld.iter().map(|due| due.instance.id().to_string()).collect();
    withheld.sort();
    let withheld = status::Withheld {
        instances: withheld,
        healthy: decision.healthy,
        in_flight: decision.in_flight + new_slots.len(),
        policy,
        ratio: app.spec.health_policy.min_healthy_ratio,
    };
    HealthKills { withheld: Some(withheld), new_slots }
}

/// The replacement slots an app holds after this tick's stops and kills, each with what fills
/// it; launches fill the empty ones.
fn slots_after<'s>(slots: &Slots<'s>, new_slots: &[&'s InstanceState], stopped: &[Stop]) -> Vec<HeldSlot<'s>> {
    let stopped: BTreeSet<&str> = stopped.iter().map(|s| s.record.id.as_str()).collect();
    let kept = slots.held.iter().map(|s| HeldSlot {
        killed: s.killed,
        filler: s.replacement.filter(|r| !stopped.contains(r.id())).map(Filler::Running),
    });
    kept.chain(new_slots.iter().map(|&killed| HeldSlot { killed, filler: None })).collect()
}

/// The app's backoff after this tick: failures of the current version are counted (and
/// their records marked in the same write); a new version, or an instance of the current one
/// that has run for longer than the delay, starts it afresh. Returns the backoff that holds
/// from now on.
fn backoff(
    app: &App,
    snapshot: &Snapshot,
    version: &str,
    sets: &AppInstances<'_>,
    ctx: &PlanContext,
    d: &mut Decision<'_>,
) -> Option<BackoffRecord> {
    let key = (app.metadata.namespace.clone().unwrap_or_default(), app.metadata.name.clone().unwrap_or_default());
    let stored = snapshot.backoffs.get(&key);
    if stored.is_none() && sets.failed.is_empty() {
        return None; // Nothing to remember (the usual case: checked before anything is built).
    }
    let (namespace, name) = key;
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let fresh = BackoffRecord {
        uid: uid.clone(),
        version: version.to_string(),
        failures: 0,
        delay_until: None,
        last_failure: None,
    };
    let mut next = match stored {
        Some((record, _)) if record.uid == uid && record.version == version => (**record).clone(),
        // Another app of that name, or another version: start afresh (the last failure of
        // the same app is kept for its status).
        Some((record, _)) if record.uid == uid => BackoffRecord { last_failure: record.last_failure.clone(), ..fresh },
        _ => fresh,
    };
    let backoff = app.spec.backoff;
    if next.failures > 0 {
        let delay = SignedDuration::from_millis(backoff.delay_millis(next.failures).max(1000) as i64);
        let recovered = sets
            .current
            .iter()
            .any(|i| i.is_healthy() && i.running_since().is_some_and(|since| since + delay <= ctx.now));
        if recovered {
            next.failures = 0;
            next.delay_until = None;
        }
    }
    let counted: Vec<&InstanceState> = sets.failed.iter().copied().take(MAX_FAILURES_PER_TICK).collect();
    if !counted.is_empty() {
        next.failures = next.failures.saturating_add(counted.len() as u32);
        let delay = SignedDuration::from_millis(backoff.delay_millis(next.failures) as i64);
        next.delay_until = Some(ctx.now + delay);
        let last = counted
            .iter()
            .max_by_key(|i| (i.status.as_ref().and_then(|s| s.finished_at), i.record.id.clone()))
            .expect("not empty");
        let status = last.status.as_ref();
        next.last_failure = Some(Failure {
            instance: last.record.id.clone(),
            agent: last.record.agent.clone(),
            version: last.record.run.version.clone(),
            phase: last.phase().unwrap_or(Phase::Failed),
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
            time: status.and_then(|s| s.finished_at).unwrap_or(ctx.now),
        });
        let last_message = next.last_failure.as_ref().map_or("", |f| f.message.as_str());
        d.events.push(events::back_off(app, version, counted.len(), last_message, !delay.is_zero()));
    } else if next.failures == 0 && next.last_failure.is_none() && stored.is_none() {
        return None; // Nothing to remember.
    }
    if stored.map(|(record, _)| record.as_ref()) != Some(&next) {
        d.backoff_change = Some(BackoffChange {
            namespace,
            name,
            next: Some(next.clone()),
            revision: stored.map_or(0, |(_, revision)| *revision),
            counted: counted.iter().map(|i| Counted { record: (*i.record).clone(), revision: i.revision }).collect(),
        });
    }
    Some(next)
}

/// What belongs to no app of the snapshot: instances of deleted apps stop (or, ended or on an
/// agent that is gone, lose their record: should the agent come back, it stops the process
/// of an instance it no longer has a record of); backoffs of deleted apps go; kill requests
/// whose instance is gone are forgotten (the request was written after the instance, so a
/// snapshot that has the request would have the instance).
fn leftovers(snapshot: &Snapshot, orphans: &[&InstanceState], reach: &Reachability) -> Leftovers {
    let mut left = Leftovers::default();
    let live: BTreeSet<(&str, &str)> = snapshot
        .apps
        .iter()
        .map(|a| (a.metadata.namespace.as_deref().unwrap_or_default(), a.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    for ((namespace, name), (_, revision)) in &snapshot.backoffs {
        if !live.contains(&(namespace.as_str(), name.as_str())) {
            let (namespace, name) = (namespace.clone(), name.clone());
            left.backoffs.push(BackoffChange { namespace, name, next: None, revision: *revision, counted: Vec::new() });
        }
    }
    for ((namespace, id), (_, revision)) in &snapshot.kill_requests {
        if snapshot.instances.get(id).is_none_or(|i| i.record.run.app.namespace != *namespace) {
            left.kills_done.push(KillDone { namespace: namespace.clone(), id: id.clone(), revision: *revision });
        }
    }
    for &instance in orphans {
        let gone = reach.unreachable_since(&instance.record.agent).is_some();
        match (instance.record.goal, instance.is_terminal()) {
            (_, true) => left.removals.push(removal(instance)),
            (_, false) if gone => left.removals.push(removal(instance)),
            (Goal::Running, false) => left.stops.push(stop(instance, StopReason::AppDeleted)),
            (Goal::Stopped, false) => {} // The agent is on it.
        }
    }
    left
}
