//! The snapshot: everything a plan may look at, frozen for one tick.
//!
//! It is plain data — the apps as the API server has them, the agents that are registered,
//! and every instance record with the status its agent reported — so a plan computed from
//! it depends on nothing else, and a new leader given the same snapshot decides the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use baton_api::{
    AgentRecord, App, AppGroup, BackoffRecord, DrainRecord, Goal, InstanceRecord, KillRequest, Maintenance, Phase,
    ResourceAmounts, Scope, StatusRecord, Tenant,
};
use baton_store::Revision;
use jiff::Timestamp;

/// What is known of a live instance's health, worst first: the order in which instances
/// are given up (a scale-down stops those that carry least first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthState {
    /// Its process does not run (yet): it serves nothing.
    NotRunning,
    /// It runs and failed a health check's last probe.
    Failing,
    /// It runs and its health is not known yet: no probe result, failures only within its
    /// grace period, or passing its health checks but not yet its readiness check. It may be
    /// minutes into a warm-up: neither healthy nor failed.
    Unknown,
    /// It runs, passes every health check and its readiness check: it counts towards capacity.
    Healthy,
}

/// A string in a form compared without reading it: a UUID or a lowercase hex string (app
/// uids, versions) as its number — exact, the number and length are the string — else
/// nothing, and the string is compared. At 100,000 instances a tick, reading each one's
/// strings is what comparing them costs. (The number is kept in 32-bit words: as a `u128`,
/// aligned to 16 bytes, a key took 32 bytes and an instance's state 112 instead of 88.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Uuid([u32; 4]),
    Hex { len: u8, value: [u32; 4] },
    Text,
}

/// `value`'s 32-bit words, most significant first.
fn words(value: u128) -> [u32; 4] {
    [(value >> 96) as u32, (value >> 64) as u32, (value >> 32) as u32, value as u32]
}

impl Key {
    pub fn of(text: &str) -> Self {
        /// The number of lowercase hex digits, skipping the dashes at `dashes`; `None` if
        /// any other byte is not one.
        fn number(bytes: &[u8], dashes: &[usize]) -> Option<u128> {
            let mut value: u128 = 0;
            for (i, &b) in bytes.iter().enumerate() {
                let digit = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    b'-' if dashes.contains(&i) => continue,
                    _ => return None,
                };
                value = (value << 4) | u128::from(digit);
            }
            Some(value)
        }
        let bytes = text.as_bytes();
        const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];
        if (1..=32).contains(&bytes.len())
            && let Some(value) = number(bytes, &[])
        {
            return Key::Hex { len: bytes.len() as u8, value: words(value) };
        }
        if bytes.len() == 36
            && UUID_DASHES.iter().all(|&i| bytes[i] == b'-')
            && let Some(value) = number(bytes, &UUID_DASHES)
        {
            return Key::Uuid(words(value));
        }
        Key::Text
    }

    /// Whether the strings these keys stand for are equal; `strings` compares the strings
    /// when the keys cannot tell.
    pub fn same(self, other: Key, strings: impl FnOnce() -> bool) -> bool {
        match (self, other) {
            (Key::Text, _) | (_, Key::Text) => strings(),
            (a, b) => a == b,
        }
    }
}

/// One instance: what the controller assigned and what the agent reported.
///
/// Its `record` and `status` change through [`InstanceState::set_record`] and
/// [`InstanceState::set_status`], which work its facts out again (debug builds check that
/// every predicate reads facts that are current).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceState {
    pub record: Arc<InstanceRecord>,
    /// Mod revision of the record: writes to it compare against this.
    pub revision: Revision,
    /// The revision that created the record (what serves a tenant's launch request).
    pub created: Revision,
    pub status: Option<Arc<StatusRecord>>,
    /// The record's app uid, as a [`Key`].
    pub app_key: Key,
    /// The record's version, as a [`Key`].
    pub version_key: Key,
    /// What the predicates below answer, from `record` and `status`.
    facts: Facts,
}

// Every instance's state sits in the cache's map (nodes of 11 entries): at 88 bytes a
// leaf takes 1,244 bytes, in the allocator's 1,280-byte class; 8 more took it to 1,536.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<InstanceState>() <= 88);

/// What a tick asks of an instance again and again — its phase, its health — worked out
/// once from its record and status (none of it depends on the time). Read through the
/// record, the status and their check lists, each such question cost ~1.5 ms a pass at
/// 100,000 instances, and a tick asks several per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Facts {
    phase: Option<Phase>,
    /// Its goal is `Stopped` (read for every instance every tick: kept here, it costs no
    /// visit to the record).
    stopped: bool,
    active: bool,
    passes_health_checks: bool,
    healthy: bool,
    fails_health_checks: bool,
    steadily_healthy: bool,
    proven_healthy: bool,
    kill_due: bool,
    ever_healthy: bool,
}

