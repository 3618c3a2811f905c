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
//! - below that, instances are killed only while fewer than `maxConcurrentReplacements` are
//!   being replaced: stopping after a health kill, or started and never healthy yet
//!   (whatever started them — a replacement, a scale-up or a deployment);
//! - the rest are withheld, with the reason. When the cause goes away they pass again and
//!   are never killed; when it does not, the pool is replaced a budget at a time, as
//!   replacements become healthy.
//!
//! Everything is counted from the snapshot: a new leader decides the same. Instances on
//! agents that stopped reporting are not looked at (their last results are stale).

use std::cmp::Reverse;

use baton_api::AppSpec;

use crate::snapshot::InstanceState;

use super::StopReason;

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
    /// Instances being replaced (the budget used).
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
/// agents that report) and those being stopped.
pub fn decide<'s>(
    wanted: usize,
    live: &[&'s InstanceState],
    stopping: &[&'s InstanceState],
    policy: Policy,
) -> Decision<'s> {
    let mut due: Vec<Due<'s>> = live
        .iter()
        .filter_map(|&instance| instance.health_kill_due().map(|(failures, output)| Due { instance, failures, output }))
        .collect();
    if due.is_empty() {
        return Decision::default();
    }
    // The longest failing first, then the oldest.
    due.sort_by(|a, b| {
        (Reverse(a.failures), a.instance.record.created_at, a.instance.id()).cmp(&(
            Reverse(b.failures),
            b.instance.record.created_at,
            b.instance.id(),
        ))
    });
    let healthy = live.iter().filter(|i| i.steadily_healthy()).count();
    let limited = (healthy as u64) * 1000 < (wanted as u64) * policy.min_healthy_permille;
    let killed_before =
        stopping.iter().filter(|i| i.record.stop_reason.as_deref() == Some(StopReason::Unhealthy.as_str())).count();
    let in_flight = killed_before + live.iter().filter(|i| !i.ever_healthy()).count();
    let allowed = if limited { policy.replacements.saturating_sub(in_flight) } else { due.len() };
    let withheld = due.split_off(allowed.min(due.len()));
    Decision { kill: due, withheld, healthy, in_flight, limited }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app, instance};

    fn policy(ratio_permille: u64, replacements: usize) -> Policy {
        Policy { min_healthy_permille: ratio_permille, replacements }
    }

    fn ids(due: &[Due<'_>]) -> Vec<String> {
        due.iter().map(|d| d.instance.id().to_string()).collect()
    }

    /// `healthy` passing, `failing` due (3 failures in a row, kill after 3).
    fn pool(healthy: u32, failing: u32) -> Vec<InstanceState> {
        let web = app("web").instances(10).ports(1).tcp_check(3).build();
        let mut pool: Vec<InstanceState> = (0..healthy).map(|n| instance(&web, "a1", n).passing().build()).collect();
        pool.extend((healthy..healthy + failing).map(|n| instance(&web, "a1", n).failing(3).build()));
        pool
    }

    fn refs(pool: &[InstanceState]) -> Vec<&InstanceState> {
        pool.iter().collect()
    }

    #[test]
    fn one_unhealthy_of_ten_is_killed() {
        let pool = pool(9, 1);
        let d = decide(10, &refs(&pool), &[], policy(500, 2));
        assert_eq!(ids(&d.kill), ["web-009"]);
        assert!(d.withheld.is_empty() && !d.limited);
    }

    #[test]
    fn ten_unhealthy_only_the_budget() {
        let pool = pool(0, 10);
        let d = decide(10, &refs(&pool), &[], policy(500, 2));
        assert_eq!(d.kill.len(), 2);
        assert_eq!(d.withheld.len(), 8);
        assert!(d.limited);
        assert_eq!(ids(&d.kill), ["web-000", "web-001"], "the oldest first among equal failures");
    }

    #[test]
    fn the_budget_is_used_by_kills_in_progress_and_replacements_not_yet_healthy() {
        let web = app("web").instances(10).ports(1).tcp_check(3).build();
        let failing: Vec<InstanceState> = (0..8).map(|n| instance(&web, "a1", n).failing(3).build()).collect();
        // Tick after the kills: the two killed are being stopped.
        let stopping: Vec<InstanceState> =
            (8..10).map(|n| instance(&web, "a1", n).failing(3).stopped("Unhealthy").build()).collect();
        let d = decide(10, &refs(&failing), &refs(&stopping), policy(500, 2));
        assert_eq!((d.kill.len(), d.withheld.len(), d.in_flight), (0, 8, 2));
        // Their replacements started, not healthy yet (or failing themselves).
        let mut pool = failing.clone();
        pool.push(instance(&web, "a1", 10).running().build());
        pool.push(instance(&web, "a1", 11).failing(5).never_healthy().build());
        let d = decide(10, &refs(&pool), &[], policy(500, 2));
        assert_eq!((d.kill.len(), d.in_flight), (0, 2), "replacements not yet healthy use the budget");
        // The replacements became healthy: the next batch goes.
        let mut pool = failing;
        pool.push(instance(&web, "a1", 10).passing().build());
        pool.push(instance(&web, "a1", 11).passing().build());
        let d = decide(10, &refs(&pool), &[], policy(500, 2));
        assert_eq!((d.kill.len(), d.withheld.len(), d.in_flight), (2, 6, 0));
    }

    #[test]
    fn when_the_cause_is_fixed_nothing_is_killed() {
        let web = app("web").instances(10).ports(1).tcp_check(3).build();
        let pool: Vec<InstanceState> = (0..10).map(|n| instance(&web, "a1", n).recovered(3).build()).collect();
        let d = decide(10, &refs(&pool), &[], policy(500, 2));
        assert!(d.kill.is_empty() && d.withheld.is_empty());
    }

    #[test]
    fn at_the_ratio_every_due_instance_is_killed() {
        let pool = pool(5, 5);
        let d = decide(10, &refs(&pool), &[], policy(500, 1));
        assert_eq!((d.kill.len(), d.limited), (5, false), "5 of 10 healthy is not fewer than 0.5");
        let d = decide(10, &refs(&pool), &[], policy(600, 1));
        assert_eq!((d.kill.len(), d.withheld.len(), d.limited), (1, 4, true));
    }

    #[test]
    fn instances_that_just_recovered_do_not_count_yet() {
        let web = app("web").instances(4).ports(1).tcp_check(3).build();
        let mut pool: Vec<InstanceState> = (0..3).map(|n| instance(&web, "a1", n).recovered(1).build()).collect();
        pool.push(instance(&web, "a1", 3).failing(3).never_healthy().build());
        let d = decide(4, &refs(&pool), &[], policy(500, 0));
        assert_eq!((d.healthy, d.kill.len(), d.withheld.len()), (0, 0, 1), "1 pass in a row is not steady");
        let mut steady: Vec<InstanceState> = (0..3).map(|n| instance(&web, "a1", n).recovered(3).build()).collect();
        steady.push(instance(&web, "a1", 3).failing(3).never_healthy().build());
        let d = decide(4, &refs(&steady), &[], policy(500, 0));
        assert_eq!((d.healthy, d.kill.len()), (3, 1), "3 passes in a row are");
    }

    #[test]
    fn marathons_behaviour_with_a_ratio_of_zero() {
        let pool = pool(0, 10);
        assert_eq!(decide(10, &refs(&pool), &[], policy(0, 0)).kill.len(), 10);
    }

    #[test]
    fn a_budget_of_zero_kills_nothing_below_the_ratio() {
        let pool = pool(2, 8);
        let d = decide(10, &refs(&pool), &[], policy(500, 0));
        assert_eq!((d.kill.len(), d.withheld.len()), (0, 8));
    }

    #[test]
    fn failures_below_the_limit_are_not_due() {
        let web = app("web").instances(2).ports(1).tcp_check(3).build();
        let pool = vec![instance(&web, "a1", 0).failing(2).build(), instance(&web, "a1", 1).failing(2).build()];
        let d = decide(2, &refs(&pool), &[], policy(0, 0));
        assert!(d.kill.is_empty() && d.withheld.is_empty());
    }
}
