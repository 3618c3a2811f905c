//! `hack/bench.sh drain`: maintenance drains and defragmentation through the real planner,
//! tick by tick, in simulated time (one tick a second; no processes).
//!
//! Drain: 1,000 agents in 10 racks (fixed partitions), 5,000 apps of 1–200 instances
//! (log-uniform: over half have fewer than 20), each with a start delay of 5–60 s (slow
//! starts: an instance is Staging that long before it runs and is healthy), a
//! `maxConcurrentStarts` of a fifth of its instances (1–50) and a `minimumHealthCapacity` of
//! 0.5, 0.8 or 1. A Maintenance on racks computes its schedule 7 days ahead; its first window
//! drains rack r0 (100 agents), at most 20 at once; an operator restarts each agent 60 s after
//! it is drained (it is then released and the next may go). Checked at every tick, from the
//! simulated world: agents in maintenance ≤ 20; per app, starting ≤ its cap and healthy ≥ its
//! minimum; no agent recorded Drained with anything on it, none Released before Drained.
//! Prints the violations (each must be 0) and the time to release the whole rack against the
//! lower bound the caps allow: every agent needs its slowest instance's start delay plus the
//! restart, 20 at a time; every app needs `ceil(moved / cap)` start delays.
//!
//! Defragmentation: 200 agents (16 cpus) holding 1,000 small instances spread over all of
//! them (as churn leaves them: no agent empty); 20 whole-agent instances (12 cpus) arrive.
//! Prints when each runs, how long after its agent was empty, and moves per small instance.
//!
//! `SCALE=0.1` runs a tenth of the drain fleet, for a quick look.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rustc_hash::FxHashMap;

use baton_api::maintenance::Schedule;
use baton_api::{
    AgentRecord, App, AppSpec, DrainState, Goal, Maintenance, MaintenanceSpec, Phase, PortRange, ResourceAmounts,
    RunSpec, StatusRecord,
};
use baton_controllers::plan::{Plan, PlanContext, StopReason, plan};
use baton_controllers::snapshot::{InstanceState, Snapshot};

/// The same fleet every run.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(rand::SeedableRng::seed_from_u64(seed))
    }

    fn unit(&mut self) -> f64 {
        rand::Rng::random(&mut self.0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[rand::Rng::random_range(&mut self.0, 0..items.len())]
    }
}

fn agent(i: usize, racks: usize, cpus: u64) -> AgentRecord {
    AgentRecord {
        name: format!("agent-{i:04}"),
        host: format!("10.1.{}.{}", i / 250, i % 250),
        resources: ResourceAmounts { millicpus: cpus * 1000, mem_mib: cpus * 4096, disk_mib: 100_000, gpus: 0 },
        attributes: BTreeMap::from([("rack".to_string(), format!("r{}", i % racks))]),
        ports: vec![PortRange { begin: 31000, end: 32000 }],
        version: "bench".into(),
        started_at: Timestamp::UNIX_EPOCH,
        sandbox: None,
    }
}

fn app(i: usize, spec: serde_json::Value) -> App {
    let spec: AppSpec = serde_json::from_value(spec).expect("a bench spec");
    let mut app = App::new(&format!("app-{i:04}"), spec);
    app.metadata.namespace = Some("bench".into());
    app.metadata.uid = Some(format!("6ba7b810-9dad-41d1-80b4-{i:012x}"));
    app.metadata.generation = Some(1);
    app.metadata.finalizers = Some(vec![baton_api::app::STOP_FINALIZER.into()]);
    app
}

/// The simulated world: the snapshot, and when each staging instance runs and each stopped
/// one ends.
struct World {
    snapshot: Snapshot,
    now: Timestamp,
    revision: i64,
    /// Per app uid: its start delay.
    delay: FxHashMap<String, SignedDuration>,
    runs_at: BTreeMap<String, Timestamp>,
    ends_at: BTreeMap<String, Timestamp>,
    app_index: FxHashMap<String, usize>,
    plan_ms: Vec<f64>,
}

impl World {
    fn new(apps: Vec<App>, agents: Vec<AgentRecord>, now: Timestamp) -> Self {
        let app_index = apps.iter().enumerate().map(|(i, a)| (a.metadata.name.clone().unwrap(), i)).collect();
        let snapshot = Snapshot {
            apps: apps.into_iter().map(Arc::new).collect(),
            agents: agents.into_iter().map(|a| (a.name.clone(), Arc::new(a))).collect(),
            ..Snapshot::default()
        };
        World {
            snapshot,
            now,
            revision: 1,
            delay: FxHashMap::default(),
            runs_at: BTreeMap::new(),
            ends_at: BTreeMap::new(),
            app_index,
            plan_ms: Vec::new(),
        }
    }

