//! Stage 5, report: the plan itself — what was decided and placed, in the order it was
//! decided — and what it means for each app: its status (written only where it changed) and
//! its events. Launches fill the replacement slots their app holds here, so the status shows
//! each slot with what fills it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use baton_api::app::LaunchRequest;
use baton_api::maintenance::Blocker;
use baton_api::{MaintenanceStatus, ResourceAmounts};

use super::decide::{Course, Decided, Decision, Running};
use super::deploy::Strategy;
use super::events;
use super::groups::{Gate, Gates};
use super::maintain::{self, Footprint, Maintained};
use super::place::Placed;
use super::status::{self, Filler, HeldSlot};
use super::vocabulary::{
    Launch, MaintenanceStatusUpdate, Mark, Plan, PlanContext, Settled, StatusUpdate, StopReason, Unmark, min_time,
};
use crate::schedule::Usage;
use crate::snapshot::Snapshot;

/// Instances listed per app in a Maintenance's blockers (the count has them all).
const LISTED_BLOCKED: usize = 5;
/// Apps listed in a Maintenance's blockers and risks.
const LISTED_APPS: usize = 50;
/// Apps reported on one thread at least (an app's status is built and compared in ~2 µs).
const APPS_PER_PART: usize = 256;

/// Everything the stages decided, as one plan.
pub struct Parts<'s> {
    /// The observe stage's markers and events (its sets went to decide).
    pub marks: Vec<Mark>,
    pub unmarks: Vec<Unmark>,
    pub events: Vec<events::Event>,
    pub gates: Gates,
    pub decided: Decided<'s>,
    /// What was placed, by the app's index in the decisions.
    pub placed: Vec<(usize, Placed)>,
    pub maintained: Maintained<'s>,
    pub freed: super::defrag::Freed,
}

/// The report stage.
pub fn report(parts: Parts<'_>, snapshot: &Snapshot, usage: &Usage<'_>, ctx: &PlanContext) -> Plan {
    let Parts { marks, unmarks, events, gates, decided, placed, maintained, freed } = parts;
    let requester = (!snapshot.scope.places()).then_some(snapshot.revision);
    let mut plan = Plan { marks, unmarks, events, next_wakeup: gates.next_wakeup, ..Plan::default() };
    let mut by_app: Vec<Placed> = std::iter::repeat_with(Placed::default).take(decided.apps.len()).collect();
    for (index, placed) in placed {
        match by_app.get_mut(index) {
            Some(slot) => *slot = placed,
            // Another scope's app, placed for its controller's request: the launches only.
            None => plan.launches.extend(placed.launches),
        }
    }
    maintenance(&maintained, &decided, &gates.apps, &by_app, snapshot, usage, ctx, &mut plan);
    let Maintained { writes, events, next_wakeup, .. } = maintained;
    plan.drains = writes;
    plan.events.extend(events);
    plan.drains.extend(freed.writes);
    plan.events.extend(freed.events);
    for (index, note) in freed.notes {
        if let Some(unplaced) = &mut by_app[index].unplaced {
            unplaced.why = format!("{}; {note}", unplaced.why);
        }
    }
    plan.next_wakeup = min_time(plan.next_wakeup, next_wakeup);
    // Each app's part (mostly its status, built and compared), the apps in parts side by
    // side, each part's plan added in order.
    let parts = crate::parallel::parts(decided.apps.len(), ctx.threads, APPS_PER_PART);
    let gate_parts = parts.iter().map(|part| &gates.apps[part.clone()]);
    let chunks: Vec<_> = crate::parallel::split_owned(decided.apps, &parts)
        .into_iter()
        .zip(crate::parallel::split_owned(by_app, &parts))
        .zip(gate_parts)
        .collect();
    let reported = crate::parallel::map(chunks, |((decisions, placed), gates)| {
        let mut part = Plan::default();
        for ((decision, placed), gate) in decisions.into_iter().zip(placed).zip(gates) {
            app(decision, gate, placed, requester, snapshot.settled.as_deref(), ctx, &mut part);
        }
        part
    });
    for part in reported {
        plan.append(part);
    }
    plan.group_statuses = gates.group_statuses;
    let left = decided.leftovers;
    plan.backoffs.extend(left.backoffs);
    plan.kills_done = left.kills_done;
    plan.removals.extend(left.removals);
    plan.stops.extend(left.stops);
    plan
}

