//! Builders for planner tests: `app("web").instances(3)`, `agent("a1").mem(512)`,
//! `instance(&app, "a1").running()`.

use std::sync::Arc;

use jiff::Timestamp;

use baton_api::records::{AssignedPort, Command};
use baton_api::{
    AgentRecord, App, AppRef, AppSpec, Goal, InstanceRecord, Phase, PortRange, ResourceAmounts, RunSpec, Scope,
    StatusRecord,
};

use crate::snapshot::{InstanceState, Snapshot};

/// A fixed "now" for tests.
pub fn now() -> Timestamp {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

pub struct AppBuilder(App);

pub fn app(name: &str) -> AppBuilder {
    let spec: AppSpec =
        serde_json::from_value(serde_json::json!({"cmd": "sleep 1000", "resources": {"cpus": 0.5, "mem": 100}}))
            .expect("a test spec");
    let mut app = App::new(name, spec);
    app.metadata.namespace = Some("default".into());
    app.metadata.uid = Some(format!("uid-{name}"));
    app.metadata.generation = Some(1);
    app.metadata.resource_version = Some("10".into());
    // As the controller leaves every App it has seen.
    app.metadata.finalizers = Some(vec![baton_api::app::STOP_FINALIZER.into()]);
    AppBuilder(app)
}

impl AppBuilder {
    pub fn instances(mut self, n: i32) -> Self {
        self.0.spec.instances = n;
        self
    }

    pub fn mem(mut self, mib: f64) -> Self {
        self.0.spec.resources.mem = mib;
        self
    }

    pub fn cpus(mut self, cpus: f64) -> Self {
        self.0.spec.resources.cpus = cpus;
        self
    }

    /// `placement: {wholeAgent: true}`.
    pub fn whole_agent(mut self) -> Self {
        self.0.spec.placement.whole_agent = true;
        self
    }

    pub fn ports(mut self, n: usize) -> Self {
        self.0.spec.ports = (0..n).map(|_| baton_api::PortDefinition { name: None, port: 0 }).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.0.spec.env.insert(key.into(), value.into());
        self
    }

    pub fn unreachable_strategy(mut self, inactive_after_seconds: i64, expunge_after_seconds: i64) -> Self {
        self.0.spec.unreachable_strategy =
            baton_api::UnreachableStrategy { inactive_after_seconds, expunge_after_seconds };
        self
    }

    pub fn constraint(mut self, parts: &[&str]) -> Self {
        self.0.spec.constraints.push(parts.iter().map(|p| p.to_string()).collect());
        self
    }

    pub fn strategy(mut self, minimum_health_capacity: f64, maximum_over_capacity: f64) -> Self {
        self.0.spec.upgrade_strategy.minimum_health_capacity = minimum_health_capacity;
        self.0.spec.upgrade_strategy.maximum_over_capacity = maximum_over_capacity;
        self
    }

    pub fn max_concurrent_starts(mut self, n: i32) -> Self {
        self.0.spec.upgrade_strategy.max_concurrent_starts = Some(n);
        self
    }

    pub fn fixed_port(mut self, port: i32) -> Self {
        self.0.spec.require_ports = true;
        self.0.spec.ports.push(baton_api::PortDefinition { name: None, port });
        self
    }

    pub fn gpus(mut self, gpus: i64) -> Self {
        self.0.spec.resources.gpus = gpus;
        self
    }

    /// A TCP health check on port index 0 that kills after `max_failures` in a row.
    pub fn tcp_check(mut self, max_failures: i64) -> Self {
        let check = serde_json::json!({"protocol": "TCP", "maxConsecutiveFailures": max_failures});
        self.0.spec.health_checks.push(serde_json::from_value(check).expect("a test check"));
        self
    }

    /// `healthPolicy {minHealthyRatio, maxConcurrentReplacements}`.
    pub fn health_policy(mut self, min_healthy_ratio: f64, max_concurrent_replacements: i32) -> Self {
        self.0.spec.health_policy = baton_api::HealthPolicy {
            min_healthy_ratio,
            max_concurrent_replacements: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                max_concurrent_replacements,
            ),
        };
        self
    }

    pub fn kill_selection(mut self, selection: baton_api::KillSelection) -> Self {
        self.0.spec.kill_selection = selection;
        self
    }

    /// `spec.group`.
    pub fn group(mut self, path: &str) -> Self {
        self.0.spec.group = Some(path.into());
        self
    }

    pub fn dependencies(mut self, paths: &[&str]) -> Self {
        self.0.spec.dependencies = paths.iter().map(|p| p.to_string()).collect();
        self
    }

    /// As created, before the controller put its finalizer on it.
    pub fn without_finalizer(mut self) -> Self {
        self.0.metadata.finalizers = None;
        self
    }

    pub fn build(self) -> Arc<App> {
        Arc::new(self.0)
    }
}

