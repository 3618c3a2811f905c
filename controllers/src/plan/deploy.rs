//! The arithmetic of one tick of an app: how many to launch and how many to stop, from
//! counts alone. Nothing here remembers the previous tick: a new leader computes the same.
//!
//! A new version replaces the old one as Marathon does it, with `n` instances wanted:
//! - `min_healthy = ceil(n × minimumHealthCapacity)`: old instances stop only while the
//!   instances that are healthy or not yet judged stay at least that many. Old ones that
//!   carry nothing go first and at once: not running yet, or failing their health checks
//!   without ever having been healthy. Old ones whose health is not known yet (running, no
//!   probe result, or inside their grace period without a failure) are neither healthy nor
//!   failed — they may be minutes into a warm-up — so they stop within the same budget as
//!   healthy ones, before them. Old ones that were healthy and now fail their health checks
//!   stop once the healthy count reaches the minimum without them — until then they may
//!   recover, and only the health policy kills them;
//! - `max_total = floor(n × (1 + maximumOverCapacity))`: new ones launch only while every
//!   instance whose process may exist (old ones, those being stopped, unreachable ones)
//!   stays within that — so the process count never exceeds it, grace periods included;
//! - at most `maxConcurrentStarts` instances of the current version start (launched, not
//!   yet healthy) at once;
//! - when the minimum equals the maximum during a deployment, one instance may go over
//!   (Marathon's rule), or no step would be possible.
//!
//! Instances of the current version on agents in maintenance (**leaving**, DESIGN.md §9) move
//! replacement first: they hold no place, so a replacement launches elsewhere for each (within
//! `maxConcurrentStarts`, not counted against `maximumOverCapacity`: the surge a move needs);
//! one that carries nothing yet (never healthy) stops at once; a healthy one stops only once
//! the healthy instances that stay number `n` without it — its replacement is healthy and
//! ready; one that was healthy and now fails may recover, so it stops only once the healthy
//! ones are `n` without it (until then only the health policy kills it).
//! Counted over the app, not per agent, this holds however many agents drain at once.
//!
//! Fractions are in thousandths, so `ceil(10 × 0.1)` is 1, as written, not 2.

/// The strategy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    pub minimum_health_permille: u64,
    pub maximum_over_permille: u64,
    pub max_concurrent_starts: Option<usize>,
}

impl Default for Strategy {
    /// Marathon's defaults: 1 and 1, no start limit.
    fn default() -> Self {
        Self { minimum_health_permille: 1000, maximum_over_permille: 1000, max_concurrent_starts: None }
    }
}

impl Strategy {
    pub fn of(spec: &baton_api::AppSpec) -> Self {
        let s = spec.upgrade_strategy;
        Self {
            minimum_health_permille: s.minimum_health_permille(),
            maximum_over_permille: s.maximum_over_permille(),
            max_concurrent_starts: s.max_concurrent_starts.map(|n| n.max(1) as usize),
        }
    }

    /// `ceil(n × minimumHealthCapacity)`.
    pub fn min_healthy(&self, wanted: usize) -> usize {
        (wanted as u64 * self.minimum_health_permille).div_ceil(1000) as usize
    }

    /// `floor(n × (1 + maximumOverCapacity))`.
    pub fn max_total(&self, wanted: usize) -> usize {
        (wanted as u64 * (1000 + self.maximum_over_permille) / 1000) as usize
    }
}

/// Counts the step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// `spec.instances`.
    pub wanted: usize,
    /// Current-version instances on live agents (starting or healthy).
    pub current: usize,
    /// Of those, the healthy ones.
    pub current_healthy: usize,
    /// Instances whose agent stopped reporting, not yet inactive: each holds its place,
    /// and its process may still run.
    pub unreachable: usize,
    pub old_healthy: usize,
    /// Old-version instances running whose health is not known yet: they count as capacity.
    pub old_unknown: usize,
    /// Old-version instances that carry nothing: not running yet, or failing their health
    /// checks without ever having been healthy.
    pub old_unhealthy: usize,
    /// Old-version instances that were healthy and now fail their health checks.
    pub old_failing: usize,
    /// Instances already being stopped: their processes still run.
    pub stopping: usize,
    /// Current-version instances on agents in maintenance that are healthy (not in `current`).
    pub leaving_healthy: usize,
    /// Current-version instances on agents in maintenance that were healthy and now fail
    /// their health checks: they may recover, so they wait as healthy ones do.
    pub leaving_failing: usize,
    /// Current-version instances on agents in maintenance never healthy yet: they carry
    /// nothing.
    pub leaving_other: usize,
}

