//! The arithmetic of one tick of an app: how many to launch and how many to stop, from
//! counts alone. Nothing here remembers the previous tick: a new leader computes the same.
//!
//! The rolling upgrade follows Marathon's defaults (`minimumHealthCapacity: 1`,
//! `maximumOverCapacity: 1`): old instances go only while the running count stays at the
//! minimum, and new ones are launched while the total stays within the maximum.

/// What one tick may do for an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Old-version instances that do not run (yet) to stop: they carry no capacity.
    pub stop_old_not_running: usize,
    /// Running old-version instances to stop.
    pub stop_old_running: usize,
    /// Current-version instances to launch.
    pub launch: usize,
    /// Places (cooling, unreachable or current instances) beyond what the spec asks for.
    pub excess_current: usize,
}

/// Counts the step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// `spec.instances`.
    pub wanted: usize,
    /// Current-version instances not over (running or starting).
    pub current: usize,
    /// Current-version instances that run.
    pub current_running: usize,
    /// Places held by instances that ended and await their replacement.
    pub cooling: usize,
    /// Places held by instances whose agent stopped reporting (not yet inactive).
    pub unreachable: usize,
    pub old_running: usize,
    pub old_not_running: usize,
}

/// minimumHealthCapacity: the fraction of `wanted` that must keep running during an upgrade.
const MINIMUM_HEALTH_CAPACITY_PERCENT: usize = 100;
/// maximumOverCapacity: how far above `wanted` the total may go during an upgrade.
const MAXIMUM_OVER_CAPACITY_PERCENT: usize = 100;

/// One bounded step.
///
/// Worked example, n = 3, three old instances running, none new:
/// - min_running = ceil(3 × 100%) = 3; max_total = floor(3 × (100% + 100%)) = 6.
/// - Tick 1: running = 3, so no old one may stop (3 − 1 < 3); launch min(3 − 0, 6 − 3) = 3.
/// - Tick 2 (the three new ones run): running = 6; stop 6 − 3 = 3 old ones.
///
/// Without old instances this is plain scaling: launch up to `wanted`, report the excess.
pub fn step(c: Counts) -> Step {
    let min_running = (c.wanted * MINIMUM_HEALTH_CAPACITY_PERCENT).div_ceil(100);
    let max_total = c.wanted * (100 + MAXIMUM_OVER_CAPACITY_PERCENT) / 100;
    let running = c.current_running + c.old_running;
    let stop_old_running = c.old_running.min(running.saturating_sub(min_running));
    let old_left = c.old_running - stop_old_running;
    let occupied = c.current + c.cooling + c.unreachable;
    let launch = c.wanted.saturating_sub(occupied).min(max_total.saturating_sub(occupied + old_left));
    Step {
        stop_old_not_running: c.old_not_running,
        stop_old_running,
        launch,
        excess_current: occupied.saturating_sub(c.wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(wanted: usize, current: usize, current_running: usize, old_running: usize) -> Counts {
        Counts { wanted, current, current_running, old_running, ..Counts::default() }
    }

    #[test]
    fn scaling_without_a_deployment() {
        assert_eq!(step(counts(5, 3, 3, 0)), Step { launch: 2, ..Step::default() });
        assert_eq!(step(counts(2, 5, 5, 0)), Step { excess_current: 3, ..Step::default() });
        assert_eq!(step(counts(3, 3, 1, 0)), Step::default(), "starting instances count as placed");
        let cooling = Counts { cooling: 1, ..counts(3, 2, 2, 0) };
        assert_eq!(step(cooling), Step::default(), "a cooling place is not filled twice");
        let unreachable = Counts { unreachable: 1, ..counts(3, 2, 2, 0) };
        assert_eq!(step(unreachable), Step::default(), "an unreachable instance holds its place");
        let back = Counts { unreachable: 0, ..counts(3, 4, 4, 0) };
        assert_eq!(
            step(back),
            Step { excess_current: 1, ..Step::default() },
            "a returning agent's instance is one too many"
        );
        assert_eq!(step(counts(0, 2, 2, 0)), Step { excess_current: 2, ..Step::default() });
    }

    #[test]
    fn the_worked_example() {
        // Tick 1: three old running, no new.
        assert_eq!(step(counts(3, 0, 0, 3)), Step { launch: 3, ..Step::default() });
        // Tick 2: new ones launched, not running yet: nothing more to do.
        assert_eq!(step(counts(3, 3, 0, 3)), Step::default());
        // One new runs: one old may go.
        assert_eq!(step(counts(3, 3, 1, 3)), Step { stop_old_running: 1, ..Step::default() });
        // All new run: every old goes.
        assert_eq!(step(counts(3, 3, 3, 3)), Step { stop_old_running: 3, ..Step::default() });
    }

    #[test]
    fn old_instances_that_do_not_run_go_first_and_free() {
        let c = Counts { old_not_running: 2, ..counts(3, 0, 0, 1) };
        assert_eq!(step(c), Step { stop_old_not_running: 2, launch: 3, ..Step::default() });
    }

    #[test]
    fn scaling_to_zero_during_a_deployment_stops_everything() {
        assert_eq!(step(counts(0, 1, 1, 2)), Step { stop_old_running: 2, excess_current: 1, ..Step::default() });
    }
}
