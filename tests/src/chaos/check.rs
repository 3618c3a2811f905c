//! The checker: reads a recorded history of the store afterwards and names every write that
//! broke one of Baton's promises. Pure: it sees only the changes (and when each revision was
//! seen), never the cluster.
//!
//! Every instance record a controller writes carries its leader's `term` and the revision
//! of the view it planned on (`plannedAt`), so each decision is judged on what the
//! controller knew — the store replayed to that revision — not on what happened while the
//! write was in flight. What an app's spec was is taken leniently: a decision is wrong only
//! if no spec the app had from a few seconds before the view to the write allows it (the
//! controller reads apps through the API server, a moment apart from the store).
//!
//! Checked:
//! - **fencing**: every record write carries the term of the leader holding its election key
//!   at that revision, and was planned on a view that includes that election;
//! - **reasons**: every stop carries a reason the view at `plannedAt` bears out (`AppDeleted`:
//!   the app is being deleted; `ScaledDown`: more instances than wanted; `Upgraded`: another
//!   version; `Unhealthy`: a failing health check; `Killed`: a kill request; `Moved`: a drain);
//! - **deployment budget**: a tick's stops keep the healthy instances (and those healthy or
//!   not judged yet) at `ceil(n × minimumHealthCapacity)` or where they were; its launches
//!   keep the instances whose process may run within `floor(n × (1 + maximumOverCapacity))`
//!   (one more when that equals the minimum: Marathon's rule) and the starting ones within
//!   `maxConcurrentStarts`; instances on agents in maintenance may be replaced beyond the
//!   maximum (the surge a move needs), one each;
//! - **health policy**: below `minHealthyRatio`, health kills hold at most
//!   `maxConcurrentReplacements` slots (or no more than were held), counting those the tick
//!   releases; and a slot is released only when its place is filled (an instance replacing
//!   it is healthy, or the slots kept cover the places without a healthy instance).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use baton_api::{App, Goal, InstanceRecord, StatusRecord};
use baton_store::Keyspace;

use crate::cluster::Change;

/// How long before its view a decision may have read an app's spec.
pub const SPEC_SKEW_SECONDS: f64 = 3.0;

/// What the checker reads.
pub struct History<'h> {
    pub changes: &'h [Change],
    /// When each revision was seen (seconds from the start), for those seen live.
    pub times: &'h BTreeMap<i64, f64>,
    pub keys: &'h Keyspace,
}

/// Every value each key had, by revision.
#[derive(Default)]
struct Timeline {
    by_key: HashMap<String, Vec<(i64, Option<usize>)>>,
}

impl Timeline {
    /// The index (into the changes) of the value of `key` at `revision`.
    fn at(&self, key: &str, revision: i64) -> Option<usize> {
        let values = self.by_key.get(key)?;
        let i = values.partition_point(|(r, _)| *r <= revision);
        values.get(i.checked_sub(1)?)?.1
    }

    /// The revisions at which `key` changed in `(from, to]`.
    fn changes_between(&self, key: &str, from: i64, to: i64) -> Vec<(i64, Option<usize>)> {
        let Some(values) = self.by_key.get(key) else { return Vec::new() };
        values.iter().filter(|(r, _)| *r > from && *r <= to).cloned().collect()
    }
}

/// A tick's writes to one app's instances: those of one leader term planned on one view.
#[derive(Default)]
struct Tick {
    launches: Vec<InstanceRecord>,
    /// (record before, record after) of each Running → Stopped write.
    stops: Vec<(InstanceRecord, InstanceRecord)>,
    /// The first revision the tick wrote at.
    written_at: i64,
    /// The last one (a tick's writes go in several transactions).
    last_written: i64,
    /// Replacement slots it released (the killed instances' ids): records unmarked, or removed.
    released: Vec<String>,
}

struct Replay<'h> {
    history: &'h History<'h>,
    timeline: Timeline,
    /// Instance record keys by app uid.
    instance_keys: HashMap<String, BTreeSet<String>>,
    /// App registry keys by app uid.
    app_keys: HashMap<String, String>,
    /// The create revision of each leader key's holder, over time: (revision, term or 0).
    terms: HashMap<String, Vec<(i64, i64)>>,
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

