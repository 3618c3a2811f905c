//! Stage 5, report: the plan itself — what was decided and placed, in the order it was
//! decided — and what it means for each app: its status (written only where it changed) and
//! its events. Launches fill the replacement slots their app holds here, so the status shows
//! each slot with what fills it.

use super::decide::{Course, Decided, Decision, Running};
use super::events;
use super::groups::{Gate, Gates};
use super::place::Placed;
use super::status::{self, Filler, HeldSlot};
use super::vocabulary::{Launch, Mark, Plan, PlanContext, StatusUpdate, Unmark};

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
}

/// The report stage.
pub fn report(parts: Parts<'_>, ctx: &PlanContext) -> Plan {
    let Parts { marks, unmarks, events, gates, decided, placed } = parts;
    let mut plan = Plan { marks, unmarks, events, next_wakeup: gates.next_wakeup, ..Plan::default() };
    let mut by_app: Vec<Placed> = std::iter::repeat_with(Placed::default).take(decided.apps.len()).collect();
    for (index, placed) in placed {
        by_app[index] = placed;
    }
    for ((decision, gate), placed) in decided.apps.into_iter().zip(&gates.apps).zip(by_app) {
        app(decision, gate, placed, ctx, &mut plan);
    }
    plan.group_statuses = gates.group_statuses;
    let left = decided.leftovers;
    plan.backoffs.extend(left.backoffs);
    plan.kills_done = left.kills_done;
    plan.removals.extend(left.removals);
    plan.stops.extend(left.stops);
    plan
}

fn min_time(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Each launch fills the next empty slot, oldest first, while there is one: it names the
/// slot in its record, written with the launch.
fn fill_slots(slots: &mut [HeldSlot<'_>], launches: &mut [Launch]) {
    let mut empty = slots.iter_mut().filter(|s| s.filler.is_none());
    for launch in launches {
        let Some(slot) = empty.next() else { return };
        launch.record.replaces = Some(slot.killed.id().to_string());
        slot.filler = Some(Filler::Launched(launch.record.id.clone()));
    }
}

/// One app's part of the plan.
fn app(decision: Decision<'_>, gate: &Gate, placed: Placed, ctx: &PlanContext, plan: &mut Plan) {
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
    } = decision;
    plan.finalizers.extend(finalizer);
    plan.removals.extend(removals);
    plan.slot_releases.extend(slot_releases);
    plan.noted.extend(noted);
    plan.backoffs.extend(backoff_change);
    plan.events.extend(events);
    plan.next_wakeup = min_time(plan.next_wakeup, next_wakeup);
    let Placed { mut launches, unplaced } = placed;
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
            desired
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
            let desired = status::desired(app, &version, &sets, &progress);
            plan.events.extend(events::scaled(app, wanted));
            plan.events.extend(events::killing(app, &version, wanted, &stops));
            let relaunching = backoff.as_ref().is_some_and(|b| b.failures > 0);
            plan.events.extend(events::launched(app, &version, &launches, relaunching));
            if let Some(pending) = desired.condition(baton_api::app::CONDITION_PENDING) {
                plan.events.extend(events::failed_scheduling(app, pending));
            }
            if let Some(healthy) = desired.condition(baton_api::app::CONDITION_HEALTHY) {
                plan.events.extend(events::kills_withheld(app, healthy));
            }
            if let Some(dependencies) = desired.condition(baton_api::app::CONDITION_DEPENDENCIES) {
                plan.events.extend(events::waiting(app, dependencies));
            }
            desired
        }
    };
    plan.stops.extend(stops);
    plan.launches.extend(launches);
    if let Some(status) = status::changed(app, desired) {
        plan.statuses.push(StatusUpdate {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            status,
        });
    }
}
