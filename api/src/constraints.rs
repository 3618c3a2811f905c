//! Placement constraints, written as Marathon writes them: `[field, OPERATOR, value?]`.
//!
//! `field` is `hostname` (the agent's name, which defaults to its host name) or any agent
//! attribute (`rack`, `zone`…). An agent that lacks the attribute matches only `UNLIKE`.
//!
//! | operator | value | an agent fits when |
//! |---|---|---|
//! | `UNIQUE` | — | no other instance of the app has the agent's value |
//! | `CLUSTER` | optional | its value equals `value`; without one, equals the value of the instances already placed |
//! | `GROUP_BY` | optional count | its value is not used yet, or (once at least `count` values are used) has the fewest instances |
//! | `LIKE` | regex | its value matches `value` (the whole string) |
//! | `UNLIKE` | regex | its value does not match `value` (or it has no value) |
//! | `MAX_PER` | count | fewer than `count` instances of the app have its value |
//! | `IS` | text | its value equals `value` |

use std::fmt;

use regex::Regex;

/// The field a constraint reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The agent's name.
    Hostname,
    /// An agent attribute.
    Attribute(String),
}

/// A constraint operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl Operator {
    pub const ALL: [&'static str; 7] = ["UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            "IS" => Operator::Is,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
        }
    }
}

/// What a constraint compares with.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Text(String),
    /// A count (`MAX_PER`, `GROUP_BY`).
    Count(usize),
    /// A full-string regular expression (`LIKE`, `UNLIKE`), as written and compiled.
    Pattern(String, Regex),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Count(a), Value::Count(b)) => a == b,
            (Value::Pattern(a, _), Value::Pattern(b, _)) => a == b,
            _ => false,
        }
    }
}

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub field: Field,
    pub operator: Operator,
    pub value: Value,
}

impl Constraint {
    /// Parses `[field, OPERATOR, value?]`; the error says what is wrong with it.
    pub fn parse(parts: &[String]) -> Result<Self, String> {
        let (field, operator, value) = match parts {
            [field, operator] => (field, operator, None),
            [field, operator, value] => (field, operator, Some(value)),
            _ => {
                return Err(format!(
                    "must be [field, OPERATOR] or [field, OPERATOR, value], got {} elements",
                    parts.len()
                ));
            }
        };
        let field = match field.as_str() {
            "" => return Err("the field must not be empty".into()),
            "hostname" => Field::Hostname,
            attribute => Field::Attribute(attribute.to_string()),
        };
        let operator = Operator::parse(operator)
            .ok_or_else(|| format!("unknown operator {operator:?}; one of {}", Operator::ALL.join(", ")))?;
        let count = |v: &String| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{} takes a whole number ≥ 1, got {v:?}", operator.as_str()))
        };
        let value = match (operator, value) {
            (Operator::Unique, None) => Value::None,
            (Operator::Unique, Some(_)) => return Err("UNIQUE takes no value".into()),
            (Operator::Cluster, None) => Value::None,
            (Operator::Cluster | Operator::Is, Some(v)) => Value::Text(v.clone()),
            (Operator::GroupBy, None) => Value::None,
            (Operator::GroupBy | Operator::MaxPer, Some(v)) => Value::Count(count(v)?),
            (Operator::Like | Operator::Unlike, Some(v)) => {
                let regex =
                    Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("{v:?} is not a regular expression: {e}"))?;
                Value::Pattern(v.clone(), regex)
            }
            (Operator::Like | Operator::Unlike | Operator::MaxPer | Operator::Is, None) => {
                return Err(format!("{} needs a value", operator.as_str()));
            }
        };
        Ok(Constraint { field, operator, value })
    }

    /// The field's name as written.
    pub fn field_name(&self) -> &str {
        match &self.field {
            Field::Hostname => "hostname",
            Field::Attribute(a) => a,
        }
    }
}

impl fmt::Display for Constraint {
    /// `hostname UNIQUE`, `rack GROUP_BY 3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field_name(), self.operator.as_str())?;
        match &self.value {
            Value::None => Ok(()),
            Value::Text(v) | Value::Pattern(v, _) => write!(f, " {v}"),
            Value::Count(n) => write!(f, " {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(parts: &[&str]) -> Result<Constraint, String> {
        Constraint::parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn marathon_constraints_parse() {
        assert_eq!(parse(&["hostname", "UNIQUE"]).unwrap().to_string(), "hostname UNIQUE");
        assert_eq!(parse(&["rack", "GROUP_BY", "3"]).unwrap().value, Value::Count(3));
        assert_eq!(parse(&["rack", "CLUSTER"]).unwrap().value, Value::None);
        let like = parse(&["rack", "LIKE", "r[12]"]).unwrap();
        let Value::Pattern(_, regex) = &like.value else { panic!("a pattern") };
        assert!(regex.is_match("r1") && !regex.is_match("r10"), "LIKE matches the whole string");
    }

    #[test]
    fn bad_constraints_say_what_is_wrong() {
        for (parts, words) in [
            (vec!["hostname"], "elements"),
            (vec!["hostname", "UNIQ"], "unknown operator"),
            (vec!["hostname", "UNIQUE", "x"], "no value"),
            (vec!["rack", "MAX_PER"], "needs a value"),
            (vec!["rack", "MAX_PER", "zero"], "whole number"),
            (vec!["rack", "LIKE", "r[1"], "regular expression"),
            (vec!["", "IS", "x"], "empty"),
        ] {
            let err = parse(&parts).unwrap_err();
            assert!(err.contains(words), "{parts:?}: {err}");
        }
    }
}
