//! The controller's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the stop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Everything the controller counts.
#[derive(Debug)]
pub struct Metrics {
    /// 1 once this controller's caches hold a full view (it can lead at once).
    pub ready: Gauge,
    /// 1 while this controller leads its scope.
    pub leader: Gauge,
    /// Terms this controller has won.
    pub terms: Counter,
    /// Seconds from the previous leader's election key expiring to this leader's first
    /// applied tick, at the last takeover.
    pub failover_seconds: Gauge<f64, AtomicU64>,
    pub plans: Counter,
    pub plan_seconds: Histogram,
    pub launches: Counter,
    pub stops: Family<ReasonLabel, Counter>,
    pub removals: Counter,
    /// Operations dropped because they were planned on a stale view.
    pub stale_operations: Counter,
    /// Instances the health policy spared although they were due to be killed (each
    /// counted once per stretch of being spared).
    pub health_kills_withheld: Counter,
    /// Instances spared by the health policy at the last tick.
    pub health_kills_withheld_now: Gauge,
}

/// The plan-time histogram's bounds: 100 µs … ~7 s, each a quarter above the last
/// (quantiles within 25 %), and 50 ms exactly — the steady tick's target at 100,000
/// instances (docs/performance.md), which would otherwise fall between 41.4 and 51.7 ms.
fn plan_buckets() -> Vec<f64> {
    let mut bounds: Vec<f64> = exponential_buckets(0.000_1, 1.25, 50).chain([PLAN_TARGET_SECONDS]).collect();
    bounds.sort_by(f64::total_cmp);
    bounds
}

/// The steady tick's plan-time target at 100,000 instances.
const PLAN_TARGET_SECONDS: f64 = 0.05;

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ready: Gauge::default(),
            leader: Gauge::default(),
            terms: Counter::default(),
            failover_seconds: Gauge::default(),
            plans: Counter::default(),
            plan_seconds: Histogram::new(plan_buckets()),
            launches: Counter::default(),
            stops: Family::default(),
            removals: Counter::default(),
            stale_operations: Counter::default(),
            health_kills_withheld: Counter::default(),
            health_kills_withheld_now: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `baton_controller_…`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("baton_controller");
        registry.register("ready", "1 once the caches hold a full view", self.ready.clone());
        registry.register("leader", "1 while this controller leads its scope", self.leader.clone());
        registry.register("terms", "Terms this controller has won", self.terms.clone());
        registry.register(
            "failover_seconds",
            "Seconds from the previous leader's election key expiring to this leader's first applied tick, at the last takeover",
            self.failover_seconds.clone(),
        );
        registry.register("plans", "Ticks planned", self.plans.clone());
        registry.register("plan_seconds", "Time to compute a plan", self.plan_seconds.clone());
        registry.register("launches", "Instances launched", self.launches.clone());
        registry.register(
            "stops",
            "Instances stopped, by reason (Unhealthy: killed for failing health checks)",
            self.stops.clone(),
        );
        registry.register(
            "health_kills_withheld",
            "Instances due to be killed for failing health checks that the health policy spared",
            self.health_kills_withheld.clone(),
        );
        registry.register(
            "health_kills_withheld_instances",
            "Instances the health policy spared at the last tick",
            self.health_kills_withheld_now.clone(),
        );
        registry.register("removals", "Instance records removed", self.removals.clone());
        registry.register(
            "stale_operations",
            "Writes dropped because they were planned on a stale view",
            self.stale_operations.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_time_buckets_rise_and_hold_the_target() {
        let bounds = plan_buckets();
        assert_eq!(bounds.len(), 51);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds rise: {bounds:?}");
        assert_eq!(bounds[0], 0.000_1);
        let at = bounds.iter().position(|b| *b == PLAN_TARGET_SECONDS).expect("the target is a bound");
        assert!(bounds[at - 1] < 0.05 && bounds[at + 1] > 0.05);
    }
}