impl Facts {
    fn of(record: &InstanceRecord, status: Option<&StatusRecord>) -> Self {
        let phase = status.map(|s| s.phase);
        let stopped = match record.goal {
            Goal::Running => false,
            Goal::Stopped => true,
        };
        let active = !stopped && !phase.is_some_and(Phase::is_terminal);
        let Some(status) = status else { return Facts { phase, stopped, active, ..Facts::default() } };
        let checks = &record.run.health_checks;
        let running = phase == Some(Phase::Running);
        let passes_health_checks = running && status.passes_health_checks(checks.len());
        let healthy = passes_health_checks && status.is_ready(!record.run.readiness_checks.is_empty());
        let pairs = || checks.iter().zip(&status.health);
        Facts {
            phase,
            stopped,
            active,
            passes_health_checks,
            healthy,
            fails_health_checks: running && status.fails_a_health_check(),
            steadily_healthy: running && status.passes_steadily(checks),
            proven_healthy: healthy
                && status.health.len() == checks.len()
                && pairs().all(|(check, r)| {
                    r.passing == Some(true) && r.consecutive_successes >= check.kill_after().unwrap_or(1)
                }),
            kill_due: running
                && pairs().any(|(check, r)| check.kill_after().is_some_and(|limit| r.consecutive_failures >= limit)),
            ever_healthy: status.healthy_at.is_some() || (checks.is_empty() && healthy),
        }
    }
}

/// A record's app uid and version as [`Key`]s: made once per record (the runtime's cache
/// keeps them with it), not once per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKeys {
    pub app: Key,
    pub version: Key,
}

impl RecordKeys {
    pub fn of(record: &InstanceRecord) -> Self {
        Self { app: Key::of(&record.run.app.uid), version: Key::of(&record.run.version) }
    }
}

impl InstanceState {
    pub fn new(record: Arc<InstanceRecord>, revision: Revision, status: Option<Arc<StatusRecord>>) -> Self {
        let keys = RecordKeys::of(&record);
        Self::with_keys(record, keys, revision, status)
    }

    /// With the record's keys made already.
    pub fn with_keys(
        record: Arc<InstanceRecord>,
        keys: RecordKeys,
        revision: Revision,
        status: Option<Arc<StatusRecord>>,
    ) -> Self {
        let facts = Facts::of(&record, status.as_deref());
        Self { record, revision, created: revision, status, app_key: keys.app, version_key: keys.version, facts }
    }

    /// The same, created at `revision`.
    pub fn with_created(self, revision: Revision) -> Self {
        Self { created: revision, ..self }
    }

    /// Replaces its status.
    pub fn set_status(&mut self, status: Option<Arc<StatusRecord>>) {
        self.status = status;
        self.refresh();
    }

    /// Replaces its record.
    pub fn set_record(&mut self, record: Arc<InstanceRecord>) {
        self.record = record;
        self.refresh();
    }

    /// Works out its facts again, after `record` or `status` changed.
    fn refresh(&mut self) {
        let keys = RecordKeys::of(&self.record);
        (self.app_key, self.version_key) = (keys.app, keys.version);
        self.facts = Facts::of(&self.record, self.status.as_deref());
    }

    /// Its facts; debug builds check they were refreshed after a change.
    fn facts(&self) -> &Facts {
        debug_assert_eq!(
            self.facts,
            Facts::of(&self.record, self.status.as_deref()),
            "instance {}: its record or status changed without set_record or set_status",
            self.record.id
        );
        &self.facts
    }

    /// Whether it runs `version` (whose key is `key`).
    pub fn runs_version(&self, version: &str, key: Key) -> bool {
        self.version_key.same(key, || self.record.run.version == version)
    }

    /// Whether it belongs to the same app as `other`.
    pub fn same_app(&self, other: &InstanceState) -> bool {
        self.app_key.same(other.app_key, || self.record.run.app.uid == other.record.run.app.uid)
    }

    /// What the controller wants of it (the record's goal).
    pub fn goal(&self) -> Goal {
        if self.facts().stopped { Goal::Stopped } else { Goal::Running }
    }

    /// The phase the agent reported, if any.
    pub fn phase(&self) -> Option<Phase> {
        self.facts().phase
    }