impl<'h> Replay<'h> {
    fn new(history: &'h History<'h>) -> Self {
        let keys = history.keys;
        let apps_prefix = keys.registry("baton.dev", "apps", None);
        let leader_prefix = keys.leader("");
        let mut replay = Replay {
            history,
            timeline: Timeline::default(),
            instance_keys: HashMap::new(),
            app_keys: HashMap::new(),
            terms: HashMap::new(),
        };
        for (i, change) in history.changes.iter().enumerate() {
            let value = change.value.as_ref().map(|_| i);
            replay.timeline.by_key.entry(change.key.clone()).or_default().push((change.revision, value));
            if keys.parse_instance_key(&change.key).is_some() {
                if let Some(record) = change.value.as_deref().and_then(parse::<InstanceRecord>) {
                    replay.instance_keys.entry(record.run.app.uid.clone()).or_default().insert(change.key.clone());
                }
            } else if change.key.starts_with(&apps_prefix) {
                if let Some(app) = change.value.as_deref().and_then(parse::<App>) {
                    let uid = app.metadata.uid.clone().unwrap_or_default();
                    replay.app_keys.insert(uid, change.key.clone());
                }
            } else if change.key.starts_with(&leader_prefix) {
                let term = match (&change.before, &change.value) {
                    (_, None) => 0,
                    (None, Some(_)) => change.revision,
                    // The same holder writing its key again: its term goes on.
                    (Some(_), Some(_)) => {
                        replay.terms.get(&change.key).and_then(|t| t.last()).map_or(change.revision, |t| t.1)
                    }
                };
                replay.terms.entry(change.key.clone()).or_default().push((change.revision, term));
            }
        }
        replay
    }

    fn value(&self, key: &str, revision: i64) -> Option<&'h [u8]> {
        let i = self.timeline.at(key, revision)?;
        self.history.changes[i].value.as_deref()
    }

    fn record(&self, key: &str, revision: i64) -> Option<InstanceRecord> {
        self.value(key, revision).and_then(parse)
    }

    fn status(&self, record: &InstanceRecord, revision: i64) -> Option<StatusRecord> {
        self.value(&self.history.keys.status(&record.agent, &record.id), revision).and_then(parse)
    }

    /// Whether a leader of term `term` held one of the election keys at `revision`.
    fn term_held(&self, term: i64, revision: i64) -> bool {
        self.terms.values().any(|timeline| {
            let i = timeline.partition_point(|(r, _)| *r <= revision);
            i > 0 && timeline[i - 1].1 == term
        })
    }

    fn time_of(&self, revision: i64) -> f64 {
        self.history.times.range(..=revision).next_back().map_or(0.0, |(_, t)| *t)
    }

    /// The last revision seen at or before `seconds`.
    fn revision_at(&self, seconds: f64) -> i64 {
        self.history.times.iter().take_while(|(_, t)| **t <= seconds).last().map_or(0, |(r, _)| *r)
    }

    /// Every spec the app (by uid) had from a little before `planned_at` to `written_at`.
    fn specs(&self, uid: &str, planned_at: i64, written_at: i64) -> Vec<App> {
        let Some(key) = self.app_keys.get(uid) else { return Vec::new() };
        let from = self.revision_at(self.time_of(planned_at) - SPEC_SKEW_SECONDS).min(planned_at);
        let at_start = self.value(key, from).and_then(parse::<App>);
        let later = self
            .timeline
            .changes_between(key, from, written_at)
            .into_iter()
            .filter_map(|(_, i)| self.history.changes[i?].value.as_deref().and_then(parse::<App>));
        at_start.into_iter().chain(later).filter(|app| app.metadata.uid.as_deref() == Some(uid)).collect()
    }

    /// The app's instances at `revision`, with their statuses.
    fn instances(&self, uid: &str, revision: i64) -> Vec<(InstanceRecord, Option<StatusRecord>)> {
        let Some(keys) = self.instance_keys.get(uid) else { return Vec::new() };
        keys.iter()
            .filter_map(|key| self.record(key, revision))
            .filter(|r| r.run.app.uid == uid)
            .map(|r| {
                let status = self.status(&r, revision);
                (r, status)
            })
            .collect()
    }
}

fn terminal(status: &Option<StatusRecord>) -> bool {
    status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

fn running(status: &Option<StatusRecord>) -> bool {
    status.as_ref().is_some_and(|s| s.phase == baton_api::records::Phase::Running)
}

fn healthy(record: &InstanceRecord, status: &Option<StatusRecord>) -> bool {
    running(status)
        && status.as_ref().is_some_and(|s| {
            s.passes_health_checks(record.run.health_checks.len())
                && s.is_ready(!record.run.readiness_checks.is_empty())
        })
}

fn failing(status: &Option<StatusRecord>) -> bool {
    running(status) && status.as_ref().is_some_and(|s| s.health.iter().any(|r| r.passing == Some(false)))
}

/// Healthy, or running with no failed probe yet.
fn serving(record: &InstanceRecord, status: &Option<StatusRecord>) -> bool {
    healthy(record, status) || (running(status) && !failing(status))
}

fn min_healthy(app: &App) -> usize {
    let n = app.spec.instances.max(0) as u64;
    (n * app.spec.upgrade_strategy.minimum_health_permille()).div_ceil(1000) as usize
}

fn max_total(app: &App) -> usize {
    let n = app.spec.instances.max(0) as u64;
    let max = (n * (1000 + app.spec.upgrade_strategy.maximum_over_permille()) / 1000) as usize;
    // Marathon's rule: one over when the minimum equals the maximum during a deployment.
    if max == min_healthy(app) { max + 1 } else { max }
}

/// Reasons whose stops count against the deployment budget.
const BUDGETED: [&str; 4] = ["Upgraded", "ScaledDown", "Unhealthy", "Moved"];

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Every broken promise, each a line naming the revision, the app and the instance.
    pub violations: Vec<String>,
    /// Instance record writes judged.
    pub writes: usize,
    /// Decisions (one leader's launches and stops for one app on one view) judged.
    pub decisions: usize,
}