/// Each launch fills the next empty slot, oldest first, while there is one: it names the
/// slot in its record, written with the launch.
fn fill_slots(slots: &mut [HeldSlot<'_>], launches: &mut [Launch]) {
    let mut empty = slots.iter_mut().filter(|s| s.filler.is_none());
    for launch in launches {
        let Some(slot) = empty.next() else { return };
        launch.record.replaces = Some(slot.killed.id().into());
        slot.filler = Some(Filler::Launched(launch.record.id.clone()));
    }
}

/// One app's part of the plan. `requester`: the revision a controller that does not place
/// decided on — its app asks the platform for what it could not place. `settled`: the
/// statuses found up to date before, with what they were built from.
fn app(
    decision: Decision<'_>,
    gate: &Gate,
    placed: Placed,
    requester: Option<baton_store::Revision>,
    settled: Option<&Settled>,
    ctx: &PlanContext,
    plan: &mut Plan,
) {
    let Decision {
        app,
        version,
        stops,
        removals,
        slot_releases,
        noted,
        backoff_change,
        finalizer,
        events,
        next_wakeup,
        sets,
        course,
        moving: _,
        failed,
    } = decision;
    plan.finalizers.extend(finalizer);
    plan.removals.extend(removals);
    plan.slot_releases.extend(slot_releases);
    plan.noted.extend(noted);
    plan.backoffs.extend(backoff_change);
    plan.events.extend(events);
    plan.next_wakeup = min_time(plan.next_wakeup, next_wakeup);
    let Placed { mut launches, unplaced } = placed;
    let mut basis = None;
    let desired = match course {
        Course::Deleting { gone: true, .. } => {
            plan.stops.extend(stops);
            return; // The App goes: no status to write.
        }
        Course::Deleting { left, gone: false } => {
            plan.events.extend(events::killing(app, &version, 0, &stops));
            let deletion = status::Deletion { dependents: gate.dependents.clone(), left };
            let progress = status::Progress {
                wanted: 0,
                unplaced: None,
                backoff: None,
                backing_off: None,
                now: ctx.now,
                health: None,
                slots: &[],
                waits: &[],
                gated: false,
                deletion: Some(&deletion),
            };
            let desired = status::desired(app, &version, &sets, &progress);
            if let Some(progressing) = desired.condition(baton_api::app::CONDITION_PROGRESSING) {
                plan.events.extend(events::waiting_for_dependents(app, progressing));
            }
            Some(desired)
        }
        Course::Running(running) => {
            let Running { backoff, backing_off, health, mut slots, gated, .. } = *running;
            fill_slots(&mut slots, &mut launches);
            if let Some(withheld) = &health.withheld {
                plan.withheld_kills.extend(withheld.instances.iter().cloned());
            }
            let wanted = gate.wanted;
            let progress = status::Progress {
                wanted,
                unplaced,
                backoff: backoff.as_ref(),
                backing_off,
                now: ctx.now,
                health: health.withheld.as_ref(),
                slots: &slots,
                waits: &gate.waits,
                gated,
                deletion: None,
            };
            // Nothing of its own to add to the status (a limit, a failed decision, a request
            // to the platform) and the status found up to date from the same basis before:
            // up to date now (debug builds check it).
            basis = status::basis(app, &sets, &progress)
                .filter(|_| gate.asked.is_none() && failed.is_none() && requester.is_none());
            let uid = app.metadata.uid.as_deref().unwrap_or_default();
            let up_to_date = basis.is_some() && basis.as_ref() == settled.and_then(|s| s.get(uid));
            let build = || {
                let mut desired = status::desired(app, &version, &sets, &progress);
                let limited = gate.asked.map(|asked| {
                    (
                        "TooManyInstances",
                        format!(
                            "asks for {asked} instances (scale factors applied); at most {wanted} run: the \
                             cluster's maximum per app"
                        ),
                    )
                });
                for (reason, message) in limited.into_iter().chain(failed.map(|why| {
                    ("PlanningFailed", format!("deciding about this app failed, so it does nothing this tick: {why}"))
                })) {
                    desired.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                        type_: baton_api::app::CONDITION_PLANNED.into(),
                        status: "False".into(),
                        reason: reason.into(),
                        message,
                        observed_generation: app.metadata.generation,
                        // Moves only when the condition appears.
                        last_transition_time: app
                            .status
                            .as_ref()
                            .and_then(|s| s.condition(baton_api::app::CONDITION_PLANNED))
                            .map_or(Time(ctx.now), |c| c.last_transition_time.clone()),
                    });
                }
                if let Some(revision) = requester {
                    let count = progress.unplaced.as_ref().map_or(0, |u| u.count) as i32;
                    desired.launch_request = (count > 0).then(|| {
                        // Kept as it was while it asks for the same: a new revision would make
                        // the platform count instances it already launched for it as not
                        // serving it.
                        let before = app.status.as_ref().and_then(|s| s.launch_request.clone());
                        before.filter(|r| r.version == version && r.count == count).unwrap_or(LaunchRequest {
                            version: version.clone(),
                            count,
                            revision,
                        })
                    });
                }
                desired
            };
            let desired = match app.status.as_ref().filter(|_| up_to_date) {
                Some(status) => {
                    if cfg!(debug_assertions) {
                        let built = build();
                        assert!(
                            &built == status,
                            "{}: its status built from an unchanged basis ({basis:?}) differs from the one \
                             it has:\n{built:?}\n{status:?}",
                            app.path()
                        );
                    }
                    None
                }
                None => Some(build()),
            };
            plan.events.extend(events::scaled(app, wanted));
            plan.events.extend(events::killing(app, &version, wanted, &stops));
            let relaunching = backoff.as_ref().is_some_and(|b| b.failures > 0);
            plan.events.extend(events::launched(app, &version, &launches, relaunching));
            // Up to date, the status it has is the one it should have.
            if let Some(shown) = desired.as_ref().or(app.status.as_ref()) {
                if let Some(pending) = shown.condition(baton_api::app::CONDITION_PENDING) {
                    plan.events.extend(events::failed_scheduling(app, pending));
                }
                if let Some(healthy) = shown.condition(baton_api::app::CONDITION_HEALTHY) {
                    plan.events.extend(events::kills_withheld(app, healthy));
                }
                if let Some(dependencies) = shown.condition(baton_api::app::CONDITION_DEPENDENCIES) {
                    plan.events.extend(events::waiting(app, dependencies));
                }
            }
            desired
        }
    };
    plan.stops.extend(stops);
    plan.launches.extend(launches);
    match desired.map(|desired| status::changed(app, desired)) {
        Some(Some(status)) => plan.statuses.push(StatusUpdate {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            status,
        }),
        // Up to date (found so now, or known to be): so is it next time from the same basis.
        _ => {
            if let Some(basis) = basis {
                plan.settled.push((app.metadata.uid.clone().unwrap_or_default(), basis));
            }
        }
    }
}

