//! The health planner: which instances that fail their health checks to kill, looking at the
//! whole pool.
//!
//! An instance is due to be killed once a health check has failed `maxConsecutiveFailures`
//! times in a row after its grace period (the agent does not count failures within it).
//! Killing every due instance is right when a few instances went bad, and wrong when the
//! whole pool fails at once because something they share broke: killing them all turns a
//! blip into an outage as long as the instances take to warm up. So, with `n` instances
//! wanted and the app's `healthPolicy`:
//! - while at least `minHealthyRatio × n` instances pass their health checks steadily
//!   (an instance that failed counts again once it has passed `maxConsecutiveFailures`
//!   probes in a row, so that instances failing from the same cause are not killed in the
//!   moment between the first recoveries and their own), every due instance is killed (and
//!   replaced);
//! - below that, an instance is killed only while fewer than `maxConcurrentReplacements`
//!   replacement slots are held ([`super::slots`]): a slot is taken by each health kill and
//!   held until an instance launched to replace it has proved healthy (passed its checks
//!   `maxConsecutiveFailures` times in a row), whatever happens in between (slow stops,
//!   backoff, replacements that crash at start);
//! - a due instance that was itself launched to fill a held slot is killed whatever the
//!   budget: that refills the same place and takes no new slot;
//! - the rest are withheld, with the reason. When the cause goes away they pass again and
//!   are never killed; when it does not, the pool is replaced a budget at a time, as
//!   replacements become healthy.
//!
//! An instance that was never healthy but was not launched to replace a health kill holds
//! no slot: an app of one instance that never becomes healthy is killed and replaced, as in
//! Marathon. Everything is counted from the snapshot: a new leader decides the same.
//! Instances on agents that stopped reporting are not looked at (their last results are
//! stale).

use std::cmp::Reverse;

use baton_api::AppSpec;

use crate::snapshot::InstanceState;

use super::slots::Slots;

/// The policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_healthy_permille: u64,
    /// The replacement budget.
    pub replacements: usize,
}

impl Policy {
    /// The app's policy for `wanted` instances. A budget that does not parse (validation
    /// refuses it at apply) is 0: nothing is killed below the ratio.
    pub fn of(spec: &AppSpec, wanted: usize) -> Self {
        let policy = &spec.health_policy;
        Self {
            min_healthy_permille: policy.min_healthy_permille(),
            replacements: policy.replacements(wanted).unwrap_or(0),
        }
    }
}

/// What the health planner decided for an app.
#[derive(Debug, Default)]
pub struct Decision<'s> {
    /// Due instances to kill now, with their failures in a row and last output.
    pub kill: Vec<Due<'s>>,
    /// Due instances left alone this tick.
    pub withheld: Vec<Due<'s>>,
    /// Instances that pass their health checks steadily.
    pub healthy: usize,
    /// Replacement slots held before this tick's kills (the budget used).
    pub in_flight: usize,
    /// Whether the budget applied (fewer than `minHealthyRatio` healthy).
    pub limited: bool,
}

/// An instance due to be killed for failing a health check.
#[derive(Debug, Clone, Copy)]
pub struct Due<'s> {
    pub instance: &'s InstanceState,
    pub failures: u32,
    pub output: &'s str,
}