    /// Over: the process ran and ended (or never will run).
    pub fn is_terminal(&self) -> bool {
        self.phase().is_some_and(Phase::is_terminal)
    }

    /// Its process runs.
    pub fn is_running(&self) -> bool {
        self.phase() == Some(Phase::Running)
    }

    /// It counts towards the app's capacity: its process runs, passes every health check
    /// and has passed its readiness check (those it has).
    pub fn is_healthy(&self) -> bool {
        self.facts().healthy
    }

    /// What is known of its health.
    pub fn health_state(&self) -> HealthState {
        if !self.is_running() {
            HealthState::NotRunning
        } else if self.is_healthy() {
            HealthState::Healthy
        } else if self.fails_health_checks() {
            HealthState::Failing
        } else {
            HealthState::Unknown
        }
    }

    /// Its process runs and passes every health check it has (readiness aside).
    pub fn passes_health_checks(&self) -> bool {
        self.facts().passes_health_checks
    }

    /// Its process runs and passes every health check steadily (see
    /// [`baton_api::CheckResult::is_steady`]): it counts towards `minHealthyRatio`.
    pub fn steadily_healthy(&self) -> bool {
        self.facts().steadily_healthy
    }

    /// It has proved itself as a replacement: its process runs, it is healthy (and ready),
    /// and it has passed every health check at least as many times in a row as it takes
    /// failures to kill it — even if it never failed. Only then does it release the
    /// replacement slot it fills: when a shared dependency comes back, the instances the
    /// policy spared pass their next probe well before a fresh replacement has passed that
    /// many, so none of them is killed in the moment the budget frees.
    pub fn proven_healthy(&self) -> bool {
        self.facts().proven_healthy
    }

    /// Its process runs and failed a health check's last probe.
    pub fn fails_health_checks(&self) -> bool {
        self.facts().fails_health_checks
    }

    /// Its process runs and has failed a health check `maxConsecutiveFailures` times in a
    /// row after its grace period: it is due to be killed. Returns the failures and the
    /// check's last output.
    pub fn health_kill_due(&self) -> Option<(u32, &str)> {
        if !self.kill_due() {
            return None;
        }
        let status = self.status.as_ref()?;
        self.record.run.health_checks.iter().zip(&status.health).find_map(|(check, result)| {
            let limit = check.kill_after()?;
            (result.consecutive_failures >= limit)
                .then(|| (result.consecutive_failures, result.last_output.as_deref().unwrap_or("")))
        })
    }

    /// It runs and has failed a health check as many times in a row as the check allows
    /// after its grace period ([`InstanceState::health_kill_due`] says which).
    pub fn kill_due(&self) -> bool {
        self.facts().kill_due
    }

    /// It has been (steadily) healthy since it started: for an app with health checks, its
    /// agent noted when; without, it is healthy now.
    pub fn ever_healthy(&self) -> bool {
        self.facts().ever_healthy
    }

    /// Since when its process has run, when it does.
    pub fn running_since(&self) -> Option<Timestamp> {
        self.status.as_ref().filter(|s| s.phase == Phase::Running)?.started_at
    }

    /// The controller wants it to run, and it has not ended.
    pub fn is_active(&self) -> bool {
        self.facts().active
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }
}

/// The controller's marker of an agent that stopped reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub since: Timestamp,
    /// Mod revision of the marker key.
    pub revision: Revision,
}

/// What one agent's instances hold: those not over (including those being stopped, whose
/// processes still hold their resources and ports).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AgentUse {
    /// Instances not over.
    pub live: usize,
    pub resources: ResourceAmounts,
    /// The host ports they hold, in order, each once (as [`held_by_agent`] leaves them).
    pub ports: Vec<u16>,
    /// One of them takes the whole agent.
    pub exclusive: bool,
}

impl AgentUse {
    /// Counts an instance on the agent.
    pub fn add(&mut self, instance: &InstanceState) {
        if !instance.is_terminal() {
            self.live += 1;
            self.exclusive |= instance.record.run.whole_agent;
            self.resources = self.resources.plus(instance.record.run.resources);
            self.ports.extend(instance.record.ports.iter().map(|p| p.port));
        }
    }
}

/// Per agent, what its instances hold.
pub fn held_by_agent<'a>(instances: impl IntoIterator<Item = &'a InstanceState>) -> BTreeMap<String, AgentUse> {
    let mut held: HashMap<&str, AgentUse> = HashMap::new();
    for instance in instances {
        held.entry(instance.record.agent.as_str()).or_default().add(instance);
    }
    held.into_iter()
        .map(|(agent, mut used)| {
            // Once here, not on every plan that places (whose placer looks ports up).
            used.ports.sort_unstable();
            used.ports.dedup();
            (agent.to_string(), used)
        })
        .collect()
}

