//! The keyspace: where each kind of record lives (DESIGN.md §4).
//!
//! Every key sits under one root (default `/baton`) so several installations can share an
//! etcd. Instances and statuses are keyed by agent first, so an agent watches exactly its
//! own work with one prefix watch and only ever writes under its own name.

/// The default root of every key.
pub const DEFAULT_ROOT: &str = "/baton";

/// How many keys the apps of a namespace spread their marks of joining a group over
/// ([`Keyspace::dependency_graph_member`]); a write adding dependency edges compares them
/// all (within etcd's 128 compares a transaction).
pub const GRAPH_MEMBER_SHARDS: u32 = 64;

/// Builds and parses the keys of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    root: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl Keyspace {
    /// A keyspace under `root` (e.g. `/baton`); a trailing '/' is ignored.
    pub fn new(root: &str) -> Self {
        Self { root: root.trim_end_matches('/').to_string() }
    }

    /// `/baton/`: every key of the installation.
    pub fn root_prefix(&self) -> String {
        format!("{}/", self.root)
    }

    /// `/baton/agents/`: one key per live agent.
    pub fn agents(&self) -> String {
        format!("{}/agents/", self.root)
    }

    pub fn agent(&self, agent: &str) -> String {
        format!("{}/agents/{agent}", self.root)
    }

    /// `/baton/instances/`: what the controller assigned to every agent.
    pub fn instances(&self) -> String {
        format!("{}/instances/", self.root)
    }

    /// `/baton/instances/<agent>/`: what one agent must run.
    pub fn agent_instances(&self, agent: &str) -> String {
        format!("{}/instances/{agent}/", self.root)
    }

    pub fn instance(&self, agent: &str, id: &str) -> String {
        format!("{}/instances/{agent}/{id}", self.root)
    }

    /// `/baton/instance-agents/`: which agent each instance is on, by instance id — so one
    /// instance is found without reading every agent's (instances are keyed by agent).
    pub fn instance_agents(&self) -> String {
        format!("{}/instance-agents/", self.root)
    }

    /// `/baton/instance-agents/<id>`: the agent of instance `id` (the value is its name).
    /// Written and deleted with the instance's record, in the same transaction.
    pub fn instance_agent(&self, id: &str) -> String {
        format!("{}/instance-agents/{id}", self.root)
    }

    /// The instance id of a key under [`Keyspace::instance_agents`].
    pub fn parse_instance_agent_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.instance_agents()).filter(|id| !id.is_empty() && !id.contains('/'))
    }

    /// `/baton/status/`: what every agent reports about its instances.
    pub fn statuses(&self) -> String {
        format!("{}/status/", self.root)
    }

    pub fn agent_statuses(&self, agent: &str) -> String {
        format!("{}/status/{agent}/", self.root)
    }

    pub fn status(&self, agent: &str, id: &str) -> String {
        format!("{}/status/{agent}/{id}", self.root)
    }

    /// `/baton/unreachable/`: the controller's markers of agents that stopped reporting.
    pub fn unreachable_agents(&self) -> String {
        format!("{}/unreachable/", self.root)
    }

    pub fn unreachable_agent(&self, agent: &str) -> String {
        format!("{}/unreachable/{agent}", self.root)
    }

    /// The agent name of a key under [`Keyspace::unreachable_agents`].
    pub fn parse_unreachable_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.unreachable_agents()).filter(|name| !name.is_empty() && !name.contains('/'))
    }

    /// `/baton/maintenance/`: the controller's records of agents in maintenance.
    pub fn drains(&self) -> String {
        format!("{}/maintenance/", self.root)
    }

    pub fn drain(&self, agent: &str) -> String {
        format!("{}/maintenance/{agent}", self.root)
    }

    /// The agent name of a key under [`Keyspace::drains`].
    pub fn parse_drain_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.drains()).filter(|name| !name.is_empty() && !name.contains('/'))
    }

    /// `/baton/apps/`: what the controller keeps about apps across failovers.
    pub fn apps(&self) -> String {
        format!("{}/apps/", self.root)
    }

    /// `/baton/apps/<ns>/<app>/backoff`: an app's launch backoff.
    pub fn app_backoff(&self, namespace: &str, app: &str) -> String {
        format!("{}/apps/{namespace}/{app}/backoff", self.root)
    }

    /// `(namespace, app)` of a key made by [`Keyspace::app_backoff`].
    pub fn parse_app_backoff_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.apps())?.strip_suffix("/backoff")?;
        let (namespace, app) = rest.split_once('/')?;
        (!namespace.is_empty() && !app.is_empty() && !app.contains('/')).then_some((namespace, app))
    }

    /// `/baton/kills/`: users' requests to kill instances (`kubectl delete instance`).
    pub fn kill_requests(&self) -> String {
        format!("{}/kills/", self.root)
    }

    /// `/baton/kills/<ns>/<instance>`: a request to kill one instance.
    pub fn kill_request(&self, namespace: &str, instance: &str) -> String {
        format!("{}/kills/{namespace}/{instance}", self.root)
    }

    /// `(namespace, instance)` of a key made by [`Keyspace::kill_request`].
    pub fn parse_kill_request_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let (namespace, instance) = key.strip_prefix(&self.kill_requests())?.split_once('/')?;
        (!namespace.is_empty() && !instance.is_empty() && !instance.contains('/')).then_some((namespace, instance))
    }

    /// `/baton/graph/<ns>`: bumped by every write that may add edges to the namespace's app
    /// dependency graph, so that such writes are checked one at a time (see the API
    /// server's graph checks).
    pub fn dependency_graph(&self, namespace: &str) -> String {
        format!("{}/graph/{namespace}", self.root)
    }

    /// `/baton/quota/<tenant>`: bumped by every admitted write that may change what a
    /// tenant's apps ask for, so two concurrent writes cannot both pass its quota.
    pub fn quota_guard(&self, tenant: &str) -> String {
        format!("{}/quota/{tenant}", self.root)
    }

    /// `/baton/quota-tenants`: bumped by every Tenant write, so two tenants cannot claim one
    /// namespace at once.
    pub fn tenants_guard(&self) -> String {
        format!("{}/quota-tenants", self.root)
    }

    /// `/baton/graph/<ns>/members/`: where apps without dependencies joining a group leave
    /// their mark, which writes adding edges compare: one of [`GRAPH_MEMBER_SHARDS`] keys,
    /// by the app's name ([`Keyspace::dependency_graph_member`]).
    pub fn dependency_graph_members(&self, namespace: &str) -> String {
        format!("{}/members/", self.dependency_graph(namespace))
    }

    /// The key of [`Keyspace::dependency_graph_members`] that the app `name` bumps: apps
    /// spread over a fixed set, so that joins of different apps seldom write one key (and
    /// can go to the store together) while a write adding edges compares every key of the
    /// set. The shard of a name is FNV-1a, stable across versions.
    pub fn dependency_graph_member(&self, namespace: &str, name: &str) -> String {
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        format!("{}{:02}", self.dependency_graph_members(namespace), hash % GRAPH_MEMBER_SHARDS)
    }

    /// Every key of [`Keyspace::dependency_graph_members`], in shard order.
    pub fn dependency_graph_member_keys(&self, namespace: &str) -> impl Iterator<Item = String> + use<> {
        let prefix = self.dependency_graph_members(namespace);
        (0..GRAPH_MEMBER_SHARDS).map(move |shard| format!("{prefix}{shard:02}"))
    }

    /// `/baton/secrets/sandbox-token`: what the API server shows agents to read sandboxes
    /// (made by the first API server; agents read it from the store).
    pub fn sandbox_token(&self) -> String {
        format!("{}/secrets/sandbox-token", self.root)
    }

    /// `/baton/sandbox-tokens/<agent>`: what the API server shows agent `agent` to read its
    /// sandboxes — derived from the sandbox token for that agent alone, so an agent reads
    /// only its own (and a stolen one opens no other agent's sandboxes).
    pub fn agent_sandbox_token(&self, agent: &str) -> String {
        format!("{}/sandbox-tokens/{agent}", self.root)
    }

    /// `/baton/agent-identities/<agent>`: which key holds agent `agent`'s store identity,
    /// recorded by the registrar when the agent first joins (a later join must show the same
    /// key: the first claim of a name wins).
    pub fn agent_identity(&self, agent: &str) -> String {
        format!("{}/agent-identities/{agent}", self.root)
    }

    /// `/baton/secrets/tenant-controllers`: the key that signs the credentials the platform
    /// gives tenants' controllers (made by the first API server or platform controller).
    pub fn tenant_controller_secret(&self) -> String {
        format!("{}/secrets/tenant-controllers", self.root)
    }

    /// `/baton/lease-owners/<lease>`: the scope a lease granted through the API server belongs
    /// to (attached to that lease).
    pub fn lease_owner(&self, lease: i64) -> String {
        format!("{}/lease-owners/{lease:x}", self.root)
    }

    /// `/baton/leader/<scope>`: the election key of a controller scope.
    pub fn leader(&self, scope: &str) -> String {
        format!("{}/leader/{scope}", self.root)
    }

    /// Prefix of API objects of one resource, optionally in one namespace:
    /// `/baton/registry/<group>/<plural>/[<ns>/]`.
    pub fn registry(&self, group: &str, plural: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}/registry/{group}/{plural}/{ns}/", self.root),
            None => format!("{}/registry/{group}/{plural}/", self.root),
        }
    }

    /// Key of one API object.
    pub fn registry_object(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.registry(group, plural, namespace))
    }

    /// `(agent, id)` of an instance or status key; `None` for any other key.
    pub fn parse_agent_item<'k>(&self, prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(prefix)?;
        let (agent, id) = rest.split_once('/')?;
        (!agent.is_empty() && !id.is_empty() && !id.contains('/')).then_some((agent, id))
    }

    /// `(agent, id)` of a key under [`Keyspace::instances`].
    pub fn parse_instance_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        self.parse_agent_item(&self.instances(), key)
    }

    /// `(agent, id)` of a key under [`Keyspace::statuses`].
    pub fn parse_status_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        self.parse_agent_item(&self.statuses(), key)
    }

    /// The agent name of a key under [`Keyspace::agents`].
    pub fn parse_agent_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.agents()).filter(|name| !name.is_empty() && !name.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark of an app is one of the set, by its name alone, the same in every version
    /// (API servers of two versions must agree during an upgrade).
    #[test]
    fn graph_member_marks_are_stable_and_among_the_set() {
        let ks = Keyspace::default();
        assert_eq!(ks.dependency_graph_member("shop", "web"), "/baton/graph/shop/members/17");
        assert_eq!(ks.dependency_graph_member("shop", "db"), "/baton/graph/shop/members/03");
        let all: Vec<String> = ks.dependency_graph_member_keys("shop").collect();
        assert_eq!(all.len(), GRAPH_MEMBER_SHARDS as usize);
        for name in ["web", "db", "", "a-very-long-app-name-0123456789"] {
            assert!(all.contains(&ks.dependency_graph_member("shop", name)), "{name}");
        }
        let spread: std::collections::HashSet<String> =
            (0..1000).map(|i| ks.dependency_graph_member("shop", &format!("app-{i}"))).collect();
        assert_eq!(spread.len(), GRAPH_MEMBER_SHARDS as usize, "1,000 names use every key");
    }

    #[test]
    fn keys_round_trip() {
        let ks = Keyspace::new("/baton/");
        assert_eq!(ks.instance("a1", "web-x"), "/baton/instances/a1/web-x");
        assert_eq!(ks.parse_instance_key("/baton/instances/a1/web-x"), Some(("a1", "web-x")));
        assert_eq!(ks.parse_status_key(&ks.status("a1", "web-x")), Some(("a1", "web-x")));
        assert_eq!(ks.parse_instance_key("/baton/instances/a1/"), None);
        assert_eq!(ks.parse_instance_key("/baton/status/a1/x"), None);
        assert_eq!(ks.parse_agent_key(&ks.agent("n3")), Some("n3"));
        assert_eq!(ks.parse_instance_agent_key(&ks.instance_agent("web-x")), Some("web-x"));
        assert_eq!(ks.parse_instance_key(&ks.instance_agent("web-x")), None);
        assert_eq!(ks.parse_kill_request_key(&ks.kill_request("shop", "web-x")), Some(("shop", "web-x")));
        assert_eq!(ks.parse_kill_request_key("/baton/kills/shop/"), None);
        assert_eq!(ks.parse_kill_request_key("/baton/kills/shop/web-x/y"), None);
        assert_eq!(
            ks.registry_object("baton.dev", "apps", Some("default"), "web"),
            "/baton/registry/baton.dev/apps/default/web"
        );
    }
}
