//! Defragmentation — the second half of the migrate stage (DESIGN.md §9): when an instance
//! that takes a whole agent (`placement.wholeAgent`) cannot be placed because no agent is
//! empty, but the cluster has the room, the planner frees agents by moving small instances off
//! the least-filled ones — through the same path as a maintenance drain, so each moved app keeps
//! its `minimumHealthCapacity` and `maxConcurrentStarts` and each instance is replaced before it
//! stops.
//!
//! An agent being freed has a drain record (`/baton/maintenance/<agent>`, `forApp`): Draining
//! while anything is on it (nothing new goes on it), Drained once empty — then only the app it
//! was freed for goes on it — and Released once that app's instance is there; for an hour after,
//! the apps moved off it do not come back (no ping-pong), and then the record goes. An app
//! moved within the hour is not moved again (at most one move per instance per hour), and
//! only apps without constraints or fixed host ports are moved (they fit anywhere with room).

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use rustc_hash::FxHashMap;

use baton_api::{DrainRecord, DrainState, Goal, ResourceAmounts};

use super::decide::{Course, Decided};
use super::events::{Event, EventType, Regarding, listing, plural};
use super::maintain::DrainWrite;
use super::place::Placed;
use super::vocabulary::PlanContext;
use crate::schedule::Usage;
use crate::schedule::scorers::dominant_share;
use crate::snapshot::Snapshot;

/// How long the apps moved off a freed agent stay off it, and are not moved again.
pub const MOVE_PERIOD: SignedDuration = SignedDuration::from_hours(1);
/// Candidates examined per tick when choosing agents to free.
const MAX_CANDIDATES: usize = 10_000;

/// What each whole-agent app of the snapshot needs, by `namespace/name`: its uid, how many
/// instances it wants and how many it has (wanted running, not over).
#[derive(Debug, Default)]
pub struct Needs(FxHashMap<String, Need>);

#[derive(Debug, Clone)]
pub struct Need {
    pub uid: String,
    pub wanted: usize,
    pub live: usize,
}

impl Needs {
    /// Of the observed apps (with their gates), those whose instances take whole agents.
    pub fn of(apps: &[super::observe::ObservedApp<'_>], gates: &[super::groups::Gate]) -> Self {
        let needs = apps
            .iter()
            .zip(gates)
            .filter(|(a, _)| a.app.spec.placement.whole_agent && a.app.metadata.deletion_timestamp.is_none())
            .map(|(a, gate)| {
                let name = format!("{}/{}", a.namespace, a.app.metadata.name.as_deref().unwrap_or_default());
                let live = a.sets.current.len() + a.sets.old.len() + a.sets.unreachable.len();
                let uid = a.app.metadata.uid.clone().unwrap_or_default();
                (name, Need { uid, wanted: gate.wanted, live })
            })
            .collect();
        Self(needs)
    }

    fn get(&self, app: &str) -> Option<&Need> {
        self.0.get(app)
    }
}

/// Follows the records of agents being freed: Draining → Drained once empty → Released once
/// the app it was freed for runs there; a record goes an hour after its release, or at once
/// when its app no longer needs the agent.
pub fn follow(
    snapshot: &Snapshot,
    usage: &Usage<'_>,
    needs: &Needs,
    now: Timestamp,
    records: &mut BTreeMap<String, DrainRecord>,
    out: &mut super::maintain::Maintained<'_>,
) {
    let live = |agent: &str| usage.held.get(agent).map_or(0, |used| used.live);
    let mut gone = Vec::new();
    for (agent, record) in records.iter_mut() {
        let Some(app) = record.for_app.clone() else { continue };
        let need = needs.get(&app);
        let runs_there =
            need.is_some_and(|n| usage.instances_of(&n.uid).any(|i| i.record.agent == *agent && !i.is_terminal()));
        let next = match record.state {
            DrainState::Released => {
                let until = record.since.saturating_add(MOVE_PERIOD).unwrap_or(record.since);
                if until <= now {
                    gone.push(agent.clone());
                } else {
                    out.next_wakeup = out.next_wakeup.map_or(Some(until), |t| Some(t.min(until)));
                }
                continue;
            }
            _ if runs_there => DrainState::Released,
            // Deleted, no longer whole-agent, or has what it wants: the agent is not needed.
            _ if need.is_none_or(|n| n.live >= n.wanted) => {
                gone.push(agent.clone());
                out.events.push(agent_event(
                    agent,
                    "FreeingStopped",
                    format!("{app} no longer needs a whole agent; the agent is back in service"),
                ));
                continue;
            }
            DrainState::Draining if live(agent) == 0 && snapshot.agents.contains_key(agent) => DrainState::Drained,
            state => state,
        };
        if next != record.state {
            let message = match next {
                DrainState::Drained => format!("freed for {app}: nothing else is left on the agent"),
                _ => format!("{app} runs on the agent freed for it; the apps moved off stay off for an hour"),
            };
            out.events.push(agent_event(
                agent,
                if next == DrainState::Drained { "AgentFreed" } else { "FreedAgentTaken" },
                message,
            ));
            record.state = next;
            record.since = now;
        }
    }
    for agent in gone {
        records.remove(&agent);
    }
}

fn agent_event(agent: &str, reason: &'static str, message: String) -> Event {
    Event { regarding: Regarding::Agent(agent.to_string()), type_: EventType::Normal, reason, message, of_writes: true }
}

/// What is on one agent: the apps (uids) of its instances, one entry each; what they hold;
/// whether every one of them may move.
type OnAgent<'a> = (Vec<&'a str>, ResourceAmounts, bool);

