//! Feasibility filters: can this agent take this instance at all? Each returns the
//! [`Reason`] it rejects with, or `None`; they run cheapest first. Constraints run in their
//! compiled form ([`super::compiled`]); [`holds`] is their reference semantics.

use std::collections::HashMap;

use baton_api::constraints::{Constraint, Field, Operator, Value};
use baton_api::resources::ResourceKind;

use super::compiled::{self, FieldIndex};
use super::{AgentSlot, AppState, PortAsk, Request};

/// Why an agent cannot take an instance. [`Reason::describe`] is what users read in the
/// app's status: "3 agents: insufficient mem", "2 agents: constraint hostname UNIQUE".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InsufficientCpus,
    InsufficientMem,
    InsufficientDisk,
    InsufficientGpus,
    /// A fixed host port (`requirePorts`) is outside the agent's ranges or taken.
    PortNotFree(u16),
    NotEnoughFreePorts,
    /// The request's constraint at this index.
    Constraint(usize),
}

impl Reason {
    pub fn describe(self, constraints: &[Constraint]) -> String {
        match self {
            Reason::InsufficientCpus => "insufficient cpus".into(),
            Reason::InsufficientMem => "insufficient mem".into(),
            Reason::InsufficientDisk => "insufficient disk".into(),
            Reason::InsufficientGpus => "insufficient gpus".into(),
            Reason::PortNotFree(port) => format!("port {port} not free"),
            Reason::NotEnoughFreePorts => "not enough free ports".into(),
            Reason::Constraint(i) => match constraints.get(i) {
                Some(c) => format!("constraint {c}"),
                None => "a constraint".into(),
            },
        }
    }
}

/// The value of `field` on an agent: its name for `hostname`, else the attribute.
pub fn value_of<'a>(agent: &'a AgentSlot<'_>, field: &Field) -> Option<&'a str> {
    match field {
        Field::Hostname => Some(agent.record.name.as_str()),
        Field::Attribute(name) => agent.record.attributes.get(name).map(String::as_str),
    }
}

/// Runs every filter on agent `i`; the first that rejects says why.
pub fn check(
    i: usize,
    agent: &AgentSlot<'_>,
    request: &Request<'_>,
    app: &AppState,
    fields: &[FieldIndex],
) -> Option<Reason> {
    resources(agent, request).or_else(|| ports(agent, request)).or_else(|| constraints(i, app, fields))
}

/// The instance's cpus, mem, disk and gpus fit into what is not allocated on the agent.
fn resources(agent: &AgentSlot<'_>, request: &Request<'_>) -> Option<Reason> {
    agent.free.first_shortfall(request.resources).map(|kind| match kind {
        ResourceKind::Cpus => Reason::InsufficientCpus,
        ResourceKind::Mem => Reason::InsufficientMem,
        ResourceKind::Disk => Reason::InsufficientDisk,
        ResourceKind::Gpus => Reason::InsufficientGpus,
    })
}

/// Fixed ports are in the agent's ranges and free; enough free ports remain for the
/// dynamic ones.
fn ports(agent: &AgentSlot<'_>, request: &Request<'_>) -> Option<Reason> {
    for ask in request.ports {
        if let PortAsk::Fixed(port) = ask {
            let offered = agent.record.ports.iter().any(|r| r.contains(*port));
            if !offered || agent.used_ports.contains(port) {
                return Some(Reason::PortNotFree(*port));
            }
        }
    }
    (agent.free_ports < request.ports.len()).then_some(Reason::NotEnoughFreePorts)
}

/// Every placement constraint holds for agent `i`, with Marathon's semantics (compiled;
/// see [`holds`] for the reference).
fn constraints(i: usize, app: &AppState, fields: &[FieldIndex]) -> Option<Reason> {
    app.compiled.iter().enumerate().find_map(|(n, c)| {
        let value = fields[app.field_ids[c.field]].value_of[i];
        (!compiled::holds(c, value, &app.counts[c.field])).then_some(Reason::Constraint(n))
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
