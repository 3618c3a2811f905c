//! Property tests: random sequences of events around a planner, with the safety rules of
//! deployments checked after every tick.
//!
//! A small world — agents (with racks), one app, its instances and their statuses, the
//! controller's markers and backoff — is driven by random events: instances start or fail,
//! stops complete, agents vanish and come back, the spec changes mid-deployment (a new
//! version, a new count), time passes. At every tick the planner plans from a snapshot and
//! the plan is applied. Because the plan must not depend on anything but the snapshot, the
//! snapshot is also serialized and read back — as a newly elected leader would read the
//! store — and planned again: the two plans must be the same.
//!
//! After each tick, checked independently of the planner's own arithmetic:
//! - the healthy count never drops below `ceil(n × minimumHealthCapacity)` through the
//!   planner's stops, unless it already was below;
//! - a tick that launches never brings the instances whose process may run above
//!   `floor(n × (1 + maximumOverCapacity))` (one more during a deployment whose minimum
//!   equals that maximum: Marathon's rule);
//! - a tick that launches never brings the starting instances above `maxConcurrentStarts`;
//! - no two live instances of a UNIQUE app share an agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use baton_api::{AgentRecord, App, BackoffRecord, Goal, InstanceRecord, Phase, StatusRecord};

use super::{Plan, PlanContext, plan};
use crate::snapshot::{InstanceState, Marker, Snapshot};
use crate::testing::{agent, app, now};

/// One thing that happens in the world.
#[derive(Debug, Clone)]
enum Event {
    Tick,
    /// The n-th instance not yet running starts.
    Starts(usize),
    /// The n-th running instance fails.
    Fails(usize),
    /// The n-th instance being stopped ends.
    StopCompletes(usize),
    AgentVanishes(usize),
    AgentReturns(usize),
    /// A new version (a changed env).
    NewVersion,
    Scale(i32),
    Seconds(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Tick),
        5 => (0usize..20).prop_map(Event::Starts),
        2 => (0usize..20).prop_map(Event::Fails),
        4 => (0usize..20).prop_map(Event::StopCompletes),
        1 => (0usize..4).prop_map(Event::AgentVanishes),
        1 => (0usize..4).prop_map(Event::AgentReturns),
        1 => Just(Event::NewVersion),
        1 => (0i32..8).prop_map(Event::Scale),
        2 => (1i64..400).prop_map(Event::Seconds),
    ]
}

/// The app's strategy, drawn per case.
#[derive(Debug, Clone)]
struct Setup {
    instances: i32,
    minimum_health: f64,
    maximum_over: f64,
    max_starts: Option<i32>,
    unique: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1i32..7,
        prop::sample::select(vec![0.0, 0.5, 1.0]),
        prop::sample::select(vec![0.0, 0.2, 1.0]),
        prop::option::of(1i32..4),
        any::<bool>(),
    )
        .prop_filter("minimumHealthCapacity 1 needs some over-capacity", |(_, h, o, _, _)| !(*h == 1.0 && *o == 0.0))
        .prop_map(|(instances, minimum_health, maximum_over, max_starts, unique)| Setup {
            instances,
            minimum_health,
            maximum_over,
            max_starts,
            unique,
        })
}

struct World {
    app: App,
    agents: Vec<Arc<AgentRecord>>,
    live: Vec<bool>,
    instances: BTreeMap<String, InstanceState>,
    markers: BTreeMap<String, Marker>,
    backoff: Option<(Arc<BackoffRecord>, i64)>,
    now: Timestamp,
    revision: i64,
    version_counter: u32,
    seed: u64,
}

impl World {
    fn new(setup: &Setup) -> Self {
        let mut builder = app("web").instances(setup.instances).strategy(setup.minimum_health, setup.maximum_over);
        if let Some(n) = setup.max_starts {
            builder = builder.max_concurrent_starts(n);
        }
        if setup.unique {
            builder = builder.constraint(&["hostname", "UNIQUE"]);
        }
        let mut app = (*builder.build()).clone();
        app.spec.resources.cpus = 0.5;
        app.spec.resources.mem = 64.0;
        // Seconds, not minutes: vanished agents' instances go inactive within a case.
        app.spec.unreachable_strategy =
            baton_api::UnreachableStrategy { inactive_after_seconds: 60, expunge_after_seconds: 300 };
        let agents =
            (0..4).map(|i| agent(&format!("a{i}")).attribute("rack", &format!("r{}", i % 2)).build()).collect();
        World {
            app,
            agents,
            live: vec![true; 4],
            instances: BTreeMap::new(),
            markers: BTreeMap::new(),
            backoff: None,
            now: now(),
            revision: 100,
            version_counter: 0,
            seed: 1,
        }
    }

