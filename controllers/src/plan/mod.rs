//! The planner: `plan(&Snapshot, &PlanContext) -> Plan`, a pure function.
//!
//! No I/O, no awaiting, no clock: `now` and the seed for ids and ports are passed in, and
//! everything else is in the snapshot. Every decision is recomputed from the full view at
//! every tick, so a leader that takes over mid-deployment decides exactly what the old one
//! would have.
//!
//! First, agents that stopped reporting get a marker with the time (kept in the store, so a
//! new leader measures from the same moment). Then per app, in (namespace, name) order:
//! classify its instances ([`classify`]), compute one bounded step from counts
//! ([`deploy`]), pick the instances to stop, place the launches ([`crate::schedule`]), and
//! compute its status ([`status`]). Instances whose app is gone are stopped. One placer
//! serves the whole plan, so its placements see each other.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use baton_api::records::{AssignedPort, Command};
use baton_api::{App, AppRef, AppStatus, Goal, InstanceRecord};
use baton_store::Revision;

use crate::schedule::{Fit, Placer, Request};
use crate::snapshot::{InstanceState, Snapshot};

pub mod classify;
pub mod deploy;
pub mod status;

use classify::{AppInstances, Reachability, kill_order};

/// What the planner is given besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    pub now: Timestamp,
    /// Randomness for instance ids and port choice, drawn by the caller.
    pub seed: u64,
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
}

impl StopReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaledDown => "ScaledDown",
            StopReason::AppDeleted => "AppDeleted",
            StopReason::Upgraded => "Upgraded",
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

/// A status to write to an app.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: AppStatus,
}

/// Everything one tick decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub launches: Vec<Launch>,
    pub stops: Vec<Stop>,
    pub removals: Vec<Removal>,
    pub statuses: Vec<StatusUpdate>,
    pub marks: Vec<Mark>,
    pub unmarks: Vec<Unmark>,
    /// When the next decision that depends on time falls due (a replacement delay ends, an
    /// unreachable instance becomes inactive or is expunged).
    pub next_wakeup: Option<Timestamp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
            && self.stops.is_empty()
            && self.removals.is_empty()
            && self.statuses.is_empty()
            && self.marks.is_empty()
            && self.unmarks.is_empty()
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
    let mut placer = Placer::new(snapshot);
    let mut ids = IdSource::new(ctx.seed);
    for app in &snapshot.apps {
        let uid = app.metadata.uid.as_deref().unwrap_or_default();
        let instances = by_app.remove(uid).unwrap_or_default();
        plan_app(app, instances, ctx, &reach, &mut placer, &mut ids, &mut plan);
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
        }
    }
    for (agent, marker) in &snapshot.unreachable {
        if snapshot.agents.contains_key(agent) || !with_instances.contains(agent.as_str()) {
            plan.unmarks.push(Unmark { agent: agent.clone(), revision: marker.revision });
        }
    }
}

fn plan_app(
    app: &App,
    instances: Vec<&InstanceState>,
    ctx: &PlanContext,
    reach: &Reachability<'_>,
    placer: &mut Placer<'_>,
    ids: &mut IdSource,
    plan: &mut Plan,
) {
    let spec = &app.spec;
    let version = spec.version();
    let sets = AppInstances::classify(instances, &version, spec.unreachable_strategy, reach);
    plan.removals.extend(sets.finished.iter().map(|i| removal(i)));
    plan.next_wakeup = min_time(plan.next_wakeup, sets.next_change);
    let order = kill_order(spec.kill_selection);

    let (mut old_running, old_not_running): (Vec<&InstanceState>, Vec<&InstanceState>) =
        sets.old.iter().partition(|i| i.is_running());
    let step = deploy::step(deploy::Counts {
        wanted: spec.instances.max(0) as usize,
        current: sets.current.len(),
        current_running: sets.current_running(),
        cooling: sets.cooling.len(),
        unreachable: sets.unreachable.len(),
        old_running: old_running.len(),
        old_not_running: old_not_running.len(),
    });

    plan.stops.extend(old_not_running.iter().map(|i| stop(i, StopReason::Upgraded)));
    old_running.sort_by(&order);
    plan.stops.extend(old_running.iter().take(step.stop_old_running).map(|i| stop(i, StopReason::Upgraded)));

    // Excess places go in this order: cooling ones (simply not replaced), unreachable
    // instances, then current ones by killSelection.
    let mut excess = step.excess_current;
    let mut cooling = sets.cooling.clone();
    cooling.sort_by(&order);
    plan.removals.extend(cooling.iter().take(excess).map(|i| removal(i)));
    excess = excess.saturating_sub(cooling.len());
    let mut unreachable = sets.unreachable.clone();
    unreachable.sort_by(&order);
    plan.stops.extend(unreachable.iter().take(excess).map(|i| stop(i, StopReason::ScaledDown)));
    excess = excess.saturating_sub(unreachable.len());
    let mut current = sets.current.clone();
    current.sort_by(&order);
    plan.stops.extend(current.iter().take(excess).map(|i| stop(i, StopReason::ScaledDown)));

    let unplaced = launch(app, &version, step.launch, ctx, placer, ids, plan);
    if let Some(status) = status::changed(app, status::desired(app, &version, &sets, unplaced.as_ref(), ctx.now)) {
        plan.statuses.push(StatusUpdate {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            status,
        });
    }
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
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let spec = &app.spec;
    let resources = spec.resources.amounts();
    for placed in 0..count {
        let request = Request { app_uid: &uid, resources, ports: spec.ports.len(), seed: ids.next() };
        let placement = match placer.place(&request) {
            Fit::Placed(placement) => placement,
            Fit::Unschedulable(rejections) => {
                // Every instance of an app asks for the same: if one does not fit, the
                // rest do not either.
                return Some(status::Unplaced { count: count - placed, why: rejections.summary() });
            }
        };
        let command = match (&spec.cmd, &spec.args) {
            (Some(cmd), _) => Command::Shell(cmd.clone()),
            (None, Some(args)) => Command::Exec(args.clone()),
            // Validation guarantees one of them; an app without either launches nothing.
            (None, None) => return None,
        };
        let ports = spec
            .ports
            .iter()
            .zip(&placement.ports)
            .map(|(definition, port)| AssignedPort { name: definition.name.clone(), port: *port })
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
                command,
                env: spec.env.clone(),
                labels: spec.labels.clone(),
                resources,
                ports,
                kill_grace_seconds: spec.kill_grace_seconds(),
                term: 0,
            },
        });
    }
    None
}

fn stop(instance: &InstanceState, reason: StopReason) -> Stop {
    Stop { record: (*instance.record).clone(), revision: instance.revision, reason }
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
mod tests;
