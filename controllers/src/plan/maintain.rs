//! Stage 2b, maintain — the first half of the migrate stage (DESIGN.md §9): which agents are
//! in maintenance now, from every [`Maintenance`], the agents and the drain records the
//! platform's controller keeps in the store (so a new leader continues the same drain).
//!
//! For each Maintenance, in name order: the windows open now (a recurring schedule's, explicit
//! ones, or — with neither — an immediate drain that lasts until the Maintenance is deleted)
//! take their partition's covered agents, in name order, at most `maxAgents` at once (agents
//! already in maintenance keep their place). An agent in maintenance is **Draining** while
//! anything of any scope runs on it, **Drained** once nothing does, and **Released** when it
//! restarts after being drained (it was patched); when its window closes its record goes. An
//! agent another Maintenance holds is left to it.
//!
//! The decide stage moves the instances of agents in maintenance (replacement first, see
//! [`super::deploy`]); the place stage puts nothing on them, and spreads apps over the
//! partitions. Only the platform's controller writes drain records and statuses; another
//! scope reads the records and drains its own instances.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rustc_hash::{FxHashMap, FxHashSet};

use baton_api::maintenance::{
    AgentState, MAX_LISTED_AGENTS, OpenWindow, Risk, STATE_WAITING, ScheduledWindow, validate_maintenance,
};
use baton_api::{AgentRecord, DrainRecord, DrainState, Maintenance, MaintenanceStatus, ResourceAmounts};
use baton_store::Revision;

use super::events::{Event, EventType, Regarding, plural};
use super::vocabulary::{PlanContext, min_time};
use crate::schedule::Usage;
use crate::snapshot::Snapshot;

/// What the later stages need: the agents in maintenance.
#[derive(Debug, Default, Clone)]
pub struct Drains {
    /// Agents nothing new goes on, each with its rank in drain order (the earliest to start
    /// draining first), so moves finish one agent before the next.
    cordoned: FxHashMap<String, usize>,
    /// Agents drained longer than their Maintenance's `forceAfter`: what is left goes now.
    forced: FxHashSet<String>,
    /// Drained agents freed for an app (`namespace/name`): only it goes on them.
    reserved: FxHashMap<String, String>,
    /// Agents freed for an app within the hour, and the uids of the apps moved off them.
    barred: FxHashMap<String, Vec<String>>,
    /// Agents of an open window waiting for their turn (`maxAgents`): they are not drained
    /// yet, but nothing new goes on them — a replacement placed there would move twice.
    waiting: FxHashSet<String>,
}

impl crate::schedule::AgentRules for Drains {
    fn cordons(&self, agent: &str) -> bool {
        self.moves_off(agent) || (!self.waiting.is_empty() && self.waiting.contains(agent))
    }

    fn reserved_for(&self, agent: &str) -> Option<&str> {
        self.reserved.get(agent).map(String::as_str)
    }

    fn barred(&self, agent: &str) -> &[String] {
        self.barred.get(agent).map_or(&[], Vec::as_slice)
    }
}

/// Whether nothing new (of any app) goes on an agent with this record: draining, or drained
/// for a Maintenance (one drained for an app takes that app).
fn cordons(record: &DrainRecord) -> bool {
    match record.state {
        DrainState::Draining => true,
        DrainState::Drained => record.for_app.is_none(),
        DrainState::Released => false,
    }
}

impl Drains {
    pub fn is_empty(&self) -> bool {
        self.cordoned.is_empty()
    }

    /// Whether `agent` is in maintenance (draining, or drained): what runs on it moves off.
    /// (For placement, agents of an open window still waiting their turn take nothing new
    /// either: [`crate::schedule::AgentRules::cordons`].)
    pub fn moves_off(&self, agent: &str) -> bool {
        !self.cordoned.is_empty() && self.cordoned.contains_key(agent)
    }

    /// `agent`'s rank in drain order (agents not in maintenance last).
    pub fn rank(&self, agent: &str) -> usize {
        self.cordoned.get(agent).copied().unwrap_or(usize::MAX)
    }