    fn next_revision(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn snapshot(&self) -> Snapshot {
        let agents = self
            .agents
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .map(|(a, _)| (a.name.clone(), a.clone()))
            .collect();
        let backoffs = self
            .backoff
            .iter()
            .map(|(record, rev)| (("default".to_string(), "web".to_string()), (record.clone(), *rev)))
            .collect();
        Snapshot {
            apps: vec![Arc::new(self.app.clone())],
            groups: Vec::new(),
            agents,
            instances: self.instances.clone(),
            unreachable: self.markers.clone(),
            backoffs,
            kill_requests: Default::default(),
        }
    }

    fn live_agent(&self, name: &str) -> bool {
        self.agents.iter().zip(&self.live).any(|(a, live)| a.name == name && *live)
    }

    fn nth(&self, n: usize, pick: impl Fn(&InstanceState) -> bool) -> Option<String> {
        let matching: Vec<&String> = self.instances.iter().filter(|(_, i)| pick(i)).map(|(id, _)| id).collect();
        (!matching.is_empty()).then(|| matching[n % matching.len()].clone())
    }

    fn set_status(&mut self, id: &str, phase: Phase) {
        let now = self.now;
        let instance = self.instances.get_mut(id).expect("an instance");
        let mut status = instance.status.as_deref().cloned().unwrap_or_else(|| StatusRecord::new(phase));
        status.phase = phase;
        match phase {
            Phase::Running => status.started_at = Some(now),
            _ => status.finished_at = Some(now),
        }
        instance.status = Some(Arc::new(status));
    }

    fn apply(&mut self, plan: &Plan) {
        for launch in &plan.launches {
            let revision = self.next_revision();
            let state = InstanceState { record: Arc::new(launch.record.clone()), revision, status: None };
            self.instances.insert(launch.record.id.clone(), state);
        }
        for stop in &plan.stops {
            let revision = self.next_revision();
            let mut record = stop.record.clone();
            record.goal = Goal::Stopped;
            if let Some(state) = self.instances.get_mut(&stop.record.id) {
                state.record = Arc::new(record);
                state.revision = revision;
            }
        }
        for removal in plan.removals.iter().chain(plan.backoffs.iter().flat_map(|b| &b.removals)) {
            self.instances.remove(&removal.id);
        }
        for change in &plan.backoffs {
            let revision = self.next_revision();
            self.backoff = change.next.clone().map(|record| (Arc::new(record), revision));
        }
        for mark in &plan.marks {
            let revision = self.next_revision();
            self.markers.insert(mark.agent.clone(), Marker { since: mark.since, revision });
        }
        for unmark in &plan.unmarks {
            self.markers.remove(&unmark.agent);
        }
        for update in &plan.statuses {
            self.app.status = Some(update.status.clone());
        }
    }

    fn healthy(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.record.goal == Goal::Running && i.is_healthy() && self.live_agent(&i.record.agent))
            .count()
    }

    /// Instances whose process may run: not ended, on a live agent, or on a gone agent not
    /// yet inactive.
    fn processes(&self) -> usize {
        let inactive_after = SignedDuration::from_secs(self.app.spec.unreachable_strategy.inactive_after_seconds);
        self.instances
            .values()
            .filter(|i| !i.is_terminal())
            .filter(|i| {
                self.live_agent(&i.record.agent)
                    || self.markers.get(&i.record.agent).is_none_or(|m| m.since + inactive_after > self.now)
            })
            .count()
    }

    /// Current-version instances launched and wanted running that are not healthy yet.
    fn starting(&self) -> usize {
        let version = self.app.version();
        self.instances
            .values()
            .filter(|i| i.record.goal == Goal::Running && i.record.version == version && !i.is_terminal())
            .filter(|i| self.live_agent(&i.record.agent) && !i.is_healthy())
            .count()
    }

    fn tick(&mut self) -> Result<(), TestCaseError> {
        let snapshot = self.snapshot();
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let ctx = PlanContext { now: self.now, seed: self.seed };
        let decided = plan(&snapshot, &ctx);
        // A new leader reads the same state back from the store: it must decide the same.
        let reread = round_trip(&snapshot);
        prop_assert_eq!(&plan(&reread, &ctx), &decided, "a fresh planner on the stored state decides differently");

        let n = self.app.spec.instances.max(0) as u64;
        let strategy = self.app.spec.upgrade_strategy;
        let min_healthy = (n * strategy.minimum_health_permille()).div_ceil(1000) as usize;
        let mut max_total = (n * (1000 + strategy.maximum_over_permille()) / 1000) as usize;
        // Marathon's rule: one over when the minimum equals the maximum during a deployment.
        let deploying = self
            .instances
            .values()
            .any(|i| i.record.goal == Goal::Running && !i.is_terminal() && i.record.version != self.app.version());
        if min_healthy == max_total && deploying {
            max_total += 1;
        }
        let healthy_before = self.healthy();
        self.apply(&decided);
        let healthy_after = self.healthy();
        prop_assert!(
            healthy_after >= min_healthy.min(healthy_before),
            "the planner's stops took healthy from {} to {} (minimum {})",
            healthy_before,
            healthy_after,
            min_healthy
        );
        if !decided.launches.is_empty() {
            prop_assert!(
                self.processes() <= max_total,
                "{} processes may run; at most {} are allowed",
                self.processes(),
                max_total
            );
            if let Some(max) = strategy.max_concurrent_starts {
                prop_assert!(self.starting() <= max as usize, "{} starting; at most {} at once", self.starting(), max);
            }
        }
        if !self.app.spec.constraints.is_empty() {
            let mut on: BTreeMap<&str, usize> = BTreeMap::new();
            for i in self.instances.values().filter(|i| !i.is_terminal() && self.live_agent(&i.record.agent)) {
                *on.entry(i.record.agent.as_str()).or_default() += 1;
            }
            prop_assert!(on.values().all(|n| *n <= 1), "UNIQUE violated: {:?}", on);
        }
        self.now += SignedDuration::from_secs(1);
        Ok(())
    }

