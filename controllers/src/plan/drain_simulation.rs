//! Property tests of drains (DESIGN.md §9): random clusters of agents in racks, several apps
//! with random budgets (some with health checks, some with slow starts), a Maintenance that
//! drains named agents at once or opens scheduled windows on one rack after another, and
//! random events — instances start (late), fail their probes, stops complete, drained agents
//! restart, apps scale, time passes. At every tick the planner plans from a snapshot, and a
//! second planner given the same state read back from its stored form (a new leader) must
//! plan the same; the plan is applied. Checked after every tick, from the world, not from the
//! planner's arithmetic:
//! - an instance stops as `Moved` only if its app keeps `wanted` healthy instances without it
//!   (its replacement is healthy and ready) — however many agents drain at once;
//! - no app's healthy count drops below `ceil(n × minimumHealthCapacity)` through the
//!   planner's stops (unless it already was below);
//! - a tick that launches never brings an app's starting instances above
//!   `maxConcurrentStarts`;
//! - nothing is launched on an agent in maintenance (after the tick's own changes: one
//!   released this tick takes instances again);
//! - never more than `maxAgents` agents are in maintenance;
//! - an agent is recorded Drained only with nothing left on it, and Released only after
//!   being Drained.
//!
//! When the Maintenance is deleted, every app converges to its spec and no record is left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use baton_api::maintenance::{Schedule, validate_maintenance};
use baton_api::{AgentRecord, App, DrainRecord, DrainState, Goal, Maintenance, MaintenanceSpec, Phase};

use super::{Plan, PlanContext, StopReason, plan};
use crate::snapshot::{InstanceState, Snapshot};
use crate::testing::{agent, app, now};

const AGENTS: usize = 6;

#[derive(Debug, Clone)]
struct AppSetup {
    instances: i32,
    minimum_health: f64,
    maximum_over: f64,
    max_starts: Option<i32>,
    checks: bool,
}

#[derive(Debug, Clone)]
struct Setup {
    apps: Vec<AppSetup>,
    /// Named agents drained at once (when `scheduled` is false).
    named: Vec<usize>,
    scheduled: bool,
    max_agents: Option<u32>,
}

fn app_setup() -> impl Strategy<Value = AppSetup> {
    (
        1i32..7,
        prop::sample::select(vec![0.5, 1.0]),
        prop::sample::select(vec![0.0, 1.0]),
        prop::option::of(1i32..3),
        any::<bool>(),
    )
        .prop_map(|(instances, minimum_health, maximum_over, max_starts, checks)| AppSetup {
            instances,
            minimum_health,
            maximum_over,
            max_starts,
            checks,
        })
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec(app_setup(), 1..4),
        prop::collection::vec(0usize..AGENTS, 1..4),
        any::<bool>(),
        prop::option::of(1u32..3),
    )
        .prop_map(|(apps, named, scheduled, max_agents)| Setup { apps, named, scheduled, max_agents })
}

#[derive(Debug, Clone)]
enum Event {
    Tick,
    /// The n-th instance launched and not yet running starts (slow starts: they wait for this).
    Starts(usize),
    /// The n-th running instance of an app with checks starts or stops failing its probes.
    Sick(usize),
    /// Every running instance is probed.
    Probe,
    StopCompletes(usize),
    /// The n-th drained agent restarts (it was patched).
    Restarts(usize),
    /// App a scales to n.
    Scale(usize, i32),
    Seconds(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Tick),
        5 => (0usize..20).prop_map(Event::Starts),
        1 => (0usize..20).prop_map(Event::Sick),
        4 => Just(Event::Probe),
        4 => (0usize..20).prop_map(Event::StopCompletes),
        1 => (0usize..AGENTS).prop_map(Event::Restarts),
        1 => (0usize..3, 0i32..7).prop_map(|(a, n)| Event::Scale(a, n)),
        2 => (1i64..200).prop_map(Event::Seconds),
    ]
}

struct World {
    apps: Vec<App>,
    agents: Vec<Arc<AgentRecord>>,
    instances: BTreeMap<String, InstanceState>,
    maintenance: Option<Arc<Maintenance>>,
    drains: BTreeMap<String, (Arc<DrainRecord>, i64)>,
    sick: BTreeSet<String>,
    now: Timestamp,
    revision: i64,
    seed: u64,
}