/// An AppGroup at `path`.
pub fn group(path: &str, dependencies: &[&str], scale_factor: f64) -> Arc<baton_api::AppGroup> {
    let name = if path == "/" { "root".to_string() } else { path.trim_matches('/').replace('/', "-") };
    let mut group = baton_api::AppGroup::new(
        &name,
        baton_api::AppGroupSpec {
            path: path.into(),
            dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
            scale_factor,
        },
    );
    group.metadata.namespace = Some("default".into());
    group.metadata.generation = Some(1);
    Arc::new(group)
}

pub struct AgentBuilder(AgentRecord);

pub fn agent(name: &str) -> AgentBuilder {
    AgentBuilder(AgentRecord {
        name: name.into(),
        host: "127.0.0.1".into(),
        resources: ResourceAmounts { millicpus: 4000, mem_mib: 4096, disk_mib: 1024, gpus: 0 },
        attributes: Default::default(),
        ports: vec![PortRange { begin: 31000, end: 31099 }],
        version: "test".into(),
        started_at: now(),
        sandbox: None,
    })
}

impl AgentBuilder {
    pub fn mem(mut self, mib: u64) -> Self {
        self.0.resources.mem_mib = mib;
        self
    }

    pub fn gpus(mut self, gpus: u64) -> Self {
        self.0.resources.gpus = gpus;
        self
    }

    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        self.0.attributes.insert(key.into(), value.into());
        self
    }

    pub fn port_range(mut self, begin: u16, end: u16) -> Self {
        self.0.ports = vec![PortRange { begin, end }];
        self
    }

    pub fn build(self) -> Arc<AgentRecord> {
        Arc::new(self.0)
    }
}

pub struct InstanceBuilder {
    record: InstanceRecord,
    status: Option<StatusRecord>,
}

/// An instance of `app` at its current version on `agent`, not yet reported.
pub fn instance(app: &App, agent: &str, n: u32) -> InstanceBuilder {
    InstanceBuilder {
        record: InstanceRecord {
            id: format!("{}-{n:03}", app.metadata.name.as_deref().unwrap()),
            agent: agent.into(),
            host: "127.0.0.1".into(),
            created_at: now() - jiff::SignedDuration::from_secs(3600 - i64::from(n)),
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: Vec::new(),
            term: 0,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: AppRef {
                    namespace: "default".into(),
                    name: app.metadata.name.clone().unwrap(),
                    uid: app.metadata.uid.clone().unwrap(),
                },
                scope: Scope::Platform,
                version: app.version(),
                whole_agent: false,
                command: Command::Shell("sleep 1000".into()),
                user: None,
                fetch: Vec::new(),
                env: Default::default(),
                labels: Default::default(),
                resources: app.spec.resources.amounts(),
                kill_grace_seconds: 3,
                health_checks: app.spec.health_checks.clone(),
                readiness_checks: app.spec.readiness_checks.clone(),
            }),
        },
        status: None,
    }
}

impl InstanceBuilder {
    /// Launched for another scope's app.
    pub fn scope(mut self, scope: Scope) -> Self {
        Arc::make_mut(&mut self.record.run).scope = scope;
        self
    }

    pub fn phase(mut self, phase: Phase) -> Self {
        self.status = Some(StatusRecord::new(phase));
        self
    }

    pub fn running(self) -> Self {
        self.phase(Phase::Running)
    }

    /// Running since `seconds_ago`.
    pub fn running_for(mut self, seconds_ago: i64) -> Self {
        let mut status = StatusRecord::new(Phase::Running);
        status.started_at = Some(now() - jiff::SignedDuration::from_secs(seconds_ago));
        self.status = Some(status);
        self
    }

    /// Ended on its own `seconds_ago`.
    pub fn failed(mut self, seconds_ago: i64) -> Self {
        let mut status = StatusRecord::new(Phase::Failed);
        status.finished_at = Some(now() - jiff::SignedDuration::from_secs(seconds_ago));
        status.exit_code = Some(1);
        self.status = Some(status);
        self
    }

    /// Running, every health check passing, healthy since a minute ago.
    pub fn passing(self) -> Self {
        self.checked(Some(true), 0)
    }