    fn happen(&mut self, event: &Event) -> Result<(), TestCaseError> {
        match event {
            Event::Tick => return self.tick(),
            Event::Starts(n) => {
                if let Some(id) =
                    self.nth(*n, |i| !i.is_terminal() && !i.is_running() && i.record.goal == Goal::Running)
                {
                    self.set_status(&id, Phase::Running);
                }
            }
            Event::Fails(n) => {
                if let Some(id) = self.nth(*n, |i| i.is_running() && i.record.goal == Goal::Running) {
                    self.set_status(&id, Phase::Failed);
                }
            }
            Event::StopCompletes(n) => {
                if let Some(id) = self.nth(*n, |i| !i.is_terminal() && i.record.goal == Goal::Stopped) {
                    self.set_status(&id, Phase::Killed);
                }
            }
            Event::AgentVanishes(a) => self.live[*a] = false,
            Event::AgentReturns(a) => self.live[*a] = true,
            Event::NewVersion => {
                self.version_counter += 1;
                self.app.spec.env.insert("V".into(), self.version_counter.to_string());
            }
            Event::Scale(n) => self.app.spec.instances = *n,
            Event::Seconds(s) => self.now += SignedDuration::from_secs(*s),
        }
        Ok(())
    }
}

/// The snapshot as a new leader would read it: every record through its stored JSON form.
fn round_trip(snapshot: &Snapshot) -> Snapshot {
    fn again<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        serde_json::from_slice(&serde_json::to_vec(value).expect("serializes")).expect("deserializes")
    }
    Snapshot {
        apps: snapshot.apps.iter().map(|a| Arc::new(again(a.as_ref()))).collect(),
        groups: snapshot.groups.iter().map(|g| Arc::new(again(g.as_ref()))).collect(),
        agents: snapshot.agents.iter().map(|(k, a)| (k.clone(), Arc::new(again(a.as_ref())))).collect(),
        instances: snapshot
            .instances
            .iter()
            .map(|(id, i)| {
                let record: InstanceRecord = again(i.record.as_ref());
                let status = i.status.as_ref().map(|s| Arc::new(again::<StatusRecord>(s.as_ref())));
                (id.clone(), InstanceState { record: Arc::new(record), revision: i.revision, status })
            })
            .collect(),
        unreachable: snapshot.unreachable.clone(),
        backoffs: snapshot
            .backoffs
            .iter()
            .map(|(k, (b, rev))| (k.clone(), (Arc::new(again(b.as_ref())), *rev)))
            .collect(),
        kill_requests: snapshot
            .kill_requests
            .iter()
            .map(|(k, (r, rev))| (k.clone(), (Arc::new(again(r.as_ref())), *rev)))
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn deployments_keep_their_promises(setup in setup(), events in prop::collection::vec(event(), 1..120)) {
        let mut world = World::new(&setup);
        for event in &events {
            world.happen(event)?;
        }
        // Settle: let everything start and every stop complete; the app converges.
        for _ in 0..40 {
            world.tick()?;
            while let Some(id) = world.nth(0, |i| !i.is_terminal() && i.record.goal == Goal::Stopped) {
                world.set_status(&id, Phase::Killed);
            }
            while let Some(id) = world.nth(0, |i| !i.is_terminal() && !i.is_running() && i.record.goal == Goal::Running && world.live_agent(&i.record.agent)) {
                world.set_status(&id, Phase::Running);
            }
            world.now += SignedDuration::from_secs(30);
        }
        let version = world.app.version();
        let wanted = world.app.spec.instances.max(0) as usize;
        let live: Vec<&InstanceState> = world.instances.values()
            .filter(|i| i.record.goal == Goal::Running && !i.is_terminal() && world.live_agent(&i.record.agent))
            .collect();
        let live_agents = world.live.iter().filter(|l| **l).count();
        let placeable = match (live_agents, setup.unique) {
            (0, _) => 0,
            (n, true) => wanted.min(n),
            (_, false) => wanted,
        };
        let converged = live.iter().filter(|i| i.record.version == version).count() == placeable
            && live.iter().all(|i| i.record.version == version);
        // A UNIQUE app on every agent cannot move with minimumHealthCapacity 1 (no agent is
        // free for a new instance, and no old one may stop first): it must say so.
        let stuck = world.app.status.as_ref().and_then(|s| s.condition(baton_api::app::CONDITION_PROGRESSING)).is_some_and(|c| c.reason == "Stuck");
        prop_assert!(converged || (setup.unique && stuck), "the app neither converged to its spec nor reports being stuck: {:?}", live);
    }
}