    /// Whether what is left on `agent` is forced off now.
    pub fn forces(&self, agent: &str) -> bool {
        !self.forced.is_empty() && self.forced.contains(agent)
    }
}

/// A drain record to write (`next`) or delete (`None`), at the revision read (0: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainWrite {
    pub agent: String,
    pub next: Option<DrainRecord>,
    pub revision: Revision,
}

/// One Maintenance as this tick sees it: what its status reports, blockers aside.
pub struct Object<'s> {
    pub maintenance: &'s Maintenance,
    /// Field errors, if it is invalid (stored under older rules): it then takes no agent.
    pub invalid: Option<String>,
    /// The partitions whose windows are open now (`all`: every covered agent).
    pub open: Vec<String>,
    /// The agents of the open windows, and their states.
    pub agents: Vec<AgentState>,
    /// Agents in maintenance for it now (draining or drained).
    pub cordoned: BTreeSet<String>,
    pub schedule: Vec<ScheduledWindow>,
    /// Windows of the horizon not open yet, first of each partition, with their agents: the
    /// report checks each app against them.
    pub coming: Vec<(Timestamp, String, BTreeSet<String>)>,
    pub next_window: Option<Timestamp>,
}

/// What the maintain stage decided.
pub struct Maintained<'s> {
    pub drains: Drains,
    pub objects: Vec<Object<'s>>,
    pub writes: Vec<DrainWrite>,
    pub events: Vec<Event>,
    /// The attribute apps spread over (the first Maintenance's `partitionBy`).
    pub partition_by: Option<&'s str>,
    pub next_wakeup: Option<Timestamp>,
}

fn agent_event(agent: &str, type_: EventType, reason: &'static str, message: String) -> Event {
    Event { regarding: Regarding::Agent(agent.to_string()), type_, reason, message, of_writes: true }
}

/// The maintain stage.
pub fn maintain<'s>(
    snapshot: &'s Snapshot,
    usage: &Usage<'_>,
    needs: &super::defrag::Needs,
    ctx: &PlanContext,
) -> Maintained<'s> {
    let now = ctx.now;
    let mut maintenances: Vec<&'s Maintenance> = snapshot.maintenances.iter().map(AsRef::as_ref).collect();
    maintenances.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let partition_by = maintenances.iter().find_map(|m| m.spec.partition_by.as_deref());
    let mut out = Maintained {
        drains: Drains::default(),
        objects: Vec::new(),
        writes: Vec::new(),
        events: Vec::new(),
        partition_by,
        next_wakeup: None,
    };
    if maintenances.is_empty() && snapshot.drains.is_empty() {
        return out;
    }
    let live = |agent: &str| usage.held.get(agent).map_or(0, |used| used.live);
    // The records as they will be after this tick: what every later check reads.
    let mut records: BTreeMap<String, DrainRecord> =
        snapshot.drains.iter().map(|(agent, (record, _))| (agent.clone(), (**record).clone())).collect();
    let names: BTreeSet<&str> = maintenances.iter().filter_map(|m| m.metadata.name.as_deref()).collect();
    let places = snapshot.scope.places();
    if places {
        super::defrag::follow(snapshot, usage, needs, now, &mut records, &mut out);
        records.retain(|agent, record| {
            let kept = record.for_app.is_some() || names.contains(record.maintenance.as_str());
            if !kept {
                out.events.push(agent_event(
                    agent,
                    EventType::Normal,
                    "AgentReleased",
                    format!("maintenance {} was deleted; the agent is back in service", record.maintenance),
                ));
            }
            kept
        });
    }
    for maintenance in maintenances {
        let object = one(maintenance, snapshot, &live, now, places, &mut records, &mut out);
        out.objects.push(object);
    }
    // Drain order: the earliest to start draining first.
    let mut order: Vec<(&Timestamp, &String)> =
        records.iter().filter(|(_, r)| cordons(r)).map(|(agent, r)| (&r.draining_since, agent)).collect();
    order.sort();
    out.drains.cordoned = order.iter().enumerate().map(|(rank, (_, agent))| ((*agent).clone(), rank)).collect();
    for (agent, record) in &records {
        match (record.state, &record.for_app) {
            (DrainState::Drained, Some(app)) => _ = out.drains.reserved.insert(agent.clone(), app.clone()),
            (DrainState::Released, Some(_)) => _ = out.drains.barred.insert(agent.clone(), record.moved.clone()),
            _ => {}
        }
    }
    for (agent, record) in &records {
        let force_after = snapshot
            .maintenances
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(record.maintenance.as_str()))
            .and_then(|m| m.spec.force_after());
        if let (DrainState::Draining, Some(after)) = (record.state, force_after) {
            let due = record.draining_since.saturating_add(after).unwrap_or(record.draining_since);
            if due <= now {
                out.drains.forced.insert(agent.clone());
            } else {
                out.next_wakeup = min_time(out.next_wakeup, Some(due));
            }
        }
    }
    if places {
        for (agent, (before, revision)) in &snapshot.drains {
            match records.get(agent) {
                None => out.writes.push(DrainWrite { agent: agent.clone(), next: None, revision: *revision }),
                Some(after) if after != before.as_ref() => {
                    out.writes.push(DrainWrite { agent: agent.clone(), next: Some(after.clone()), revision: *revision })
                }
                Some(_) => {}
            }
        }
        for (agent, record) in &records {
            if !snapshot.drains.contains_key(agent) {
                out.writes.push(DrainWrite { agent: agent.clone(), next: Some(record.clone()), revision: 0 });
            }
        }
    }
    out
}

