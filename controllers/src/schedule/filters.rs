//! Feasibility filters: can this agent take this instance at all? Each has a name and the
//! one [`Reason`] it rejects with; [`FILTERS`] lists them in the order they run, and the
//! first that rejects ends the checks for that agent. Constraints run in their compiled form
//! ([`super::compiled`]); [`holds`] is their reference semantics.

use std::collections::HashMap;

use baton_api::constraints::{Constraint, Field, Operator, Value};

use super::compiled::{self, FieldIndex};
use super::{AgentSlot, AppState, PortAsk, Request};

/// Why an agent cannot take an instance: the constant reason of the filter that rejected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The agent is in maintenance (draining, or drained): nothing new goes on it.
    InMaintenance,
    /// The agent is being freed for another app's whole-agent instance.
    Reserved,
    /// The agent is reserved for a tenant (its guarantee's `agents`), and the instance is not
    /// that tenant's.
    TenantReserved,
    /// The app's instances were moved off the agent (to free it) within the hour.
    RecentlyLeft,
    /// Another instance takes the whole agent.
    TakenWhole,
    /// The instance takes a whole agent, and this one is not empty.
    NotEmpty,
    /// One of the empty agents kept free for instances that take whole agents.
    KeptFree,
    InsufficientCpus,
    InsufficientMem,
    InsufficientDisk,
    InsufficientGpus,
    /// A fixed host port (`requirePorts`) is outside the agent's ranges or taken.
    PortNotFree,
    NotEnoughFreePorts,
    /// One of the request's constraints does not hold.
    Constraint,
}

/// One agent's rejection: the reason, and which port or constraint it names.
/// [`Rejection::describe`] is what users read in the app's status: "3 agents: insufficient
/// mem", "2 agents: constraint hostname UNIQUE", "1 agent: port 8080 not free".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rejection {
    pub reason: Reason,
    /// The port ([`Reason::PortNotFree`]) or the constraint's index ([`Reason::Constraint`]);
    /// 0 for the other reasons.
    pub detail: u32,
}

impl Rejection {
    pub fn describe(self, constraints: &[Constraint]) -> String {
        match self.reason {
            Reason::InMaintenance => "in maintenance".into(),
            Reason::Reserved => "being freed for another app".into(),
            Reason::TenantReserved => "reserved for another tenant".into(),
            Reason::RecentlyLeft => "the app was moved off it within the hour".into(),
            Reason::TakenWhole => "taken whole by another instance".into(),
            Reason::NotEmpty => "not empty (the app takes whole agents)".into(),
            Reason::KeptFree => "kept free for whole-agent instances".into(),
            Reason::InsufficientCpus => "insufficient cpus".into(),
            Reason::InsufficientMem => "insufficient mem".into(),
            Reason::InsufficientDisk => "insufficient disk".into(),
            Reason::InsufficientGpus => "insufficient gpus".into(),
            Reason::PortNotFree => format!("port {} not free", self.detail),
            Reason::NotEnoughFreePorts => "not enough free ports".into(),
            Reason::Constraint => match constraints.get(self.detail as usize) {
                Some(c) => format!("constraint {c}"),
                None => "a constraint".into(),
            },
        }
    }
}

/// What a filter or a scorer looks at: one agent (the `index`-th, in name order) for one
/// request of one app.
pub struct Candidate<'c> {
    pub index: usize,
    pub agent: &'c AgentSlot<'c>,
    pub request: &'c Request<'c>,
    pub app: &'c AppState,
    pub fields: &'c [FieldIndex],
    /// The empty agents are down to those kept free for whole-agent instances.
    pub keep_empty: bool,
}