    /// Running, every health check failing `failures` times in a row (after having passed).
    pub fn failing(self, failures: u32) -> Self {
        self.checked(Some(false), failures)
    }

    /// Running, passing `passes` probes in a row again after failing.
    pub fn recovered(self, passes: u32) -> Self {
        let mut built = self.passing();
        if let Some(status) = &mut built.status {
            for result in &mut status.health {
                result.last_failure = Some(now() - jiff::SignedDuration::from_secs(i64::from(passes) + 1));
                result.consecutive_successes = passes;
            }
        }
        built
    }

    /// Never healthy since it started.
    pub fn never_healthy(mut self) -> Self {
        if let Some(status) = &mut self.status {
            status.healthy_at = None;
        }
        self
    }

    /// Ready (its readiness check passed) or not.
    pub fn ready(mut self, ready: bool) -> Self {
        let status = self.status.get_or_insert_with(|| StatusRecord::new(Phase::Running));
        status.readiness = Some(Box::new(baton_api::CheckResult { passing: Some(ready), ..Default::default() }));
        self
    }

    fn checked(mut self, passing: Option<bool>, failures: u32) -> Self {
        let mut status = StatusRecord::new(Phase::Running);
        status.started_at = Some(now() - jiff::SignedDuration::from_secs(600));
        status.healthy_at = Some(now() - jiff::SignedDuration::from_secs(500));
        let result = baton_api::CheckResult {
            passing,
            consecutive_failures: failures,
            consecutive_successes: u32::from(passing == Some(true)) * 10,
            last_success: Some(now() - jiff::SignedDuration::from_secs(60)),
            last_failure: (failures > 0).then(now),
            last_output: Some(if failures > 0 { "connection refused" } else { "connected" }.into()),
        };
        status.health = vec![result; self.record.run.health_checks.len()];
        self.status = Some(status);
        self
    }

    /// Being stopped for `reason`.
    pub fn stopped(mut self, reason: &str) -> Self {
        self.record.goal = Goal::Stopped;
        self.record.stop_reason = Some(reason.into());
        self
    }

    /// Its failure was counted in the app's backoff.
    pub fn counted(mut self) -> Self {
        self.record.end_noted = true;
        self
    }

    /// Killed for its health, holding a replacement slot.
    pub fn killed_for_health(mut self) -> Self {
        self.record.holds_slot = true;
        self.stopped("Unhealthy")
    }

    pub fn stopping(mut self) -> Self {
        self.record.goal = Goal::Stopped;
        self
    }

    /// Launched to fill the replacement slot of `killed` (see `plan::slots`).
    pub fn replacing(mut self, killed: &str) -> Self {
        self.record.replaces = Some(killed.into());
        self
    }

    pub fn version(mut self, version: &str) -> Self {
        Arc::make_mut(&mut self.record.run).version = version.into();
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.record.ports.push(AssignedPort { name: None, port, requested: 0 });
        self
    }

    pub fn build(self) -> InstanceState {
        InstanceState::new(Arc::new(self.record), 10, self.status.map(Arc::new))
    }
}

/// The snapshot with `app`'s stored backoff.
pub fn with_backoff(mut snapshot: Snapshot, app: &App, failures: u32, delay_until_in_seconds: i64) -> Snapshot {
    let record = baton_api::BackoffRecord {
        uid: app.metadata.uid.clone().unwrap(),
        version: app.version(),
        failures,
        delay_until: Some(now() + jiff::SignedDuration::from_secs(delay_until_in_seconds)),
        last_failure: None,
    };
    snapshot.backoffs.insert(("default".into(), app.metadata.name.clone().unwrap()), (Arc::new(record), 7));
    snapshot
}

/// The snapshot with a user's request (by `ops`) to kill instance `id` of the default namespace.
pub fn with_kill_request(mut snapshot: Snapshot, id: &str, grace_seconds: Option<u32>) -> Snapshot {
    let request = baton_api::KillRequest { user: "ops".into(), requested_at: now(), grace_seconds };
    snapshot.kill_requests.insert(("default".into(), id.into()), (Arc::new(request), 11));
    snapshot
}

/// The snapshot with a marker saying `agent` stopped reporting `seconds_ago`.
pub fn with_marker(mut snapshot: Snapshot, agent: &str, seconds_ago: i64) -> Snapshot {
    let since = now() - jiff::SignedDuration::from_secs(seconds_ago);
    snapshot.unreachable.insert(agent.into(), crate::snapshot::Marker { since, revision: 5 });
    snapshot
}