impl World {
    fn new(setup: &Setup) -> Self {
        let apps = setup
            .apps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut builder =
                    app(&format!("app{i}")).instances(s.instances).strategy(s.minimum_health, s.maximum_over);
                if let Some(n) = s.max_starts {
                    builder = builder.max_concurrent_starts(n);
                }
                if s.checks {
                    builder = builder.ports(1).tcp_check(3);
                }
                let mut app = (*builder.build()).clone();
                for check in &mut app.spec.health_checks {
                    check.grace_period_seconds = 5;
                    check.interval_seconds = 1;
                    check.delay_seconds = 0;
                }
                app
            })
            .collect();
        let agents =
            (0..AGENTS).map(|i| agent(&format!("a{i}")).attribute("rack", &format!("r{}", i % 3)).build()).collect();
        World {
            apps,
            agents,
            instances: BTreeMap::new(),
            maintenance: None,
            drains: BTreeMap::new(),
            sick: BTreeSet::new(),
            now: now(),
            revision: 100,
            seed: 7,
        }
    }

    fn maintain(&mut self, setup: &Setup) {
        let spec = MaintenanceSpec {
            selector: Default::default(),
            agents: if setup.scheduled {
                Vec::new()
            } else {
                setup.named.iter().map(|i| format!("a{i}")).collect::<BTreeSet<_>>().into_iter().collect()
            },
            partition_by: Some("rack".into()),
            partitions: Vec::new(),
            schedule: setup.scheduled.then(|| Schedule {
                start: Time(self.now),
                every: "20m".into(),
                duration: "15m".into(),
            }),
            windows: Vec::new(),
            max_agents: setup.max_agents,
            horizon_days: 1,
            force_after: None,
        };
        let mut maintenance = Maintenance::new("racks", spec);
        maintenance.metadata.uid = Some("uid-racks".into());
        assert!(validate_maintenance(&maintenance).is_empty());
        self.maintenance = Some(Arc::new(maintenance));
    }

    fn next_revision(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            apps: self.apps.iter().cloned().map(Arc::new).collect(),
            agents: self.agents.iter().map(|a| (a.name.clone(), a.clone())).collect(),
            instances: Arc::new(self.instances.clone()),
            maintenances: self.maintenance.iter().cloned().collect(),
            drains: self.drains.clone(),
            ..Snapshot::default()
        }
    }

    fn nth(&self, n: usize, pick: impl Fn(&InstanceState) -> bool) -> Option<String> {
        let matching: Vec<&String> = self.instances.iter().filter(|(_, i)| pick(i)).map(|(id, _)| id).collect();
        (!matching.is_empty()).then(|| matching[n % matching.len()].clone())
    }

    fn set_phase(&mut self, id: &str, phase: Phase) {
        crate::testing::set_phase(self.instances.get_mut(id).expect("an instance"), phase, self.now);
    }

    fn probe(&mut self) {
        let now = self.now;
        for (id, instance) in self.instances.iter_mut() {
            if instance.is_running() && !instance.record.run.health_checks.is_empty() {
                // Past the grace period at once: a sick instance fails from its first probe.
                crate::testing::probe(instance, !self.sick.contains(id), SignedDuration::ZERO, now);
            }
        }
    }

    fn of_app<'w>(&'w self, app: &'w App) -> impl Iterator<Item = &'w InstanceState> + 'w {
        let uid = app.metadata.uid.clone().unwrap_or_default();
        self.instances.values().filter(move |i| i.record.run.app.uid == uid)
    }

    fn healthy(&self, app: &App) -> usize {
        self.of_app(app).filter(|i| i.record.goal == Goal::Running && i.is_healthy()).count()
    }

    fn starting(&self, app: &App) -> usize {
        let version = app.version();
        self.of_app(app)
            .filter(|i| i.record.goal == Goal::Running && i.record.run.version == version && !i.is_terminal())
            .filter(|i| !i.is_healthy())
            .count()
    }

    fn live_on(&self, agent: &str) -> usize {
        self.instances.values().filter(|i| i.record.agent == agent && !i.is_terminal()).count()
    }

    fn cordoned(&self) -> BTreeSet<String> {
        self.drains.iter().filter(|(_, (r, _))| r.state.cordons()).map(|(a, _)| a.clone()).collect()
    }

    fn apply(&mut self, plan: &Plan) {
        crate::testing::apply_to_instances(&mut self.instances, plan, &mut self.revision);
        for write in &plan.drains {
            let revision = self.next_revision();
            match &write.next {
                Some(record) => _ = self.drains.insert(write.agent.clone(), (Arc::new(record.clone()), revision)),
                None => _ = self.drains.remove(&write.agent),
            }
        }
        for update in &plan.statuses {
            if let Some(app) = self.apps.iter_mut().find(|a| a.metadata.name.as_deref() == Some(update.name.as_str())) {
                app.status = Some(update.status.clone());
            }
        }
        for update in &plan.maintenance_statuses {
            if let Some(m) = &mut self.maintenance {
                Arc::make_mut(m).status = Some(update.status.clone());
            }
        }
    }

    fn tick(&mut self) -> Result<(), TestCaseError> {
        let snapshot = self.snapshot();
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let ctx = PlanContext::at(self.now, self.seed);
        let decided = plan(&snapshot, &ctx);
        let reread = super::simulation::round_trip(&snapshot);
        prop_assert_eq!(&plan(&reread, &ctx), &decided, "a fresh planner on the stored state decides differently");

        let healthy_before: Vec<usize> = self.apps.iter().map(|a| self.healthy(a)).collect();
        let healthy_ids: BTreeSet<String> = self
            .instances
            .values()
            .filter(|i| i.record.goal == Goal::Running && i.is_healthy())
            .map(|i| i.id().to_string())
            .collect();
        // Drain records: Drained only when nothing is left, Released only after Drained.
        for write in &decided.drains {
            let Some(record) = &write.next else { continue };
            let before = self.drains.get(&write.agent).map(|(r, _)| r.state);
            if record.state == DrainState::Drained {
                prop_assert_eq!(
                    self.live_on(&write.agent),
                    0,
                    "{} recorded Drained with instances on it",
                    &write.agent
                );
            }
            if record.state == DrainState::Released {
                prop_assert!(
                    matches!(before, Some(DrainState::Drained | DrainState::Released)),
                    "{} released from {:?}",
                    &write.agent,
                    before
                );
            }
        }
        self.apply(&decided);
        let cordoned_after = self.cordoned();
        for launch in &decided.launches {
            prop_assert!(
                !cordoned_after.contains(&launch.record.agent),
                "{} launched on {}, which is in maintenance",
                &launch.record.id,
                &launch.record.agent
            );
        }
        if let Some(max) = self.maintenance.as_ref().and_then(|m| m.spec.max_agents) {
            prop_assert!(cordoned_after.len() <= max as usize, "{:?} in maintenance; at most {}", cordoned_after, max);
        }
        for (index, app) in self.apps.iter().enumerate() {
            let wanted = app.spec.instances.max(0) as usize;
            let uid = app.metadata.uid.as_deref().unwrap_or_default();
            // A healthy instance moved: its replacement is healthy (ids of the healthy before).
            let moved = decided.stops.iter().any(|s| {
                s.reason == StopReason::Moved && s.record.run.app.uid == uid && healthy_ids.contains(&s.record.id)
            });
            let healthy = self.healthy(app);
            if moved {
                prop_assert!(
                    healthy >= wanted,
                    "{}: an instance moved with {} healthy left of {} wanted",
                    uid,
                    healthy,
                    wanted
                );
            }
            let s = app.spec.upgrade_strategy;
            let min_healthy = (wanted as u64 * s.minimum_health_permille()).div_ceil(1000) as usize;
            prop_assert!(
                healthy >= min_healthy.min(healthy_before[index]),
                "{}: the planner's stops took healthy from {} to {} (minimum {})",
                uid,
                healthy_before[index],
                healthy,
                min_healthy
            );
            let launched = decided.launches.iter().any(|l| l.record.run.app.uid == uid);
            if let (true, Some(max)) = (launched, s.max_concurrent_starts) {
                prop_assert!(
                    self.starting(app) <= max as usize,
                    "{}: {} starting, at most {}",
                    uid,
                    self.starting(app),
                    max
                );
            }
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
                    self.set_phase(&id, Phase::Running);
                }
            }
            Event::Sick(n) => {
                if let Some(id) = self.nth(*n, |i| i.is_running() && !i.record.run.health_checks.is_empty())
                    && !self.sick.remove(&id)
                {
                    self.sick.insert(id);
                }
            }
            Event::Probe => self.probe(),
            Event::StopCompletes(n) => {
                if let Some(id) = self.nth(*n, |i| !i.is_terminal() && i.record.goal == Goal::Stopped) {
                    self.set_phase(&id, Phase::Killed);
                }
            }
            Event::Restarts(n) => {
                let name = format!("a{n}");
                let drained = self.drains.get(&name).is_some_and(|(r, _)| r.state == DrainState::Drained);
                if drained && self.live_on(&name) == 0 {
                    let agent = &mut self.agents[*n];
                    Arc::make_mut(agent).started_at = self.now;
                }
            }
            Event::Scale(a, n) => {
                if let Some(app) = self.apps.get_mut(*a) {
                    app.spec.instances = *n;
                }
            }
            Event::Seconds(s) => self.now += SignedDuration::from_secs(*s),
        }
        Ok(())
    }

    /// Everything starts, passes its probes and stops, while the planner ticks.
    fn settle(&mut self, ticks: usize) -> Result<(), TestCaseError> {
        self.sick.clear();
        for _ in 0..ticks {
            while let Some(id) = self.nth(0, |i| !i.is_terminal() && i.record.goal == Goal::Stopped) {
                self.set_phase(&id, Phase::Killed);
            }
            while let Some(id) = self.nth(0, |i| !i.is_terminal() && !i.is_running() && i.record.goal == Goal::Running)
            {
                self.set_phase(&id, Phase::Running);
            }
            for _ in 0..4 {
                self.probe();
            }
            self.tick()?;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn drains_keep_every_budget_across_agents_and_leaders(setup in setup(), events in prop::collection::vec(event(), 1..150)) {
        let mut world = World::new(&setup);
        world.settle(10)?;
        world.maintain(&setup);
        for event in &events {
            world.happen(event)?;
        }
        // The maintenance ends; everything converges and no record is left.
        world.maintenance = None;
        world.settle(30)?;
        prop_assert!(world.drains.is_empty(), "records left: {:?}", world.drains);
        for app in &world.apps {
            let wanted = app.spec.instances.max(0) as usize;
            let version = app.version();
            let healthy = world.of_app(app).filter(|i| i.record.goal == Goal::Running && i.is_healthy() && i.record.run.version == version).count();
            prop_assert_eq!(healthy, wanted, "{} did not converge", app.metadata.name.clone().unwrap_or_default());
        }
    }
}

/// The Nomad #25979 case: two agents drain at once, an app with `maxConcurrentStarts: 1` and
/// `minimumHealthCapacity: 1` has instances on both. Its budget holds across both: one start
/// at a time, and no instance stops before a replacement is healthy.
#[test]
fn two_agents_drained_at_once_share_one_apps_start_cap() {
    let setup = Setup {
        apps: vec![AppSetup {
            instances: 6,
            minimum_health: 1.0,
            maximum_over: 0.0,
            max_starts: Some(1),
            checks: false,
        }],
        named: vec![0, 1],
        scheduled: false,
        max_agents: None,
    };
    let mut world = World::new(&setup);
    world.settle(10).unwrap();
    let on_drained = |w: &World| {
        w.instances.values().filter(|i| ["a0", "a1"].contains(&i.record.agent.as_str()) && !i.is_terminal()).count()
    };
    assert!(on_drained(&world) >= 2, "the app spreads over the racks, so both agents hold some");
    world.maintain(&setup);
    let mut ticks = 0;
    while on_drained(&world) > 0 {
        // Starts come slowly: one tick to launch, one to run; the checks run at each tick.
        world.tick().unwrap();
        let app = &world.apps[0];
        assert!(world.starting(app) <= 1, "{} starting at once", world.starting(app));
        world.settle(1).unwrap();
        ticks += 1;
        assert!(ticks < 60, "the drain did not finish");
    }
    let drained: Vec<DrainState> = world.drains.values().map(|(r, _)| r.state).collect();
    assert_eq!(drained, [DrainState::Drained, DrainState::Drained]);
    assert_eq!(world.healthy(&world.apps[0]), 6);
}
