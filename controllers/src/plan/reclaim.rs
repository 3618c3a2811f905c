//! Stage: reclaim (DESIGN.md §10) — the platform's. A tenant below its guarantee whose
//! launches found no room takes room back from tenants above theirs: for each of its pending
//! instances that still fits in its guarantee, the agent where the fewest (then the youngest)
//! instances of such tenants make room for it; those instances stop (`Preempted`) and the
//! instance is placed when they are gone (the share stage puts guaranteed demand first, so the
//! room goes to it, not back to them).
//!
//! Bounds, so that nothing is taken twice for one contention and nothing thrashes:
//! - a tenant is never taken below its own guarantee, so a tenant that was reclaimed from
//!   never reclaims back;
//! - room already being freed (instances preempted earlier, still stopping) is counted first:
//!   a pending instance that will fit once they are gone takes nothing more;
//! - each victim app loses at most `max(1, ⌊(1 − minimumHealthCapacity) × instances⌋)`
//!   instances at once (counting those still stopping) — its deployment budget's pace;
//! - the platform's own instances are never taken, and at most
//!   [`MAX_PREEMPTIONS_PER_TICK`] instances stop per tick.
//!
//! Reclaiming weighs resources, maintenance and reserved agents, not the pending app's
//! constraints or ports: an instance that cannot go where room was made stays pending
//! without taking more (the room counts as being freed).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use baton_api::{App, Goal, Scope};

use super::maintain::Drains;
use super::place::{Demand, Placed};
use super::share::{Reserved, amounts, held_by_scope};
use super::vocabulary::{Event, EventType, Regarding, Stop, StopReason};
use crate::schedule::AgentRules;
use crate::snapshot::{InstanceState, Snapshot};

/// The most instances one tick preempts.
pub const MAX_PREEMPTIONS_PER_TICK: usize = 100;

/// What reclaiming decided.
#[derive(Debug, Default)]
pub struct Reclaimed {
    pub stops: Vec<Stop>,
    pub events: Vec<Event>,
}

/// Where each scope's guarantee stands, what agents will have free, and who may lose what.
struct Ledger<'s> {
    held: BTreeMap<Scope, [u64; 4]>,
    guarantees: BTreeMap<&'s str, [Option<u64>; 4]>,
    /// Per agent: free now, plus what instances being preempted will free.
    free: BTreeMap<&'s str, [u64; 4]>,
    /// Per agent: instances of tenants that could be taken, youngest first.
    victims: BTreeMap<&'s str, Vec<&'s InstanceState>>,
    /// Per app uid: instances being preempted, and how many may be at once.
    preempting: HashMap<&'s str, (usize, usize)>,
}

