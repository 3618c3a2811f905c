//! Stage 2, groups: each namespace's dependency graph gives every app its effective instance
//! count (`spec.instances` times its AppGroups' factors), the dependencies that hold back its
//! start or its move to a new version, and — for apps being deleted together — the
//! dependents that must stop first. It also computes the AppGroups' statuses. It reads the
//! observed sets of every app ([`gate`]); pure, like every stage.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use baton_api::groups::{Graph, GroupPath, Origin};
use baton_api::{App, AppGroup, AppGroupStatus};

use super::events::listing;
use super::observe::Observed;
use super::vocabulary::{GroupStatusUpdate, PlanContext};

/// What the rest of the tick needs to know about an app from the others: whether it is
/// available, and how many of its instances are.
#[derive(Debug, Clone, PartialEq)]
pub struct Availability<'o> {
    pub wanted: usize,
    /// Healthy instances at the current version.
    pub available: usize,
    /// Instances at older versions still running.
    pub old: usize,
    /// Instances whose process may still run (not over), whatever their goal.
    pub live: usize,
    pub deleting: bool,
    pub version: &'o str,
}

impl Availability<'_> {
    /// Every instance healthy at the current version, and no older one left.
    pub fn is_available(&self) -> bool {
        !self.deleting && self.available >= self.wanted && self.old == 0
    }

    /// Why it is not available, as a dependent's status says it.
    fn why_not(&self) -> String {
        if self.deleting {
            return "it is being deleted".into();
        }
        if self.old > 0 {
            return format!(
                "moving to version {}: {} of {} instances available, {} at older versions",
                self.version, self.available, self.wanted, self.old
            );
        }
        format!("{} of {} instances available", self.available, self.wanted)
    }
}

/// One thing an app waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The app that is not available, or the dependency that names nothing.
    pub path: String,
    pub why: String,
}

impl Wait {
    pub fn describe(waits: &[Wait]) -> String {
        let described: Vec<String> = waits.iter().map(|w| format!("{} ({})", w.path, w.why)).collect();
        listing(&described)
    }
}

/// The dependency graphs of every namespace, for one tick.
pub struct Topology {
    graphs: BTreeMap<String, Graph>,
    /// A cycle per namespace that has one: the API server refuses them, but objects stored
    /// before a check (or written around the API server) may still form one.
    cycles: BTreeMap<String, baton_api::groups::Cycle>,
}

impl Topology {
    pub fn new(apps: &[Arc<App>], groups: &[Arc<AppGroup>]) -> Self {
        let mut apps_by_ns: BTreeMap<&str, Vec<&App>> = BTreeMap::new();
        for app in apps {
            apps_by_ns.entry(namespace_of(&app.metadata)).or_default().push(app);
        }
        let mut groups_by_ns: BTreeMap<&str, Vec<&AppGroup>> = BTreeMap::new();
        for group in groups {
            groups_by_ns.entry(namespace_of(&group.metadata)).or_default().push(group);
        }
        let namespaces: std::collections::BTreeSet<&str> =
            apps_by_ns.keys().chain(groups_by_ns.keys()).copied().collect();
        let graphs: BTreeMap<String, Graph> = namespaces
            .into_iter()
            .map(|ns| {
                let apps = apps_by_ns.get(ns).map(Vec::as_slice).unwrap_or_default().iter().copied();
                let groups = groups_by_ns.get(ns).map(Vec::as_slice).unwrap_or_default().iter().copied();
                (ns.to_string(), Graph::new(apps, groups))
            })
            .collect();
        let cycles = graphs.iter().filter_map(|(ns, g)| Some((ns.clone(), g.find_cycle()?))).collect();
        Self { graphs, cycles }
    }

    fn graph(&self, namespace: &str) -> Option<&Graph> {
        self.graphs.get(namespace)
    }

    /// The instances the app at `me` wants: `ceil(instances × its AppGroups' factors)`.
    pub fn wanted(&self, namespace: &str, me: &GroupPath, instances: i32) -> usize {
        let instances = instances.max(0);
        match self.graph(namespace) {
            Some(graph) => graph.effective_instances(me, instances) as usize,
            None => instances as usize,
        }
    }