/// One app's instances on agents in maintenance that wait to move: `(agent, id)`, and why.
struct Waiting<'a> {
    app: String,
    left: Vec<(&'a str, &'a str)>,
    reason: &'static str,
    message: String,
}

/// Each Maintenance's status (written by the platform's controller, where it changed): the
/// states of its agents, what holds their drains back (from the apps' decisions and
/// placements), the schedule, and the apps its coming windows put at risk.
#[allow(clippy::too_many_arguments)]
fn maintenance(
    maintained: &Maintained<'_>,
    decided: &Decided<'_>,
    gates: &[Gate],
    placed: &[Placed],
    snapshot: &Snapshot,
    usage: &Usage<'_>,
    ctx: &PlanContext,
    plan: &mut Plan,
) {
    if maintained.objects.is_empty() || !snapshot.scope.places() {
        return;
    }
    // What waits to move, per app, and where.
    let mut waiting: Vec<Waiting<'_>> = Vec::new();
    for (decision, placed) in decided.apps.iter().zip(placed) {
        let Some(moving) = &decision.moving else { continue };
        let (reason, message) = match &placed.unplaced {
            Some(unplaced) => ("NoRoom", format!("no agent takes a replacement: {}", unplaced.why)),
            None => (moving.reason, moving.message.clone()),
        };
        let app = decision.app;
        let name = format!(
            "{}/{}",
            app.metadata.namespace.as_deref().unwrap_or_default(),
            app.metadata.name.as_deref().unwrap_or_default()
        );
        let left = moving.left.iter().map(|i| (i.record.agent.as_str(), i.id())).collect();
        waiting.push(Waiting { app: name, left, reason, message });
    }
    let forced: BTreeMap<&str, u32> =
        decided.apps.iter().flat_map(|d| &d.stops).filter(|s| s.reason == StopReason::MoveForced).fold(
            BTreeMap::new(),
            |mut counts, s| {
                *counts.entry(s.record.agent.as_str()).or_default() += 1;
                counts
            },
        );
    let footprints = || -> Vec<Footprint<'_>> {
        decided
            .apps
            .iter()
            .zip(gates)
            .filter(|(d, _)| matches!(d.course, Course::Running(_)))
            .map(|(d, gate)| Footprint {
                app: format!(
                    "{}/{}",
                    d.app.metadata.namespace.as_deref().unwrap_or_default(),
                    d.app.metadata.name.as_deref().unwrap_or_default()
                ),
                wanted: gate.wanted,
                minimum: Strategy::of(&d.app.spec).min_healthy(gate.wanted),
                agents: d.sets.current.iter().map(|i| i.record.agent.as_str()).collect(),
                resources: d.app.spec.resources.amounts(),
            })
            .collect()
    };
    let mut apps: Option<Vec<Footprint<'_>>> = None;
    let held = usage.held.clone();
    let free_outside = |taken: &BTreeSet<String>| {
        snapshot.agents.values().filter(|a| !taken.contains(&a.name) && !maintained.drains.moves_off(&a.name)).fold(
            ResourceAmounts::default(),
            |sum, a| {
                let used = held.get(&a.name).map(|u| u.resources).unwrap_or_default();
                sum.plus(a.resources.minus(used))
            },
        )
    };
    for object in &maintained.objects {
        let m = object.maintenance;
        let mut blocked: Vec<Blocker> = Vec::new();
        let mut blocked_instances = 0u32;
        for Waiting { app, left, reason, message } in &waiting {
            let ids: Vec<&str> =
                left.iter().filter(|(agent, _)| object.cordoned.contains(*agent)).map(|(_, id)| *id).collect();
            if ids.is_empty() {
                continue;
            }
            blocked_instances += ids.len() as u32;
            if blocked.len() < LISTED_APPS {
                blocked.push(Blocker {
                    app: app.clone(),
                    instances: ids.iter().take(LISTED_BLOCKED).map(|i| i.to_string()).collect(),
                    count: ids.len() as u32,
                    reason: reason.to_string(),
                    message: message.clone(),
                });
            }
        }
        let at_risk = if object.coming.is_empty() {
            Vec::new()
        } else {
            let apps = apps.get_or_insert_with(footprints);
            let mut risks = maintain::risks(object, apps, &free_outside);
            risks.truncate(LISTED_APPS);
            risks
        };
        let count = |state: &str| object.agents.iter().filter(|a| a.state == state).count() as u32;
        let forced_now: u32 = object.cordoned.iter().filter_map(|a| forced.get(a.as_str())).sum();
        let before = m.status.as_ref();
        let conditions = match &object.invalid {
            Some(message) => vec![Condition {
                type_: "Valid".into(),
                status: "False".into(),
                reason: "Invalid".into(),
                message: message.clone(),
                observed_generation: m.metadata.generation,
                last_transition_time: before
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"))
                    .map_or(Time(ctx.now), |c| c.last_transition_time.clone()),
            }],
            None => Vec::new(),
        };
        let status = MaintenanceStatus {
            observed_generation: m.metadata.generation,
            window: object.open.join(","),
            draining: count(baton_api::DrainState::Draining.as_str()),
            drained: count(baton_api::DrainState::Drained.as_str()),
            blocked_instances,
            forced_instances: before.map_or(0, |s| s.forced_instances) + forced_now,
            next_window: object.next_window.map(Time),
            agents: object.agents.clone(),
            blocked,
            schedule: object.schedule.clone(),
            at_risk,
            conditions,
        };
        if maintain::status_changed(m, &status) {
            plan.maintenance_statuses
                .push(MaintenanceStatusUpdate { name: m.metadata.name.clone().unwrap_or_default(), status });
        }
    }
}
