//! The controller's loop (DESIGN.md §5):
//!
//! ```text
//! loop:
//!     wait until something changed (debounced), a decision falls due, or the resync period passed
//!     snapshot = caches.snapshot()                 # cheap, immutable
//!     plan     = plan(&snapshot, now, seed)        # pure
//!     executor.apply(plan)                         # fenced, batched store txns; status patches
//! ```
//!
//! Caches start before the election, so a standby is warm when it takes over. A leader plans
//! only once both caches hold a full view, and each tick waits until the store cache shows
//! the previous tick's writes: a plan never counts what it already launched as missing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use baton_api::Scope;
use baton_store::election::{self, Leadership};
use baton_store::{Keyspace, Store};

use crate::plan::{self, PlanContext};
use crate::snapshot::AppVersions;

pub mod cache;
pub mod events;
pub mod executor;
pub mod metrics;
pub mod remote;
#[cfg(test)]
mod tests;

use cache::{AppCache, GroupCache, MaintenanceCache, NamespaceCache, StoreCache, TenantCache};
use executor::Executor;
use metrics::{Metrics, ReasonLabel};

/// How long leadership outlives a leader that stopped renewing it, by default: a crashed
/// leader is replaced within about 2.5 s (the lease's rest, etcd's expiry check, a campaign),
/// and a leader renews every 0.67 s, so only a stall of over 1.3 s loses it (docs/install.md
/// says how to choose).
pub const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(2);

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Names this controller in the election key (e.g. `hostname:pid`).
    pub id: String,
    pub keys: Keyspace,
    /// The scope this controller owns (`platform`, or `tenant/<name>`): it elects a leader
    /// of its own and plans only that scope's apps and instances.
    pub scope: Scope,
    /// How long leadership outlives a controller that stopped renewing it.
    pub election_ttl: Duration,
    /// Plan at least this often even when nothing changed.
    pub resync: Duration,
    /// After a change, wait this long for more before planning.
    pub debounce: Duration,
    /// How long ended instances (and their sandboxes and logs) are kept.
    pub retention: plan::Retention,
    /// Empty agents kept free for instances that take whole agents.
    pub keep_free_agents: usize,
    /// The most instances one app runs (the API server's `--max-instances-per-app`).
    pub max_instances_per_app: usize,
    /// How many threads a plan may use for its passes over every instance (1: the planning
    /// task's own; see docs/performance.md for what more cost and gain).
    pub plan_threads: usize,
    /// The namespaces this controller owns, when told (a tenant's controller, whose
    /// credential reaches only those): it watches apps there only, and no namespaces,
    /// Tenants or Maintenances. `None`: every namespace labelled with its scope.
    pub namespaces: Option<Vec<String>>,
    /// How the platform runs tenants' controllers as apps (`None`: it runs none).
    pub tenant_controllers: Option<Arc<crate::plan::tenants::ControllerTemplate>>,
}

impl ControllerConfig {
    pub fn new(id: impl Into<String>, keys: Keyspace) -> Self {
        Self {
            id: id.into(),
            keys,
            scope: Scope::Platform,
            election_ttl: DEFAULT_ELECTION_TTL,
            resync: Duration::from_secs(10),
            debounce: Duration::from_millis(20),
            retention: plan::Retention::default(),
            keep_free_agents: 0,
            max_instances_per_app: baton_api::limits::DEFAULT_MAX_INSTANCES_PER_APP as usize,
            plan_threads: 1,
            namespaces: None,
            tenant_controllers: None,
        }
    }
}

