//! The planner: `plan(&Snapshot, &PlanContext) -> Plan`, a pure function.
//!
//! No I/O, no awaiting, no clock: `now` and the seed for ids and ports are passed in, and
//! everything else is in the snapshot. Every decision is recomputed from the full view at
//! every tick, so a leader that takes over mid-deployment decides exactly what the old one
//! would have.
//!
//! First, agents that stopped reporting get a marker with the time (kept in the store, so a
//! new leader measures from the same moment). Then per app, in (namespace, name) order:
//! classify its instances ([`classify`]), kill those users asked to kill, and those failing
//! their health checks within the app's health policy ([`health`]), compute one bounded
//! step from counts ([`deploy`]), pick the instances to stop, place the launches
//! ([`crate::schedule`]), and compute its status ([`status`]). Instances whose app is gone
//! are stopped, and kill requests whose instance is gone are forgotten. One placer serves
//! the whole plan, so its placements see each other.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use baton_api::app::STOP_FINALIZER;
use baton_api::constraints::Constraint;
use baton_api::records::{AssignedPort, Command};
use baton_api::{App, AppGroupStatus, AppRef, AppStatus, BackoffRecord, Failure, Goal, InstanceRecord, Phase};
use baton_store::Revision;

use crate::schedule::{Fit, Placer, PortAsk, Request};
use crate::snapshot::{HealthState, InstanceState, Snapshot};

pub mod classify;
pub mod deploy;
pub mod events;
pub mod groups;
pub mod health;
pub mod slots;
pub mod status;

pub use classify::Retention;
use classify::{AppInstances, Reachability, kill_order};
use groups::{Availabilities, Availability, Topology, Wait};

/// What the planner is given besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    pub now: Timestamp,
    /// Randomness for instance ids and port choice, drawn by the caller.
    pub seed: u64,
    /// How long ended instances are kept.
    pub retention: Retention,
}

impl PlanContext {
    /// A tick at `now`, with the default retention of ended instances.
    pub fn at(now: Timestamp, seed: u64) -> Self {
        Self { now, seed, retention: Retention::default() }
    }
}

/// Why an instance is stopped. Constant strings: they end up in the instance record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The spec asks for fewer instances.
    ScaledDown,
    /// The app was deleted.
    AppDeleted,
    /// A newer version replaces it.
    Upgraded,
    /// It failed a health check `maxConsecutiveFailures` times in a row.
    Unhealthy,
    /// A user asked (`kubectl delete instance`).
    Killed,
}

impl StopReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaledDown => "ScaledDown",
            StopReason::AppDeleted => "AppDeleted",
            StopReason::Upgraded => "Upgraded",
            StopReason::Unhealthy => "Unhealthy",
            StopReason::Killed => "Killed",
        }
    }
}

/// A new instance on an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub record: InstanceRecord,
}

/// An instance to stop: its record's goal becomes `Stopped`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub record: InstanceRecord,
    /// The record's revision the decision was made on.
    pub revision: Revision,
    pub reason: StopReason,
    /// SIGTERM to SIGKILL, if not the app's (a user's kill request may say).
    pub grace_seconds: Option<u32>,
    /// A health kill that takes a replacement slot: the record is marked to hold it.
    pub takes_slot: bool,
}

/// A replacement slot released: the killed instance's record loses its mark (it goes when the
/// retention of ended instances says).
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRelease {
    pub record: InstanceRecord,
    pub revision: Revision,
}

/// A record that is over and can be deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub agent: String,
    pub id: String,
    pub revision: Revision,
}

/// A note that an agent stopped reporting at `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub agent: String,
    pub since: Timestamp,
}

/// A note to forget: the agent is back, or nothing of it is left.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmark {
    pub agent: String,
    pub revision: Revision,
}

/// A change of an app's launch backoff, written in one transaction with the marks on the
/// failed instances it counts (`endNoted`) — so a failure is counted exactly once, and
/// the failed instance's record stays for its status and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffChange {
    pub namespace: String,
    pub name: String,
    /// The new record; `None` deletes it (the app is gone).
    pub next: Option<BackoffRecord>,
    /// The revision of the record the change was made on (0: there was none).
    pub revision: Revision,
    /// The failed instances counted in `next`.
    pub counted: Vec<Counted>,
}

