//! Feasibility filters: can this agent take this instance at all? Each returns the
//! [`Reason`] it rejects with; cheap checks come first.

use baton_api::resources::ResourceKind;

use super::{AgentSlot, Request};

/// Why an agent cannot take an instance. The text is what users read in the app's
/// `Pending` condition: "3 agents: insufficient mem".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InsufficientCpus,
    InsufficientMem,
    InsufficientDisk,
    NotEnoughFreePorts,
}

impl Reason {
    pub const fn message(self) -> &'static str {
        match self {
            Reason::InsufficientCpus => "insufficient cpus",
            Reason::InsufficientMem => "insufficient mem",
            Reason::InsufficientDisk => "insufficient disk",
            Reason::NotEnoughFreePorts => "not enough free ports",
        }
    }
}

/// A filter: `None` when the agent passes.
pub type Filter = fn(&AgentSlot<'_>, &Request<'_>) -> Option<Reason>;

/// The filters, in the order they run.
pub const FILTERS: [Filter; 2] = [resources_fit, ports_fit];

/// The instance's cpus, mem and disk fit into what is not yet allocated on the agent.
fn resources_fit(agent: &AgentSlot<'_>, request: &Request<'_>) -> Option<Reason> {
    agent.free.first_shortfall(request.resources).map(|kind| match kind {
        ResourceKind::Cpus => Reason::InsufficientCpus,
        ResourceKind::Mem => Reason::InsufficientMem,
        ResourceKind::Disk => Reason::InsufficientDisk,
    })
}

/// The agent's port ranges have enough ports not assigned to another instance.
fn ports_fit(agent: &AgentSlot<'_>, request: &Request<'_>) -> Option<Reason> {
    (agent.free_port_count() < request.ports).then_some(Reason::NotEnoughFreePorts)
}