/// Runs the controller until `shutdown`: campaigns, leads until leadership is lost, and
/// campaigns again.
pub async fn run(
    store: Arc<dyn Store>,
    client: kube::Client,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if config.plan_threads > 1 {
        // The planner's pool, as many threads as a plan may use (once per process: a second
        // controller in the process shares the first one's).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.plan_threads)
            .thread_name(|i| format!("baton-plan-{i}"))
            .build_global();
        if let Err(e) = pool {
            tracing::debug!(error = %e, "the planner's pool of threads was made already");
        }
    }
    let changed = Arc::new(Notify::new());
    let records =
        StoreCache::start(store.clone(), config.keys.clone(), config.scope.clone(), changed.clone(), shutdown.clone());
    let only = config.namespaces.as_deref();
    let apps = AppCache::start_in(client.clone(), only, changed.clone(), shutdown.clone());
    let groups = GroupCache::start_in(client.clone(), only, changed.clone(), shutdown.clone());
    let (namespaces, tenants) = if only.is_some() {
        (
            NamespaceCache::empty(changed.clone(), shutdown.clone()),
            TenantCache::empty(changed.clone(), shutdown.clone()),
        )
    } else {
        (
            NamespaceCache::start(client.clone(), changed.clone(), shutdown.clone()),
            TenantCache::start(client.clone(), changed.clone(), shutdown.clone()),
        )
    };
    let maintenances = MaintenanceCache::start(client.clone(), changed.clone(), shutdown.clone());
    let recorder = events::Recorder::start(client.clone(), config.id.clone(), shutdown.clone());
    {
        let caches =
            (records.clone(), apps.clone(), groups.clone(), namespaces.clone(), maintenances.clone(), tenants.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (records, apps, groups, namespaces, maintenances, tenants) = caches;
            tenants.ready().await;
            records.ready().await;
            apps.ready().await;
            groups.ready().await;
            namespaces.ready().await;
            maintenances.ready().await;
            metrics.ready.set(1);
        });
    }
    let executor = Executor::new(store.clone(), config.keys.clone(), client);
    let leader_key = config.keys.leader(&config.scope.to_string());
    while !shutdown.is_cancelled() {
        let campaign = election::campaign(store.clone(), &leader_key, &config.id, config.election_ttl);
        let leadership = tokio::select! {
            result = campaign => match result {
                Ok(leadership) => leadership,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        tracing::info!(id = config.id, term = leadership.term(), scope = %config.scope, "leading");
        metrics.leader.set(1);
        metrics.terms.inc();
        let loop_parts = Loop {
            records: &records,
            apps: &apps,
            groups: &groups,
            namespaces: &namespaces,
            maintenances: &maintenances,
            tenants: &tenants,
            executor: &executor,
            recorder: &recorder,
            config: &config,
            changed: &changed,
            metrics: &metrics,
        };
        loop_parts.lead(&leadership, &shutdown).await;
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            if let Err(e) = leadership.resign().await {
                tracing::warn!(error = %e, "could not resign leadership");
            }
            return;
        }
        tracing::warn!(id = config.id, "leadership lost; campaigning again");
    }
}

/// What a leader's loop works with.
struct Loop<'a> {
    records: &'a StoreCache,
    apps: &'a AppCache,
    groups: &'a GroupCache,
    namespaces: &'a NamespaceCache,
    maintenances: &'a MaintenanceCache,
    tenants: &'a TenantCache,
    executor: &'a Executor,
    recorder: &'a events::Recorder,
    config: &'a ControllerConfig,
    changed: &'a Notify,
    metrics: &'a Metrics,
}