/// An ended instance whose end is noted (counted in its app's backoff, or reported lost): its
/// record is marked (`endNoted`), at the revision read.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub record: InstanceRecord,
    pub revision: Revision,
}

/// A user's kill request to forget: its instance is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct KillDone {
    pub namespace: String,
    pub id: String,
    pub revision: Revision,
}

/// A status to write to an app.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: AppStatus,
}

/// A status to write to an AppGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: AppGroupStatus,
}

/// The controller's finalizer goes on an App ([`baton_api::app::STOP_FINALIZER`]), or comes
/// off once nothing of a deleted App runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalizerChange {
    pub namespace: String,
    pub name: String,
    /// The App's finalizers after the change.
    pub finalizers: Vec<String>,
    /// The resourceVersion the change was decided on: the write is refused if it moved.
    pub resource_version: String,
}

impl FinalizerChange {
    /// `app`'s finalizers to become `finalizers`, on the version of `app` read.
    fn of(app: &App, finalizers: Vec<String>) -> Self {
        Self {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            finalizers,
            resource_version: app.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// Everything one tick decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub launches: Vec<Launch>,
    pub stops: Vec<Stop>,
    pub slot_releases: Vec<SlotRelease>,
    /// Ended instances whose end is noted (lost ones, reported), apart from a backoff.
    pub noted: Vec<Counted>,
    pub removals: Vec<Removal>,
    pub statuses: Vec<StatusUpdate>,
    pub group_statuses: Vec<GroupStatusUpdate>,
    pub finalizers: Vec<FinalizerChange>,
    pub marks: Vec<Mark>,
    pub unmarks: Vec<Unmark>,
    pub backoffs: Vec<BackoffChange>,
    /// Users' kill requests whose instances are gone.
    pub kills_done: Vec<KillDone>,
    /// What to report as Kubernetes events.
    pub events: Vec<events::Event>,
    /// Instances due to be killed for failing health checks that the health policy spares
    /// this tick (for metrics; the apps' statuses and events say why).
    pub withheld_kills: Vec<String>,
    /// When the next decision that depends on time falls due (a replacement delay ends, an
    /// unreachable instance becomes inactive or is expunged).
    pub next_wakeup: Option<Timestamp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
            && self.stops.is_empty()
            && self.slot_releases.is_empty()
            && self.noted.is_empty()
            && self.removals.is_empty()
            && self.statuses.is_empty()
            && self.group_statuses.is_empty()
            && self.finalizers.is_empty()
            && self.marks.is_empty()
            && self.unmarks.is_empty()
            && self.backoffs.is_empty()
            && self.kills_done.is_empty()
            && self.events.is_empty()
    }
}

/// Plans one tick.
pub fn plan(snapshot: &Snapshot, ctx: &PlanContext) -> Plan {
    let mut plan = Plan::default();
    let reach = Reachability::new(snapshot, ctx.now);
    mark_unreachable_agents(snapshot, ctx, &mut plan);
    let mut by_app: BTreeMap<&str, Vec<&InstanceState>> = BTreeMap::new();
    for instance in snapshot.instances.values() {
        by_app.entry(instance.record.app.uid.as_str()).or_default().push(instance);
    }
    // Groups first: whether an app may start or move to a new version, and when a deleted
    // app may stop, depends on the others — so every app is classified before any is planned.
    let topology = Topology::new(&snapshot.apps, &snapshot.groups);
    let mut prepared = Vec::with_capacity(snapshot.apps.len());
    let mut availability = Availabilities::new();
    for app in &snapshot.apps {
        let uid = app.metadata.uid.as_deref().unwrap_or_default();
        let instances = by_app.remove(uid).unwrap_or_default();
        let version = app.version();
        let deleting = app.metadata.deletion_timestamp.is_some();
        let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
        let path = app.path();
        let wanted = if deleting { 0 } else { topology.wanted(namespace, &path, app.spec.instances) };
        let sets = AppInstances::classify(instances, &version, app.spec.unreachable_strategy, &reach);
        let state = Availability {
            wanted,
            available: sets.current_healthy(),
            old: sets.old.len(),
            live: sets.live(),
            deleting,
            version: version.clone(),
        };
        availability.entry(namespace.to_string()).or_default().insert(path.clone(), state);
        prepared.push(Prepared { app, namespace, path, version, wanted, sets });
    }
    let mut placer = Placer::new(snapshot);
    let mut ids = IdSource::new(ctx.seed);
    for app in prepared {
        if let Some(deleted) = app.app.metadata.deletion_timestamp.as_ref().map(|t| t.0) {
            let dependents = topology.stopping_dependents(app.namespace, &app.path, deleted, &availability, ctx.now);
            let settled = deleted + groups::DELETION_SETTLE;
            if settled > ctx.now {
                plan.next_wakeup = min_time(plan.next_wakeup, Some(settled));
            }
            plan_deletion(app, &dependents, ctx, &mut plan);
        } else {
            ensure_finalizer(app.app, &mut plan);
            let waits = topology.waits(app.namespace, &app.path, &availability);
            plan_app(app, &waits, snapshot, ctx, &mut placer, &mut ids, &mut plan);
        }
    }
    for (group, status) in topology.group_statuses(&snapshot.groups, &availability, ctx.now) {
        plan.group_statuses.push(GroupStatusUpdate {
            namespace: group.metadata.namespace.clone().unwrap_or_default(),
            name: group.metadata.name.clone().unwrap_or_default(),
            status,
        });
    }
    // Backoffs of apps that no longer exist go.
    let live: BTreeSet<(&str, &str)> = snapshot
        .apps
        .iter()
        .map(|a| (a.metadata.namespace.as_deref().unwrap_or_default(), a.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    for ((namespace, name), (_, revision)) in &snapshot.backoffs {
        if !live.contains(&(namespace.as_str(), name.as_str())) {
            let (namespace, name) = (namespace.clone(), name.clone());
            plan.backoffs.push(BackoffChange { namespace, name, next: None, revision: *revision, counted: Vec::new() });
        }
    }
    // Kill requests are kept until their instance is gone (the request was written after the
    // instance, so a snapshot that has the request would have the instance).
    for ((namespace, id), (_, revision)) in &snapshot.kill_requests {
        if snapshot.instances.get(id).is_none_or(|i| i.record.app.namespace != *namespace) {
            plan.kills_done.push(KillDone { namespace: namespace.clone(), id: id.clone(), revision: *revision });
        }
    }
    // What is left belongs to apps that no longer exist.
    for instance in by_app.into_values().flatten() {
        let gone = reach.unreachable_since(&instance.record.agent).is_some();
        match (instance.record.goal, instance.is_terminal()) {
            // On an agent that is gone, the record goes at once: should the agent come
            // back, it stops the process of an instance it no longer has a record of.
            (_, true) => plan.removals.push(removal(instance)),
            (_, false) if gone => plan.removals.push(removal(instance)),
            (Goal::Running, false) => plan.stops.push(stop(instance, StopReason::AppDeleted)),
            (Goal::Stopped, false) => {} // The agent is on it.
        }
    }
    plan
}

/// Notes in the store since when each agent with instances has stopped reporting (so that
/// every leader measures `unreachableStrategy` from the same moment), and forgets the note
/// once the agent is back or none of its instances is left.
fn mark_unreachable_agents(snapshot: &Snapshot, ctx: &PlanContext, plan: &mut Plan) {
    let with_instances: BTreeSet<&str> = snapshot.instances.values().map(|i| i.record.agent.as_str()).collect();
    for agent in &with_instances {
        if !snapshot.agents.contains_key(*agent) && !snapshot.unreachable.contains_key(*agent) {
            plan.marks.push(Mark { agent: agent.to_string(), since: ctx.now });
            let count = snapshot.instances.values().filter(|i| i.record.agent == *agent && !i.is_terminal()).count();
            plan.events.push(events::agent_unreachable(agent, count));
        }
    }
    for (agent, marker) in &snapshot.unreachable {
        if snapshot.agents.contains_key(agent) || !with_instances.contains(agent.as_str()) {
            plan.unmarks.push(Unmark { agent: agent.clone(), revision: marker.revision });
        }
    }
}

/// Failures counted per app per tick, so that a backoff change and the marks of what it counts
/// fit in one transaction.
const MAX_FAILURES_PER_TICK: usize = 100;

/// An app, classified, before it is planned.
struct Prepared<'s> {
    app: &'s App,
    namespace: &'s str,
    /// The app's id (`/group/name`).
    path: baton_api::GroupPath,
    version: String,
    /// `spec.instances` scaled by the app's groups (0 for an app being deleted).
    wanted: usize,
    sets: AppInstances<'s>,
}

/// Puts the controller's finalizer on an App that lacks it, so that deleting the App stops
/// its instances (in dependency order) before the App goes.
fn ensure_finalizer(app: &App, plan: &mut Plan) {
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == STOP_FINALIZER) {
        return;
    }
    let with_ours = finalizers.into_iter().chain([STOP_FINALIZER.to_string()]).collect();
    plan.finalizers.push(FinalizerChange::of(app, with_ours));
}

/// A deleted App (it has a deletion timestamp, and the controller's finalizer holds it):
/// its instances stop — after those of the apps deleted with it that depend on it — and once
/// none is left, the finalizer comes off and the App goes.
fn plan_deletion(app: Prepared<'_>, dependents: &[String], ctx: &PlanContext, plan: &mut Plan) {
    let Prepared { app, version, sets, .. } = app;
    let stops_before = plan.stops.len();
    let gone: Vec<&InstanceState> =
        sets.finished.iter().chain(&sets.failed).chain(&sets.lost).chain(&sets.expunged).copied().collect();
    remove(app, &gone, plan);
    plan.next_wakeup = min_time(plan.next_wakeup, sets.next_change);
    let running: Vec<&InstanceState> = sets.current.iter().chain(&sets.old).copied().collect();
    if dependents.is_empty() {
        plan.stops.extend(running.iter().map(|i| stop(i, StopReason::AppDeleted)));
        // On an agent that is gone, the record goes at once (the agent stops the process if
        // it comes back).
        plan.removals.extend(sets.unreachable.iter().chain(&sets.inactive).map(|i| removal(i)));
    }
    let left = running.len() + sets.unreachable.len() + sets.inactive.len() + sets.stopping.len();
    let records = left + sets.failed.len() + sets.lost.len() + sets.finished.len() + sets.expunged.len();
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    if records == 0 && finalizers.iter().any(|f| f == STOP_FINALIZER) {
        let without_ours = finalizers.into_iter().filter(|f| f != STOP_FINALIZER).collect();
        plan.finalizers.push(FinalizerChange::of(app, without_ours));
        return; // The App goes: no status to write.
    }
    plan.events.extend(events::killing(app, &version, 0, &plan.stops[stops_before..]));
    let deletion = status::Deletion { dependents: dependents.to_vec(), left };
    let progress = status::Progress {
        wanted: 0,
        unplaced: None,
        backoff: None,
        backing_off: None,
        now: ctx.now,
        health: None,
        slots: &[],
        waits: &[],
        gated: false,
        deletion: Some(&deletion),
    };
    let desired = status::desired(app, &version, &sets, &progress);
    if let Some(progressing) = desired.condition(baton_api::app::CONDITION_PROGRESSING) {
        plan.events.extend(events::waiting_for_dependents(app, progressing));
    }
    push_status(app, desired, plan);
}

fn push_status(app: &App, desired: AppStatus, plan: &mut Plan) {
    if let Some(status) = status::changed(app, desired) {
        plan.statuses.push(StatusUpdate {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            status,
        });
    }
}

/// Plans one app: health kills, one bounded step of scaling or deployment — held back while
/// something it depends on is not available, if it is starting or moving to a new version —
/// placement, status.
fn plan_app(
    app: Prepared<'_>,
    waits: &[Wait],
    snapshot: &Snapshot,
    ctx: &PlanContext,
    placer: &mut Placer<'_>,
    ids: &mut IdSource,
    plan: &mut Plan,
) {
    let Prepared { app, version, wanted, mut sets, .. } = app;
    let spec = &app.spec;
    // Records of instances killed for their health are kept while their replacement slot is
    // held: they are the slot.
    let slots = slots::Slots::of(&sets, wanted);
    let (ended, expires) = ctx.retention.apply(&sets.finished, |i| slots.holds(i), ctx.now);
    let gone: Vec<&InstanceState> = ended.iter().chain(&sets.expunged).copied().collect();
    remove(app, &gone, plan);
    // Lost instances are reported once (and replaced, as any missing instance).
    if !sets.lost.is_empty() {
        plan.events.push(events::lost(app, &sets.lost));
        plan.noted.extend(sets.lost.iter().map(|i| Counted { record: (*i.record).clone(), revision: i.revision }));
    }
    plan.next_wakeup = min_time(plan.next_wakeup, expires);
    // Released slots are unmarked, unless their record goes now anyway.
    let going: BTreeSet<&str> = ended.iter().chain(&sets.expunged).map(|i| i.id()).collect();
    plan.slot_releases.extend(
        slots
            .released
            .iter()
            .filter(|i| !going.contains(i.id()))
            .map(|i| SlotRelease { record: (*i.record).clone(), revision: i.revision }),
    );
    plan.next_wakeup = min_time(plan.next_wakeup, sets.next_change);
    let order = kill_order(spec.kill_selection);

    let backoff = plan_backoff(app, snapshot, &version, &sets, ctx, plan);

    let (stops_before, launches_before) = (plan.stops.len(), plan.launches.len());
    kill_requested(app, &mut sets, snapshot, plan);
    let health = kill_unhealthy(app, &mut sets, wanted, &slots, plan);

    let mut old_healthy: Vec<&InstanceState> = Vec::new();
    let mut old_unknown: Vec<&InstanceState> = Vec::new();
    let mut old_failing: Vec<&InstanceState> = Vec::new();
    let mut old_unhealthy: Vec<&InstanceState> = Vec::new();
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
        },
        deploy::Strategy::of(spec),
    );
    let backing_off = backoff.as_ref().and_then(|b| b.delay_until).filter(|until| *until > ctx.now);
    if let Some(until) = backing_off {
        step.launch = 0;
        plan.next_wakeup = min_time(plan.next_wakeup, Some(until));
    }
    // Starting (nothing placed) or moving to a new version waits for the dependencies; an
    // app already running its current version keeps scaling and replacing.
    let starting = sets.current.is_empty() && sets.unreachable.is_empty() && sets.inactive.is_empty() && wanted > 0;
    let gated = !waits.is_empty() && (starting || !sets.old.is_empty());
    if gated {
        step = deploy::Step { excess: step.excess, ..deploy::Step::default() };
        old_unhealthy.clear();
    }

    plan.stops.extend(old_unhealthy.iter().map(|i| stop(i, StopReason::Upgraded)));
    old_failing.sort_by(&order);
    plan.stops.extend(old_failing.iter().take(step.stop_old_failing).map(|i| stop(i, StopReason::Upgraded)));
    old_unknown.sort_by(&order);
    plan.stops.extend(old_unknown.iter().take(step.stop_old_unknown).map(|i| stop(i, StopReason::Upgraded)));
    old_healthy.sort_by(&order);
    plan.stops.extend(old_healthy.iter().take(step.stop_old_healthy).map(|i| stop(i, StopReason::Upgraded)));

    // Excess places go in this order: unreachable instances, then current ones (those
    // not running yet, then not healthy, then by killSelection).
    let mut unreachable = sets.unreachable.clone();
    unreachable.sort_by(&order);
    plan.stops.extend(unreachable.iter().take(step.excess).map(|i| stop(i, StopReason::ScaledDown)));
    let excess = step.excess.saturating_sub(unreachable.len());
    let mut current = sets.current.clone();
    current.sort_by(&order);
    plan.stops.extend(current.iter().take(excess).map(|i| stop(i, StopReason::ScaledDown)));

    let unplaced = launch(app, &version, step.launch, ctx, placer, ids, plan);
    let mut held = slots_after(&slots, &health.new_slots, &plan.stops[stops_before..]);
    fill_slots(&mut held, &mut plan.launches[launches_before..]);
    let progress = status::Progress {
        wanted,
        unplaced,
        backoff: backoff.as_ref(),
        backing_off,
        now: ctx.now,
        health: health.withheld.as_ref(),
        slots: &held,
        waits,
        gated,
        deletion: None,
    };
    let desired = status::desired(app, &version, &sets, &progress);
    plan.events.extend(events::scaled(app, wanted));
    plan.events.extend(events::killing(app, &version, wanted, &plan.stops[stops_before..]));
    let relaunching = backoff.as_ref().is_some_and(|b| b.failures > 0);
    plan.events.extend(events::launched(app, &version, &plan.launches[launches_before..], relaunching));
    if let Some(pending) = desired.condition(baton_api::app::CONDITION_PENDING) {
        plan.events.extend(events::failed_scheduling(app, pending));
    }
    if let Some(healthy) = desired.condition(baton_api::app::CONDITION_HEALTHY) {
        plan.events.extend(events::kills_withheld(app, healthy));
    }
    if let Some(dependencies) = desired.condition(baton_api::app::CONDITION_DEPENDENCIES) {
        plan.events.extend(events::waiting(app, dependencies));
    }
    push_status(app, desired, plan);
}

