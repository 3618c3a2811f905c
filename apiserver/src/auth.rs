//! Who is asking, and may they?
//!
//! **Authentication**: a bearer token from the tokens file (lines `token,user,group1|group2`),
//! or a client certificate signed by the client CA (the user is its CN, the groups its Os,
//! as in Kubernetes). Anything else gets 401.
//!
//! **Authorization**: the group `baton:admins` may do anything. Everyone else may do what the
//! rules file grants, per namespace:
//!
//! ```yaml
//! rules:
//! - groups: [team-a]        # and/or users: [alice]
//!   namespaces: [shop]      # "*": every namespace, and cluster-wide requests
//!   access: write           # read (get, list, watch) or write (also create, update, patch, delete)
//! ```
//!
//! Discovery, `/version` and the OpenAPI documents are open to any authenticated user; the
//! health endpoints to anyone.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

/// The group whose members may do anything.
pub const ADMINS: &str = "baton:admins";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMINS)
    }
}

/// Auth configuration errors; each names the file and the line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Reads and parses a configuration file; errors name the file.
fn load_file<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
    let error = |message: String| ConfigError { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    parse(&text).map_err(error)
}

/// Bearer tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<(String, Identity)>);

impl Tokens {
    /// Reads `token,user,group1|group2` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(',');
            let (Some(token), Some(user)) = (parts.next().map(str::trim), parts.next().map(str::trim)) else {
                return Err(format!("line {}: expected token,user[,group1|group2]", n + 1));
            };
            if token.is_empty() || user.is_empty() {
                return Err(format!("line {}: the token and the user must not be empty", n + 1));
            }
            let groups = parts
                .next()
                .map(|g| g.split('|').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            tokens.push((token.to_string(), Identity { user: user.to_string(), groups }));
        }
        Ok(Self(tokens))
    }

    /// The first token of a member of `group` (for the admin kubeconfig).
    pub fn first_of_group(&self, group: &str) -> Option<String> {
        self.0.iter().find(|(_, identity)| identity.groups.iter().any(|g| g == group)).map(|(token, _)| token.clone())
    }

    /// The identity of a bearer token. Compares every token in constant time, so timing
    /// does not tell how much of a guess was right.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let mut found = None;
        for (known, identity) in &self.0 {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

/// Whether `a` equals `b`, in a time that does not tell how much of them matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Read, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    users: BTreeSet<String>,
    #[serde(default)]
    groups: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    access: Access,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// What a request wants to do, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub access: Access,
    /// `None`: cluster-wide (cluster-scoped kinds, lists across namespaces).
    pub namespace: Option<String>,
    /// For messages: `get`, `list`, `watch`, `create`…
    pub verb: String,
    /// For messages: `apps`, `namespaces`…
    pub resource: String,
    pub group: String,
    /// The object's name, when the request names one.
    pub name: Option<String>,
    /// `status`, `scale`, `log`…
    pub subresource: Option<String>,
}

/// The authorization rules.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (i, rule) in file.rules.iter().enumerate() {
            if rule.users.is_empty() && rule.groups.is_empty() {
                return Err(format!("rules[{i}]: name at least one user or group"));
            }
            if rule.namespaces.is_empty() {
                return Err(format!("rules[{i}]: name at least one namespace, or \"*\""));
            }
        }
        Ok(Self(file.rules))
    }

    /// Whether `who` may do what `what` asks.
    pub fn allows(&self, who: &Identity, what: &Attributes) -> bool {
        if who.is_admin() {
            return true;
        }
        self.0.iter().any(|rule| {
            let applies = rule.users.contains(&who.user) || who.groups.iter().any(|g| rule.groups.contains(g));
            let covers =
                rule.namespaces.contains("*") || what.namespace.as_ref().is_some_and(|ns| rule.namespaces.contains(ns));
            applies && covers && rule.access >= what.access
        })
    }
}