/// A feasibility check.
pub struct Filter {
    /// Names the filter in docs and tests: `cpus`, `fixed-ports`, `constraints`, ….
    pub name: &'static str,
    /// The reason every rejection by this filter gives.
    pub reason: Reason,
    /// `None` when the agent passes; else which port or constraint fails (0 when the filter
    /// checks one thing).
    pub rejects: fn(&Candidate<'_>) -> Option<u32>,
}

/// Every filter, in the order they run: cheapest and most often decisive first, since the
/// first rejection ends an agent's checks and is the reason its app's status reports.
pub const FILTERS: [Filter; 14] = [
    // An agent in maintenance takes nothing (it is not even indexed: only a full scan meets it).
    Filter { name: "maintenance", reason: Reason::InMaintenance, rejects: |c| c.agent.cordoned.then_some(0) },
    // Defragmentation: an agent being freed takes only the app it is freed for; the apps moved
    // off it do not come back within the hour.
    Filter {
        name: "reserved",
        reason: Reason::Reserved,
        rejects: |c| c.agent.reserved_for.is_some_and(|app| app != c.request.app).then_some(0),
    },
    // A tenant's reserved agents take its instances only.
    Filter {
        name: "tenant-reserved",
        reason: Reason::TenantReserved,
        rejects: |c| {
            c.agent
                .tenant
                .is_some_and(|t| !matches!(c.request.scope, baton_api::Scope::Tenant(s) if s == t))
                .then_some(0)
        },
    },
    Filter {
        name: "recently-left",
        reason: Reason::RecentlyLeft,
        rejects: |c| c.agent.barred.iter().any(|uid| uid == c.request.app_uid).then_some(0),
    },
    // Whole agents: one instance that takes its agent, on an agent with nothing else.
    Filter { name: "taken-whole", reason: Reason::TakenWhole, rejects: |c| c.agent.exclusive.then_some(0) },
    Filter {
        name: "whole-agent",
        reason: Reason::NotEmpty,
        rejects: |c| (c.request.whole_agent && c.agent.live > 0).then_some(0),
    },
    Filter {
        name: "kept-free",
        reason: Reason::KeptFree,
        rejects: |c| (!c.request.whole_agent && c.agent.live == 0 && c.keep_empty).then_some(0),
    },
    // Room first: one comparison each, and in a busy cluster most agents are rejected for
    // lack of room. Cpus, mem, disk, gpus: the order in which a shortfall is named.
    Filter { name: "cpus", reason: Reason::InsufficientCpus, rejects: |c| short(c, |r| r.millicpus) },
    Filter { name: "mem", reason: Reason::InsufficientMem, rejects: |c| short(c, |r| r.mem_mib) },
    Filter { name: "disk", reason: Reason::InsufficientDisk, rejects: |c| short(c, |r| r.disk_mib) },
    Filter { name: "gpus", reason: Reason::InsufficientGpus, rejects: |c| short(c, |r| r.gpus) },
    // Ports next: a fixed port looks up the agent's ranges and used ports, rare and cheap;
    // then the count of free ports for the dynamic ones, one comparison.
    Filter { name: "fixed-ports", reason: Reason::PortNotFree, rejects: fixed_ports },
    Filter { name: "free-ports", reason: Reason::NotEnoughFreePorts, rejects: free_ports },
    // Constraints last: they read the app's instances per value, and most apps have none.
    Filter { name: "constraints", reason: Reason::Constraint, rejects: constraints },
];

/// Runs the filters on one candidate; the first that rejects says why.
pub fn check(candidate: &Candidate<'_>) -> Option<Rejection> {
    FILTERS.iter().find_map(|f| (f.rejects)(candidate).map(|detail| Rejection { reason: f.reason, detail }))
}

/// The value of `field` on an agent: its name for `hostname`, else the attribute.
pub fn value_of<'a>(agent: &'a AgentSlot<'_>, field: &Field) -> Option<&'a str> {
    match field {
        Field::Hostname => Some(agent.record.name.as_str()),
        Field::Attribute(name) => agent.record.attributes.get(name).map(String::as_str),
    }
}

/// The request asks for more of one resource than is not allocated on the agent.
fn short(c: &Candidate<'_>, amount: fn(&baton_api::ResourceAmounts) -> u64) -> Option<u32> {
    (amount(&c.request.resources) > amount(&c.agent.free)).then_some(0)
}

/// A fixed port (`requirePorts`) the agent does not offer or that is taken: the port.
fn fixed_ports(c: &Candidate<'_>) -> Option<u32> {
    c.request.ports.iter().find_map(|ask| match ask {
        PortAsk::Fixed(port) => {
            let offered = c.agent.record.ports.iter().any(|r| r.contains(*port));
            (!offered || c.agent.used_ports.contains(port)).then_some(u32::from(*port))
        }
        PortAsk::Dynamic => None,
    })
}

/// Fewer free ports in the agent's ranges than the request asks for.
fn free_ports(c: &Candidate<'_>) -> Option<u32> {
    (c.agent.free_ports < c.request.ports.len()).then_some(0)
}

/// A placement constraint that does not hold, with Marathon's semantics (compiled; see
/// [`holds`] for the reference): its index.
fn constraints(c: &Candidate<'_>) -> Option<u32> {
    let app = c.app;
    app.compiled.iter().enumerate().find_map(|(n, compiled)| {
        let value = c.fields[app.field_ids[compiled.field]].value_of[c.index];
        (!compiled::holds(compiled, value, &app.counts[compiled.field])).then_some(n as u32)
    })
}

/// Whether `constraint` holds for an agent whose value of the field is `value`, given how
/// many of the app's instances have each value.
pub fn holds(constraint: &Constraint, value: Option<&str>, counts: &HashMap<String, usize>) -> bool {
    let count_of = |v: &str| counts.get(v).copied().unwrap_or(0);
    match (constraint.operator, &constraint.value, value) {
        // An agent without the field matches only UNLIKE.
        (Operator::Unlike, _, None) => true,
        (_, _, None) => false,
        (Operator::Unique, _, Some(v)) => count_of(v) == 0,
        (Operator::Cluster, Value::Text(wanted), Some(v)) => v == wanted,
        // Without a value: the same value as every instance placed so far.
        (Operator::Cluster, _, Some(v)) => counts.iter().all(|(k, n)| *n == 0 || k == v),
        (Operator::GroupBy, group_count, Some(v)) => {
            // Marathon: a value not used yet is fine; a used one only once at least
            // `count` values are used, and only if it has the fewest instances.
            let minimum = match group_count {
                Value::Count(n) => *n,
                _ => 0,
            };
            let used: Vec<usize> = counts.values().copied().filter(|n| *n > 0).collect();
            match count_of(v) {
                0 => true,
                n => used.len() >= minimum && used.iter().all(|m| n <= *m),
            }
        }
        (Operator::Like, Value::Pattern(_, regex), Some(v)) => regex.is_match(v),
        (Operator::Unlike, Value::Pattern(_, regex), Some(v)) => !regex.is_match(v),
        (Operator::MaxPer, Value::Count(max), Some(v)) => count_of(v) < *max,
        (Operator::Is, Value::Text(wanted), Some(v)) => v == wanted,
        // Parsing guarantees the value each operator needs.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(parts: &[&str]) -> Constraint {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    /// (constraint, the agent's value, instances per value, holds?)
    type Case<'a> = (Vec<&'a str>, Option<&'a str>, HashMap<String, usize>, bool);

    #[test]
    fn constraint_semantics() {
        let none = counts(&[]);
        let cases: Vec<Case<'_>> = vec![
            (vec!["hostname", "UNIQUE"], Some("a1"), none.clone(), true),
            (vec!["hostname", "UNIQUE"], Some("a1"), counts(&[("a1", 1)]), false),
            (vec!["hostname", "UNIQUE"], Some("a2"), counts(&[("a1", 1)]), true),
            (vec!["rack", "UNIQUE"], None, none.clone(), false),
            (vec!["rack", "CLUSTER", "r1"], Some("r1"), none.clone(), true),
            (vec!["rack", "CLUSTER", "r1"], Some("r2"), none.clone(), false),
            (vec!["rack", "CLUSTER"], Some("r2"), none.clone(), true),
            (vec!["rack", "CLUSTER"], Some("r2"), counts(&[("r1", 2)]), false),
            (vec!["rack", "CLUSTER"], Some("r1"), counts(&[("r1", 2)]), true),
            (vec!["rack", "GROUP_BY"], Some("r2"), counts(&[("r1", 1)]), true),
            (vec!["rack", "GROUP_BY"], Some("r1"), counts(&[("r1", 1), ("r2", 1)]), true),
            (vec!["rack", "GROUP_BY"], Some("r1"), counts(&[("r1", 2), ("r2", 1)]), false),
            // With a count, a used value waits until that many values are used.
            (vec!["rack", "GROUP_BY", "3"], Some("r1"), counts(&[("r1", 1), ("r2", 1)]), false),
            (vec!["rack", "GROUP_BY", "3"], Some("r3"), counts(&[("r1", 1), ("r2", 1)]), true),
            (vec!["rack", "GROUP_BY", "3"], Some("r1"), counts(&[("r1", 1), ("r2", 1), ("r3", 1)]), true),
            (vec!["rack", "LIKE", "r[12]"], Some("r2"), none.clone(), true),
            (vec!["rack", "LIKE", "r[12]"], Some("r22"), none.clone(), false),
            (vec!["rack", "LIKE", "r.*"], None, none.clone(), false),
            (vec!["rack", "UNLIKE", "r[12]"], Some("r3"), none.clone(), true),
            (vec!["rack", "UNLIKE", "r[12]"], Some("r1"), none.clone(), false),
            (vec!["rack", "UNLIKE", "r[12]"], None, none.clone(), true),
            (vec!["rack", "MAX_PER", "2"], Some("r1"), counts(&[("r1", 1)]), true),
            (vec!["rack", "MAX_PER", "2"], Some("r1"), counts(&[("r1", 2)]), false),
            (vec!["gpu", "IS", "a100"], Some("a100"), none.clone(), true),
            (vec!["gpu", "IS", "a100"], Some("a10"), none.clone(), false),
            (vec!["gpu", "IS", "a100"], None, none.clone(), false),
        ];
        for (parts, value, counts, expected) in cases {
            let c = constraint(&parts);
            assert_eq!(holds(&c, value, &counts), expected, "{c} on {value:?} with {counts:?}");
        }
    }
}
