//! `hack/bench.sh placement`: the planner places 100,000 instances of mixed apps on 10,000
//! agents of mixed sizes, in one plan, and the time it takes is reported as placements per
//! second.
//!
//! The fleet is described in `fleet/mod.rs`.

use std::time::Instant;

use baton_controllers::plan::{PlanContext, plan};
use baton_controllers::snapshot::Snapshot;

mod fleet;

fn main() {
    let snapshot = Snapshot { apps: fleet::apps(), agents: fleet::agents(), ..Snapshot::default() };
    let wanted: usize = snapshot.apps.iter().map(|a| a.spec.instances as usize).sum();
    let ctx = PlanContext::at(jiff::Timestamp::UNIX_EPOCH, 42);
    // One warm-up run, then the measured ones.
    plan(&snapshot, &ctx);
    let runs = 3;
    let mut best = f64::MAX;
    let mut decided = plan(&snapshot, &ctx);
    for _ in 0..runs {
        let started = Instant::now();
        decided = plan(&snapshot, &ctx);
        best = best.min(started.elapsed().as_secs_f64());
    }
    let placed = decided.launches.len();
    println!("agents=10000 apps=2000 instances_wanted={wanted} placed={placed} best_of={runs} seconds={best:.3}");
    for update in decided.statuses.iter().filter(|u| u.status.pending.is_some()) {
        let pending = update.status.pending.as_ref().expect("filtered");
        let reasons: Vec<String> =
            pending.rejections.iter().map(|r| format!("{} agents: {}", r.agents, r.reason)).collect();
        println!("unplaced app={} instances={} why={}", update.name, pending.instances, reasons.join("; "));
    }
    println!("placements_per_second {:.0}", placed as f64 / best);
}