/// A snapshot of the platform scope with these apps, agents and instances (those of other
/// scopes are foreign).
pub fn snapshot(apps: &[&Arc<App>], agents: Vec<Arc<AgentRecord>>, instances: Vec<InstanceState>) -> Snapshot {
    let (own, foreign): (Vec<InstanceState>, Vec<InstanceState>) =
        instances.into_iter().partition(|i| i.record.run.scope == Scope::Platform);
    Snapshot {
        revision: 0,
        scope: Scope::Platform,
        apps: apps.iter().map(|a| Arc::clone(a)).collect(),
        groups: Vec::new(),
        agents: agents.into_iter().map(|a| (a.name.clone(), a)).collect(),
        instances: Arc::new(own.into_iter().map(|i| (i.record.id.clone(), i)).collect()),
        foreign,
        unreachable: Default::default(),
        maintenances: Vec::new(),
        drains: Default::default(),
        tenants: Vec::new(),
        tenant_controllers: None,
        namespaces: Default::default(),
        other_apps: Vec::new(),
        other_groups: Vec::new(),
        backoffs: Default::default(),
        kill_requests: Default::default(),
        held: None,
        versions: None,
        settled: None,
    }
}

/// A simulated world's instances after a plan: launches added, stops, slot releases and
/// noted ends written into the records (each a new revision from `revision`), removals gone.
pub fn apply_to_instances(
    instances: &mut std::collections::BTreeMap<String, InstanceState>,
    plan: &crate::plan::Plan,
    revision: &mut i64,
) {
    let mut rewrite = |instances: &mut std::collections::BTreeMap<String, InstanceState>, record: InstanceRecord| {
        *revision += 1;
        if let Some(state) = instances.get_mut(&record.id) {
            state.set_record(Arc::new(record));
            state.revision = *revision;
        }
    };
    for launch in &plan.launches {
        let state = InstanceState::new(Arc::new(launch.record.clone()), 0, None);
        instances.insert(launch.record.id.clone(), state);
        rewrite(instances, launch.record.clone());
    }
    for stop in &plan.stops {
        let record = InstanceRecord {
            goal: Goal::Stopped,
            stop_reason: Some(stop.reason.as_str().into()),
            holds_slot: stop.takes_slot,
            ..stop.record.clone()
        };
        rewrite(instances, record);
    }
    for release in &plan.slot_releases {
        rewrite(instances, InstanceRecord { holds_slot: false, ..release.record.clone() });
    }
    for removal in &plan.removals {
        instances.remove(&removal.id);
    }
    for counted in plan.backoffs.iter().flat_map(|b| &b.counted).chain(&plan.noted) {
        rewrite(instances, InstanceRecord { end_noted: true, ..counted.record.clone() });
    }
}

/// `instance` reported in `phase` at `now`: running since now (its checks not probed yet), or
/// ended now.
pub fn set_phase(instance: &mut InstanceState, phase: Phase, now: Timestamp) {
    let mut status = instance.status.as_deref().cloned().unwrap_or_else(|| StatusRecord::new(phase));
    status.phase = phase;
    match phase {
        Phase::Running => {
            status.started_at = Some(now);
            status.health = vec![baton_api::CheckResult::default(); instance.record.run.health_checks.len()];
        }
        _ => status.finished_at = Some(now),
    }
    instance.set_status(Some(Arc::new(status)));
}

/// One probe of a running instance's first health check at `now`, as an agent makes it: a
/// pass resets the failures; a failure counts once past the grace period (`started` +
/// `grace`), or once the check has passed before.
pub fn probe(instance: &mut InstanceState, passes: bool, grace: jiff::SignedDuration, now: Timestamp) {
    let mut status = instance.status.as_deref().cloned().expect("running has a status");
    let started = status.started_at.expect("running since");
    let result = &mut status.health[0];
    if passes {
        result.passing = Some(true);
        result.consecutive_failures = 0;
        result.consecutive_successes += 1;
        result.last_success = Some(now);
    } else if result.last_success.is_some() || now >= started + grace {
        result.passing = Some(false);
        result.consecutive_failures += 1;
        result.consecutive_successes = 0;
        result.last_failure = Some(now);
    }
    if status.healthy_at.is_none() && status.passes_steadily(&instance.record.run.health_checks) {
        status.healthy_at = Some(now);
    }
    instance.set_status(Some(Arc::new(status)));
}