/// Judges every instance record write in the history.
pub fn check(history: &History<'_>) -> Report {
    let replay = Replay::new(history);
    let keys = history.keys;
    let mut violations = Vec::new();
    let mut writes = 0;
    let mut ticks: BTreeMap<(String, i64, i64), Tick> = BTreeMap::new();
    let mut removed_slots: Vec<(String, String, i64)> = Vec::new();
    for change in history.changes {
        if keys.parse_instance_key(&change.key).is_none() {
            continue;
        }
        let before = change.before.as_deref().and_then(parse::<InstanceRecord>);
        let Some(after) = change.value.as_deref().and_then(parse::<InstanceRecord>) else {
            if let Some(gone) = before.filter(|b| b.holds_slot) {
                removed_slots.push((gone.run.app.uid.clone(), gone.id, change.revision));
            }
            continue;
        };
        let r = change.revision;
        writes += 1;
        if !replay.term_held(after.term, r) {
            violations.push(format!(
                "rev {r}: instance {} written with term {}, not the term of a leader holding its key then",
                after.id, after.term
            ));
        }
        if before.as_ref().is_some_and(|b| b.holds_slot) && !after.holds_slot {
            let tick = ticks.entry((after.run.app.uid.clone(), after.term, after.planned_at)).or_default();
            tick.released.push(after.id.clone());
        }
        let launch = before.is_none();
        let stop = before.as_ref().is_some_and(|b| b.goal == Goal::Running) && after.goal == Goal::Stopped;
        if !launch && !stop {
            continue;
        }
        if after.planned_at == 0 {
            violations.push(format!("rev {r}: instance {} written without the revision it was planned on", after.id));
            continue;
        }
        if after.planned_at < after.term {
            violations.push(format!(
                "rev {r}: instance {} written by the leader of term {} on a view of revision {}, before its election",
                after.id, after.term, after.planned_at
            ));
        }
        let tick = ticks.entry((after.run.app.uid.clone(), after.term, after.planned_at)).or_default();
        if tick.written_at == 0 {
            tick.written_at = r;
        }
        tick.last_written = r;
        match before {
            None => tick.launches.push(after),
            Some(before) => tick.stops.push((before, after)),
        }
    }
    // A slot's record removed by a tick (written in the same transactions) was released by it.
    for (uid, id, revision) in removed_slots {
        if let Some(tick) = ticks
            .iter_mut()
            .find(|((u, _, _), t)| *u == uid && t.written_at <= revision && revision <= t.last_written)
            .map(|(_, t)| t)
        {
            tick.released.push(id);
        }
    }
    ticks.retain(|_, t| t.written_at > 0);
    for ((uid, _, planned_at), tick) in &ticks {
        check_tick(&replay, uid, *planned_at, tick, &mut violations);
    }
    Report { violations, writes, decisions: ticks.len() }
}

/// Whether `agent` is in maintenance in the view at `s`, or the tick's own writes (which start
/// a drain together with its first moves) put it there.
fn drained(replay: &Replay<'_>, agent: &str, s: i64, tick: &Tick) -> bool {
    let key = replay.history.keys.drain(agent);
    [s, tick.last_written].iter().any(|at| replay.value(&key, *at).is_some())
}