/// What one tick may do for an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Old-version instances that carry nothing to stop.
    pub stop_old_unhealthy: usize,
    /// Old-version instances whose health is not known yet to stop.
    pub stop_old_unknown: usize,
    /// Old-version instances that fail their health checks to stop.
    pub stop_old_failing: usize,
    /// Healthy old-version instances to stop.
    pub stop_old_healthy: usize,
    /// Current-version instances to launch.
    pub launch: usize,
    /// Places (unreachable or current instances) beyond what the spec asks for.
    pub excess: usize,
    /// Leaving instances that carry nothing to stop.
    pub stop_leaving_other: usize,
    /// Healthy leaving instances to stop: their replacements are healthy.
    pub stop_leaving_healthy: usize,
    /// Failing leaving instances to stop: the healthy ones that stay are enough without them.
    pub stop_leaving_failing: usize,
}

/// One bounded step.
///
/// Worked example, defaults (`minimumHealthCapacity` 1, `maximumOverCapacity` 1), n = 3,
/// three healthy old instances, none new:
/// - min_healthy = ceil(3 × 1) = 3; max_total = floor(3 × 2) = 6.
/// - Tick 1: healthy = 3, so no old one may stop (3 − 1 < 3); launch min(3 − 0, 6 − 3) = 3.
/// - Tick 2 (the three new ones healthy): healthy = 6; stop 6 − 3 = 3 old ones; launch 0.
///
/// Without old instances this is plain scaling: launch up to `wanted` (within the start
/// limit), report the excess.
pub fn step(c: Counts, s: Strategy) -> Step {
    let min_healthy = s.min_healthy(c.wanted);
    // A healthy leaving instance goes once the healthy ones that stay are `wanted` without it.
    let stop_leaving_healthy = c.leaving_healthy.min((c.current_healthy + c.leaving_healthy).saturating_sub(c.wanted));
    let healthy = c.current_healthy + c.old_healthy + (c.leaving_healthy - stop_leaving_healthy);
    let stop_leaving_failing =
        if c.current_healthy + c.leaving_healthy - stop_leaving_healthy >= c.wanted { c.leaving_failing } else { 0 };
    // What may be stopped of the old instances that serve or may soon: those not judged yet
    // first (they serve nothing yet), then healthy ones. New instances not judged yet do not
    // count: old ones make way only for new ones that proved healthy.
    let may_stop = (healthy + c.old_unknown).saturating_sub(min_healthy);
    let stop_old_unknown = c.old_unknown.min(may_stop);
    let stop_old_healthy = c.old_healthy.min(may_stop - stop_old_unknown);
    let stop_old_failing = if healthy >= min_healthy { c.old_failing } else { 0 };
    let places = c.current + c.unreachable;
    let old = c.old_healthy + c.old_unknown + c.old_unhealthy + c.old_failing;
    let processes = places + old + c.stopping;
    let mut max_total = s.max_total(c.wanted);
    // Marathon's rule: when the healthy minimum equals the maximum (n = 1 with 1 and 0.2,
    // or 1 and 0 for any n) and the maximum is reached, no old instance may stop before a
    // new one is healthy and no new one may start: allow one instance over.
    if min_healthy == max_total && max_total <= processes && old > 0 {
        max_total += 1;
    }
    let mut launch = c.wanted.saturating_sub(places).min(max_total.saturating_sub(processes));
    if let Some(max_starts) = s.max_concurrent_starts {
        // Failing instances that stay on agents in maintenance count as starting, as failing
        // current ones do.
        let starting = c.current - c.current_healthy + (c.leaving_failing - stop_leaving_failing);
        launch = launch.min(max_starts.saturating_sub(starting));
    }
    Step {
        stop_old_unhealthy: c.old_unhealthy,
        stop_old_unknown,
        stop_old_failing,
        stop_old_healthy,
        launch,
        excess: places.saturating_sub(c.wanted),
        stop_leaving_other: c.leaving_other,
        stop_leaving_healthy,
        stop_leaving_failing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(wanted: usize, current: usize, current_healthy: usize, old_healthy: usize) -> Counts {
        Counts { wanted, current, current_healthy, old_healthy, ..Counts::default() }
    }

    fn strategy(health: u64, over: u64) -> Strategy {
        Strategy { minimum_health_permille: health, maximum_over_permille: over, max_concurrent_starts: None }
    }

    #[test]
    fn scaling_without_a_deployment() {
        let d = Strategy::default();
        assert_eq!(step(counts(5, 3, 3, 0), d), Step { launch: 2, ..Step::default() });
        assert_eq!(step(counts(2, 5, 5, 0), d), Step { excess: 3, ..Step::default() });
        assert_eq!(step(counts(3, 3, 1, 0), d), Step::default(), "starting instances count as placed");
        let unreachable = Counts { unreachable: 1, ..counts(3, 2, 2, 0) };
        assert_eq!(step(unreachable, d), Step::default(), "an unreachable instance holds its place");
        assert_eq!(
            step(counts(3, 4, 4, 0), d),
            Step { excess: 1, ..Step::default() },
            "a returning agent's instance is one too many"
        );
        assert_eq!(step(counts(0, 2, 2, 0), d), Step { excess: 2, ..Step::default() });
    }

    #[test]
    fn the_worked_example() {
        let d = Strategy::default();
        assert_eq!(step(counts(3, 0, 0, 3), d), Step { launch: 3, ..Step::default() });
        assert_eq!(step(counts(3, 3, 0, 3), d), Step::default(), "new ones started, not healthy yet");
        assert_eq!(step(counts(3, 3, 1, 3), d), Step { stop_old_healthy: 1, ..Step::default() });
        assert_eq!(step(counts(3, 3, 3, 3), d), Step { stop_old_healthy: 3, ..Step::default() });
    }

    /// The first step from n = 10 healthy old instances, for each strategy: (minimum
    /// health, maximum over) in thousandths → (old stopped, new launched). Old instances
    /// being stopped still count in the total, so where all of them stop, the new ones
    /// start on a later tick, once they are gone.
    #[test]
    fn first_steps_for_n_10() {
        let cases = [
            ((0, 0), (10, 0)),
            ((1000, 0), (0, 1)),
            ((0, 200), (10, 2)),
            ((0, 1000), (10, 10)),
            ((500, 0), (5, 0)),
            ((500, 200), (5, 2)),
            ((500, 1000), (5, 10)),
            ((1000, 200), (0, 2)),
            ((1000, 1000), (0, 10)),
        ];
        for ((health, over), (stopped, launched)) in cases {
            let s = step(counts(10, 0, 0, 10), strategy(health, over));
            assert_eq!(
                (s.stop_old_healthy, s.launch),
                (stopped, launched),
                "minimumHealthCapacity {health}‰, maximumOverCapacity {over}‰"
            );
        }
    }

    /// The next tick: the old instances stopped last time are gone.
    #[test]
    fn second_steps_for_n_10() {
        // (0, 0): all 10 old ones gone; launch 10.
        assert_eq!(step(counts(10, 0, 0, 0), strategy(0, 0)).launch, 10);
        // (0.5, 0): 5 old left, healthy; launch 5 to reach max_total 10.
        assert_eq!(step(counts(10, 0, 0, 5), strategy(500, 0)).launch, 5);
        // (0.5, 0.2): 5 old left and 2 new starting; room for 5 more within 12.
        assert_eq!(step(counts(10, 2, 0, 5), strategy(500, 200)).launch, 5);
        // (1, 0.2): 2 new healthy let 2 old go; no room for more until they are gone.
        let s = step(counts(10, 2, 2, 10), strategy(1000, 200));
        assert_eq!((s.stop_old_healthy, s.launch), (2, 0));
        assert_eq!(step(Counts { stopping: 0, ..counts(10, 2, 2, 8) }, strategy(1000, 200)).launch, 2);
    }

    #[test]
    fn one_over_when_the_minimum_equals_the_maximum() {
        // n = 1, 1 and 0.2: floor(1.2) = 1 = ceil(1): one new instance may start anyway.
        let s = strategy(1000, 200);
        assert_eq!(step(counts(1, 0, 0, 1), s), Step { launch: 1, ..Step::default() });
        assert_eq!(step(counts(1, 1, 1, 1), s), Step { stop_old_healthy: 1, ..Step::default() });
        // Without a deployment nothing goes over.
        assert_eq!(step(counts(1, 1, 1, 0), s), Step::default());
    }

    #[test]
    fn fractions_round_as_written() {
        let s = strategy(100, 100);
        assert_eq!((s.min_healthy(10), s.max_total(10)), (1, 11), "ceil(10 × 0.1) = 1, floor(10 × 1.1) = 11");
        assert_eq!(strategy(500, 0).min_healthy(3), 2, "ceil(1.5) = 2");
    }

    #[test]
    fn unhealthy_old_instances_go_first_and_free() {
        let c = Counts { old_unhealthy: 2, ..counts(3, 0, 0, 1) };
        assert_eq!(step(c, Strategy::default()), Step { stop_old_unhealthy: 2, launch: 3, ..Step::default() });
    }

    #[test]
    fn failing_old_instances_stop_only_once_the_new_ones_carry_the_minimum() {
        // A shared dependency broke mid-deployment: the old instances that served fail.
        let c = Counts { old_failing: 3, ..counts(3, 3, 0, 0) };
        assert_eq!(step(c, Strategy::default()), Step::default(), "kept: they may recover");
        let c = Counts { old_failing: 3, ..counts(3, 3, 3, 0) };
        assert_eq!(step(c, Strategy::default()), Step { stop_old_failing: 3, ..Step::default() });
    }

    #[test]
    fn max_concurrent_starts_bounds_launches() {
        let s = Strategy { max_concurrent_starts: Some(2), ..Strategy::default() };
        assert_eq!(step(counts(10, 0, 0, 0), s).launch, 2);
        assert_eq!(step(counts(10, 2, 1, 0), s).launch, 1, "one still starting");
        assert_eq!(step(counts(10, 2, 2, 0), s).launch, 2);
    }

    #[test]
    fn old_instances_not_judged_yet_stop_within_the_budget_before_healthy_ones() {
        // A rollout started right after the previous one: the 12 instances it launched run,
        // none probed yet. With 0.75, 9 must stay: 3 go, not 12.
        let c = Counts { old_unknown: 12, ..counts(12, 0, 0, 0) };
        let s = step(c, strategy(750, 1000));
        assert_eq!((s.stop_old_unknown, s.stop_old_healthy, s.launch), (3, 0, 12));
        // Mixed: unknown ones go first, healthy ones only beyond them.
        let c = Counts { old_unknown: 2, ..counts(4, 0, 0, 2) };
        let s = step(c, strategy(500, 0));
        assert_eq!((s.stop_old_unknown, s.stop_old_healthy), (2, 0));
        // New instances not judged yet free nothing.
        let c = Counts { old_unknown: 3, ..counts(3, 3, 0, 0) };
        assert_eq!(step(c, Strategy::default()), Step::default());
    }

    #[test]
    fn leaving_instances_are_replaced_first_and_stop_once_the_replacement_is_healthy() {
        let d = Strategy { max_concurrent_starts: Some(1), ..strategy(1000, 0) };
        // Three healthy, one on an agent in maintenance: one replacement, nothing stops.
        let c = Counts { leaving_healthy: 1, ..counts(3, 2, 2, 0) };
        assert_eq!(step(c, d), Step { launch: 1, ..Step::default() }, "surge beyond maximumOverCapacity 0");
        // The replacement starts: nothing more.
        let c = Counts { leaving_healthy: 1, ..counts(3, 3, 2, 0) };
        assert_eq!(step(c, d), Step::default());
        // It is healthy: the leaving one stops.
        let c = Counts { leaving_healthy: 1, ..counts(3, 3, 3, 0) };
        assert_eq!(step(c, d), Step { stop_leaving_healthy: 1, ..Step::default() });
        // Two agents drain at once: still one start at a time, none stops before its replacement.
        let c = Counts { leaving_healthy: 2, ..counts(3, 1, 1, 0) };
        assert_eq!(step(c, d), Step { launch: 1, ..Step::default() });
        let c = Counts { leaving_healthy: 2, ..counts(3, 2, 2, 0) };
        assert_eq!(step(c, d), Step { launch: 1, stop_leaving_healthy: 1, ..Step::default() });
        // One instance in all: surge first.
        let c = Counts { leaving_healthy: 1, ..counts(1, 0, 0, 0) };
        assert_eq!(step(c, d), Step { launch: 1, ..Step::default() });
        // Not healthy yet: it carries nothing and goes at once, replaced.
        let c = Counts { leaving_other: 1, ..counts(2, 1, 1, 0) };
        assert_eq!(step(c, d), Step { launch: 1, stop_leaving_other: 1, ..Step::default() });
        // Scaled down meanwhile: leaving ones go first.
        let c = Counts { leaving_healthy: 2, ..counts(2, 2, 2, 0) };
        assert_eq!(step(c, d), Step { stop_leaving_healthy: 2, ..Step::default() });
    }

    #[test]
    fn scaling_to_zero_during_a_deployment_stops_everything() {
        assert_eq!(
            step(counts(0, 1, 1, 2), Strategy::default()),
            Step { stop_old_healthy: 2, excess: 1, ..Step::default() }
        );
    }
}