/// Decides for an app with `wanted` instances, given its live instances (wanted running, on
/// agents that report) and the replacement slots it holds.
pub fn decide<'s>(wanted: usize, live: &[&'s InstanceState], slots: &Slots<'s>, policy: Policy) -> Decision<'s> {
    let mut due: Vec<Due<'s>> = live
        .iter()
        .filter_map(|&instance| instance.health_kill_due().map(|(failures, output)| Due { instance, failures, output }))
        .collect();
    if due.is_empty() {
        return Decision::default();
    }
    // Refills of held slots first (free), then the longest failing, then the oldest.
    due.sort_by(|a, b| {
        (!slots.fills(a.instance), Reverse(a.failures), a.instance.record.created_at, a.instance.id()).cmp(&(
            !slots.fills(b.instance),
            Reverse(b.failures),
            b.instance.record.created_at,
            b.instance.id(),
        ))
    });
    let healthy = live.iter().filter(|i| i.steadily_healthy()).count();
    let limited = (healthy as u64) * 1000 < (wanted as u64) * policy.min_healthy_permille;
    let in_flight = slots.held.len();
    let refills = due.iter().take_while(|d| slots.fills(d.instance)).count();
    let allowed = if limited { refills + policy.replacements.saturating_sub(in_flight) } else { due.len() };
    let withheld = due.split_off(allowed.min(due.len()));
    Decision { kill: due, withheld, healthy, in_flight, limited }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::{AppInstances, Reachability};
    use crate::testing::{agent, app, instance, now, snapshot};

    fn policy(ratio_permille: u64, replacements: usize) -> Policy {
        Policy { min_healthy_permille: ratio_permille, replacements }
    }

    /// What was decided, by instance id.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        kill: Vec<String>,
        withheld: Vec<String>,
        healthy: usize,
        in_flight: usize,
        limited: bool,
    }

    /// Decides for 10 wanted of the app "web" with these instances (on a live agent).
    fn decided(instances: &[InstanceState], policy: Policy) -> Outcome {
        let web = web();
        let snap = snapshot(&[&web], vec![agent("a1").build()], instances.to_vec());
        let reach = Reachability::new(&snap, now());
        let sets =
            AppInstances::classify(snap.instances.values(), &web.version(), web.spec.unreachable_strategy, &reach);
        let slots = Slots::of(&sets, 10);
        let live: Vec<&InstanceState> = sets.current.iter().chain(&sets.old).copied().collect();
        let d = decide(10, &live, &slots, policy);
        let ids = |due: &[Due<'_>]| due.iter().map(|d| d.instance.id().to_string()).collect();
        Outcome {
            kill: ids(&d.kill),
            withheld: ids(&d.withheld),
            healthy: d.healthy,
            in_flight: d.in_flight,
            limited: d.limited,
        }
    }

    fn web() -> std::sync::Arc<baton_api::App> {
        app("web").instances(10).ports(1).tcp_check(3).build()
    }

    /// `healthy` passing, `failing` due (3 failures in a row, kill after 3).
    fn pool(healthy: u32, failing: u32) -> Vec<InstanceState> {
        let web = web();
        let mut pool: Vec<InstanceState> = (0..healthy).map(|n| instance(&web, "a1", n).passing().build()).collect();
        pool.extend((healthy..healthy + failing).map(|n| instance(&web, "a1", n).failing(3).build()));
        pool
    }

    /// Classifying counts what the stages after it would otherwise visit every instance for.
    #[test]
    fn classifying_counts_the_healthy_and_whether_any_is_due() {
        let web = web();
        let tally = |instances: Vec<InstanceState>| {
            let snap = snapshot(&[&web], vec![agent("a1").build()], instances);
            let reach = Reachability::new(&snap, now());
            let sets =
                AppInstances::classify(snap.instances.values(), &web.version(), web.spec.unreachable_strategy, &reach);
            assert_eq!(sets.observed.counts.available, sets.current.iter().filter(|i| i.is_healthy()).count());
            let due = sets.current.iter().chain(&sets.old).any(|i| i.health_kill_due().is_some());
            assert_eq!(sets.observed.kill_due, due);
            let observed = (sets.observed.counts.available, sets.observed.kill_due);
            // Once an instance has left `current`, it is counted again.
            let mut sets = sets;
            sets.current.remove(0);
            assert_eq!(sets.current_healthy(), sets.current.iter().filter(|i| i.is_healthy()).count());
            observed
        };
        assert_eq!(tally(pool(9, 0)), (9, false));
        assert_eq!(tally(pool(7, 2)), (7, true));
        let mut not_yet = pool(3, 0);
        not_yet.push(instance(&web, "a1", 3).failing(2).build());
        assert_eq!(tally(not_yet), (3, false), "2 failures of 3");
        let mut old = pool(3, 0);
        old.push(instance(&web, "a1", 3).version("0123456789").failing(3).build());
        old.push(instance(&web, "a1", 4).version("0123456789").passing().build());
        assert_eq!(tally(old), (3, true), "an old instance is due");
    }

    #[test]
    fn one_unhealthy_of_ten_is_killed() {
        let d = decided(&pool(9, 1), policy(500, 2));
        assert_eq!(d.kill, ["web-009"]);
        assert!(d.withheld.is_empty() && !d.limited);
    }

    #[test]
    fn ten_unhealthy_only_the_budget() {
        let d = decided(&pool(0, 10), policy(500, 2));
        assert_eq!((d.kill.len(), d.withheld.len(), d.limited), (2, 8, true));
        assert_eq!(d.kill, ["web-000", "web-001"], "the oldest first among equal failures");
    }

    #[test]
    fn a_slot_is_held_while_the_killed_instance_stops_ends_and_its_replacement_starts() {
        let web = web();
        let failing: Vec<InstanceState> = (2..10).map(|n| instance(&web, "a1", n).failing(3).build()).collect();
        let with = |extra: Vec<InstanceState>| failing.iter().cloned().chain(extra).collect::<Vec<_>>();
        let killed = |n| instance(&web, "a1", n).failing(3).killed_for_health();
        // The two killed are stopping, slowly.
        let d = decided(&with(vec![killed(0).build(), killed(1).build()]), policy(500, 2));
        assert_eq!((d.kill.len(), d.withheld.len(), d.in_flight), (0, 8, 2));
        // They ended; no replacement yet (backoff, or no room within maximumOverCapacity).
        let ended =
            || vec![killed(0).failed(1).killed_for_health().build(), killed(1).failed(1).killed_for_health().build()];
        let d = decided(&with(ended()), policy(500, 2));
        assert_eq!((d.kill.len(), d.in_flight), (0, 2), "an ended kill still holds its slot");
        // Their replacements started, one not probed yet, one failing.
        let mut starting = with(ended());
        starting.push(instance(&web, "a1", 10).running().replacing("web-000").build());
        starting.push(instance(&web, "a1", 11).failing(1).never_healthy().replacing("web-001").build());
        let d = decided(&starting, policy(500, 2));
        assert_eq!((d.kill.len(), d.in_flight), (0, 2), "replacements not yet healthy keep the slots");
        // The replacements proved healthy: the slots are free, the next batch goes.
        let mut healed = with(ended());
        healed.push(instance(&web, "a1", 10).passing().replacing("web-000").build());
        healed.push(instance(&web, "a1", 11).passing().replacing("web-001").build());
        let d = decided(&healed, policy(500, 2));
        assert_eq!((d.kill.len(), d.withheld.len(), d.in_flight), (2, 6, 0));
    }

    #[test]
    fn a_failing_replacement_is_killed_without_taking_another_slot() {
        let web = web();
        let mut instances: Vec<InstanceState> = (1..10).map(|n| instance(&web, "a1", n).failing(3).build()).collect();
        instances.push(instance(&web, "a1", 0).failed(5).killed_for_health().build());
        instances.push(instance(&web, "a1", 10).failing(3).never_healthy().replacing("web-000").build());
        let d = decided(&instances, policy(500, 1));
        assert_eq!(d.kill, ["web-010"], "the replacement is judged as any instance; the originals are spared");
        assert_eq!((d.withheld.len(), d.in_flight), (9, 1));
    }

    #[test]
    fn an_instance_never_healthy_that_replaces_nothing_holds_no_slot() {
        // One instance wanted, never healthy: Marathon would replace it, and so does Baton.
        let web = app("web").instances(1).ports(1).tcp_check(3).build();
        let lonely = vec![instance(&web, "a1", 0).failing(3).never_healthy().build()];
        let snap = snapshot(&[&web], vec![agent("a1").build()], lonely);
        let reach = Reachability::new(&snap, now());
        let sets =
            AppInstances::classify(snap.instances.values(), &web.version(), web.spec.unreachable_strategy, &reach);
        let slots = Slots::of(&sets, 1);
        let d = decide(1, &sets.current, &slots, Policy::of(&web.spec, 1));
        assert_eq!((d.kill.len(), d.in_flight, d.limited), (1, 0, true));
    }

    #[test]
    fn when_the_cause_is_fixed_nothing_is_killed() {
        let web = web();
        let pool: Vec<InstanceState> = (0..10).map(|n| instance(&web, "a1", n).recovered(3).build()).collect();
        let d = decided(&pool, policy(500, 2));
        assert!(d.kill.is_empty() && d.withheld.is_empty());
    }

    #[test]
    fn at_the_ratio_every_due_instance_is_killed() {
        let pool = pool(5, 5);
        let d = decided(&pool, policy(500, 1));
        assert_eq!((d.kill.len(), d.limited), (5, false), "5 of 10 healthy is not fewer than 0.5");
        let d = decided(&pool, policy(600, 1));
        assert_eq!((d.kill.len(), d.withheld.len(), d.limited), (1, 4, true));
    }

    #[test]
    fn instances_that_just_recovered_do_not_count_yet() {
        let web = web();
        let mut pool: Vec<InstanceState> = (0..3).map(|n| instance(&web, "a1", n).recovered(1).build()).collect();
        pool.push(instance(&web, "a1", 3).failing(3).never_healthy().build());
        let d = decided(&pool, policy(300, 0));
        assert_eq!((d.healthy, d.kill.len(), d.withheld.len()), (0, 0, 1), "1 pass in a row is not steady");
        let mut steady: Vec<InstanceState> = (0..3).map(|n| instance(&web, "a1", n).recovered(3).build()).collect();
        steady.push(instance(&web, "a1", 3).failing(3).never_healthy().build());
        let d = decided(&steady, policy(300, 0));
        assert_eq!((d.healthy, d.kill.len()), (3, 1), "3 passes in a row are");
    }

    #[test]
    fn marathons_behaviour_with_a_ratio_of_zero() {
        assert_eq!(decided(&pool(0, 10), policy(0, 0)).kill.len(), 10);
    }

    #[test]
    fn a_budget_of_zero_kills_nothing_below_the_ratio() {
        let d = decided(&pool(2, 8), policy(500, 0));
        assert_eq!((d.kill.len(), d.withheld.len()), (0, 8));
    }

    #[test]
    fn failures_below_the_limit_are_not_due() {
        let web = web();
        let pool = vec![instance(&web, "a1", 0).failing(2).build(), instance(&web, "a1", 1).failing(2).build()];
        let d = decided(&pool, policy(0, 0));
        assert!(d.kill.is_empty() && d.withheld.is_empty());
    }
}
