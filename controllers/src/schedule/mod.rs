//! Placement: which agent runs a new instance, and on which host ports.
//!
//! A pipeline in three stages, built here in one place:
//! 1. **filters** ([`filters`]) drop agents that cannot take the instance, each with a
//!    constant [`Reason`]; rejections are counted per reason so an app's status can say why
//!    it is pending;
//! 2. **scorers** ([`scorers`]) rank the agents that remain;
//! 3. **select** takes the best and reserves its resources and ports, so the next placement
//!    in the same plan sees them taken (two launches never claim the same port).
//!
//! Pure: no I/O, no clock; the port choice is driven by a seed passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use baton_api::{AgentRecord, ResourceAmounts};

use crate::snapshot::Snapshot;

pub mod filters;
pub mod scorers;

pub use filters::Reason;

/// What one instance needs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The app's uid: spreading counts instances of the same app.
    pub app_uid: &'a str,
    pub resources: ResourceAmounts,
    /// How many host ports.
    pub ports: usize,
    /// Drives which free ports are picked.
    pub seed: u64,
}

/// Where an instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub agent: String,
    pub host: String,
    /// Assigned host ports, one per requested port, in order.
    pub ports: Vec<u16>,
}

/// Why no agent fits: how many agents were rejected for each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    pub by_reason: BTreeMap<Reason, usize>,
    /// Agents considered (0: none is registered).
    pub agents: usize,
}

impl Rejections {
    /// "3 agents: insufficient mem; 1 agent: not enough free ports", or "no agents are registered".
    pub fn summary(&self) -> String {
        if self.agents == 0 {
            return "no agents are registered".into();
        }
        self.by_reason
            .iter()
            .map(|(reason, n)| format!("{n} agent{}: {}", if *n == 1 { "" } else { "s" }, reason.message()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The outcome of placing one instance: an expected misfit is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Placed(Placement),
    Unschedulable(Rejections),
}

/// An agent as placement sees it: what is left on it.
#[derive(Debug, Clone)]
pub struct AgentSlot<'a> {
    pub record: &'a AgentRecord,
    pub free: ResourceAmounts,
    pub used_ports: BTreeSet<u16>,
    /// Instances per app uid already on the agent (including this plan's placements).
    pub instances_of_app: HashMap<String, usize>,
}

impl AgentSlot<'_> {
    fn port_capacity(&self) -> usize {
        self.record.ports.iter().map(|r| r.len()).sum()
    }

    pub fn free_port_count(&self) -> usize {
        let used_in_ranges =
            self.used_ports.iter().filter(|p| self.record.ports.iter().any(|r| r.contains(**p))).count();
        self.port_capacity().saturating_sub(used_in_ranges)
    }

    /// `count` free ports, scanning the agent's ranges from a position picked by `seed`
    /// (so that a port just freed is not handed out again at once).
    fn pick_ports(&self, count: usize, seed: u64) -> Vec<u16> {
        let capacity = self.port_capacity();
        if count == 0 || capacity == 0 {
            return Vec::new();
        }
        let start = (seed % capacity as u64) as usize;
        let nth = |mut i: usize| -> u16 {
            for range in &self.record.ports {
                if i < range.len() {
                    return range.begin + i as u16;
                }
                i -= range.len();
            }
            unreachable!("index within capacity")
        };
        (0..capacity)
            .map(|i| nth((start + i) % capacity))
            .filter(|p| !self.used_ports.contains(p))
            .take(count)
            .collect()
    }
}

/// Places instances on the agents of one snapshot.
pub struct Placer<'a> {
    agents: Vec<AgentSlot<'a>>,
}

impl<'a> Placer<'a> {
    /// Agents with what their current instances (every instance not yet over, including
    /// those being stopped, whose processes still hold their resources) leave free.
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut agents: BTreeMap<&str, AgentSlot<'a>> = snapshot
            .agents
            .values()
            .map(|record| {
                let slot = AgentSlot {
                    record: record.as_ref(),
                    free: record.resources,
                    used_ports: BTreeSet::new(),
                    instances_of_app: HashMap::new(),
                };
                (record.name.as_str(), slot)
            })
            .collect();
        for instance in snapshot.instances.values().filter(|i| !i.is_terminal()) {
            if let Some(slot) = agents.get_mut(instance.record.agent.as_str()) {
                slot.free = slot.free.minus(instance.record.resources);
                slot.used_ports.extend(instance.record.ports.iter().map(|p| p.port));
                *slot.instances_of_app.entry(instance.record.app.uid.clone()).or_default() += 1;
            }
        }
        Self { agents: agents.into_values().collect() }
    }

    /// Finds the best agent for `request` and reserves what it takes there.
    pub fn place(&mut self, request: &Request<'_>) -> Fit {
        let mut rejections = Rejections { agents: self.agents.len(), ..Rejections::default() };
        let mut best: Option<(usize, (i64, u64))> = None;
        for (index, agent) in self.agents.iter().enumerate() {
            if let Some(reason) = filters::FILTERS.iter().find_map(|filter| filter(agent, request)) {
                *rejections.by_reason.entry(reason).or_default() += 1;
                continue;
            }
            let score = scorers::spread(agent, request);
            // Agents are in name order: the first of equal scores wins.
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((index, score));
            }
        }
        let Some((index, _)) = best else { return Fit::Unschedulable(rejections) };
        let agent = &mut self.agents[index];
        let ports = agent.pick_ports(request.ports, request.seed);
        agent.free = agent.free.minus(request.resources);
        agent.used_ports.extend(ports.iter().copied());
        *agent.instances_of_app.entry(request.app_uid.to_string()).or_default() += 1;
        Fit::Placed(Placement { agent: agent.record.name.clone(), host: agent.record.host.clone(), ports })
    }
}