impl Loop<'_> {
    async fn lead(&self, leadership: &Leadership, shutdown: &CancellationToken) {
        let Loop {
            records,
            apps,
            groups,
            namespaces,
            maintenances,
            tenants,
            executor,
            recorder,
            config,
            changed,
            metrics,
        } = self;
        tokio::select! {
            _ = async {
                records.ready().await;
                apps.ready().await;
                groups.ready().await;
                namespaces.ready().await;
                maintenances.ready().await;
                tenants.ready().await;
            } => {}
            _ = shutdown.cancelled() => return,
            _ = leadership.lost() => return,
        }
        // The first plan waits for a view through this term's election: every write of the
        // leaders before it is then in the view (a standby's watch may lag, e.g. after etcd
        // restarted), so nothing they launched is launched again.
        let mut last_write = leadership.term();
        let mut first_tick = true;
        let mut withheld_before: HashSet<String> = HashSet::new();
        // Each App's version, computed once per resourceVersion rather than once per tick.
        let mut versions: Arc<AppVersions> = Arc::default();
        // The statuses the last tick found up to date, and what each was built from.
        let mut settled: Arc<plan::Settled> = Arc::default();
        loop {
            if last_write > 0 {
                tokio::select! {
                    caught_up = records.caught_up(last_write, Duration::from_secs(10)) => if !caught_up {
                        tracing::warn!(revision = last_write, "the store cache has not seen this controller's last writes after 10 s; waiting");
                        continue;
                    },
                    _ = leadership.lost() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
            let scopes = match &config.namespaces {
                Some(list) => cache::Scopes::fixed(list, &config.scope),
                None => namespaces.scopes(),
            };
            let mut snapshot = records.snapshot(apps.objects(), groups.objects(), &scopes);
            // Unique again once the last tick's snapshot is gone: refreshed in place.
            Arc::make_mut(&mut versions).refresh(snapshot.apps.iter().chain(&snapshot.other_apps));
            snapshot.versions = Some(versions.clone());
            snapshot.settled = Some(settled.clone());
            snapshot.maintenances = maintenances.objects();
            if config.scope.places() {
                snapshot.tenants = tenants.objects();
                snapshot.tenant_controllers = config.tenant_controllers.clone();
            }
            let now = Timestamp::now();
            let started = std::time::Instant::now();
            let ctx = PlanContext {
                now,
                seed: rand::random(),
                retention: config.retention,
                keep_free_agents: config.keep_free_agents,
                max_instances_per_app: config.max_instances_per_app,
                threads: config.plan_threads,
            };
            let mut plan = plan::plan(&snapshot, &ctx);
            let planned_in = started.elapsed();
            // Gone before the writes and the wait: at 100,000 instances the view is ~0.3 KiB
            // an instance that an idle controller would hold until the next tick.
            let planned_on = snapshot.revision;
            drop(snapshot);
            // Unique again once the snapshot is gone: refilled in place.
            let next = Arc::make_mut(&mut settled);
            next.clear();
            next.extend(std::mem::take(&mut plan.settled));
            metrics.plans.inc();
            metrics.plan_seconds.observe(planned_in.as_secs_f64());
            let withheld: HashSet<String> = plan.withheld_kills.iter().cloned().collect();
            metrics.health_kills_withheld.inc_by(withheld.difference(&withheld_before).count() as u64);
            metrics.health_kills_withheld_now.set(withheld.len() as i64);
            withheld_before = withheld;
            if !plan.is_empty() {
                match executor.apply(&plan, planned_on, leadership).await {
                    Ok(applied) => {
                        if applied.revision > 0 {
                            last_write = applied.revision;
                        }
                        self.count(&applied);
                        // Events about writes hold only if every write was made; the
                        // next tick plans (and reports) what was dropped.
                        let all_written = applied.stale == 0;
                        recorder.record(plan.events.iter().filter(|e| all_written || !e.of_writes).cloned());
                        tracing::info!(
                            launches = applied.launched,
                            stops = applied.stopped.len(),
                            removals = applied.removed,
                            statuses = applied.statuses,
                            finalizers = applied.finalizers,
                            stale = applied.stale,
                            plan_micros = planned_in.as_micros() as u64,
                            store_writes_micros = applied.store_writes.as_micros() as u64,
                            "applied plan"
                        );
                        for launch in &plan.launches {
                            let ports: Vec<u16> = launch.record.ports.iter().map(|p| p.port).collect();
                            tracing::debug!(instance = launch.record.id, agent = launch.record.agent, ?ports, "launch");
                        }
                        for stop in &plan.stops {
                            tracing::debug!(instance = stop.record.id, reason = stop.reason.as_str(), "stop");
                        }
                    }
                    Err(executor::Error::LostLeadership) => return,
                    Err(e) => tracing::warn!(error = %e, "applying the plan failed; the next tick decides again"),
                }
            }
            if first_tick {
                first_tick = false;
                if let Some(gone) = leadership.predecessor_gone_at() {
                    let seconds = gone.elapsed().as_secs_f64();
                    metrics.failover_seconds.set(seconds);
                    tracing::info!(seconds, "failover: first tick applied after the previous leader's key expired");
                }
            }
            let until_due = plan
                .next_wakeup
                .map(|at| Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO))
                .unwrap_or(config.resync)
                .min(config.resync);
            drop(plan);
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(config.debounce).await,
                _ = tokio::time::sleep(until_due) => {}
                _ = leadership.lost() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn count(&self, applied: &executor::Applied) {
        self.metrics.stale_operations.inc_by(applied.stale as u64);
        self.metrics.launches.inc_by(applied.launched as u64);
        self.metrics.removals.inc_by(applied.removed as u64);
        for reason in &applied.stopped {
            self.metrics.stops.get_or_create(&ReasonLabel { reason }).inc();
        }
    }
}
