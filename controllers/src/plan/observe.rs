//! Stage 1, observe: every instance of the snapshot, once. Each app's instances are classified
//! into its named, disjoint sets ([`AppInstances`]); instances of the scope whose app is gone
//! are set aside; agents that stopped reporting get a marker with the time (kept in the
//! store, so a new leader measures `unreachableStrategy` from the same moment), and markers
//! of agents that are back, or have nothing left, are forgotten. Agents are the platform's:
//! only its controller writes markers; other scopes read them.
//!
//! The later stages read these sets and never classify again.

use rustc_hash::{FxHashMap, FxHashSet};

use baton_api::{App, GroupPath};

use super::classify::{AppInstances, Reachability};
use super::events::{self, Event};
use super::vocabulary::{Mark, PlanContext, Unmark};
use crate::schedule::Usage;
use crate::snapshot::{InstanceState, Snapshot};

/// One app, as observed.
pub struct ObservedApp<'s> {
    pub app: &'s App,
    pub namespace: &'s str,
    /// The app's id (`/group/name`).
    pub path: GroupPath,
    /// The version its instances should run.
    pub version: String,
    pub sets: AppInstances<'s>,
}

/// What the observe stage saw.
pub struct Observed<'s> {
    pub reach: Reachability,
    /// Every app of the snapshot, in its order.
    pub apps: Vec<ObservedApp<'s>>,
    /// Instances of the scope whose app no longer exists (in the scope).
    pub orphans: Vec<&'s InstanceState>,
    /// What the instances hold, per agent and per app: what placement starts from.
    pub usage: Usage<'s>,
    pub marks: Vec<Mark>,
    pub unmarks: Vec<Unmark>,
    /// Agents that stopped reporting, said once.
    pub events: Vec<Event>,
}

/// Observes the snapshot.
pub fn observe<'s>(snapshot: &'s Snapshot, ctx: &PlanContext) -> Observed<'s> {
    // What each agent holds, as the snapshot has it; the agents holding instances that do not
    // report (usually none): both in name order.
    let held = snapshot.held();
    let mut registered = snapshot.agents.keys().peekable();
    let unregistered: Vec<&str> = held
        .keys()
        .filter(|agent| {
            while registered.next_if(|name| *name < *agent).is_some() {}
            registered.peek() != Some(agent)
        })
        .map(String::as_str)
        .collect();
    let reach = Reachability::of(snapshot, unregistered.iter().copied(), ctx.now);
    // One pass over the instances, by app (in parts side by side on more threads): each run
    // of an app's instances is classified as it is gathered, while they are in the cache.
    let versions: Vec<String> = snapshot.apps.iter().map(|app| snapshot.version_of(app).into_owned()).collect();
    let uids: Vec<&str> = snapshot.apps.iter().map(|app| app.metadata.uid.as_deref().unwrap_or_default()).collect();
    // Each app by its uid, where only one app has it (tests make apps without uids).
    let mut by_uid: FxHashMap<&str, Option<usize>> = FxHashMap::default();
    for (i, uid) in uids.iter().enumerate() {
        by_uid.entry(uid).and_modify(|only| *only = None).or_insert(Some(i));
    }
    let (usage, classified) = Usage::visiting(snapshot, held.clone(), ctx.threads, |uid, run| {
        let i = (*by_uid.get(uid)?)?;
        let strategy = snapshot.apps[i].spec.unreachable_strategy;
        Some((i, AppInstances::classify(run.iter().copied(), &versions[i], strategy, &reach)))
    });
    let mut found: Vec<Option<AppInstances<'s>>> = std::iter::repeat_with(|| None).take(uids.len()).collect();
    for (i, sets) in classified.into_iter().filter_map(|(_, run)| run) {
        match &mut found[i] {
            Some(earlier) => earlier.absorb(sets),
            none => *none = Some(sets),
        }
    }
    let (marks, unmarks, events) =
        if snapshot.scope.places() { markers(snapshot, &unregistered, &usage, ctx) } else { Default::default() };
    let apps: Vec<ObservedApp<'s>> = snapshot
        .apps
        .iter()
        .zip(versions)
        .zip(found)
        .zip(&uids)
        .map(|(((app, version), found), uid)| {
            // An app without instances, or one that shares its uid: classified here.
            let sets = found.unwrap_or_else(|| {
                AppInstances::classify(usage.instances_of(uid), &version, app.spec.unreachable_strategy, &reach)
            });
            let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
            ObservedApp { app, namespace, path: app.path(), version, sets }
        })
        .collect();
    let uids: FxHashSet<&str> = uids.into_iter().collect();
    let mut orphans: Vec<&'s InstanceState> =
        usage.apps().filter(|uid| !uids.contains(*uid)).flat_map(|uid| usage.instances_of(uid)).collect();
    orphans.sort_by(|a, b| a.id().cmp(b.id()));
    Observed { reach, apps, orphans, usage, marks, unmarks, events }
}

/// Markers to write for agents with instances that stopped reporting (`unregistered`), and
/// to forget for agents that are back or hold nothing any more.
fn markers(
    snapshot: &Snapshot,
    unregistered: &[&str],
    usage: &Usage<'_>,
    ctx: &PlanContext,
) -> (Vec<Mark>, Vec<Unmark>, Vec<Event>) {
    let (mut marks, mut unmarks, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let mut gone: Vec<(&str, usize)> = unregistered
        .iter()
        .filter(|agent| !snapshot.unreachable.contains_key(**agent))
        .map(|agent| (*agent, usage.held.get(*agent).map_or(0, |used| used.live)))
        .collect();
    gone.sort();
    for (agent, live) in gone {
        marks.push(Mark { agent: agent.to_string(), since: ctx.now });
        events.push(events::agent_unreachable(agent, live));
    }
    for (agent, marker) in &snapshot.unreachable {
        if snapshot.agents.contains_key(agent) || !usage.held.contains_key(agent.as_str()) {
            unmarks.push(Unmark { agent: agent.clone(), revision: marker.revision });
        }
    }
    (marks, unmarks, events)
}