/// Kills the instances users asked to kill (`kubectl delete instance`), at once and
/// whatever the policies, as Marathon's kill and Kubernetes' pod deletion do; moves them out
/// of the sets that count, so the rest of the tick launches their replacements. One on an
/// agent that stopped reporting loses its record at once (should the agent come back, it
/// stops the process of an instance it no longer has a record of).
fn kill_requested(app: &App, sets: &mut AppInstances<'_>, snapshot: &Snapshot, plan: &mut Plan) {
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
            plan.stops.push(Stop { grace_seconds: request.grace_seconds, ..stop(i, StopReason::Killed) });
            killed.push((i.record.id.clone(), i.record.agent.clone(), request.user.clone()));
            sets.stopping.push(i);
            false
        });
    }
    for set in [&mut sets.unreachable, &mut sets.inactive] {
        set.retain(|&i| {
            let Some(request) = request(i) else { return true };
            plan.removals.push(removal(i));
            killed.push((i.record.id.clone(), i.record.agent.clone(), request.user.clone()));
            false
        });
    }
    if !killed.is_empty() {
        plan.events.push(events::user_kills(app, &killed));
    }
}

/// What the health planner did for an app this tick.
struct HealthKills<'s> {
    /// Due instances spared, and why.
    withheld: Option<status::Withheld>,
    /// Instances killed this tick that take a replacement slot of their own (those that
    /// refilled a held slot take none).
    new_slots: Vec<&'s InstanceState>,
}