/// What the defragmentation decided this tick: agents to start freeing, and per app (by its
/// index in the decisions) what its status says about it.
#[derive(Default)]
pub struct Freed {
    pub writes: Vec<DrainWrite>,
    pub events: Vec<Event>,
    pub notes: BTreeMap<usize, String>,
}

/// Chooses agents to free for the whole-agent instances that found no agent this tick: for
/// each such app, as many as it lacks beyond those already being freed for it; the least
/// filled first, only where every instance can move and the other agents have the room.
pub fn free(
    snapshot: &Snapshot,
    usage: &Usage<'_>,
    decided: &Decided<'_>,
    placed: &[(usize, Placed)],
    drains: &super::maintain::Drains,
    ctx: &PlanContext,
) -> Freed {
    let mut freed = Freed::default();
    if !snapshot.scope.places() {
        return freed;
    }
    let pending: Vec<(usize, usize)> = placed
        .iter()
        .filter(|(index, p)| {
            *index < decided.apps.len()
                && p.unplaced.is_some()
                && decided.apps[*index].app.spec.placement.whole_agent
                && matches!(decided.apps[*index].course, Course::Running(_))
        })
        .map(|(index, p)| (*index, p.unplaced.as_ref().map_or(0, |u| u.count)))
        .collect();
    let name_of = |index: usize| {
        let app = decided.apps[index].app;
        format!(
            "{}/{}",
            app.metadata.namespace.as_deref().unwrap_or_default(),
            app.metadata.name.as_deref().unwrap_or_default()
        )
    };
    // Agents already being freed, per app.
    let mut being_freed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (agent, (record, _)) in &snapshot.drains {
        if let (Some(app), DrainState::Draining | DrainState::Drained) = (&record.for_app, record.state) {
            being_freed.entry(app.clone()).or_default().push(agent.clone());
        }
    }
    if pending.is_empty() {
        return freed;
    }
    let movable_app = |uid: &str| {
        snapshot.apps.iter().find(|a| a.metadata.uid.as_deref() == Some(uid)).is_some_and(|a| {
            a.metadata.deletion_timestamp.is_none()
                && a.spec.constraints.is_empty()
                && !a.spec.require_ports
                && !a.spec.placement.whole_agent
        })
    };
    // Apps moved off an agent within the hour are not moved again (their instances there are
    // the replacements).
    let moved_since = ctx.now.checked_sub(MOVE_PERIOD).unwrap_or(ctx.now);
    let recently_moved: BTreeSet<&str> = snapshot
        .drains
        .values()
        .filter(|(r, _)| r.for_app.is_some() && r.draining_since > moved_since)
        .flat_map(|(r, _)| r.moved.iter().map(String::as_str))
        .collect();
    // Per agent, what must move and whether all of it can.
    let mut on: BTreeMap<&str, OnAgent<'_>> = BTreeMap::new();
    for instance in snapshot.instances.values().chain(&snapshot.foreign).filter(|i| !i.is_terminal()) {
        let entry = on.entry(instance.record.agent.as_str()).or_insert((Vec::new(), ResourceAmounts::default(), true));
        let own = snapshot.instances.contains_key(instance.id()) && instance.record.run.scope == snapshot.scope;
        let can = own
            && instance.record.goal == Goal::Running
            && !instance.record.run.whole_agent
            && !recently_moved.contains(instance.record.run.app.uid.as_str())
            && movable_app(&instance.record.run.app.uid);
        entry.0.push(instance.record.run.app.uid.as_str());
        entry.1 = entry.1.plus(instance.record.run.resources);
        entry.2 &= can;
    }
    let held = usage.held.clone();
    // Agents with a drain record, or in maintenance from this tick on (their record is being
    // written by the maintain stage): not candidates.
    let taken =
        |agent: &str| snapshot.drains.contains_key(agent) || crate::schedule::AgentRules::cordons(drains, agent);
    // What the agents that stay open have free.
    let mut free_elsewhere = snapshot
        .agents
        .values()
        .filter(|a| !taken(&a.name) && !held.get(&a.name).is_some_and(|u| u.exclusive))
        .fold(ResourceAmounts::default(), |sum, a| {
            sum.plus(a.resources.minus(held.get(&a.name).map(|u| u.resources).unwrap_or_default()))
        });
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    for (index, count) in pending {
        let app = name_of(index);
        let already = being_freed.get(&app).map_or(0, Vec::len);
        let mut need = count.saturating_sub(already);
        if need == 0 {
            if let Some(agents) = being_freed.get(&app) {
                freed.notes.insert(index, format!("freeing {} for it (defragmentation)", listing(agents)));
            }
            continue;
        }
        let ask = decided.apps[index].app.spec.resources.amounts();
        let mut candidates: Vec<(usize, u64, &str, &OnAgent<'_>)> = snapshot
            .agents
            .values()
            .filter(|a| !taken(&a.name) && !chosen.contains(&a.name))
            .filter(|a| a.resources.first_shortfall(ask).is_none())
            .filter_map(|a| {
                let what = on.get(a.name.as_str())?;
                what.2.then(|| (what.0.len(), dominant_share(what.1, a.resources), a.name.as_str(), what))
            })
            .take(MAX_CANDIDATES)
            .collect();
        candidates.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut picked: Vec<String> = Vec::new();
        for (_, _, agent, (apps, resources, _)) in candidates {
            if need == 0 {
                break;
            }
            // The others must have the room for what moves (less what this agent frees).
            let agent_free = snapshot.agents[agent].resources.minus(*resources);
            let elsewhere = free_elsewhere.minus(agent_free);
            if elsewhere.first_shortfall(*resources).is_some() {
                continue;
            }
            free_elsewhere = elsewhere.minus(*resources);
            let mut moved: Vec<String> = apps.iter().map(|uid| uid.to_string()).collect();
            moved.sort();
            moved.dedup();
            let record = DrainRecord {
                maintenance: String::new(),
                for_app: Some(app.clone()),
                moved,
                state: DrainState::Draining,
                since: ctx.now,
                window: None,
                draining_since: ctx.now,
            };
            freed.writes.push(DrainWrite { agent: agent.to_string(), next: Some(record), revision: 0 });
            freed.events.push(agent_event(
                agent,
                "Freeing",
                format!(
                    "freeing the agent for {app}, whose instances take whole agents: {} move off, each replaced \
                     elsewhere first",
                    plural(apps.len(), "instance")
                ),
            ));
            chosen.insert(agent.to_string());
            picked.push(agent.to_string());
            need -= 1;
        }
        let all: Vec<String> =
            being_freed.get(&app).cloned().unwrap_or_default().into_iter().chain(picked.clone()).collect();
        if !all.is_empty() {
            freed.notes.insert(index, format!("freeing {} for it (defragmentation)", listing(&all)));
        }
        if !picked.is_empty() {
            freed.events.push(Event {
                regarding: Regarding::App(super::events::app_ref(decided.apps[index].app)),
                type_: EventType::Normal,
                reason: "Defragmenting",
                message: format!(
                    "no agent is empty for a whole-agent instance: freeing {} by moving small instances off",
                    listing(&picked)
                ),
                of_writes: true,
            });
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use jiff::SignedDuration;

    use baton_api::{DrainState, Goal, Phase};

    use crate::plan::{PlanContext, StopReason, plan};
    use crate::snapshot::{InstanceState, Snapshot};
    use crate::testing::{agent, app, apply_to_instances, instance, now, set_phase, snapshot};

    /// Runs the planner `ticks` times, a second apart; between ticks, launched instances run
    /// (healthy: no checks) and stopped ones end. Returns the snapshot after, and per tick the
    /// plan's launches `(app, agent)` and stops `(id, reason)`.
    #[allow(clippy::type_complexity)]
    fn run(mut s: Snapshot, ticks: usize) -> (Snapshot, Vec<(Vec<(String, String)>, Vec<(String, StopReason)>)>) {
        let mut log = Vec::new();
        let mut revision = 1000;
        for t in 0..ticks {
            let at = now() + SignedDuration::from_secs(t as i64);
            let p = plan(&s, &PlanContext::at(at, t as u64));
            let mut instances: BTreeMap<String, InstanceState> = std::mem::take(s.instances_mut());
            apply_to_instances(&mut instances, &p, &mut revision);
            for write in &p.drains {
                revision += 1;
                match &write.next {
                    Some(record) => _ = s.drains.insert(write.agent.clone(), (Arc::new(record.clone()), revision)),
                    None => _ = s.drains.remove(&write.agent),
                }
            }
            for i in instances.values_mut() {
                if i.record.goal == Goal::Stopped && !i.is_terminal() {
                    set_phase(i, Phase::Killed, at);
                } else if i.status.is_none() {
                    set_phase(i, Phase::Running, at);
                }
            }
            instances.retain(|_, i| !(i.is_terminal() && i.record.goal == Goal::Stopped));
            s.instances = instances.into();
            s.held = None;
            let launches = p.launches.iter().map(|l| (l.record.run.app.name.clone(), l.record.agent.clone())).collect();
            let stops = p.stops.iter().map(|s| (s.record.id.clone(), s.reason)).collect();
            log.push((launches, stops));
        }
        (s, log)
    }

    #[test]
    fn a_whole_agent_instance_gets_an_agent_freed_by_moving_small_ones_replacement_first() {
        // Two agents, each with one small instance: no agent is empty, but either could be.
        let small1 = app("small1").cpus(1.0).build();
        let small2 = app("small2").cpus(1.0).build();
        let big = app("big").cpus(2.0).whole_agent().build();
        let agents = vec![agent("a1").build(), agent("a2").build()];
        let s = snapshot(
            &[&small1, &small2, &big],
            agents,
            vec![instance(&small1, "a1", 1).running().build(), instance(&small2, "a2", 2).running().build()],
        );
        let (after, log) = run(s, 8);
        let big_at = log.iter().position(|(launches, _)| launches.iter().any(|(a, _)| a == "big"));
        let big_at = big_at.expect("big placed");
        let (launches, _) = &log[big_at];
        assert_eq!(launches.iter().find(|(a, _)| a == "big").unwrap().1, "a1", "the least-filled, first by name");
        // small1 moved: its replacement first, on a2, then the old one stopped.
        let replaced = log.iter().position(|(l, _)| l.iter().any(|(a, agent)| a == "small1" && agent == "a2")).unwrap();
        let stopped =
            log.iter().position(|(_, s)| s.iter().any(|(id, r)| id == "small1-001" && *r == StopReason::Moved));
        assert!(stopped.unwrap() > replaced, "replaced before stopped: {log:?}");
        // At most two ticks after the agent is empty.
        assert!(big_at <= stopped.unwrap() + 2, "{log:?}");
        let moves: usize = log.iter().map(|(_, s)| s.iter().filter(|(_, r)| *r == StopReason::Moved).count()).sum();
        assert_eq!(moves, 1, "one small instance moved, once");
        let record = &after.drains["a1"].0;
        assert_eq!(record.state, DrainState::Released);
        assert_eq!(record.moved, ["uid-small1"], "small1 stays off a1 for the hour");
        assert!(!after.instances.values().any(|i| i.record.run.app.name == "small2" && i.record.agent == "a1"));
    }

    #[test]
    fn instances_that_cannot_move_anywhere_are_left_alone() {
        // An app with constraints is not moved: it may not fit anywhere else.
        let small = app("small").instances(2).cpus(1.0).constraint(&["hostname", "UNIQUE"]).build();
        let big = app("big").cpus(2.0).whole_agent().build();
        let s = snapshot(
            &[&small, &big],
            vec![agent("a1").build(), agent("a2").build()],
            vec![instance(&small, "a1", 1).running().build(), instance(&small, "a2", 2).running().build()],
        );
        let first = plan(&s, &PlanContext::at(now(), 1));
        let status = &first.statuses.iter().find(|u| u.name == "big").expect("big's status").status;
        let reasons: Vec<&str> =
            status.pending.as_ref().unwrap().rejections.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["not empty (the app takes whole agents)"]);
        let (after, log) = run(s, 3);
        assert!(after.drains.is_empty(), "{:?}", after.drains);
        assert!(log.iter().all(|(l, s)| l.is_empty() && s.is_empty()), "{log:?}");
    }

    #[test]
    fn empty_agents_are_kept_free_for_whole_agent_instances() {
        let small = app("small").instances(3).cpus(3.0).build();
        let agents = vec![agent("a1").build(), agent("a2").build(), agent("a3").build()];
        let s = snapshot(&[&small], agents, Vec::new());
        let ctx = PlanContext { keep_free_agents: 1, ..PlanContext::at(now(), 1) };
        let p = plan(&s, &ctx);
        let placed: Vec<&str> = p.launches.iter().map(|l| l.record.agent.as_str()).collect();
        assert_eq!(placed, ["a1", "a2"], "the last empty agent is kept");
        let pending = p.statuses[0].status.pending.clone().expect("one pending");
        assert_eq!(pending.instances, 1);
        assert!(pending.rejections.iter().any(|r| r.reason == "kept free for whole-agent instances"), "{pending:?}");
    }
}