pub fn reclaim(
    snapshot: &Snapshot,
    usage: &crate::schedule::Usage<'_>,
    queue: &[Demand<'_>],
    placed: &[(usize, Placed)],
    drains: &Drains,
    reserved: &Reserved,
) -> Reclaimed {
    let mut out = Reclaimed::default();
    let guarantees: BTreeMap<&str, [Option<u64>; 4]> = snapshot
        .tenants
        .iter()
        .filter_map(|t| Some((t.metadata.name.as_deref()?, t.spec.guarantee.amounts())))
        .filter(|(_, g)| g.iter().any(Option::is_some))
        .collect();
    if !snapshot.scope.places() || guarantees.is_empty() {
        return out;
    }
    let unplaced: HashMap<usize, usize> =
        placed.iter().filter_map(|(i, p)| Some((*i, p.unplaced.as_ref()?.count))).collect();
    if unplaced.is_empty() {
        return out;
    }
    let mut ledger = Ledger::of(snapshot, usage, placed, guarantees);
    for demand in queue {
        let (Scope::Tenant(tenant), Some(&pending)) = (demand.scope, unplaced.get(&demand.index)) else { continue };
        if demand.app.spec.placement.whole_agent {
            continue; // Freeing whole agents is defragmentation's.
        }
        let each = amounts(demand.app.spec.resources.amounts());
        for _ in 0..pending {
            if out.stops.len() >= MAX_PREEMPTIONS_PER_TICK || !ledger.within_guarantee(demand.scope, tenant, &each) {
                break;
            }
            let eligible = |agent: &str| {
                !drains.cordons(agent)
                    && drains.reserved_for(agent).is_none()
                    && reserved.tenant_of(agent).is_none_or(|t| t == tenant)
            };
            if let Some(agent) = ledger.room(&each, &eligible) {
                ledger.take(agent, demand.scope, &each);
                continue;
            }
            let Some((agent, victims)) = ledger.cheapest(tenant, &each, &eligible) else { break };
            for victim in victims {
                ledger.preempt(agent, victim);
                out.stops.push(Stop {
                    record: (*victim.record).clone(),
                    revision: victim.revision,
                    reason: StopReason::Preempted,
                    grace_seconds: None,
                    takes_slot: false,
                });
                out.events.push(Event {
                    regarding: Regarding::App(victim.record.run.app.clone()),
                    type_: EventType::Warning,
                    reason: "Preempted",
                    message: format!(
                        "Stopping instance {} on {}: tenant {tenant} is below its guarantee and needs the room",
                        victim.record.id, victim.record.agent
                    ),
                    of_writes: true,
                });
            }
            ledger.take(agent, demand.scope, &each);
        }
    }
    out
}

impl<'s> Ledger<'s> {
    fn of(
        snapshot: &'s Snapshot,
        usage: &crate::schedule::Usage<'_>,
        placed: &[(usize, Placed)],
        guarantees: BTreeMap<&'s str, [Option<u64>; 4]>,
    ) -> Self {
        let mut held: BTreeMap<Scope, [u64; 4]> =
            held_by_scope(snapshot).into_iter().map(|(scope, h)| (scope.clone(), h)).collect();
        let mut free: BTreeMap<&str, [u64; 4]> = snapshot
            .agents
            .values()
            .map(|a| {
                let used = usage.held.get(&a.name).map(|u| u.resources).unwrap_or_default();
                (a.name.as_str(), amounts(a.resources.minus(used)))
            })
            .collect();
        for launch in placed.iter().flat_map(|(_, p)| &p.launches) {
            let each = amounts(launch.record.run.resources);
            add(held.entry(launch.record.run.scope.clone()).or_insert([0; 4]), &each);
            if let Some(f) = free.get_mut(launch.record.agent.as_str()) {
                sub(f, &each);
            }
        }
        let apps: HashMap<&str, &App> =
            snapshot.other_apps.iter().filter_map(|a| Some((a.metadata.uid.as_deref()?, a.as_ref()))).collect();
        let mut victims: BTreeMap<&str, Vec<&InstanceState>> = BTreeMap::new();
        let mut preempting: HashMap<&str, (usize, usize)> = HashMap::new();
        for instance in snapshot.foreign.iter().filter(|i| !i.is_terminal()) {
            let Scope::Tenant(_) = &instance.record.run.scope else { continue };
            let uid = instance.record.run.app.uid.as_str();
            let entry = preempting.entry(uid).or_insert_with(|| (0, budget(apps.get(uid).copied())));
            if instance.record.goal == Goal::Running {
                victims.entry(instance.record.agent.as_str()).or_default().push(instance);
            } else if instance.record.stop_reason.as_deref() == Some(StopReason::Preempted.as_str()) {
                entry.0 += 1;
                if let Some(f) = free.get_mut(instance.record.agent.as_str()) {
                    add(f, &amounts(instance.record.run.resources));
                }
            }
        }
        for list in victims.values_mut() {
            list.sort_by_key(|i| (Reverse(i.created), i.record.id.clone()));
        }
        Ledger { held, guarantees, free, victims, preempting }
    }

    fn held(&self, scope: &Scope) -> [u64; 4] {
        self.held.get(scope).copied().unwrap_or([0; 4])
    }

    /// Whether one more instance of `each` keeps `tenant` within its guarantee.
    fn within_guarantee(&self, scope: &Scope, tenant: &str, each: &[u64; 4]) -> bool {
        let Some(guarantee) = self.guarantees.get(tenant) else { return false };
        let held = self.held(scope);
        guarantee.iter().zip(held.iter().zip(each)).all(|(g, (h, e))| g.is_none_or(|g| h.saturating_add(*e) <= g))
    }

    /// An eligible agent where `each` fits, in what is free or being freed.
    fn room(&self, each: &[u64; 4], eligible: &impl Fn(&str) -> bool) -> Option<&'s str> {
        self.free.iter().find(|(agent, free)| fits(free, each) && eligible(agent)).map(|(agent, _)| *agent)
    }

    /// Whether `victim` may be taken from a tenant other than `claimant` that keeps at least
    /// its guarantee once it and what this choice `removed` already are gone.
    fn may_take(&self, victim: &InstanceState, claimant: &str, removed: &[u64; 4]) -> bool {
        let Scope::Tenant(owner) = &victim.record.run.scope else { return false };
        if owner == claimant {
            return false;
        }
        let mut after = self.held(&victim.record.run.scope);
        sub(&mut after, removed);
        sub(&mut after, &amounts(victim.record.run.resources));
        let guarantee = self.guarantees.get(owner.as_str()).copied().unwrap_or([None; 4]);
        guarantee.iter().zip(after).all(|(g, h)| g.is_none_or(|g| h >= g))
    }

    /// The agent where the fewest (then the youngest) instances make room for `each`.
    fn cheapest(
        &self,
        claimant: &str,
        each: &[u64; 4],
        eligible: &impl Fn(&str) -> bool,
    ) -> Option<(&'s str, Vec<&'s InstanceState>)> {
        let mut best: Option<(&'s str, Vec<&'s InstanceState>)> = None;
        for (agent, list) in &self.victims {
            if !eligible(agent) {
                continue;
            }
            let mut room = self.free.get(agent).copied().unwrap_or([0; 4]);
            let mut chosen = Vec::new();
            // Per app, as the pace allows, and per tenant, within this choice.
            let mut taken: HashMap<&str, usize> = HashMap::new();
            let mut removed: HashMap<&Scope, [u64; 4]> = HashMap::new();
            for victim in list {
                if fits(&room, each) {
                    break;
                }
                let uid = victim.record.run.app.uid.as_str();
                let (now, most) = self.preempting.get(uid).copied().unwrap_or((0, 1));
                let from_owner = removed.get(&victim.record.run.scope).copied().unwrap_or([0; 4]);
                if now + taken.get(uid).copied().unwrap_or(0) >= most || !self.may_take(victim, claimant, &from_owner) {
                    continue;
                }
                *taken.entry(uid).or_default() += 1;
                add(removed.entry(&victim.record.run.scope).or_insert([0; 4]), &amounts(victim.record.run.resources));
                add(&mut room, &amounts(victim.record.run.resources));
                chosen.push(*victim);
            }
            if !fits(&room, each) || chosen.is_empty() {
                continue;
            }
            let better = match &best {
                None => true,
                Some((_, current)) => {
                    let youngest_of = |v: &[&InstanceState]| v.iter().map(|i| i.created).min().unwrap_or(0);
                    (chosen.len(), Reverse(youngest_of(&chosen))) < (current.len(), Reverse(youngest_of(current)))
                }
            };
            if better {
                best = Some((agent, chosen));
            }
        }
        best
    }

    fn preempt(&mut self, agent: &str, victim: &InstanceState) {
        let each = amounts(victim.record.run.resources);
        if let Some(held) = self.held.get_mut(&victim.record.run.scope) {
            sub(held, &each);
        }
        if let Some(f) = self.free.get_mut(agent) {
            add(f, &each);
        }
        if let Some(entry) = self.preempting.get_mut(victim.record.run.app.uid.as_str()) {
            entry.0 += 1;
        }
        if let Some(list) = self.victims.get_mut(agent) {
            list.retain(|i| i.record.id != victim.record.id);
        }
    }

    /// `each` goes on `agent` for `scope` (once the room is free).
    fn take(&mut self, agent: &str, scope: &Scope, each: &[u64; 4]) {
        if let Some(f) = self.free.get_mut(agent) {
            sub(f, each);
        }
        add(self.held.entry(scope.clone()).or_insert([0; 4]), each);
    }
}

/// How many of an app's instances may be being preempted at once.
fn budget(app: Option<&App>) -> usize {
    let Some(app) = app else { return 1 };
    let instances = app.spec.instances.max(0) as f64;
    let spare = (1.0 - app.spec.upgrade_strategy.minimum_health_capacity).clamp(0.0, 1.0);
    ((spare * instances).floor() as usize).max(1)
}

fn fits(free: &[u64; 4], each: &[u64; 4]) -> bool {
    free.iter().zip(each).all(|(f, e)| f >= e)
}

fn add(to: &mut [u64; 4], each: &[u64; 4]) {
    for (t, e) in to.iter_mut().zip(each) {
        *t = t.saturating_add(*e);
    }
}

fn sub(from: &mut [u64; 4], each: &[u64; 4]) {
    for (f, e) in from.iter_mut().zip(each) {
        *f = f.saturating_sub(*e);
    }
}
