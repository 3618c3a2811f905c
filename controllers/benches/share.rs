//! `hack/bench.sh share`: fair sharing between 500 tenants through the real planner (the
//! platform's: share, place, reclaim), tick by tick, with each tenant's controller simulated
//! (it asks for what its app lacks: `status.launchRequest`); no processes.
//!
//! The cluster: 500 agents of 32 cpus and 128 GiB (16,000 cpus). One **steady** tenant with
//! large instances (4 cpus, 16 GiB) already holds half of it and asks for 6,000 cpus more; then
//! at once 400 **bursty** tenants ask for 100 small instances each (0.1 cpu, 128 MiB) and 99
//! **medium** ones for 20 instances of 1 cpu: 11,980 cpus asked, 8,000 free. Every bursty and
//! medium tenant's demand fits in its fair share (32 cpus, a 500th): they must all get it
//! (target: within 2 ticks), the steady one what is left.
//!
//! Then a **late** tenant, guaranteed 500 cpus, asks for 250 instances of 2 cpus while the
//! cluster is full: it must reclaim its guarantee from tenants above theirs (the steady one,
//! youngest instances first), preempting each instance at most once, and nobody takes anything
//! back. Prints ticks, preemptions (against the fewest that could do), and plan times.
//!
//! `SCALE=0.1` runs a tenth of everything, for a quick look.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use baton_api::app::LaunchRequest;
use baton_api::tenant::{Guarantee, Tenant, TenantSpec};
use baton_api::{AgentRecord, App, AppSpec, AppStatus, Goal, Phase, PortRange, ResourceAmounts, Scope, StatusRecord};
use baton_controllers::plan::{PlanContext, StopReason, plan};
use baton_controllers::snapshot::{InstanceState, Snapshot};

fn agent(i: usize) -> AgentRecord {
    AgentRecord {
        name: format!("agent-{i:04}"),
        host: format!("10.2.{}.{}", i / 250, i % 250),
        resources: ResourceAmounts { millicpus: 32_000, mem_mib: 131_072, disk_mib: 1_000_000, gpus: 0 },
        attributes: BTreeMap::new(),
        ports: vec![PortRange { begin: 31000, end: 32000 }],
        version: "bench".into(),
        started_at: Timestamp::UNIX_EPOCH,
        sandbox: None,
    }
}

/// One tenant and its one app.
struct Team {
    name: String,
    app: usize,
    wanted: i64,
}

struct World {
    snapshot: Snapshot,
    revision: i64,
    teams: Vec<Team>,
    plan_ms: Vec<f64>,
    preempted: BTreeMap<String, usize>,
}