    fn tick(&mut self) -> Plan {
        let ctx = PlanContext::at(self.now, self.revision as u64);
        // As the runtime has it: gathered with the instances, outside the plan.
        self.snapshot.held = None;
        self.snapshot.held = Some(self.snapshot.held());
        let started = Instant::now();
        let decided = plan(&self.snapshot, &ctx);
        self.plan_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        decided
    }

    /// Applies a plan as the executor and the agents would; launches stage for their app's
    /// start delay (none when `at_once`).
    fn apply(&mut self, plan: &Plan, at_once: bool) {
        for launch in &plan.launches {
            self.revision += 1;
            let delay = if at_once { SignedDuration::ZERO } else { self.delay[&launch.record.run.app.uid] };
            let phase = if delay.is_zero() { Phase::Running } else { Phase::Staging };
            let mut status = StatusRecord::new(phase);
            status.started_at = Some(self.now);
            if phase == Phase::Staging {
                self.runs_at.insert(launch.record.id.clone(), self.now + delay);
            }
            let state = InstanceState::new(Arc::new(launch.record.clone()), self.revision, Some(Arc::new(status)));
            self.snapshot.instances_mut().insert(launch.record.id.clone(), state);
        }
        for stop in &plan.stops {
            self.revision += 1;
            if let Some(state) = self.snapshot.instances_mut().get_mut(&stop.record.id) {
                let mut record = stop.record.clone();
                record.goal = Goal::Stopped;
                record.stop_reason = Some(stop.reason.as_str().into());
                state.set_record(Arc::new(record));
                state.revision = self.revision;
                self.ends_at.insert(stop.record.id.clone(), self.now + SignedDuration::from_secs(1));
                self.runs_at.remove(&stop.record.id);
            }
        }
        for removal in &plan.removals {
            self.snapshot.instances_mut().remove(&removal.id);
        }
        for write in &plan.drains {
            self.revision += 1;
            match &write.next {
                Some(record) => {
                    self.snapshot.drains.insert(write.agent.clone(), (Arc::new(record.clone()), self.revision));
                }
                None => _ = self.snapshot.drains.remove(&write.agent),
            }
        }
        for update in &plan.statuses {
            if let Some(&i) = self.app_index.get(&update.name) {
                Arc::make_mut(&mut self.snapshot.apps[i]).status = Some(update.status.clone());
            }
        }
        for change in &plan.finalizers {
            if let Some(&i) = self.app_index.get(&change.name) {
                Arc::make_mut(&mut self.snapshot.apps[i]).metadata.finalizers = Some(change.finalizers.clone());
            }
        }
        for update in &plan.maintenance_statuses {
            if let Some(m) = self.snapshot.maintenances.first_mut() {
                Arc::make_mut(m).status = Some(update.status.clone());
            }
        }
    }

    /// A second passes: staging instances whose delay is over run; stopped ones end.
    fn second(&mut self) {
        self.now += SignedDuration::from_secs(1);
        let due: Vec<String> =
            self.runs_at.iter().filter(|(_, at)| **at <= self.now).map(|(id, _)| id.clone()).collect();
        for id in due {
            self.runs_at.remove(&id);
            self.set_phase(&id, Phase::Running);
        }
        let ended: Vec<String> =
            self.ends_at.iter().filter(|(_, at)| **at <= self.now).map(|(id, _)| id.clone()).collect();
        for id in ended {
            self.ends_at.remove(&id);
            self.set_phase(&id, Phase::Killed);
        }
    }

    fn set_phase(&mut self, id: &str, phase: Phase) {
        if let Some(state) = self.snapshot.instances_mut().get_mut(id) {
            let mut status = state.status.as_deref().cloned().unwrap_or_else(|| StatusRecord::new(phase));
            status.phase = phase;
            if phase.is_terminal() {
                status.finished_at = Some(self.now);
            } else {
                status.started_at = Some(self.now);
            }
            state.set_status(Some(Arc::new(status)));
        }
    }

    fn live_on(&self) -> FxHashMap<&str, usize> {
        let mut on: FxHashMap<&str, usize> = FxHashMap::default();
        for i in self.snapshot.instances.values().filter(|i| !i.is_terminal()) {
            *on.entry(i.record.agent.as_str()).or_default() += 1;
        }
        on
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default)]
struct Violations {
    agent_cap: usize,
    start_caps: usize,
    min_healthy: usize,
    released_early: usize,
}