/// Kills (stops) the instances due for failing their health checks that the app's health
/// policy allows, and moves them to the app's `stopping` set so the rest of the tick counts
/// them as gone (and launches their replacements).
fn kill_unhealthy<'s>(
    app: &App,
    sets: &mut AppInstances<'s>,
    wanted: usize,
    slots: &slots::Slots<'s>,
    plan: &mut Plan,
) -> HealthKills<'s> {
    let live: Vec<&'s InstanceState> = sets.current.iter().chain(&sets.old).copied().collect();
    let policy = health::Policy::of(&app.spec, wanted);
    let decision = health::decide(wanted, &live, slots, policy);
    let new_slots: Vec<&'s InstanceState> =
        decision.kill.iter().map(|d| d.instance).filter(|i| !slots.fills(i)).collect();
    if !decision.kill.is_empty() {
        let killed: BTreeSet<&str> = decision.kill.iter().map(|d| d.instance.id()).collect();
        sets.current.retain(|i| !killed.contains(i.id()));
        sets.old.retain(|i| !killed.contains(i.id()));
        sets.stopping.extend(decision.kill.iter().map(|d| d.instance));
        plan.stops.extend(
            decision
                .kill
                .iter()
                .map(|d| Stop { takes_slot: !slots.fills(d.instance), ..stop(d.instance, StopReason::Unhealthy) }),
        );
        plan.events.push(events::health_kills(app, &decision.kill));
    }
    if decision.withheld.is_empty() {
        return HealthKills { withheld: None, new_slots };
    }
    // By id, so the status and its event change only when the set does.
    let mut withheld: Vec<String> = decision.withheld.iter().map(|d| d.instance.id().to_string()).collect();
    withheld.sort();
    plan.withheld_kills.extend(withheld.iter().cloned());
    let withheld = status::Withheld {
        instances: withheld,
        healthy: decision.healthy,
        in_flight: decision.in_flight + new_slots.len(),
        policy,
        ratio: app.spec.health_policy.min_healthy_ratio,
    };
    HealthKills { withheld: Some(withheld), new_slots }
}

