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

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use baton_store::election::{self, Leadership};
use baton_store::{Keyspace, Store};

use crate::plan::{self, PlanContext};

pub mod cache;
pub mod executor;

use cache::{AppCache, StoreCache};
use executor::Executor;

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Names this controller in the election key (e.g. `hostname:pid`).
    pub id: String,
    pub keys: Keyspace,
    /// Election scope: `platform`, or `tenant/<name>`.
    pub scope: String,
    /// How long leadership outlives a controller that stopped renewing it.
    pub election_ttl: Duration,
    /// Plan at least this often even when nothing changed.
    pub resync: Duration,
    /// After a change, wait this long for more before planning.
    pub debounce: Duration,
}

impl ControllerConfig {
    pub fn new(id: impl Into<String>, keys: Keyspace) -> Self {
        Self {
            id: id.into(),
            keys,
            scope: "platform".into(),
            election_ttl: Duration::from_secs(10),
            resync: Duration::from_secs(10),
            debounce: Duration::from_millis(20),
        }
    }
}

/// Runs the controller until `shutdown`: campaigns, leads until leadership is lost, and
/// campaigns again.
pub async fn run(store: Arc<dyn Store>, client: kube::Client, config: ControllerConfig, shutdown: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let records = StoreCache::start(store.clone(), config.keys.clone(), changed.clone(), shutdown.clone());
    let apps = AppCache::start(client.clone(), changed.clone(), shutdown.clone());
    let executor = Executor::new(store.clone(), config.keys.clone(), client);
    let leader_key = config.keys.leader(&config.scope);
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
        tracing::info!(id = config.id, term = leadership.term(), scope = config.scope, "leading");
        lead(&leadership, &records, &apps, &executor, &config, &changed, &shutdown).await;
        if shutdown.is_cancelled() {
            if let Err(e) = leadership.resign().await {
                tracing::warn!(error = %e, "could not resign leadership");
            }
            return;
        }
        tracing::warn!(id = config.id, "leadership lost; campaigning again");
    }
}

async fn lead(
    leadership: &Leadership,
    records: &StoreCache,
    apps: &AppCache,
    executor: &Executor,
    config: &ControllerConfig,
    changed: &Notify,
    shutdown: &CancellationToken,
) {
    tokio::select! {
        _ = async { records.ready().await; apps.ready().await } => {}
        _ = shutdown.cancelled() => return,
        _ = leadership.lost() => return,
    }
    let mut last_write = 0;
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
        let snapshot = records.snapshot(apps.apps());
        let now = Timestamp::now();
        let started = std::time::Instant::now();
        let plan = plan::plan(&snapshot, &PlanContext { now, seed: rand::random() });
        let planned_in = started.elapsed();
        if !plan.is_empty() {
            match executor.apply(&plan, leadership).await {
                Ok(applied) => {
                    if applied.revision > 0 {
                        last_write = applied.revision;
                    }
                    tracing::info!(
                        launches = plan.launches.len(),
                        stops = plan.stops.len(),
                        removals = plan.removals.len(),
                        statuses = applied.statuses,
                        stale = applied.stale,
                        plan_micros = planned_in.as_micros() as u64,
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
        let until_due = plan
            .next_wakeup
            .map(|at| Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO))
            .unwrap_or(config.resync)
            .min(config.resync);
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(config.debounce).await,
            _ = tokio::time::sleep(until_due) => {}
            _ = leadership.lost() => return,
            _ = shutdown.cancelled() => return,
        }
    }
}