/// The full observed state for one tick.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store revision the snapshot's records are read through (0: not known).
    pub revision: Revision,
    /// The scope of the controller that plans (DESIGN.md §5): the apps, groups, instances,
    /// backoffs and kill requests below are this scope's.
    pub scope: Scope,
    /// Every App of the scope, in (namespace, name) order.
    pub apps: Vec<Arc<App>>,
    /// Every AppGroup of the scope, in (namespace, name) order.
    pub groups: Vec<Arc<AppGroup>>,
    /// Registered (live) agents by name.
    pub agents: BTreeMap<String, Arc<AgentRecord>>,
    /// Every instance record of the scope, by id. Shared: the runtime's cache hands out its
    /// own map (see [`Snapshot::instances_mut`] to change it).
    pub instances: Arc<BTreeMap<String, InstanceState>>,
    /// Instances of other scopes, as the platform sees them: they hold resources and ports
    /// on their agents, which placement leaves alone, and are never stopped, rewritten or
    /// counted here. (A tenant's controller does not place, and holds none.)
    pub foreign: Vec<InstanceState>,
    /// Agents known to have stopped reporting, and since when.
    pub unreachable: BTreeMap<String, Marker>,
    /// Every Maintenance (cluster-scoped: every scope drains its own instances), by name.
    pub maintenances: Vec<Arc<Maintenance>>,
    /// Agents in maintenance, as the platform's controller recorded them, with the revision
    /// of each record.
    pub drains: BTreeMap<String, (Arc<DrainRecord>, Revision)>,
    /// Every Tenant: the platform's controller creates their namespaces and reports what
    /// their apps ask for.
    pub tenants: Vec<Arc<Tenant>>,
    /// How the platform runs tenants' controllers as apps (`None`: it runs none).
    pub tenant_controllers: Option<Arc<crate::plan::tenants::ControllerTemplate>>,
    /// Every namespace, and its scope.
    pub namespaces: BTreeMap<String, Scope>,
    /// The Apps and AppGroups of other scopes, as the platform sees them: counted in their
    /// tenants' usage, never planned. (Empty for a tenant's controller.)
    pub other_apps: Vec<Arc<App>>,
    pub other_groups: Vec<Arc<AppGroup>>,
    /// Launch backoffs by `(namespace, app)`, with the revision of each.
    pub backoffs: BTreeMap<(String, String), (Arc<BackoffRecord>, Revision)>,
    /// Users' requests to kill instances, by `(namespace, instance id)`, with the revision
    /// of each.
    pub kill_requests: BTreeMap<(String, String), (Arc<KillRequest>, Revision)>,
    /// What each agent's instances hold, by agent name, when the snapshot's builder has it
    /// (the runtime's cache keeps it while no change could move it): it must be that of
    /// `instances` and `foreign`. `None`: [`Snapshot::held`] gathers it.
    pub held: Option<Arc<BTreeMap<String, AgentUse>>>,
    /// The versions of `apps` and `other_apps`, when the snapshot's builder keeps them (the
    /// runtime computes each App's once, not every tick); each is used only for an App of the
    /// same uid and resourceVersion. `None`: [`Snapshot::version_of`] computes them.
    pub versions: Option<Arc<AppVersions>>,
    /// Apps whose status the last tick found up to date, with what it was built from (the
    /// runtime keeps the last plan's [`Plan::settled`](crate::plan::Plan::settled)): one built
    /// from the same is not built again. `None`: every status is built.
    pub settled: Option<Arc<crate::plan::Settled>>,
}

/// Each App's version ([`App::version`], a hash of its run definition: a twentieth of a
/// steady plan when computed for 2,000 Apps every tick), by uid, with the `resourceVersion`
/// of the App it was computed from: the API server gives every change of an object a new
/// one, so an App with the same uid and resourceVersion is the same App. (Not the objects
/// themselves: between two ticks that would keep the Apps the cache has replaced.)
#[derive(Debug, Clone, Default)]
pub struct AppVersions(HashMap<String, (String, Box<str>)>);

impl AppVersions {
    /// The version of `app`, if kept for it: same uid, same resourceVersion.
    pub fn get(&self, app: &App) -> Option<&str> {
        let (of, version) = self.0.get(app.metadata.uid.as_deref()?)?;
        (app.metadata.resource_version.as_ref() == Some(of)).then_some(version)
    }