/// One Maintenance: its windows, its agents' states (updating `records` when `places`).
fn one<'s>(
    maintenance: &'s Maintenance,
    snapshot: &Snapshot,
    live: &dyn Fn(&str) -> usize,
    now: Timestamp,
    places: bool,
    records: &mut BTreeMap<String, DrainRecord>,
    out: &mut Maintained<'_>,
) -> Object<'s> {
    let name = maintenance.metadata.name.clone().unwrap_or_default();
    let spec = &maintenance.spec;
    let mut object = Object {
        maintenance,
        invalid: None,
        open: Vec::new(),
        agents: Vec::new(),
        cordoned: BTreeSet::new(),
        schedule: Vec::new(),
        coming: Vec::new(),
        next_window: None,
    };
    let errors = validate_maintenance(maintenance);
    if !errors.is_empty() {
        object.invalid =
            Some(errors.iter().map(|e| format!("{}: {}", e.field, e.message())).collect::<Vec<_>>().join("; "));
        if places {
            records.retain(|_, r| r.maintenance != name);
        }
        return object;
    }
    let covered: Vec<&AgentRecord> =
        snapshot.agents.values().map(AsRef::as_ref).filter(|a| spec.covers(&a.name, &a.attributes)).collect();
    let partitions = spec.partition_order(covered.iter().filter_map(|a| spec.partition_of(&a.attributes)));
    let in_window = |agent: &AgentRecord, window: &OpenWindow| match &window.partition {
        None => true,
        Some(p) => spec.partition_of(&agent.attributes) == Some(p.as_str()),
    };
    // The windows open now, and the horizon's.
    let horizon = now.saturating_add(SignedDuration::from_hours(24 * i64::from(spec.horizon_days))).unwrap_or(now);
    let windows = spec.windows(&partitions, now, horizon);
    let (open, coming): (Vec<&OpenWindow>, Vec<&OpenWindow>) =
        windows.iter().partition(|w| w.start.is_none_or(|start| start <= now));
    object.open = open.iter().map(|w| w.partition_name().to_string()).collect();
    object.open.dedup();
    object.next_window = coming.first().and_then(|w| w.start);
    for window in &windows {
        let agents: Vec<&str> = covered.iter().filter(|a| in_window(a, window)).map(|a| a.name.as_str()).collect();
        if let (Some(start), Some(end)) = (window.start, window.end) {
            object.schedule.push(ScheduledWindow {
                start: Time(start),
                end: Time(end),
                partition: window.partition_name().to_string(),
                agents: agents.iter().take(MAX_LISTED_AGENTS).map(|a| a.to_string()).collect(),
                agent_count: agents.len() as u32,
            });
        }
    }
    let mut seen_partitions = BTreeSet::new();
    for window in &coming {
        if let Some(start) = window.start
            && seen_partitions.insert(window.partition_name())
        {
            let agents = covered.iter().filter(|a| in_window(a, window)).map(|a| a.name.clone()).collect();
            object.coming.push((start, window.partition_name().to_string(), agents));
        }
    }
    // A window's end (or the next one's start) changes what is in maintenance.
    let next_change = open.iter().filter_map(|w| w.end).chain(object.next_window).min();
    out.next_wakeup = min_time(out.next_wakeup, next_change);

    // Each agent of an open window, with the window that takes it (the earliest open).
    let mut taken: BTreeMap<&str, Option<Timestamp>> = BTreeMap::new();
    for window in &open {
        for agent in covered.iter().filter(|a| in_window(a, window)) {
            taken.entry(agent.name.as_str()).or_insert(window.start);
        }
    }
    let open_starts: BTreeSet<Option<Timestamp>> = open.iter().map(|w| w.start).collect();
    // Records of this Maintenance whose agent is no longer taken go: the window closed (an
    // agent that does not report keeps its record while its window is open: it may be
    // rebooting).
    if places {
        let mine: Vec<String> = records.iter().filter(|(_, r)| r.maintenance == name).map(|(a, _)| a.clone()).collect();
        for agent in mine {
            let record = &records[&agent];
            let reports = snapshot.agents.contains_key(&agent);
            let stays = if reports { taken.contains_key(agent.as_str()) } else { open_starts.contains(&record.window) };
            if stays {
                continue;
            }
            let left = live(&agent);
            let event = if record.state == DrainState::Draining && left > 0 {
                agent_event(
                    &agent,
                    EventType::Warning,
                    "DrainIncomplete",
                    format!(
                        "the window of maintenance {name} closed with {} still on the agent; it is back in service",
                        plural(left, "instance")
                    ),
                )
            } else {
                agent_event(
                    &agent,
                    EventType::Normal,
                    "AgentReleased",
                    format!("the window of maintenance {name} closed; the agent is back in service"),
                )
            };
            out.events.push(event);
            records.remove(&agent);
        }
    }
    let cap = spec.max_agents.map_or(usize::MAX, |n| n as usize);
    let mut in_maintenance = records.values().filter(|r| r.maintenance == name && cordons(r)).count();
    // Agents already in maintenance keep their place: they come first.
    let mut order: Vec<&str> = taken.keys().copied().collect();
    order.sort_by_key(|agent| (records.get(*agent).is_none_or(|r| r.maintenance != name), *agent));
    for agent in order {
        let record = snapshot.agents.get(agent).map(AsRef::as_ref);
        let left = live(agent);
        let state = match records.get(agent) {
            Some(r) if r.maintenance != name => None, // Another Maintenance holds it.
            Some(r) => {
                let next = match r.state {
                    DrainState::Released => DrainState::Released,
                    DrainState::Drained if record.is_some_and(|a| a.started_at > r.since) => DrainState::Released,
                    _ if left > 0 => DrainState::Draining,
                    _ => DrainState::Drained,
                };
                if next != r.state && places {
                    out.events.push(transition(agent, &name, next, left));
                    let record = records.get_mut(agent).expect("found");
                    if next == DrainState::Released {
                        in_maintenance = in_maintenance.saturating_sub(1);
                    }
                    record.state = next;
                    record.since = now;
                }
                Some(records[agent].clone())
            }
            None if places && in_maintenance < cap => {
                let state = if left > 0 { DrainState::Draining } else { DrainState::Drained };
                let window = taken[agent];
                let record = DrainRecord {
                    maintenance: name.clone(),
                    for_app: None,
                    moved: Vec::new(),
                    state,
                    since: now,
                    window,
                    draining_since: now,
                };
                in_maintenance += 1;
                out.events.push(started(agent, &name, window, left));
                records.insert(agent.to_string(), record.clone());
                Some(record)
            }
            None => None,
        };
        let since = state.as_ref().map(|r| Time(r.since));
        let state_name = state.as_ref().map_or(STATE_WAITING, |r| r.state.as_str());
        if state.is_none() {
            out.drains.waiting.insert(agent.to_string());
        }
        if let Some(r) = &state
            && cordons(r)
        {
            object.cordoned.insert(agent.to_string());
        }
        object.agents.push(AgentState {
            name: agent.to_string(),
            state: state_name.to_string(),
            instances: left as u32,
            since,
        });
    }
    // Agents that do not report but stay in maintenance (rebooting) are listed too.
    for (agent, record) in records.iter().filter(|(a, r)| r.maintenance == name && !taken.contains_key(a.as_str())) {
        if cordons(record) {
            object.cordoned.insert(agent.clone());
        }
        object.agents.push(AgentState {
            name: agent.clone(),
            state: record.state.as_str().to_string(),
            instances: live(agent) as u32,
            since: Some(Time(record.since)),
        });
    }
    object.agents.sort_by(|a, b| a.name.cmp(&b.name));
    object
}