/// Each launch fills the next empty slot, oldest first, while there is one: it names the
/// slot in its record, written with the launch.
fn fill_slots(slots: &mut [status::HeldSlot<'_>], launches: &mut [Launch]) {
    let mut empty = slots.iter_mut().filter(|s| s.filler.is_none());
    for launch in launches {
        let Some(slot) = empty.next() else { return };
        launch.record.replaces = Some(slot.killed.id().to_string());
        slot.filler = Some(status::Filler::Launched(launch.record.id.clone()));
    }
}

/// The replacement slots an app holds after this tick's stops and kills, each with what fills
/// it; launches fill the empty ones (see [`launch`]).
fn slots_after<'s>(
    slots: &slots::Slots<'s>,
    new_slots: &[&'s InstanceState],
    stopped: &[Stop],
) -> Vec<status::HeldSlot<'s>> {
    let stopped: BTreeSet<&str> = stopped.iter().map(|s| s.record.id.as_str()).collect();
    let kept = slots.held.iter().map(|s| status::HeldSlot {
        killed: s.killed,
        filler: s.replacement.filter(|r| !stopped.contains(r.id())).map(status::Filler::Running),
    });
    kept.chain(new_slots.iter().map(|&killed| status::HeldSlot { killed, filler: None })).collect()
}