fn check_tick(replay: &Replay<'_>, uid: &str, s: i64, tick: &Tick, violations: &mut Vec<String>) {
    let keys = replay.history.keys;
    let specs = replay.specs(uid, s, tick.written_at);
    let seen = replay.instances(uid, s);
    let r = tick.written_at;
    let Some(name) = tick.launches.first().map(|l| &l.run.app).or(tick.stops.first().map(|s| &s.1.run.app)) else {
        return;
    };
    let app = format!("{}/{}", name.namespace, name.name);
    // (Stops of an app gone are AppDeleted ones: checked below.)
    if specs.is_empty() && !tick.launches.is_empty() {
        violations.push(format!("rev {r}: {} launched for app {app}, which did not exist", tick.launches.len()));
    }
    let status_at = |id: &str| seen.iter().find(|(rec, _)| rec.id == id).and_then(|(_, s)| s.clone());

    // Reasons.
    for (before, after) in &tick.stops {
        let reason = after.stop_reason.as_deref().unwrap_or("");
        let named = match reason {
            "AppDeleted" => {
                let key = replay.app_keys.get(uid);
                let object = key.and_then(|k| replay.value(k, r)).and_then(parse::<App>);
                object.is_none_or(|a| a.metadata.deletion_timestamp.is_some())
            }
            "ScaledDown" => {
                let wanted_running = seen.iter().filter(|(rec, _)| rec.goal == Goal::Running).count();
                specs.iter().any(|a| (a.spec.instances.max(0) as usize) < wanted_running)
            }
            "Upgraded" => specs.iter().any(|a| a.version() != before.run.version),
            "Unhealthy" => failing(&status_at(&before.id)),
            "Killed" => replay.value(&keys.kill_request(&before.run.app.namespace, &before.id), s).is_some(),
            "Moved" | "MoveForced" => drained(replay, &before.agent, s, tick),
            "Preempted" => {
                let tenants = keys.registry("baton.dev", "tenants", None);
                replay.timeline.by_key.keys().any(|k| k.starts_with(&tenants) && replay.value(k, s).is_some())
            }
            _ => false,
        };
        if !named {
            violations.push(format!(
                "rev {r}: instance {} of {app} stopped with reason {reason:?}, which the view at rev {s} does not bear out",
                before.id
            ));
        }
    }

    // The deployment budget: the healthy ones a tick's stops leave.
    let stopped: BTreeSet<&str> = tick
        .stops
        .iter()
        .filter(|(_, a)| BUDGETED.contains(&a.stop_reason.as_deref().unwrap_or("")))
        .map(|(b, _)| b.id.as_str())
        .collect();
    if !stopped.is_empty() && !specs.is_empty() {
        let wanted = |(rec, _): &&(InstanceRecord, Option<StatusRecord>)| rec.goal == Goal::Running;
        // What an agent no longer registered last reported is not known to hold any more: its
        // instances count as neither healthy nor serving (chaos seed 662054: a SIGSTOPped
        // agent's instances, its lease just expired, were stopped as the extra ones beside
        // their replacements; the planner counted them out, as Marathon counts unreachable
        // tasks).
        let reporting = |rec: &InstanceRecord| replay.value(&keys.agent(&rec.agent), s).is_some();
        let healthy = |rec: &InstanceRecord, st: &Option<StatusRecord>| reporting(rec) && healthy(rec, st);
        let serving = |rec: &InstanceRecord, st: &Option<StatusRecord>| reporting(rec) && serving(rec, st);
        let healthy_before = seen.iter().filter(wanted).filter(|(rec, st)| healthy(rec, st)).count();
        let serving_before = seen.iter().filter(wanted).filter(|(rec, st)| serving(rec, st)).count();
        let left = |count: &dyn Fn(&InstanceRecord, &Option<StatusRecord>) -> bool| {
            seen.iter().filter(wanted).filter(|(rec, st)| count(rec, st) && !stopped.contains(rec.id.as_str())).count()
        };
        let healthy_after = left(&healthy);
        // A move counts only the healthy: an instance on an agent in maintenance that was
        // never healthy carries nothing and moves at once (its replacement starts within
        // maxConcurrentStarts).
        let serving_after = seen
            .iter()
            .filter(wanted)
            .filter(|(rec, st)| serving(rec, st))
            .filter(|(rec, _)| {
                let moved = tick.stops.iter().any(|(b, a)| b.id == rec.id && a.stop_reason.as_deref() == Some("Moved"));
                moved || !stopped.contains(rec.id.as_str())
            })
            .count();
        if specs.iter().all(|a| healthy_after < min_healthy(a).min(healthy_before)) {
            violations.push(format!(
                "rev {r}: stops of {app} planned at rev {s} took its healthy instances from {healthy_before} to \
                 {healthy_after} (minimum {}): {stopped:?}",
                specs.iter().map(min_healthy).min().unwrap_or(0)
            ));
        }
        if specs.iter().all(|a| serving_after < min_healthy(a).min(serving_before)) {
            violations.push(format!(
                "rev {r}: stops of {app} planned at rev {s} took its instances healthy or not judged from \
                 {serving_before} to {serving_after} (minimum {}): {stopped:?}",
                specs.iter().map(min_healthy).min().unwrap_or(0)
            ));
        }
    }

    // Launches: the processes that may run, and those starting.
    if !tick.launches.is_empty() && !specs.is_empty() {
        let processes = seen.iter().filter(|(_, st)| !terminal(st)).count() + tick.launches.len();
        // Instances on agents in maintenance (or that the same tick puts in maintenance) are
        // replaced first, beyond the maximum: the surge a move needs.
        let leaving = seen.iter().filter(|(rec, st)| !terminal(st) && drained(replay, &rec.agent, s, tick)).count();
        if specs.iter().all(|a| processes > max_total(a) + leaving) {
            violations.push(format!(
                "rev {r}: launches of {app} planned at rev {s} let {processes} processes run (at most {}{})",
                specs.iter().map(max_total).max().unwrap_or(0),
                if leaving > 0 { format!(" + {leaving} moving off agents in maintenance") } else { String::new() }
            ));
        }
        let version = &tick.launches[0].run.version;
        let live = |agent: &str| replay.value(&keys.agent(agent), s).is_some();
        // An instance the same tick stops (a health kill) is no longer starting.
        let stopping: BTreeSet<&str> = tick.stops.iter().map(|(b, _)| b.id.as_str()).collect();
        let starting = seen
            .iter()
            .filter(|(rec, st)| rec.goal == Goal::Running && &rec.run.version == version && !terminal(st))
            .filter(|(rec, _)| !stopping.contains(rec.id.as_str()))
            .filter(|(rec, st)| live(&rec.agent) && !healthy(rec, st))
            .count()
            + tick.launches.len();
        let limits: Vec<Option<usize>> =
            specs.iter().map(|a| a.spec.upgrade_strategy.max_concurrent_starts.map(|n| n.max(1) as usize)).collect();
        if limits.iter().all(|l| l.is_some_and(|max| starting > max)) {
            violations.push(format!(
                "rev {r}: launches of {app} planned at rev {s} have {starting} instances starting at once (at most {:?})",
                limits.iter().flatten().max()
            ));
        }
    }

    // A slot is released only when its place is filled: an instance replacing it is healthy,
    // or the app's healthy instances of its version leave fewer places empty than the slots
    // still held (else a failing pool's slots free themselves and the policy kills it whole).
    let deleting = specs.iter().any(|a| a.metadata.deletion_timestamp.is_some());
    if !tick.released.is_empty() && !specs.is_empty() && !deleting {
        let replaced = |killed: &String| {
            seen.iter().any(|(rec, st)| {
                rec.replaces.as_deref() == Some(killed.as_str()) && rec.goal == Goal::Running && healthy(rec, st)
            })
        };
        let unfilled = tick.released.iter().filter(|k| !replaced(k)).count();
        let held_before = seen.iter().filter(|(rec, _)| rec.holds_slot).count();
        let kept = held_before.saturating_sub(unfilled);
        let empty_places = |a: &App| {
            let version = a.version();
            let healthy_now = seen
                .iter()
                .filter(|(rec, st)| rec.goal == Goal::Running && rec.run.version == version && healthy(rec, st))
                .count();
            (a.spec.instances.max(0) as usize).saturating_sub(healthy_now)
        };
        if unfilled > 0 && specs.iter().all(|a| kept < held_before.min(empty_places(a))) {
            violations.push(format!(
                "rev {r}: {unfilled} replacement slot(s) of {app} released on the view at rev {s} with nothing healthy \
                 in their place ({held_before} held, {kept} kept, {} place(s) without a healthy instance): {:?}",
                specs.iter().map(empty_places).min().unwrap_or(0),
                tick.released
            ));
        }
    }

    // The health policy's replacement slots.
    let new_slots = tick.stops.iter().filter(|(_, a)| a.stop_reason.as_deref() == Some("Unhealthy") && a.holds_slot);
    let new_slots = new_slots.count();
    if new_slots > 0 && !specs.is_empty() {
        let held_before = seen.iter().filter(|(rec, _)| rec.holds_slot).count();
        let held_after = held_before - tick.released.len().min(held_before) + new_slots;
        let steady = seen.iter().filter(|(rec, st)| rec.goal == Goal::Running && healthy(rec, st)).count();
        let over = |a: &App| {
            let n = a.spec.instances.max(0) as u64;
            let limited = (steady as u64) * 1000 < n * a.spec.health_policy.min_healthy_permille();
            let budget = a.spec.health_policy.replacements(n as usize).unwrap_or(usize::MAX);
            limited && held_after > budget.max(held_before)
        };
        if specs.iter().all(over) {
            violations.push(format!(
                "rev {r}: health kills of {app} planned at rev {s} hold {held_after} replacement slots \
                 ({held_before} before)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A history built change by change, one revision each.
    #[derive(Default)]
    struct Builder {
        changes: Vec<Change>,
        values: HashMap<String, Vec<u8>>,
    }

    impl Builder {
        fn put(&mut self, key: String, value: serde_json::Value) -> i64 {
            let revision = self.changes.len() as i64 + 2;
            let bytes = serde_json::to_vec(&value).unwrap();
            let before = self.values.insert(key.clone(), bytes.clone());
            self.changes.push(Change { revision, key, value: Some(bytes), before });
            revision
        }

        fn check(&self) -> Report {
            let times: BTreeMap<i64, f64> =
                self.changes.iter().map(|c| (c.revision, c.revision as f64 * 10.0)).collect();
            check(&History { changes: &self.changes, times: &times, keys: &Keyspace::default() })
        }
    }

    /// Registers agents a1 and a2 (as in every real history).
    fn register_agents(h: &mut Builder, keys: &Keyspace) {
        for agent in ["a1", "a2"] {
            h.put(keys.agent(agent), json!({"name": agent}));
        }
    }

    fn app(instances: i32, min_health: f64, max_over: f64, change: &str) -> serde_json::Value {
        json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "App",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"cmd": "sleep 100", "instances": instances, "env": {"CHANGE": change},
                     "upgradeStrategy": {"minimumHealthCapacity": min_health, "maximumOverCapacity": max_over}}
        })
    }

    fn version(app: &serde_json::Value) -> String {
        serde_json::from_value::<App>(app.clone()).unwrap().version()
    }

    fn record(id: &str, version: &str, term: i64, planned_at: i64) -> serde_json::Value {
        json!({
            "id": id, "app": {"namespace": "default", "name": "web", "uid": "u1"}, "agent": "a1",
            "host": "127.0.0.1", "version": version, "createdAt": "2026-12-02T00:00:00Z", "goal": "Running",
            "command": {"shell": "sleep 100"},
            "resources": {"millicpus": 100, "memMib": 8, "diskMib": 0}, "killGraceSeconds": 1,
            "term": term, "plannedAt": planned_at
        })
    }

    fn stopped(mut record: serde_json::Value, reason: &str, planned_at: i64) -> serde_json::Value {
        record["goal"] = json!("Stopped");
        record["stopReason"] = json!(reason);
        record["plannedAt"] = json!(planned_at);
        record
    }

    fn running() -> serde_json::Value {
        json!({"phase": "Running", "pid": 1})
    }

    /// A leader, and `spec` (given a command health check) stored as app web: records of it
    /// as its controller writes them.
    struct Checked {
        term: i64,
        /// The revision the app was stored at.
        at: i64,
        version: String,
        checks: serde_json::Value,
    }

    impl Checked {
        fn store(h: &mut Builder, keys: &Keyspace, mut spec: serde_json::Value) -> Self {
            let term = h.put(keys.leader("platform"), json!("c1"));
            spec["spec"]["healthChecks"] = json!([{"protocol": "COMMAND", "command": {"value": "true"}}]);
            let at = h.put(keys.registry_object("baton.dev", "apps", Some("default"), "web"), spec.clone());
            register_agents(h, keys);
            Self { term, at, version: version(&spec), checks: spec["spec"]["healthChecks"].clone() }
        }

        /// Instance `id` on `agent`, written by the leader on a view through `planned_at`.
        fn record(&self, id: &str, agent: &str, planned_at: i64) -> serde_json::Value {
            let mut r = record(id, &self.version, self.term, planned_at);
            r["agent"] = json!(agent);
            r["healthChecks"] = self.checks.clone();
            r
        }
    }

    /// A leader (term 2), an app of 2 instances with `minimumHealthCapacity` 1 and
    /// `maximumOverCapacity` 0 (so 3 may run during a deployment), both launched and healthy.
    fn two_healthy() -> (Builder, Keyspace, String) {
        let keys = Keyspace::default();
        let mut h = Builder::default();
        let term = h.put(keys.leader("platform"), json!("c1"));
        let spec = app(2, 1.0, 0.0, "1");
        let at = h.put(keys.registry_object("baton.dev", "apps", Some("default"), "web"), spec.clone());
        register_agents(&mut h, &keys);
        let v = version(&spec);
        for id in ["web-1", "web-2"] {
            h.put(keys.instance("a1", id), record(id, &v, term, at));
        }
        for id in ["web-1", "web-2"] {
            h.put(keys.status("a1", id), running());
        }
        (h, keys, v)
    }

    #[test]
    fn a_history_that_keeps_every_promise_passes() {
        let (mut h, keys, _) = two_healthy();
        // A new version, rolled one at a time: one over, then an old one stopped.
        let spec = app(2, 1.0, 0.0, "2");
        let at = h.put(keys.registry_object("baton.dev", "apps", Some("default"), "web"), spec.clone());
        h.put(keys.instance("a1", "web-3"), record("web-3", &version(&spec), 2, at));
        let healthy = h.put(keys.status("a1", "web-3"), running());
        let old = record("web-1", "", 2, 0);
        let old_v = h.values[&keys.instance("a1", "web-1")].clone();
        let mut old_v: serde_json::Value = serde_json::from_slice(&old_v).unwrap();
        old_v["term"] = old["term"].clone();
        h.put(keys.instance("a1", "web-1"), stopped(old_v, "Upgraded", healthy));
        let report = h.check();
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!((report.writes, report.decisions), (4, 3), "2 launches, 1 launch, 1 stop");
    }

    #[test]
    fn launches_past_the_maximum_are_named() {
        let (mut h, keys, v) = two_healthy();
        let seen = h.changes.last().unwrap().revision;
        // Two more of the same version on a view with 2 running: 4 > 3.
        h.put(keys.instance("a1", "web-3"), record("web-3", &v, 2, seen));
        h.put(keys.instance("a1", "web-4"), record("web-4", &v, 2, seen));
        let report = h.check();
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].contains("let 4 processes run (at most 3)"), "{:?}", report.violations);
    }

    /// Chaos seed 5: a failing instance killed for its health and its replacement launched in
    /// one tick, with `maxConcurrentStarts` 2 and another instance starting: 2 start, not 3.
    #[test]
    fn a_health_kill_and_its_replacement_in_one_tick_are_not_two_starts() {
        let keys = Keyspace::default();
        let mut h = Builder::default();
        let mut spec = app(4, 1.0, 0.5, "1");
        spec["spec"]["upgradeStrategy"]["maxConcurrentStarts"] = json!(2);
        let app = Checked::store(&mut h, &keys, spec);
        let with_check = |id: &str, planned_at: i64| app.record(id, "a1", planned_at);
        let at = app.at;
        h.put(keys.instance("a1", "web-1"), with_check("web-1", at));
        h.put(keys.instance("a1", "web-2"), with_check("web-2", at));
        h.put(keys.agent("a1"), json!({"name": "a1"}));
        h.put(
            keys.status("a1", "web-1"),
            json!({"phase": "Running", "health": [{"passing": false, "consecutiveFailures": 2}]}),
        );
        let seen = h.put(keys.status("a1", "web-2"), json!({"phase": "Running", "health": [{}]}));
        let mut killed = with_check("web-1", at);
        killed["holdsSlot"] = json!(true);
        h.put(keys.instance("a1", "web-1"), stopped(killed, "Unhealthy", seen));
        h.put(keys.instance("a1", "web-3"), with_check("web-3", seen));
        let report = h.check();
        assert_eq!(report.violations, Vec::<String>::new());
    }

    #[test]
    fn a_move_off_an_agent_in_maintenance_may_go_beyond_the_maximum() {
        let (mut h, keys, v) = two_healthy();
        // The tick that starts the drain writes its record with the first moves (chaos seed
        // 22558: 4 replacements beside 4 leaving under a maximum of 6).
        let seen = h.changes.last().unwrap().revision;
        h.put(keys.drain("a1"), json!({"maintenance": "disk"}));
        // Both are replaced first, beside the 3 that may run (Marathon's one over counted
        // leniently): 5 may run, not 6.
        let on_a2 = |id: &str, planned_at: i64| {
            let mut r = record(id, &v, 2, planned_at);
            r["agent"] = json!("a2");
            r
        };
        for id in ["web-3", "web-4", "web-5"] {
            h.put(keys.instance("a2", id), on_a2(id, seen));
        }
        assert_eq!(h.check().violations, Vec::<String>::new());
        let seen = h.changes.last().unwrap().revision;
        h.put(keys.instance("a2", "web-6"), on_a2("web-6", seen));
        let report = h.check();
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0].contains("let 6 processes run (at most 3 + 2 moving off"),
            "{:?}",
            report.violations
        );
    }

    /// Chaos seed 686766: both instances of an app, running but never healthy yet, on an agent
    /// that a Maintenance just took out: the tick that starts the drain (its record written
    /// with the moves) stops both and launches both replacements — a move counts only the
    /// healthy.
    #[test]
    fn instances_never_healthy_move_off_a_drained_agent_at_once() {
        let keys = Keyspace::default();
        let mut h = Builder::default();
        let app = Checked::store(&mut h, &keys, app(2, 0.5, 1.0, "1"));
        let on = |id: &str, agent: &str, planned_at: i64| app.record(id, agent, planned_at);
        let at = app.at;
        for id in ["web-1", "web-2"] {
            h.put(keys.instance("a1", id), on(id, "a1", at));
            h.put(keys.status("a1", id), json!({"phase": "Running", "health": [{}]}));
        }
        let seen = h.put(keys.registry_object("baton.dev", "maintenances", None, "disk"), json!({}));
        // One transaction, written here as one change after another.
        for id in ["web-3", "web-4"] {
            h.put(keys.instance("a2", id), on(id, "a2", seen));
        }
        h.put(keys.drain("a1"), json!({"maintenance": "disk", "state": "Draining"}));
        for id in ["web-1", "web-2"] {
            h.put(keys.instance("a1", id), stopped(on(id, "a1", at), "Moved", seen));
        }
        assert_eq!(h.check().violations, Vec::<String>::new());
    }

    /// Chaos seeds 3009, 3011 and 4005 (before acddc0d): a failing pool's slot released while
    /// nothing healthy was in its place, and the next instance killed — one per tick.
    #[test]
    fn a_slot_released_with_its_place_empty_is_named() {
        let keys = Keyspace::default();
        let mut h = Builder::default();
        let mut spec = app(3, 0.5, 1.0, "1");
        spec["spec"]["healthPolicy"] = json!({"minHealthyRatio": 0.5, "maxConcurrentReplacements": 1});
        let app = Checked::store(&mut h, &keys, spec);
        let with_check = |id: &str, planned_at: i64| app.record(id, "a1", planned_at);
        let at = app.at;
        let failing = json!({"phase": "Running", "health": [{"passing": false, "consecutiveFailures": 3}]});
        for id in ["web-1", "web-2", "web-3"] {
            h.put(keys.instance("a1", id), with_check(id, at));
            h.put(keys.status("a1", id), failing.clone());
        }
        let seen = h.changes.last().unwrap().revision;
        let mut killed = with_check("web-1", at);
        killed["holdsSlot"] = json!(true);
        h.put(keys.instance("a1", "web-1"), stopped(killed.clone(), "Unhealthy", seen));
        let seen = h.put(keys.status("a1", "web-1"), json!({"phase": "Killed"}));
        // The next tick: web-1's slot removed, web-2 killed in its place.
        let mut next = with_check("web-2", at);
        next["holdsSlot"] = json!(true);
        h.put(keys.instance("a1", "web-2"), stopped(next, "Unhealthy", seen));
        h.changes.push(Change {
            revision: h.changes.last().unwrap().revision,
            key: keys.instance("a1", "web-1"),
            value: None,
            before: Some(serde_json::to_vec(&stopped(killed, "Unhealthy", seen)).unwrap()),
        });
        let report = h.check();
        assert!(
            report.violations.iter().any(|v| v.contains("1 replacement slot(s) of default/web released")),
            "{:?}",
            report.violations
        );
    }

    /// Chaos seed 662054: an agent SIGSTOPped, its registration lapsed; the next tick stopped
    /// its two instances (healthy when last heard of) as the extra ones beside the two
    /// replacements a drain had started elsewhere, not healthy yet. What a gone agent last
    /// reported is not known to hold: no budget was spent.
    #[test]
    fn stopping_instances_of_an_agent_gone_spends_no_budget() {
        let keys = Keyspace::default();
        let mut h = Builder::default();
        let app = Checked::store(&mut h, &keys, app(2, 1.0, 0.0, "1"));
        let on = |id: &str, agent: &str, planned_at: i64| app.record(id, agent, planned_at);
        let passing = json!({"phase": "Running", "health": [{"passing": true, "consecutiveSuccesses": 3}]});
        for id in ["web-1", "web-2"] {
            h.put(keys.instance("a1", id), on(id, "a1", app.at));
            h.put(keys.status("a1", id), passing.clone());
        }
        // a1 in maintenance: its instances' replacements start on a2 first.
        let seen = h.put(keys.drain("a1"), json!({"maintenance": "disk"}));
        for id in ["web-3", "web-4"] {
            h.put(keys.instance("a2", id), on(id, "a2", seen));
            h.put(keys.status("a2", id), json!({"phase": "Running", "health": [{}]}));
        }
        h.changes.push(Change {
            revision: h.changes.len() as i64 + 2,
            key: keys.agent("a1"),
            value: None,
            before: h.values.remove(&keys.agent("a1")),
        });
        let gone = h.changes.last().unwrap().revision;
        for id in ["web-1", "web-2"] {
            h.put(keys.instance("a1", id), stopped(on(id, "a1", app.at), "ScaledDown", gone));
        }
        assert_eq!(h.check().violations, Vec::<String>::new());
    }

    #[test]
    fn stops_below_the_minimum_and_without_a_reason_are_named() {
        let (mut h, keys, _) = two_healthy();
        let spec = app(2, 1.0, 0.0, "2");
        let at = h.put(keys.registry_object("baton.dev", "apps", Some("default"), "web"), spec);
        for id in ["web-1", "web-2"] {
            let before: serde_json::Value = serde_json::from_slice(&h.values[&keys.instance("a1", id)]).unwrap();
            h.put(keys.instance("a1", id), stopped(before, "Upgraded", at));
        }
        let report = h.check();
        assert_eq!(report.violations.len(), 2, "healthy, and healthy or not judged: {:?}", report.violations);
        assert!(report.violations[0].contains("healthy instances from 2 to 0 (minimum 2)"), "{:?}", report.violations);

        // One stopped as scaled down while exactly as many as wanted ran.

        let (mut h, keys, _) = two_healthy();
        let seen = h.changes.last().unwrap().revision;
        let before: serde_json::Value = serde_json::from_slice(&h.values[&keys.instance("a1", "web-1")]).unwrap();
        h.put(keys.instance("a1", "web-1"), stopped(before, "ScaledDown", seen));
        let report = h.check();
        assert!(report.violations.iter().any(|v| v.contains("reason \"ScaledDown\"")), "{:?}", report.violations);
    }

    #[test]
    fn writes_of_a_deposed_leader_and_stale_views_are_named() {
        let (mut h, keys, v) = two_healthy();
        // A new leader (term 20)…
        let leader = keys.leader("platform");
        h.changes.push(Change { revision: 19, key: leader.clone(), value: None, before: h.values.remove(&leader) });
        h.changes.push(Change { revision: 20, key: leader.clone(), value: Some(b"\"c2\"".to_vec()), before: None });
        // …while the old one (term 2) still writes; and the new one plans on a view from
        // before its election.
        h.changes.push(Change {
            revision: 21,
            key: keys.instance("a1", "web-3"),
            value: Some(serde_json::to_vec(&record("web-3", &v, 2, 9)).unwrap()),
            before: None,
        });
        h.changes.push(Change {
            revision: 22,
            key: keys.instance("a1", "web-4"),
            value: Some(serde_json::to_vec(&record("web-4", &v, 20, 9)).unwrap()),
            before: None,
        });
        let report = h.check();
        let all = report.violations.join("\n");
        assert!(all.contains("rev 21: instance web-3 written with term 2, not the term of a leader"), "{all}");
        assert!(
            all.contains("rev 22: instance web-4 written by the leader of term 20 on a view of revision 9"),
            "{all}"
        );
    }
}