fn started(agent: &str, maintenance: &str, window: Option<Timestamp>, instances: usize) -> Event {
    let when = match window {
        Some(start) => format!("the window opened at {start}"),
        None => "an immediate drain".to_string(),
    };
    agent_event(
        agent,
        EventType::Normal,
        "DrainStarted",
        format!(
            "maintenance {maintenance} ({when}): nothing new goes on the agent; what runs on it ({}) moves \
             elsewhere, each replacement first",
            plural(instances, "instance")
        ),
    )
}

fn transition(agent: &str, maintenance: &str, state: DrainState, instances: usize) -> Event {
    match state {
        DrainState::Draining => agent_event(
            agent,
            EventType::Normal,
            "Draining",
            format!("maintenance {maintenance}: {} on the agent again move", plural(instances, "instance")),
        ),
        DrainState::Drained => agent_event(
            agent,
            EventType::Normal,
            "AgentDrained",
            format!("maintenance {maintenance}: nothing is left on the agent; it can be patched and restarted"),
        ),
        DrainState::Released => agent_event(
            agent,
            EventType::Normal,
            "AgentReleased",
            format!("maintenance {maintenance}: the agent restarted after its drain; it is back in service"),
        ),
    }
}

/// Whether `status` differs from what the Maintenance has (then it is written).
pub fn status_changed(maintenance: &Maintenance, status: &MaintenanceStatus) -> bool {
    maintenance.status.as_ref() != Some(status)
}