/// The Kubernetes-style message of a refusal.
pub fn forbidden_message(who: &Identity, what: &Attributes) -> String {
    let qualified =
        if what.group.is_empty() { what.resource.clone() } else { format!("{}.{}", what.resource, what.group) };
    let group = if what.group.is_empty() { String::new() } else { format!(" in API group \"{}\"", what.group) };
    let place = match &what.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    format!(
        "{qualified} is forbidden: User \"{}\" cannot {} resource \"{}\"{group}{place}",
        who.user, what.verb, what.resource
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn what(access: Access, namespace: Option<&str>) -> Attributes {
        Attributes {
            access,
            namespace: namespace.map(str::to_string),
            verb: "get".into(),
            resource: "apps".into(),
            group: "baton.dev".into(),
            name: None,
            subresource: None,
        }
    }

    #[test]
    fn tokens_file() {
        let tokens =
            Tokens::parse("# admins\nabc123,admin,baton:admins\n\ndef456,alice,team-a|team-b\nghi789,bob\n").unwrap();
        assert_eq!(tokens.identify("abc123"), Some(who("admin", &["baton:admins"])));
        assert_eq!(tokens.identify("def456"), Some(who("alice", &["team-a", "team-b"])));
        assert_eq!(tokens.identify("ghi789"), Some(who("bob", &[])));
        assert_eq!(tokens.identify("abc12"), None);
        assert!(Tokens::parse("just-a-token\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn rules_grant_read_or_write_per_namespace() {
        let rules = Rules::parse(
            "rules:\n- groups: [team-a]\n  namespaces: [shop]\n  access: write\n- users: [carol]\n  namespaces: ['*']\n  access: read\n",
        )
        .unwrap();
        let alice = who("alice", &["team-a"]);
        assert!(rules.allows(&alice, &what(Access::Write, Some("shop"))));
        assert!(rules.allows(&alice, &what(Access::Read, Some("shop"))));
        assert!(!rules.allows(&alice, &what(Access::Read, Some("other"))));
        assert!(!rules.allows(&alice, &what(Access::Read, None)), "cluster-wide needs \"*\"");
        let carol = who("carol", &[]);
        assert!(rules.allows(&carol, &what(Access::Read, None)));
        assert!(!rules.allows(&carol, &what(Access::Write, Some("shop"))));
        assert!(rules.allows(&who("root", &[ADMINS]), &what(Access::Write, None)));
        assert!(!Rules::default().allows(&alice, &what(Access::Read, Some("shop"))));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(Rules::parse("rules:\n- namespaces: [a]\n  access: read\n").unwrap_err().contains("rules[0]"));
        assert!(Rules::parse("rules:\n- users: [a]\n  namespaces: [a]\n  access: admin\n").is_err());
        assert!(
            Rules::parse("rules:\n- users: [a]\n  namespace: [a]\n  access: read\n").is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn refusals_read_like_kubernetes() {
        let message = forbidden_message(&who("alice", &[]), &what(Access::Read, Some("shop")));
        assert_eq!(
            message,
            "apps.baton.dev is forbidden: User \"alice\" cannot get resource \"apps\" in API group \"baton.dev\" in the namespace \"shop\""
        );
    }
}

/// What a request needs: nothing (health), authentication only (discovery, OpenAPI,
/// version), or authorization for `Attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Authentication,
    Authorization(Attributes),
}

/// Reads what a request needs from its method, path and query.
pub fn needs(method: &http::Method, path: &str, query: Option<&str>) -> Needs {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watching = query
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1")));
    let verb = |named: bool| -> (Access, String) {
        let verb = match *method {
            http::Method::GET | http::Method::HEAD if watching => "watch",
            http::Method::GET | http::Method::HEAD if named => "get",
            http::Method::GET | http::Method::HEAD => "list",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "access",
        };
        let access = if matches!(verb, "get" | "list" | "watch") { Access::Read } else { Access::Write };
        (access, verb.to_string())
    };
    let attributes = |group: &str, resource: &str, namespace: Option<&str>, rest: &[&str]| {
        let (access, verb) = verb(!rest.is_empty());
        Needs::Authorization(Attributes {
            access,
            namespace: namespace.map(str::to_string),
            verb,
            resource: resource.to_string(),
            group: group.to_string(),
            name: rest.first().map(|n| n.to_string()),
            subresource: rest.get(1).map(|s| s.to_string()),
        })
    };
    match segments.as_slice() {
        ["healthz" | "readyz" | "livez"] => Needs::Nothing,
        // Core group: namespaces are cluster-scoped, except that reading one needs access
        // to that namespace; other core kinds are namespaced.
        ["api", "v1", "namespaces", name] if matches!(*method, http::Method::GET | http::Method::HEAD) && !watching => {
            attributes("", "namespaces", Some(name), &[name])
        }
        ["api", "v1", "namespaces", name, rest @ ..] if rest.is_empty() || rest == ["status"] => {
            let named: Vec<&str> = std::iter::once(*name).chain(rest.iter().copied()).collect();
            attributes("", "namespaces", None, &named)
        }
        ["api", "v1", "namespaces", namespace, resource, rest @ ..] => attributes("", resource, Some(namespace), rest),
        ["api", "v1", resource, rest @ ..] => attributes("", resource, None, rest),
        ["apis", group, _version, "namespaces", namespace, resource, rest @ ..] => {
            attributes(group, resource, Some(namespace), rest)
        }
        ["apis", group, _version, resource, rest @ ..] => attributes(group, resource, None, rest),
        _ => Needs::Authentication,
    }
}

#[cfg(test)]
mod needs_tests {
    use super::*;
    use http::Method;

    fn attrs(method: Method, path: &str, query: Option<&str>) -> (Access, Option<String>, String, String) {
        match needs(&method, path, query) {
            Needs::Authorization(a) => (a.access, a.namespace, a.verb, a.resource),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn requests_map_to_verbs_resources_and_namespaces() {
        let apps = "/apis/baton.dev/v1alpha1/namespaces/shop/apps";
        assert_eq!(attrs(Method::GET, apps, None), (Access::Read, Some("shop".into()), "list".into(), "apps".into()));
        assert_eq!(attrs(Method::GET, apps, Some("watch=true")).2, "watch");
        assert_eq!(attrs(Method::GET, &format!("{apps}/web"), None).2, "get");
        assert_eq!(
            attrs(Method::POST, apps, None),
            (Access::Write, Some("shop".into()), "create".into(), "apps".into())
        );
        assert_eq!(attrs(Method::PATCH, &format!("{apps}/web/scale"), None).2, "patch");
        assert_eq!(
            attrs(Method::GET, "/apis/baton.dev/v1alpha1/apps", None).1,
            None,
            "across namespaces is cluster-wide"
        );
        assert_eq!(
            attrs(Method::GET, "/api/v1/namespaces/shop", None),
            (Access::Read, Some("shop".into()), "get".into(), "namespaces".into())
        );
        assert_eq!(
            attrs(Method::DELETE, "/api/v1/namespaces/shop", None).1,
            None,
            "deleting a namespace is cluster-wide"
        );
        assert_eq!(attrs(Method::POST, "/api/v1/namespaces", None).1, None);
        assert_eq!(attrs(Method::GET, "/api/v1/namespaces/shop/events", None).1, Some("shop".into()));
        assert_eq!(needs(&Method::GET, "/healthz", None), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/apis", None), Needs::Authentication);
        assert_eq!(needs(&Method::GET, "/openapi/v3/apis/baton.dev/v1alpha1", None), Needs::Authentication);
    }
}