    /// What the app at `me` waits for: each app it depends on that is not available, and
    /// each dependency that names nothing.
    pub fn waits(&self, namespace: &str, me: &GroupPath, availability: &Availabilities<'_>) -> Vec<Wait> {
        let Some(graph) = self.graph(namespace) else { return Vec::new() };
        let states = availability.get(namespace);
        let mut waits: Vec<Wait> = Vec::new();
        if let Some(cycle) = self.cycles.get(namespace).filter(|c| c.apps().any(|a| a == me)) {
            let cycle = cycle.clone().starting_at(me);
            waits.push(Wait { path: me.to_string(), why: format!("{cycle}; break it by removing a dependency") });
        }
        for dependency in graph.dependencies_of(me) {
            let Some(path) = &dependency.path else {
                waits.push(Wait { path: dependency.written.clone(), why: "not a valid path".into() });
                continue;
            };
            let mut members = graph.members(path).peekable();
            if members.peek().is_none() {
                let why = match &dependency.origin {
                    Origin::App => "no app there yet".to_string(),
                    Origin::Group(group) => format!("no app there yet; inherited from the AppGroup at {group}"),
                };
                push_once(&mut waits, path.to_string(), why);
                continue;
            }
            for member in members {
                match states.and_then(|s| s.get(member)) {
                    Some(state) if state.is_available() => {}
                    Some(state) => push_once(&mut waits, member.to_string(), state.why_not()),
                    None => push_once(&mut waits, member.to_string(), "not planned yet".into()),
                }
            }
        }
        waits
    }

    /// The apps that depend on the deleted `app` and whose processes may still run: those
    /// deleted too, and — until [`DELETION_SETTLE`] after `app`'s deletion, since
    /// `kubectl delete -f` deletes a file's objects one by one, in file order — those not
    /// deleted yet. `app` stops after them.
    pub fn stopping_dependents(
        &self,
        namespace: &str,
        me: &GroupPath,
        deleted: jiff::Timestamp,
        availability: &Availabilities<'_>,
        now: jiff::Timestamp,
    ) -> Vec<String> {
        let (Some(graph), Some(states)) = (self.graph(namespace), availability.get(namespace)) else {
            return Vec::new();
        };
        let settling = now < deleted + DELETION_SETTLE;
        states
            .iter()
            .filter(|(path, state)| (state.deleting || settling) && state.live > 0 && **path != me)
            .filter(|(path, _)| {
                graph.dependencies_of(path).iter().any(|d| d.path.as_ref().is_some_and(|p| p.contains(me)))
            })
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// The status each AppGroup should have; `now` stamps condition transitions.
    pub fn group_statuses<'g>(
        &self,
        groups: &'g [Arc<AppGroup>],
        availability: &Availabilities<'_>,
        now: jiff::Timestamp,
    ) -> Vec<(&'g AppGroup, AppGroupStatus)> {
        let mut statuses = Vec::new();
        for group in groups {
            let namespace = namespace_of(&group.metadata);
            let path = group.group_path();
            let members: Vec<(&GroupPath, Option<&Availability<'_>>)> = match self.graph(namespace) {
                Some(graph) => {
                    let states = availability.get(namespace);
                    graph.members(&path).map(|m| (m, states.and_then(|s| s.get(m)))).collect()
                }
                None => Vec::new(),
            };
            let wanted: usize = members.iter().filter_map(|(_, a)| a.map(|a| a.wanted)).sum();
            let ready: usize = members.iter().filter_map(|(_, a)| a.map(|a| a.available.min(a.wanted))).sum();
            let unavailable: Vec<String> = members
                .iter()
                .filter(|(_, a)| !a.is_some_and(Availability::is_available))
                .map(|(p, a)| format!("{p} ({})", a.map_or_else(|| "not planned yet".into(), Availability::why_not)))
                .collect();
            let available_apps = members.len() - unavailable.len();
            let (status, reason, message) = if members.is_empty() {
                ("False", "NoApps", format!("no app is in {path} or below it"))
            } else if unavailable.is_empty() {
                ("True", "AllAppsAvailable", format!("all {} apps are available", members.len()))
            } else {
                ("False", "AppsUnavailable", format!("not available: {}", listing(&unavailable)))
            };
            let previous = group.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"));
            let since = previous.filter(|c| c.status == status).map_or(Time(now), |c| c.last_transition_time.clone());
            let scale = self.graph(namespace).map_or(group.spec.scale_factor, |g| g.scale_of_group(&path));
            let desired = AppGroupStatus {
                observed_generation: group.metadata.generation,
                apps: members.len() as i32,
                available_apps: available_apps as i32,
                instances: wanted as i32,
                ready_instances: ready as i32,
                ready: format!("{ready}/{wanted}"),
                scale,
                conditions: vec![Condition {
                    type_: "Available".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message,
                    last_transition_time: since,
                    observed_generation: group.metadata.generation,
                }],
            };
            if group.status.as_ref() != Some(&desired) {
                statuses.push((group.as_ref(), desired));
            }
        }
        statuses
    }
}

