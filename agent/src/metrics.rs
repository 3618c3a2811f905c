//! The agent's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Everything an agent counts.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// 1 while the agent's registration (its lease) is held.
    pub registered: Gauge,
    /// Instances under supervision (their process runs, or is starting or stopping).
    pub instances: Gauge,
    /// Instances started (not adopted) by this agent.
    pub started: Counter,
    /// Instances whose process ended (on its own or stopped).
    pub ended: Counter,
}

impl AgentMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("baton_agent");
        registry.register("registered", "1 while the agent's registration is held", self.registered.clone());
        registry.register("instances", "Instances under supervision", self.instances.clone());
        registry.register("instances_started", "Instances started", self.started.clone());
        registry.register("instances_ended", "Instances whose process ended", self.ended.clone());
    }

    /// Whether the agent is registered, for `/readyz`.
    pub fn is_registered(&self) -> bool {
        self.registered.get() == 1
    }
}