fn drain(scale: f64) {
    let agents_n = ((1000.0 * scale) as usize).max(20);
    let apps_n = ((5000.0 * scale) as usize).max(50);
    let racks = 10;
    let max_agents = ((20.0 * scale).round() as u32).max(2);
    let restart = SignedDuration::from_secs(60);
    let mut rng = Rng::new(7);
    let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24);
    let agents: Vec<AgentRecord> = (0..agents_n).map(|i| agent(i, racks, 64)).collect();
    let mut caps = Vec::new();
    let mut minimums = Vec::new();
    let mut delays = Vec::new();
    let mut small = 0;
    let apps: Vec<App> = (0..apps_n)
        .map(|i| {
            // Log-uniform over 1..=200.
            let n = (200f64.powf(rng.unit())).floor().clamp(1.0, 200.0) as i32;
            if n < 20 {
                small += 1;
            }
            caps.push((n / 5).clamp(1, 50));
            minimums.push(rng.pick(&[0.5, 0.8, 1.0]));
            delays.push(SignedDuration::from_secs(rng.pick(&[5, 15, 30, 60])));
            // No start cap while the fleet is first placed (the cap is not part of the version).
            app(i, serde_json::json!({"instances": n, "cmd": "sleep 3600", "resources": {"cpus": 0.1, "mem": 128}}))
        })
        .collect();
    let mut world = World::new(apps, agents, t0);
    for (i, app) in world.snapshot.apps.iter().enumerate() {
        world.delay.insert(app.metadata.uid.clone().unwrap(), delays[i]);
    }
    // The Maintenance first (placement spreads apps over its racks); its first window opens
    // after the fleet is placed.
    let spec = MaintenanceSpec {
        selector: Default::default(),
        agents: Vec::new(),
        partition_by: Some("rack".into()),
        partitions: Vec::new(),
        schedule: Some(Schedule {
            start: Time(t0 + SignedDuration::from_mins(10)),
            every: "24h".into(),
            duration: "4h".into(),
        }),
        windows: Vec::new(),
        max_agents: Some(max_agents),
        horizon_days: 7,
        force_after: None,
    };
    let mut maintenance = Maintenance::new("racks", spec);
    maintenance.metadata.uid = Some("racks".into());
    world.snapshot.maintenances.push(Arc::new(maintenance));
    let placing = Instant::now();
    for _ in 0..5 {
        let p = world.tick();
        if p.launches.is_empty() && p.stops.is_empty() {
            break;
        }
        world.apply(&p, true);
    }
    let instances = world.snapshot.instances.len();
    println!(
        "drain fleet: {agents_n} agents in {racks} racks, {apps_n} apps ({small} with fewer than 20 instances), \
         {instances} instances placed in {:.1} s",
        placing.elapsed().as_secs_f64()
    );
    for (i, app) in world.snapshot.apps.iter_mut().enumerate() {
        let app = Arc::make_mut(app);
        app.spec.upgrade_strategy.max_concurrent_starts = Some(caps[i]);
        app.spec.upgrade_strategy.minimum_health_capacity = minimums[i];
    }
    world.plan_ms.clear();
    // Skip to the window.
    world.now = t0 + SignedDuration::from_mins(10);
    let schedule = world.tick();
    world.apply(&schedule, false);
    let status = world.snapshot.maintenances[0].status.clone().unwrap_or_default();
    let window = status.schedule.first().expect("a window");
    println!(
        "schedule: {} windows over 7 days; the first takes {} ({} agents) at {}",
        status.schedule.len(),
        window.partition,
        window.agent_count,
        window.start.0
    );
    let rack: Vec<String> = world
        .snapshot
        .agents
        .values()
        .filter(|a| a.attributes.get("rack").map(String::as_str) == Some(window.partition.as_str()))
        .map(|a| a.name.clone())
        .collect();
    // The lower bound the caps allow.
    let mut slowest: FxHashMap<&str, SignedDuration> = FxHashMap::default();
    let mut moved_per_app: FxHashMap<&str, usize> = FxHashMap::default();
    for i in world.snapshot.instances.values().filter(|i| rack.contains(&i.record.agent)) {
        let d = world.delay[&i.record.run.app.uid];
        let e = slowest.entry(i.record.agent.as_str()).or_insert(SignedDuration::ZERO);
        *e = (*e).max(d);
        *moved_per_app.entry(i.record.run.app.uid.as_str()).or_default() += 1;
    }
    let per_agent: Vec<f64> =
        rack.iter().map(|a| (slowest.get(a.as_str()).copied().unwrap_or_default() + restart).as_secs_f64()).collect();
    let by_agents = per_agent.iter().sum::<f64>() / f64::from(max_agents);
    let longest = per_agent.iter().copied().fold(0.0, f64::max);
    let uid_index: FxHashMap<&str, usize> =
        world.snapshot.apps.iter().enumerate().map(|(i, a)| (a.metadata.uid.as_deref().unwrap(), i)).collect();
    let by_apps = moved_per_app
        .iter()
        .map(|(uid, k)| {
            let i = uid_index[uid];
            (k.div_ceil(caps[i] as usize)) as f64 * delays[i].as_secs_f64()
        })
        .fold(0.0, f64::max);
    let lower_bound = by_agents.max(longest).max(by_apps);
    let on_rack: usize = moved_per_app.values().sum();
    drop(slowest);
    drop(moved_per_app);

    let mut v = Violations::default();
    let started = world.now;
    let mut drained_at: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut moved = 0usize;
    let mut ticks = 0;
    let wall = Instant::now();
    loop {
        let healthy_before: Vec<usize> = healthy_per_app(&world);
        let p = world.tick();
        let live = world.live_on();
        for write in &p.drains {
            let Some(record) = &write.next else { continue };
            let before = world.snapshot.drains.get(&write.agent).map(|(r, _)| r.state);
            if record.state == DrainState::Drained && live.get(write.agent.as_str()).copied().unwrap_or(0) > 0 {
                v.released_early += 1;
            }
            if record.state == DrainState::Released && before != Some(DrainState::Drained) {
                v.released_early += 1;
            }
        }
        drop(live);
        moved += p.stops.iter().filter(|s| s.reason == StopReason::Moved).count();
        world.apply(&p, false);
        let cordoned = world.snapshot.drains.values().filter(|(r, _)| r.state != DrainState::Released).count();
        if cordoned > max_agents as usize {
            v.agent_cap += 1;
        }
        let healthy = healthy_per_app(&world);
        let starting = starting_per_app(&world);
        for (i, app) in world.snapshot.apps.iter().enumerate() {
            let wanted = app.spec.instances as usize;
            let minimum = (wanted as f64 * minimums[i] - 1e-9).ceil() as usize;
            if healthy[i] < minimum.min(healthy_before[i]) {
                v.min_healthy += 1;
            }
            if starting[i] > caps[i] as usize {
                v.start_caps += 1;
            }
        }
        world.second();
        // The operator restarts each drained agent after a minute.
        let restarts: Vec<String> = world
            .snapshot
            .drains
            .iter()
            .filter(|(_, (r, _))| r.state == DrainState::Drained && r.since + restart <= world.now)
            .map(|(a, _)| a.clone())
            .collect();
        for a in restarts {
            drained_at.entry(a.clone()).or_insert(world.now);
            let mut record = (*world.snapshot.agents[&a]).clone();
            record.started_at = world.now;
            world.snapshot.agents.insert(a, Arc::new(record));
        }
        ticks += 1;
        let released = world.snapshot.drains.values().filter(|(r, _)| r.state == DrainState::Released).count();
        if released == rack.len() || ticks > 20_000 {
            break;
        }
    }
    let took = world.now.duration_since(started).as_secs_f64();
    let mut times = world.plan_ms.clone();
    times.sort_by(f64::total_cmp);
    println!(
        "drain of {} agents, at most {max_agents} at once: {on_rack} instances on them, {moved} moved in {ticks} ticks \
         ({:.0} s wall)",
        rack.len(),
        wall.elapsed().as_secs_f64()
    );
    println!(
        "violations: agent cap {}, start caps {}, minimum healthy {}, released early {}",
        v.agent_cap, v.start_caps, v.min_healthy, v.released_early
    );
    println!(
        "completion: {took:.0} s simulated; lower bound {lower_bound:.0} s (agents {by_agents:.0} s, longest agent \
         {longest:.0} s, apps {by_apps:.0} s): {:.1}% over",
        (took / lower_bound - 1.0) * 100.0
    );
    println!(
        "plan time during the drain: p50 {:.1} ms, p99 {:.1} ms over {} ticks",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len()
    );
}

