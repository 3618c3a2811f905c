//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and the field selectors every
//! kind supports (`metadata.name`, `metadata.namespace`), on lists and watches alike.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            // As in Kubernetes: `k!=v` matches objects without the label too.
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(input: &str) -> ApiResult<Self> {
        let bad =
            |why: &str| ApiError::bad_request(format!("unable to parse requirement: labelSelector {input:?}: {why}"));
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(checked_key(key.trim(), input)?)
            } else if let Some((key, rest)) = split_set_operator(part, " notin ") {
                Requirement::NotIn(
                    checked_key(key, input)?,
                    parse_set(rest).ok_or_else(|| bad("expected a set like (a,b)"))?,
                )
            } else if let Some((key, rest)) = split_set_operator(part, " in ") {
                Requirement::In(
                    checked_key(key, input)?,
                    parse_set(rest).ok_or_else(|| bad("expected a set like (a,b)"))?,
                )
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(checked_key(key.trim(), input)?, value.trim().to_string())
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(checked_key(key.trim(), input)?, value.trim().to_string())
            } else {
                Requirement::Exists(checked_key(part, input)?)
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

fn checked_key(key: &str, input: &str) -> ApiResult<String> {
    match baton_api::names::label_key_problem(key) {
        None => Ok(key.to_string()),
        Some(problem) => Err(ApiError::bad_request(format!("labelSelector {input:?}: key {key:?}: {problem}"))),
    }
}

/// Splits on commas outside parentheses: `a in (x,y),b` → [`a in (x,y)`, `b`].
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn split_set_operator<'a>(part: &'a str, operator: &str) -> Option<(&'a str, &'a str)> {
    let (key, rest) = part.split_once(operator)?;
    Some((key.trim(), rest.trim()))
}

fn parse_set(rest: &str) -> Option<BTreeSet<String>> {
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

/// The fields every kind can be selected by, with the JSON paths they read.
pub const COMMON_FIELDS: [(&str, &str); 2] =
    [("metadata.name", "metadata.name"), ("metadata.namespace", "metadata.namespace")];

/// A field selector: terms `field=value` or `field!=value`, all of which must hold. Each
/// field is one the kind supports (see [`FieldSelector::resolve`]), read at its JSON path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    input: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: String,
    /// JSON pointer of the field, once resolved against the kind.
    pointer: String,
    equal: bool,
    value: String,
}

impl FieldSelector {
    pub fn parse(input: &str) -> ApiResult<Self> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {input:?}: {part:?} has no operator"
                )));
            };
            let field = field.trim().to_string();
            terms.push(Term { pointer: String::new(), field, equal, value: value.trim().to_string() });
        }
        Ok(Self { input: input.to_string(), terms })
    }

    /// Checks every field against those the kind supports (`(field, JSON path)`, besides
    /// [`COMMON_FIELDS`]) and resolves where each is read.
    pub fn resolve(&mut self, plural: &str, fields: &[(String, String)]) -> ApiResult<()> {
        let supported: Vec<(&str, &str)> =
            COMMON_FIELDS.iter().copied().chain(fields.iter().map(|(f, p)| (f.as_str(), p.as_str()))).collect();
        for term in &mut self.terms {
            let Some((_, path)) = supported.iter().find(|(field, _)| *field == term.field) else {
                let names: Vec<&str> = supported.iter().map(|(f, _)| *f).collect();
                return Err(ApiError::bad_request(format!(
                    "fieldSelector {:?}: field label not supported: {} (the fields of {plural} are {})",
                    self.input,
                    term.field,
                    names.join(", ")
                )));
            };
            term.pointer = path.split('.').map(|s| format!("/{s}")).collect();
        }
        Ok(())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = match object.pointer(&term.pointer) {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == term.value) == term.equal
        })
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, object: &Value) -> bool {
        self.fields.matches(object) && self.labels.matches(&labels_of(object))
    }
}

/// `metadata.labels` of an object as a map.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_operators() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("tier!=front", false, true),
            ("app in (web, api)", true, false),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app in (web,db),!tier", false, true),
        ];
        for (selector, matches_web, matches_db) in cases {
            let s = LabelSelector::parse(selector).unwrap();
            assert_eq!((s.matches(&web), s.matches(&db)), (matches_web, matches_db), "selector {selector:?}");
        }
    }

    #[test]
    fn bad_selectors_name_the_input() {
        let err = LabelSelector::parse("app in web").unwrap_err();
        assert!(err.message.contains("app in web"), "{}", err.message);
        let err = fields("spec.instances=3").unwrap_err();
        assert!(err.message.contains("spec.instances"), "{}", err.message);
        assert!(err.message.contains("metadata.name, metadata.namespace, source"), "{}", err.message);
        assert!(FieldSelector::parse("metadata.name").is_err(), "a term needs an operator");
    }

    fn fields(input: &str) -> ApiResult<FieldSelector> {
        let mut selector = FieldSelector::parse(input)?;
        selector.resolve("events", &[("source".to_string(), "source.component".to_string())])?;
        Ok(selector)
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "web", "namespace": "default"}, "source": {"component": "c"}});
        assert!(fields("metadata.name=web").unwrap().matches(&obj));
        assert!(!fields("metadata.name!=web").unwrap().matches(&obj));
        assert!(fields("metadata.namespace==default,metadata.name=web").unwrap().matches(&obj));
        assert!(!fields("metadata.namespace=other").unwrap().matches(&obj));
        assert!(fields("source=c").unwrap().matches(&obj), "a kind's own field, read at its path");
        assert!(fields("source!=").unwrap().matches(&obj));
    }
}