/// The app's backoff after this tick: failures of the current version are counted (and
/// their records removed in the same write); a new version, or an instance of the current
/// one that has run for longer than the delay, starts it afresh. Returns the backoff that
/// holds from now on.
fn plan_backoff(
    app: &App,
    snapshot: &Snapshot,
    version: &str,
    sets: &AppInstances<'_>,
    ctx: &PlanContext,
    plan: &mut Plan,
) -> Option<BackoffRecord> {
    let namespace = app.metadata.namespace.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let stored = snapshot.backoffs.get(&(namespace.clone(), name.clone()));
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
            version: last.record.version.clone(),
            phase: last.phase().unwrap_or(Phase::Failed),
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
            time: status.and_then(|s| s.finished_at).unwrap_or(ctx.now),
        });
        let last_message = next.last_failure.as_ref().map_or("", |f| f.message.as_str());
        plan.events.push(events::back_off(app, version, counted.len(), last_message, !delay.is_zero()));
    } else if next.failures == 0 && next.last_failure.is_none() && stored.is_none() {
        return None; // Nothing to remember.
    }
    if stored.map(|(record, _)| record.as_ref()) != Some(&next) {
        plan.backoffs.push(BackoffChange {
            namespace,
            name,
            next: Some(next.clone()),
            revision: stored.map_or(0, |(_, revision)| *revision),
            counted: counted.iter().map(|i| Counted { record: (*i.record).clone(), revision: i.revision }).collect(),
        });
    }
    Some(next)
}