fn healthy_per_app(world: &World) -> Vec<usize> {
    let mut by_uid: FxHashMap<&str, usize> = FxHashMap::default();
    for i in world.snapshot.instances.values() {
        if i.record.goal == Goal::Running && i.is_healthy() {
            *by_uid.entry(i.record.run.app.uid.as_str()).or_default() += 1;
        }
    }
    world.snapshot.apps.iter().map(|a| by_uid.get(a.metadata.uid.as_deref().unwrap()).copied().unwrap_or(0)).collect()
}

fn starting_per_app(world: &World) -> Vec<usize> {
    let mut by_uid: FxHashMap<&str, usize> = FxHashMap::default();
    for i in world.snapshot.instances.values() {
        if i.record.goal == Goal::Running && !i.is_terminal() && !i.is_healthy() {
            *by_uid.entry(i.record.run.app.uid.as_str()).or_default() += 1;
        }
    }
    world.snapshot.apps.iter().map(|a| by_uid.get(a.metadata.uid.as_deref().unwrap()).copied().unwrap_or(0)).collect()
}

fn defragment() {
    let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(48);
    let agents: Vec<AgentRecord> = (0..200).map(|i| agent(i, 10, 16)).collect();
    let mut apps: Vec<App> = (0..100)
        .map(|i| {
            app(i, serde_json::json!({"instances": 10, "cmd": "sleep 3600", "resources": {"cpus": 1, "mem": 1024}}))
        })
        .collect();
    apps.push(app(
        100,
        serde_json::json!({"instances": 20, "cmd": "sleep 3600", "resources": {"cpus": 12, "mem": 8192},
                           "placement": {"wholeAgent": true}}),
    ));
    let mut world = World::new(apps, agents, t0);
    for app in &world.snapshot.apps {
        world.delay.insert(app.metadata.uid.clone().unwrap(), SignedDuration::from_secs(5));
    }
    // 1,000 small instances spread over all 200 agents, as churn leaves them: none is empty.
    let names: Vec<String> = world.snapshot.agents.keys().cloned().collect();
    for n in 0..1000 {
        let app = &world.snapshot.apps[n / 10];
        let agent = &world.snapshot.agents[&names[n % names.len()]];
        let record = baton_api::InstanceRecord {
            id: format!("{}-{n:06}", app.metadata.name.as_deref().unwrap()),
            agent: agent.name.clone(),
            host: agent.host.clone(),
            created_at: t0 - SignedDuration::from_hours(2),
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: Vec::new(),
            term: 1,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: baton_api::AppRef {
                    namespace: "bench".into(),
                    name: app.metadata.name.clone().unwrap(),
                    uid: app.metadata.uid.clone().unwrap(),
                },
                scope: Default::default(),
                version: app.version(),
                whole_agent: false,
                command: baton_api::records::Command::Shell("sleep 3600".into()),
                user: None,
                fetch: Vec::new(),
                env: Default::default(),
                labels: Default::default(),
                resources: app.spec.resources.amounts(),
                kill_grace_seconds: 3,
                health_checks: Vec::new(),
                readiness_checks: Vec::new(),
            }),
        };
        let mut status = StatusRecord::new(Phase::Running);
        status.started_at = Some(t0 - SignedDuration::from_hours(2));
        world.revision += 1;
        let state = InstanceState::new(Arc::new(record), world.revision, Some(Arc::new(status)));
        world.snapshot.instances_mut().insert(state.record.id.clone(), state);
    }
    let big_uid = world.snapshot.apps[100].metadata.uid.clone().unwrap();
    let mut moves = 0;
    // Per big instance: the tick it was placed, and how many ticks after its agent emptied.
    let mut placed: Vec<(i64, i64)> = Vec::new();
    let mut empty_since: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut ticks = 0;
    while ticks < 600 && placed.len() < 20 {
        let live = world.live_on();
        for name in &names {
            if live.get(name.as_str()).copied().unwrap_or(0) == 0 {
                empty_since.entry(name.clone()).or_insert(world.now);
            }
        }
        drop(live);
        let p = world.tick();
        moves += p.stops.iter().filter(|s| s.reason == StopReason::Moved).count();
        for launch in p.launches.iter().filter(|l| l.record.run.app.uid == big_uid) {
            let empty = empty_since.get(&launch.record.agent).copied().unwrap_or(world.now);
            placed.push((world.now.duration_since(t0).as_secs(), world.now.duration_since(empty).as_secs()));
        }
        world.apply(&p, false);
        world.second();
        ticks += 1;
    }
    let last = placed.iter().map(|(at, _)| *at).max().unwrap_or(-1);
    let after_room = placed.iter().map(|(_, after)| *after).max().unwrap_or(-1);
    println!(
        "defragmentation: 20 whole-agent instances arrive on 200 agents holding 1,000 small ones (none empty): {} \
         placed, the last after {last} ticks; placed at most {after_room} ticks after its agent emptied; {moves} \
         moves for 1,000 small instances ({:.3} per instance, each at most once)",
        placed.len(),
        moves as f64 / 1000.0
    );
}

fn main() {
    let scale: f64 = std::env::var("SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    drain(scale);
    defragment();
}