impl World {
    fn add_team(&mut self, name: &str, instances: i64, cpus: f64, mem: f64, guarantee: Option<f64>) {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "instances": instances, "cmd": "sleep 1000",
            "resources": {"cpus": cpus, "mem": mem},
            "upgradeStrategy": {"minimumHealthCapacity": 0.5},
        }))
        .expect("a bench spec");
        let mut app = App::new("work", spec);
        app.metadata.namespace = Some(name.into());
        app.metadata.uid = Some(format!("uid-{name}"));
        app.metadata.generation = Some(1);
        self.snapshot.namespaces.insert(name.into(), Scope::Tenant(name.into()));
        self.snapshot.other_apps.push(Arc::new(app));
        let spec = TenantSpec {
            namespaces: vec![name.into()],
            quota: Default::default(),
            weight: 1,
            users: Vec::new(),
            groups: Vec::new(),
            guarantee: Guarantee { cpus: guarantee, ..Guarantee::default() },
            controller: Default::default(),
            service_domain: None,
        };
        self.snapshot.tenants.push(Arc::new(Tenant::new(name, spec)));
        self.teams.push(Team { name: name.into(), app: self.snapshot.other_apps.len() - 1, wanted: instances });
    }

    /// Running instances of `team`'s app.
    fn live(&self, team: &Team) -> i64 {
        let uid = format!("uid-{}", team.name);
        self.snapshot.foreign.iter().filter(|i| i.record.run.app.uid == uid && i.record.goal == Goal::Running).count()
            as i64
    }

    /// Each tenant's controller asks for what its app lacks, as of now.
    fn ask(&mut self) {
        let mut live: BTreeMap<&str, i64> = BTreeMap::new();
        for i in self.snapshot.foreign.iter().filter(|i| i.record.goal == Goal::Running) {
            *live.entry(i.record.run.app.uid.as_str()).or_default() += 1;
        }
        let asks: Vec<(usize, i64)> = self
            .teams
            .iter()
            .map(|t| (t.app, t.wanted - live.get(format!("uid-{}", t.name).as_str()).copied().unwrap_or(0)))
            .collect();
        for (index, count) in asks {
            let mut app = (*self.snapshot.other_apps[index]).clone();
            let request = (count > 0).then(|| LaunchRequest {
                version: app.version(),
                count: count as i32,
                revision: self.revision,
            });
            app.status = Some(AppStatus { launch_request: request, ..AppStatus::default() });
            self.snapshot.other_apps[index] = Arc::new(app);
        }
    }

    /// One tick: plan, then apply as the executor, the agents and the controllers would —
    /// launches run at once, preempted instances end by the next tick.
    fn tick(&mut self) -> (usize, usize) {
        self.snapshot.foreign.retain(|i| i.record.goal == Goal::Running);
        self.ask();
        self.snapshot.revision = self.revision;
        self.snapshot.held = None;
        self.snapshot.held = Some(self.snapshot.held());
        let ctx = PlanContext::at(Timestamp::UNIX_EPOCH, self.revision as u64);
        let started = Instant::now();
        let decided = plan(&self.snapshot, &ctx);
        self.plan_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        for launch in &decided.launches {
            self.revision += 1;
            let mut status = StatusRecord::new(Phase::Running);
            status.started_at = Some(Timestamp::UNIX_EPOCH);
            let state = InstanceState::new(Arc::new(launch.record.clone()), self.revision, Some(Arc::new(status)));
            self.snapshot.foreign.push(state.with_created(self.revision));
        }
        let mut preempted = 0;
        for stop in decided.stops.iter().filter(|s| s.reason == StopReason::Preempted) {
            preempted += 1;
            *self.preempted.entry(stop.record.id.clone()).or_default() += 1;
            if let Some(victim) = self.snapshot.foreign.iter_mut().find(|i| i.record.id == stop.record.id) {
                let mut record = (*victim.record).clone();
                record.goal = Goal::Stopped;
                record.stop_reason = Some(stop.reason.as_str().into());
                victim.set_record(Arc::new(record));
            }
        }
        self.snapshot.foreign.sort_by(|a, b| (&a.record.agent, &a.record.id).cmp(&(&b.record.agent, &b.record.id)));
        self.revision += 1;
        (decided.launches.len(), preempted)
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let scale: f64 = std::env::var("SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n = |x: f64| ((x * scale).round() as usize).max(1);
    let agents = n(500.0);
    let mut world = World {
        snapshot: Snapshot {
            agents: (0..agents).map(|i| (agent(i).name.clone(), Arc::new(agent(i)))).collect(),
            ..Snapshot::default()
        },
        revision: 10,
        teams: Vec::new(),
        plan_ms: Vec::new(),
        preempted: BTreeMap::new(),
    };
    // The steady tenant holds half the cluster (2,000 × 4 cpus), wanting 1,500 more.
    let steady_held = n(2_000.0) as i64;
    world.add_team("steady", steady_held + n(1_500.0) as i64, 4.0, 16_384.0, None);
    let mut placed_steady = 0;
    while placed_steady < steady_held {
        // Let it take its half first, alone.
        world.teams[0].wanted = steady_held;
        placed_steady += world.tick().0 as i64;
    }
    world.teams[0].wanted = steady_held + n(1_500.0) as i64;
    let (bursty, medium) = (n(400.0), n(99.0));
    for i in 0..bursty {
        world.add_team(&format!("bursty-{i:03}"), 100, 0.1, 128.0, None);
    }
    for i in 0..medium {
        world.add_team(&format!("medium-{i:02}"), 20, 1.0, 4_096.0, None);
    }
    let instances_before = world.snapshot.foreign.len();
    println!(
        "share: {agents} agents ({} cpus); steady holds {} cpus and asks for {} more; {bursty} bursty tenants ask for \
         100 × 0.1 cpu, {medium} medium for 20 × 1 cpu",
        agents * 32,
        steady_held * 4,
        n(1_500.0) * 4
    );
    let plan_from = world.plan_ms.len();
    let mut served_at = None;
    for tick in 1..=10 {
        let (launched, _) = world.tick();
        let small_served = world.teams[1..].iter().all(|t| world.live(t) == t.wanted);
        println!("  tick {tick}: {launched} launched; every small tenant served: {small_served}");
        if small_served && served_at.is_none() {
            served_at = Some(tick);
        }
        if launched == 0 {
            break;
        }
    }
    let steady_now = world.live(&world.teams[0]);
    println!(
        "every tenant whose demand fits its fair share served after {} tick(s) (target ≤ 2); steady holds {} cpus \
         ({} instances placed in all, {} before)",
        served_at.map_or("never".into(), |t: usize| t.to_string()),
        steady_now * 4,
        world.snapshot.foreign.len(),
        instances_before
    );
    let phase_one_ms = world.plan_ms[plan_from..].to_vec();

    // A late tenant with a guarantee, into a full cluster.
    let late_instances = n(250.0) as i64;
    world.add_team("late", late_instances, 2.0, 8_192.0, Some(late_instances as f64 * 2.0));
    let late = world.teams.len() - 1;
    let plan_from = world.plan_ms.len();
    let (mut preemptions, mut got_at) = (0, None);
    for tick in 1..=20 {
        let (launched, preempted) = world.tick();
        preemptions += preempted;
        let has = world.live(&world.teams[late]);
        println!("  tick {tick}: {launched} launched, {preempted} preempted; late holds {} cpus", has * 2);
        if has == late_instances && got_at.is_none() {
            got_at = Some(tick);
        }
        if got_at.is_some() && launched == 0 && preempted == 0 {
            break;
        }
    }
    let twice = world.preempted.values().filter(|n| **n > 1).count();
    // Each large instance (4 cpus) makes room for two of the late tenant's (2 cpus).
    let fewest = (late_instances as usize).div_ceil(2);
    let small_kept = world.teams[1..late].iter().all(|t| world.live(t) == t.wanted);
    println!(
        "late tenant (guaranteed {} cpus) got it after {} tick(s); {preemptions} instances preempted (fewest possible \
         {fewest}), {twice} preempted twice; small tenants untouched: {small_kept}; steady holds {} cpus",
        late_instances * 2,
        got_at.map_or("never".into(), |t: usize| t.to_string()),
        world.live(&world.teams[0]) * 4
    );
    let phase_two_ms = world.plan_ms[plan_from..].to_vec();
    for (name, samples) in [("fair-share ticks", &phase_one_ms), ("reclaim ticks", &phase_two_ms)] {
        println!(
            "plan time, {name} at ~{} instances: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            world.snapshot.foreign.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            samples.iter().copied().fold(0.0, f64::max)
        );
    }
}
