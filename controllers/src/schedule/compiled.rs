//! Constraints compiled for speed: an app's constraints are turned, once per plan, into
//! checks on small integer value ids, so placing an instance on 10,000 agents hashes and
//! compares no strings. [`super::filters::holds`] is the reference semantics; a property
//! test checks that the compiled form always agrees with it.

use baton_api::constraints::{Constraint, Field, Operator, Value};

/// The values one field takes across the agents, and each agent's value id.
#[derive(Debug, Clone, Default)]
pub struct FieldIndex {
    pub field: Option<Field>,
    /// Distinct values, by id.
    pub values: Vec<String>,
    /// Per agent (by index): its value id, if it has the field.
    pub value_of: Vec<Option<u32>>,
}

/// How many of an app's instances have each value of a field.
#[derive(Debug, Clone, Default)]
pub struct FieldCounts {
    /// Per value id.
    pub per_value: Vec<usize>,
    /// Values with at least one instance.
    pub used_values: usize,
    /// The smallest count among used values (0 when none is used).
    pub min_used: usize,
}

impl FieldCounts {
    pub fn new(values: usize) -> Self {
        Self { per_value: vec![0; values], used_values: 0, min_used: 0 }
    }

    /// One more instance with value `id`.
    pub fn add(&mut self, id: u32) {
        let slot = &mut self.per_value[id as usize];
        if *slot == 0 {
            self.used_values += 1;
        }
        *slot += 1;
        self.min_used = self.per_value.iter().copied().filter(|n| *n > 0).min().unwrap_or(0);
    }

    pub fn of(&self, id: u32) -> usize {
        self.per_value[id as usize]
    }
}

/// One constraint as a check on value ids.
#[derive(Debug, Clone)]
pub enum Check {
    Unique,
    /// `CLUSTER value`, `IS value`, `LIKE re`, `UNLIKE re` on a value id: the answer per id,
    /// and the answer for an agent without the field.
    PerValue {
        answers: Vec<bool>,
        without_field: bool,
    },
    /// `CLUSTER` without a value.
    SameAsPlaced,
    GroupBy {
        minimum_groups: usize,
    },
    MaxPer(usize),
}

/// A compiled constraint: which of the app's fields it reads, and how.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Index into the app's field counts and the placer's field indexes (as given).
    pub field: usize,
    pub check: Check,
}

/// Compiles `constraint` for the values of its field.
pub fn compile(constraint: &Constraint, field: usize, values: &[String]) -> Compiled {
    let per_value = |answer: &dyn Fn(&str) -> bool, without_field: bool| Check::PerValue {
        answers: values.iter().map(|v| answer(v)).collect(),
        without_field,
    };
    let check = match (constraint.operator, &constraint.value) {
        (Operator::Unique, _) => Check::Unique,
        (Operator::Cluster, Value::Text(wanted)) => per_value(&|v| v == wanted, false),
        (Operator::Cluster, _) => Check::SameAsPlaced,
        (Operator::GroupBy, Value::Count(n)) => Check::GroupBy { minimum_groups: *n },
        (Operator::GroupBy, _) => Check::GroupBy { minimum_groups: 0 },
        (Operator::Like, Value::Pattern(_, regex)) => per_value(&|v| regex.is_match(v), false),
        (Operator::Unlike, Value::Pattern(_, regex)) => per_value(&|v| !regex.is_match(v), true),
        (Operator::MaxPer, Value::Count(n)) => Check::MaxPer(*n),
        (Operator::Is, Value::Text(wanted)) => per_value(&|v| v == wanted, false),
        // Parsing guarantees the value each operator needs; anything else never holds.
        _ => per_value(&|_| false, false),
    };
    Compiled { field, check }
}

/// Whether a compiled constraint holds for an agent with value id `value`.
pub fn holds(compiled: &Compiled, value: Option<u32>, counts: &FieldCounts) -> bool {
    match (&compiled.check, value) {
        (Check::PerValue { answers, .. }, Some(id)) => answers[id as usize],
        (Check::PerValue { without_field, .. }, None) => *without_field,
        (_, None) => false,
        (Check::Unique, Some(id)) => counts.of(id) == 0,
        // Every placed instance has this value: no used value, or only this one.
        (Check::SameAsPlaced, Some(id)) => counts.used_values == 0 || (counts.used_values == 1 && counts.of(id) > 0),
        (Check::GroupBy { minimum_groups }, Some(id)) => match counts.of(id) {
            0 => true,
            n => counts.used_values >= *minimum_groups && n == counts.min_used,
        },
        (Check::MaxPer(max), Some(id)) => counts.of(id) < *max,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::schedule::filters;

    fn constraints() -> Vec<Vec<&'static str>> {
        vec![
            vec!["rack", "UNIQUE"],
            vec!["rack", "CLUSTER", "r1"],
            vec!["rack", "CLUSTER"],
            vec!["rack", "GROUP_BY"],
            vec!["rack", "GROUP_BY", "2"],
            vec!["rack", "GROUP_BY", "4"],
            vec!["rack", "LIKE", "r[01]"],
            vec!["rack", "UNLIKE", "r[01]"],
            vec!["rack", "MAX_PER", "1"],
            vec!["rack", "MAX_PER", "3"],
            vec!["rack", "IS", "r2"],
        ]
    }

    proptest! {
        /// For any instances per value and any agent value, the compiled check answers as
        /// the reference semantics do.
        #[test]
        fn compiled_constraints_agree_with_the_reference(
            placed in prop::collection::vec(0u32..4, 0..12),
            agent_value in prop::option::of(0u32..4),
            which in 0usize..11,
        ) {
            let values: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
            let parts: Vec<String> = constraints()[which].iter().map(|s| s.to_string()).collect();
            let constraint = Constraint::parse(&parts).unwrap();
            let mut counts = FieldCounts::new(values.len());
            let mut by_name: HashMap<String, usize> = HashMap::new();
            for id in &placed {
                counts.add(*id);
                *by_name.entry(values[*id as usize].clone()).or_default() += 1;
            }
            let compiled = compile(&constraint, 0, &values);
            let reference = filters::holds(&constraint, agent_value.map(|id| values[id as usize].as_str()), &by_name);
            prop_assert_eq!(holds(&compiled, agent_value, &counts), reference, "{} on {:?} with {:?}", constraint, agent_value, placed);
        }
    }
}