/// Where one app's instances are, for the check of coming windows.
pub struct Footprint<'a> {
    /// `namespace/name`.
    pub app: String,
    pub wanted: usize,
    /// `ceil(wanted × minimumHealthCapacity)`.
    pub minimum: usize,
    /// The agents of its live instances, one entry per instance.
    pub agents: Vec<&'a str>,
    pub resources: ResourceAmounts,
}

/// Apps a coming window would take below their minimum if their instances there could not be
/// replaced: counted per partition from where the apps' instances are now. An app whose
/// instances on the partition leave fewer than its minimum elsewhere depends on replacements;
/// it is at risk when the other agents (`free_outside` says what they have left) lack the
/// room for every replacement the window needs (`NoRoom`).
pub fn risks(
    object: &Object<'_>,
    apps: &[Footprint<'_>],
    free_outside: &dyn Fn(&BTreeSet<String>) -> ResourceAmounts,
) -> Vec<Risk> {
    if object.coming.is_empty() {
        return Vec::new();
    }
    // Each agent's coming window (its first), so each app's instances are counted in one pass.
    let mut window_of: FxHashMap<&str, usize> = FxHashMap::default();
    for (w, (_, _, agents)) in object.coming.iter().enumerate() {
        for agent in agents {
            window_of.entry(agent.as_str()).or_insert(w);
        }
    }
    let windows = object.coming.len();
    let mut needed = vec![ResourceAmounts::default(); windows];
    let mut relying: Vec<Vec<(&Footprint<'_>, usize)>> = vec![Vec::new(); windows];
    let mut there = vec![0usize; windows];
    for app in apps {
        there.iter_mut().for_each(|n| *n = 0);
        for agent in &app.agents {
            if let Some(&w) = window_of.get(agent) {
                there[w] += 1;
            }
        }
        for (w, &n) in there.iter().enumerate().filter(|(_, n)| **n > 0) {
            needed[w] = needed[w].plus(app.resources.times(n as u64));
            if app.wanted.saturating_sub(n) < app.minimum {
                relying[w].push((app, n));
            }
        }
    }
    let mut risks = Vec::new();
    for (w, (start, partition, agents)) in object.coming.iter().enumerate() {
        if relying[w].is_empty() || free_outside(agents).first_shortfall(needed[w]).is_none() {
            continue;
        }
        for (app, n) in &relying[w] {
            risks.push(Risk {
                window: Time(*start),
                partition: partition.clone(),
                app: app.app.clone(),
                instances: *n as u32,
                minimum: app.minimum as u32,
                reason: "NoRoom".into(),
            });
        }
    }
    risks
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::SignedDuration;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use baton_api::maintenance::{Schedule, Window};
    use baton_api::{DrainRecord, DrainState, Maintenance, MaintenanceSpec};

    use crate::plan::{Plan, PlanContext, StopReason, plan};
    use crate::snapshot::Snapshot;
    use crate::testing::{agent, app, instance, now, snapshot};

    fn spec() -> MaintenanceSpec {
        MaintenanceSpec {
            selector: Default::default(),
            agents: Vec::new(),
            partition_by: Some("rack".into()),
            partitions: Vec::new(),
            schedule: None,
            windows: Vec::new(),
            max_agents: None,
            horizon_days: 7,
            force_after: None,
        }
    }

    fn with(mut snapshot: Snapshot, spec: MaintenanceSpec) -> Snapshot {
        let mut maintenance = Maintenance::new("m", spec);
        maintenance.metadata.uid = Some("uid-m".into());
        snapshot.maintenances.push(Arc::new(maintenance));
        snapshot
    }

    fn draining(mut snapshot: Snapshot, agent: &str, seconds_ago: i64, window: Option<jiff::Timestamp>) -> Snapshot {
        let since = now() - SignedDuration::from_secs(seconds_ago);
        let record = DrainRecord {
            maintenance: "m".into(),
            for_app: None,
            moved: Vec::new(),
            state: DrainState::Draining,
            since,
            window,
            draining_since: since,
        };
        snapshot.drains.insert(agent.into(), (Arc::new(record), 9));
        snapshot
    }

    fn tick(snapshot: &Snapshot) -> Plan {
        plan(snapshot, &PlanContext::at(now(), 1))
    }

    #[test]
    fn a_drain_past_force_after_stops_what_is_left_and_says_so() {
        // One agent, one instance: its replacement has nowhere to go.
        let web = app("web").instances(1).build();
        let s = snapshot(&[&web], vec![agent("a1").build()], vec![instance(&web, "a1", 1).running().build()]);
        let s = with(s, MaintenanceSpec { agents: vec!["a1".into()], force_after: Some("1h".into()), ..spec() });
        let waiting = tick(&draining(s.clone(), "a1", 600, None));
        assert!(waiting.stops.is_empty(), "10 minutes in: it waits");
        let status = &waiting.maintenance_statuses[0].status;
        assert_eq!(status.blocked[0].reason, "NoRoom", "{status:?}");
        assert!(status.blocked[0].message.contains("in maintenance"), "{status:?}");
        assert_eq!(waiting.next_wakeup, Some(now() + SignedDuration::from_secs(3000)), "woken when it is due");

        let forced = tick(&draining(s, "a1", 3601, None));
        assert_eq!(forced.stops.len(), 1);
        assert_eq!(forced.stops[0].reason, StopReason::MoveForced);
        assert!(forced.events.iter().any(|e| e.reason == "DrainForced"), "{:?}", forced.events);
        assert_eq!(forced.maintenance_statuses[0].status.forced_instances, 1);
    }

    #[test]
    fn a_closed_window_releases_its_agents_and_an_open_one_takes_the_next() {
        let start = now() - SignedDuration::from_hours(5);
        let window = |partition: &str, start: jiff::Timestamp| Window {
            start: Time(start),
            end: Time(start + SignedDuration::from_hours(4)),
            partition: Some(partition.into()),
        };
        let agents = vec![agent("a1").attribute("rack", "r1").build(), agent("a2").attribute("rack", "r2").build()];
        let s = snapshot(&[], agents, Vec::new());
        let s = with(s, MaintenanceSpec { windows: vec![window("r1", start), window("r2", now())], ..spec() });
        let p = tick(&draining(s, "a1", 3600, Some(start)));
        let writes: Vec<(&str, Option<DrainState>)> =
            p.drains.iter().map(|w| (w.agent.as_str(), w.next.as_ref().map(|r| r.state))).collect();
        assert_eq!(writes, [("a1", None), ("a2", Some(DrainState::Drained))], "a1 released, a2 (empty) drained");
        assert!(p.events.iter().any(|e| e.reason == "AgentReleased"));
        assert_eq!(p.maintenance_statuses[0].status.window, "r2");
    }

    #[test]
    fn max_agents_holds_and_a_restarted_drained_agent_makes_room_for_the_next() {
        let agents: Vec<_> = (1..=3).map(|i| agent(&format!("a{i}")).attribute("rack", "r1").build()).collect();
        let s = snapshot(&[], agents, Vec::new());
        let schedule =
            Schedule { start: Time(now() - SignedDuration::from_mins(1)), every: "24h".into(), duration: "4h".into() };
        let s = with(s, MaintenanceSpec { schedule: Some(schedule), max_agents: Some(1), ..spec() });
        let first = tick(&s);
        let taken: Vec<&str> = first.drains.iter().map(|w| w.agent.as_str()).collect();
        assert_eq!(taken, ["a1"], "one at a time, in name order");
        let states: Vec<(&str, &str)> =
            first.maintenance_statuses[0].status.agents.iter().map(|a| (a.name.as_str(), a.state.as_str())).collect();
        assert_eq!(states, [("a1", "Drained"), ("a2", "Waiting"), ("a3", "Waiting")]);

        // a1 restarts after its drain: released; a2 goes next.
        let mut s2 = s.clone();
        let record = first.drains[0].next.clone().unwrap();
        s2.drains.insert("a1".into(), (Arc::new(record), 10));
        let mut a1 = (*s2.agents["a1"]).clone();
        a1.started_at = now() + SignedDuration::from_secs(30);
        s2.agents.insert("a1".into(), Arc::new(a1));
        let second = plan(&s2, &PlanContext::at(now() + SignedDuration::from_secs(60), 1));
        let writes: Vec<(&str, Option<DrainState>)> =
            second.drains.iter().map(|w| (w.agent.as_str(), w.next.as_ref().map(|r| r.state))).collect();
        assert_eq!(writes, [("a1", Some(DrainState::Released)), ("a2", Some(DrainState::Drained))]);
    }

    #[test]
    fn a_coming_window_without_room_for_the_replacements_puts_apps_at_risk() {
        // Two racks of one small agent each; web fills both: draining either leaves no room.
        let agents = vec![
            agent("a1").mem(200).attribute("rack", "r1").build(),
            agent("a2").mem(200).attribute("rack", "r2").build(),
        ];
        let web = app("web").instances(2).mem(150.0).build();
        let s = snapshot(
            &[&web],
            agents,
            vec![instance(&web, "a1", 1).running().build(), instance(&web, "a2", 2).running().build()],
        );
        let schedule = Schedule {
            start: Time(now() + SignedDuration::from_hours(10)),
            every: "24h".into(),
            duration: "4h".into(),
        };
        let p = tick(&with(s, MaintenanceSpec { schedule: Some(schedule), ..spec() }));
        let status = &p.maintenance_statuses[0].status;
        let risks: Vec<(&str, &str, &str)> =
            status.at_risk.iter().map(|r| (r.partition.as_str(), r.app.as_str(), r.reason.as_str())).collect();
        assert_eq!(risks, [("r1", "default/web", "NoRoom"), ("r2", "default/web", "NoRoom")]);
        assert_eq!(status.at_risk[0].minimum, 2);
        assert_eq!(status.schedule.len(), 7, "a window a day for the 7-day horizon");
        assert!(p.drains.is_empty(), "no window is open");
    }
}
