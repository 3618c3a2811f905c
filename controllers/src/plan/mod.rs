//! The planner: `plan(&Snapshot, &PlanContext) -> Plan`, a pure function.
//!
//! No I/O, no awaiting, no clock: `now` and the seed for ids and ports are passed in, and
//! everything else is in the snapshot. Every decision is recomputed from the full view at
//! every tick, so a leader that takes over mid-deployment decides exactly what the old one
//! would have.
//!
//! A plan is made in stages (DESIGN.md §5), each run once over the whole snapshot, each
//! returning a typed value the next reads; this module only composes them:
//!
//! | stage | module | decides |
//! |---|---|---|
//! | observe | [`observe`] | every app's instances in named sets ([`classify`]); agents that stopped reporting |
//! | groups | [`groups`] | each app's effective count, the dependencies that hold it back, deletion order |
//! | maintain | [`maintain`] | which agents are in maintenance (draining, drained, released), from every Maintenance and the drain records |
//! | decide | [`decide`] | per app: what goes, user and health kills ([`health`], [`slots`]), instances on agents in maintenance moved replacement first, one bounded step ([`deploy`]), the backoff: stops and a **launch demand** |
//! | share | [`share`] | the platform's own demand first, then what fits tenants' guarantees, then the rest by weighted dominant-resource fairness, in exact integers; agents reserved for tenants |
//! | place | [`place`] | every demand through one placer ([`crate::schedule`]), in one order, nothing on agents in maintenance, spread over their partitions |
//! | defrag | [`defrag`] | whole-agent instances that found no empty agent: agents to free by moving small instances off |
//! | reclaim | [`reclaim`] | tenants below their guarantee whose launches found no room: instances of tenants above theirs to stop for it |
//! | report | [`report`] | the plan, and each app's status and events ([`status`], [`events`]) |
//! | tenants | [`tenants`] | the platform's: tenants' namespaces to create (and delete), their controllers' Apps, their finalizers, and what their apps ask for against their quota |
//!
//! The plan's vocabulary is in [`vocabulary`].

use crate::snapshot::Snapshot;

pub mod classify;
pub mod decide;
pub mod defrag;
pub mod deploy;
pub mod events;
pub mod groups;
pub mod health;
pub mod maintain;
pub mod observe;
pub mod place;
pub mod reclaim;
pub mod report;
pub mod share;
pub mod slots;
pub mod status;
pub mod tenants;
pub mod vocabulary;

pub use classify::Retention;
pub use vocabulary::*;

/// Plans one tick.
pub fn plan(snapshot: &Snapshot, ctx: &PlanContext) -> Plan {
    let observed = observe::observe(snapshot, ctx);
    let gates = groups::gate(&observed, &snapshot.groups, &snapshot.apps, ctx);
    let needs = defrag::Needs::of(&observed.apps, &gates.apps);
    let observe::Observed { reach, apps, orphans, usage, marks, unmarks, events } = observed;
    let maintained = maintain::maintain(snapshot, &usage, &needs, ctx);
    let decided = decide::decide(snapshot, &reach, apps, &orphans, &gates.apps, &maintained.drains, ctx);
    let reserved = share::Reserved::of(snapshot);
    let room = place::Room {
        drains: &maintained.drains,
        reserved: &reserved,
        spread_over: maintained.partition_by,
        keep_free: ctx.keep_free_agents,
    };
    let mut queue = decided.demand(&snapshot.scope);
    queue.extend(place::requests(snapshot, &usage, decided.apps.len()));
    let (queue, over_quota) = share::within_quotas(snapshot, queue);
    let queue = share::order(snapshot, queue);
    let placed = place::place(snapshot, &usage, &queue, &room, ctx.now, ctx.seed);
    let freed = defrag::free(snapshot, &usage, &decided, &placed, &maintained.drains, ctx);
    let reclaimed = reclaim::reclaim(snapshot, &usage, &queue, &placed, &maintained.drains, &reserved);
    let parts = report::Parts { marks, unmarks, events, gates, decided, placed, maintained, freed };
    let mut plan = report::report(parts, snapshot, &usage, ctx);
    plan.stops.extend(reclaimed.stops);
    plan.events.extend(reclaimed.events);
    plan.events.extend(over_quota);
    let served = tenants::tenants(snapshot, snapshot.tenant_controllers.as_deref());
    plan.namespace_creates = served.namespace_creates;
    plan.namespace_deletes = served.namespace_deletes;
    plan.tenant_statuses = served.statuses;
    plan.tenant_finalizers = served.finalizers;
    plan.controller_apps = served.controller_apps;
    plan
}

#[cfg(test)]
mod drain_simulation;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