    /// Keeps the versions of exactly `apps`: computes those of Apps not seen before (new, or
    /// changed since), forgets those of Apps not among them. Apps without a uid and a
    /// resourceVersion (not from an API server) are not kept.
    pub fn refresh<'a>(&mut self, apps: impl IntoIterator<Item = &'a Arc<App>> + Clone) {
        let kept = |app: &'a Arc<App>| Some((app.metadata.uid.as_ref()?, app.metadata.resource_version.as_ref()?));
        let mut count = 0;
        for app in apps.clone() {
            let Some((uid, of)) = kept(app) else { continue };
            count += 1;
            if self.get(app).is_none() {
                self.0.insert(uid.clone(), (of.clone(), app.version().into()));
            }
        }
        if self.0.len() > count {
            let now: std::collections::HashSet<&str> =
                apps.into_iter().filter_map(kept).map(|(uid, _)| uid.as_str()).collect();
            self.0.retain(|uid, _| now.contains(uid.as_str()));
        }
    }
}

impl Snapshot {
    /// The instances, to change (a copy first, if another snapshot shares them).
    pub fn instances_mut(&mut self) -> &mut BTreeMap<String, InstanceState> {
        Arc::make_mut(&mut self.instances)
    }

    /// What each agent's instances hold (of every scope the snapshot has), by agent name.
    pub fn held(&self) -> Arc<BTreeMap<String, AgentUse>> {
        if let Some(held) = &self.held {
            return held.clone();
        }
        Arc::new(held_by_agent(self.instances.values().chain(&self.foreign)))
    }

    /// The version of `app` (one of `apps` or `other_apps`): as kept, or computed.
    pub fn version_of(&self, app: &App) -> std::borrow::Cow<'_, str> {
        match self.versions.as_ref().and_then(|v| v.get(app)) {
            Some(version) => version.into(),
            None => app.version().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_exact() {
        let version = Key::of("12952d44a1");
        assert!(version.same(Key::of("12952d44a1"), || unreachable!("numbers tell")));
        assert!(!version.same(Key::of("12952d44a2"), || unreachable!("numbers tell")));
        assert!(!Key::of("0a").same(Key::of("a"), || unreachable!("the length tells")));
        let uid = Key::of("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        assert!(matches!(uid, Key::Uuid(_)));
        assert!(!uid.same(Key::of("6ba7b810-9dad-11d1-80b4-00c04fd430c9"), || unreachable!()));
        assert_eq!(Key::of("uid-web"), Key::Text);
        assert_eq!(Key::of("6ba7b810-9dad-11d1-80b4-00c04fd430c-"), Key::Text, "31 digits is text");
        assert_eq!(Key::of("6BA7B810-9DAD-11D1-80B4-00C04FD430C8"), Key::Text, "upper case is text");
        assert!(Key::of("old").same(Key::of("12952d44a1"), || true), "text is compared as text");
    }

    /// A kept version is used only for the App it was computed from: a changed App (a new
    /// resourceVersion, with the same uid) gets its own, and Apps that went are forgotten.
    #[test]
    fn versions_are_kept_per_resource_version() {
        use crate::testing::app;
        let (web, db) = (app("web").build(), app("db").build());
        let mut versions = AppVersions::default();
        versions.refresh([&web, &db]);
        assert_eq!(versions.get(&web), Some(web.version().as_str()));
        assert_eq!(versions.get(&db), Some(db.version().as_str()));

        let mut changed = App::clone(&web);
        changed.spec.env.insert("RELEASE".into(), "2".into());
        changed.metadata.resource_version = Some("11".into());
        let changed = Arc::new(changed);
        assert_ne!(changed.version(), web.version());
        assert_eq!(versions.get(&changed), None, "not the App it was computed from");
        let snapshot =
            Snapshot { apps: vec![changed.clone()], versions: Some(Arc::new(versions.clone())), ..Snapshot::default() };
        assert_eq!(snapshot.version_of(&changed), changed.version(), "computed when not kept");

        versions.refresh([&changed]);
        assert_eq!(versions.get(&changed), Some(changed.version().as_str()));
        assert_eq!(versions.get(&web), None);
        assert_eq!(versions.get(&db), None, "db went");
        assert_eq!(versions.0.len(), 1);

        let mut unversioned = App::clone(&db);
        unversioned.metadata.resource_version = None;
        versions.refresh([&Arc::new(unversioned.clone())]);
        assert_eq!(versions.get(&unversioned), None, "not kept without a resourceVersion");
        assert!(versions.0.is_empty());
    }
}