/// How long a deleted app waits for the apps that depend on it to be deleted too, before
/// it stops regardless of those that stay.
pub const DELETION_SETTLE: jiff::SignedDuration = jiff::SignedDuration::from_secs(3);

/// Every app's availability, by namespace and path (borrowed from the observed apps).
pub type Availabilities<'o> = BTreeMap<&'o str, BTreeMap<&'o GroupPath, Availability<'o>>>;

fn push_once(waits: &mut Vec<Wait>, path: String, why: String) {
    if !waits.iter().any(|w| w.path == path) {
        waits.push(Wait { path, why });
    }
}

fn namespace_of(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    metadata.namespace.as_deref().unwrap_or_default()
}

/// What the groups stage decided for one app.
pub struct Gate {
    /// `spec.instances` scaled by the app's groups (0 for an app being deleted), at most the
    /// cluster's maximum per app.
    pub wanted: usize,
    /// What it asks for when that is past the maximum.
    pub asked: Option<usize>,
    /// Dependencies that are not available.
    pub waits: Vec<Wait>,
    /// For an app being deleted: the apps deleted with it that depend on it and still run
    /// (it stops after them).
    pub dependents: Vec<String>,
}

/// What the groups stage decided: a gate per app (in the observed order), the AppGroups'
/// statuses, and when a deleted app stops waiting for its dependents.
pub struct Gates {
    pub apps: Vec<Gate>,
    pub group_statuses: Vec<GroupStatusUpdate>,
    pub next_wakeup: Option<jiff::Timestamp>,
}

/// The groups stage: whether an app may start or move to a new version, and when a deleted
/// app may stop, depends on the others, so every app's availability is known before any
/// gate is computed.
pub fn gate(observed: &Observed<'_>, groups: &[Arc<AppGroup>], apps: &[Arc<App>], ctx: &PlanContext) -> Gates {
    let topology = Topology::new(apps, groups);
    let mut availability = Availabilities::new();
    let wanted: Vec<usize> = observed
        .apps
        .iter()
        .map(|o| {
            let deleting = o.app.metadata.deletion_timestamp.is_some();
            let wanted = if deleting { 0 } else { topology.wanted(o.namespace, &o.path, o.app.spec.instances) };
            let wanted = wanted.min(ctx.max_instances_per_app);
            let state = Availability {
                wanted,
                available: o.sets.current_healthy(),
                old: o.sets.old.len(),
                live: o.sets.live(),
                deleting,
                version: &o.version,
            };
            availability.entry(o.namespace).or_default().insert(&o.path, state);
            wanted
        })
        .collect();
    let mut next_wakeup: Option<jiff::Timestamp> = None;
    let gates = observed
        .apps
        .iter()
        .zip(wanted)
        .map(|(o, wanted)| match o.app.metadata.deletion_timestamp.as_ref().map(|t| t.0) {
            Some(deleted) => {
                let dependents = topology.stopping_dependents(o.namespace, &o.path, deleted, &availability, ctx.now);
                let settled = deleted + DELETION_SETTLE;
                if settled > ctx.now {
                    next_wakeup = Some(next_wakeup.map_or(settled, |t| t.min(settled)));
                }
                Gate { wanted, asked: None, waits: Vec::new(), dependents }
            }
            None => {
                let asked = topology.wanted(o.namespace, &o.path, o.app.spec.instances);
                let asked = (asked > ctx.max_instances_per_app).then_some(asked);
                Gate {
                    wanted,
                    asked,
                    waits: topology.waits(o.namespace, &o.path, &availability),
                    dependents: Vec::new(),
                }
            }
        })
        .collect();
    let group_statuses = topology
        .group_statuses(groups, &availability, ctx.now)
        .into_iter()
        .map(|(group, status)| GroupStatusUpdate {
            namespace: group.metadata.namespace.clone().unwrap_or_default(),
            name: group.metadata.name.clone().unwrap_or_default(),
            status,
        })
        .collect();
    Gates { apps: gates, group_statuses, next_wakeup }
}
