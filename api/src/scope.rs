//! Scopes: what one controller owns. A controller runs for one scope — `platform`, or
//! `tenant/<name>` — and plans, stops, rewrites and counts only its scope's apps and
//! instances (DESIGN.md §5). An app's scope is its namespace's: a namespace labelled
//! `baton.dev/tenant: NAME` belongs to `tenant/NAME`, any other to `platform`. Every
//! instance record carries the scope of the app it was launched for.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::dns_label_problem;

/// The namespace label that gives a namespace (and its apps) to a tenant's scope.
pub const TENANT_LABEL: &str = "baton.dev/tenant";

/// One controller's share of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// The platform: every namespace no tenant claims. Its controller is the one arbiter of
    /// capacity: it alone binds instances to agents.
    #[default]
    Platform,
    /// A tenant's namespaces.
    Tenant(String),
}

impl Scope {
    /// The scope of a namespace with these labels.
    pub fn of_namespace(labels: Option<&BTreeMap<String, String>>) -> Scope {
        match labels.and_then(|l| l.get(TENANT_LABEL)) {
            Some(tenant) if !tenant.is_empty() => Scope::Tenant(tenant.clone()),
            _ => Scope::Platform,
        }
    }

    /// Whether this scope binds instances to agents (only the platform does).
    pub fn places(&self) -> bool {
        *self == Scope::Platform
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Platform => f.write_str("platform"),
            Scope::Tenant(name) => write!(f, "tenant/{name}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "platform" {
            return Ok(Scope::Platform);
        }
        match text.strip_prefix("tenant/") {
            Some(name) => match dns_label_problem(name) {
                None => Ok(Scope::Tenant(name.to_string())),
                Some(problem) => Err(format!("scope {text:?}: the tenant name {problem}")),
            },
            None => Err(format!("scope {text:?} is neither \"platform\" nor \"tenant/<name>\"")),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_come_from_namespace_labels() {
        assert_eq!("platform".parse::<Scope>(), Ok(Scope::Platform));
        assert_eq!("tenant/team-a".parse::<Scope>(), Ok(Scope::Tenant("team-a".into())));
        assert_eq!(Scope::Tenant("team-a".into()).to_string(), "tenant/team-a");
        assert!("tenant/Team_A".parse::<Scope>().unwrap_err().contains("tenant name"));
        assert!("tenants/a".parse::<Scope>().unwrap_err().contains("neither"));
        let json = serde_json::to_string(&Scope::Tenant("b".into())).unwrap();
        assert_eq!(json, "\"tenant/b\"");
        assert_eq!(serde_json::from_str::<Scope>("\"platform\"").unwrap(), Scope::Platform);
        assert!(serde_json::from_str::<Scope>("\"x\"").is_err());
        let labels = BTreeMap::from([(TENANT_LABEL.to_string(), "b".to_string())]);
        assert_eq!(Scope::of_namespace(Some(&labels)), Scope::Tenant("b".into()));
        assert_eq!(Scope::of_namespace(None), Scope::Platform);
    }
}