/// Places `count` new instances of `app`; returns what could not be placed and why.
fn launch(
    app: &App,
    version: &str,
    count: usize,
    ctx: &PlanContext,
    placer: &mut Placer<'_>,
    ids: &mut IdSource,
    plan: &mut Plan,
) -> Option<status::Unplaced> {
    let spec = &app.spec;
    let (command, constraints) = match runnable(app) {
        Ok(runnable) => runnable,
        Err(why) => return (count > 0).then(|| status::Unplaced { count, why, rejections: Vec::new() }),
    };
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let resources = spec.resources.amounts();
    let asks: Vec<PortAsk> = spec
        .ports
        .iter()
        .map(|p| if spec.require_ports && p.port > 0 { PortAsk::Fixed(p.port as u16) } else { PortAsk::Dynamic })
        .collect();
    for placed in 0..count {
        let request = Request { app_uid: &uid, resources, ports: &asks, constraints: &constraints, seed: ids.next() };
        let placement = match placer.place(&request) {
            Fit::Placed(placement) => placement,
            Fit::Unschedulable(rejections) => {
                // Every instance of an app asks for the same: if one does not fit, the
                // rest do not either.
                return Some(status::Unplaced {
                    count: count - placed,
                    why: rejections.summary(&constraints),
                    rejections: rejections.list(&constraints),
                });
            }
        };
        let ports = spec
            .ports
            .iter()
            .zip(&placement.ports)
            .map(|(definition, port)| AssignedPort {
                name: definition.name.clone(),
                port: *port,
                requested: u16::try_from(definition.port).unwrap_or(0),
            })
            .collect();
        plan.launches.push(Launch {
            record: InstanceRecord {
                id: format!("{name}-{}", ids.suffix()),
                app: AppRef {
                    namespace: app.metadata.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                    uid: uid.clone(),
                },
                agent: placement.agent,
                host: placement.host,
                version: version.to_string(),
                created_at: ctx.now,
                goal: Goal::Running,
                stop_reason: None,
                replaces: None,
                holds_slot: false,
                end_noted: false,
                command: command.clone(),
                env: spec.env.clone(),
                labels: spec.labels.clone(),
                resources,
                ports,
                kill_grace_seconds: spec.kill_grace_seconds(),
                health_checks: spec.health_checks.clone(),
                readiness_checks: spec.readiness_checks.clone(),
                term: 0,
            },
        });
    }
    None
}

/// The command and parsed constraints of an app, or why it cannot run. Validation at apply
/// refuses such apps; this keeps one stored under older rules from being placed wrongly.
fn runnable(app: &App) -> Result<(Command, Vec<Constraint>), String> {
    let command = match (&app.spec.cmd, &app.spec.args) {
        (Some(cmd), _) => Command::Shell(cmd.clone()),
        (None, Some(args)) if !args.is_empty() => Command::Exec(args.clone()),
        _ => return Err("the app has neither cmd nor args".into()),
    };
    let constraints = app
        .spec
        .constraints
        .iter()
        .enumerate()
        .map(|(i, parts)| Constraint::parse(parts).map_err(|e| format!("spec.constraints[{i}] is invalid: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((command, constraints))
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

/// Removes the records of `instances` of `app`, reporting those whose process had to be
/// killed with SIGKILL after its grace period.
fn remove(app: &App, instances: &[&InstanceState], plan: &mut Plan) {
    plan.removals.extend(instances.iter().map(|i| removal(i)));
    plan.events.extend(events::forced_kills(app, instances));
}

fn removal(instance: &InstanceState) -> Removal {
    Removal { agent: instance.record.agent.clone(), id: instance.record.id.clone(), revision: instance.revision }
}

fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Deterministic pseudo-random numbers from the plan's seed (splitmix64): the same seed and
/// snapshot give the same ids and ports.
struct IdSource(u64);

impl IdSource {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Ten lowercase base-32 characters (50 bits), valid in a DNS label.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let mut n = self.next();
        (0..10)
            .map(|_| {
                let c = ALPHABET[(n & 31) as usize] as char;
                n >>= 5;
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
