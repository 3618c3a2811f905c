//! `hack/bench.sh plan`: what a tick costs the planner at the scale Baton is built for
//! (DESIGN.md §8): 100,000 running instances of 2,000 apps on 10,000 agents (the fleet of
//! `fleet/mod.rs`).
//!
//! Prints: the placement throughput of the empty cluster; the plan time of a steady tick
//! (everything runs, healthy, statuses current: nothing to do), p50 and p99 over the ticks, on
//! one thread (the controller's default) and on as many as the machine has cores;
//! the plan time after one app's spec changed (a rollout starts); and the memory the
//! snapshot's instances take, per instance.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use baton_api::{Goal, Phase, StatusRecord};
use baton_controllers::plan::{Plan, PlanContext, plan};
use baton_controllers::snapshot::{InstanceState, Snapshot};

mod fleet;

/// Counts the bytes allocated and not yet freed, allocating with jemalloc as the `baton`
/// binary does (glibc's malloc made allocation ~23 % of a steady tick's instructions here,
/// which the controller does not pay).
struct Counting;

static INNER: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` reached since it was last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { INNER.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Applies what a plan decided, as the executor and the agents would: launches run, healthy;
/// statuses and finalizers are written.
fn apply(snapshot: &mut Snapshot, plan: &Plan, now: jiff::Timestamp, revision: &mut i64) {
    snapshot.held = None;
    for launch in &plan.launches {
        *revision += 1;
        let mut status = StatusRecord::new(Phase::Running);
        status.started_at = Some(now);
        status.healthy_at = Some(now);
        status.pid = Some(1000);
        let record = Arc::new(launch.record.clone());
        let state = InstanceState::new(record, *revision, Some(Arc::new(status)));
        snapshot.instances_mut().insert(launch.record.id.clone(), state);
    }
    for stop in &plan.stops {
        if let Some(state) = snapshot.instances_mut().get_mut(&stop.record.id) {
            let mut record = stop.record.clone();
            record.goal = Goal::Stopped;
            state.set_record(Arc::new(record));
        }
    }
    // Each write gives the App a new resourceVersion, as the API server does.
    for update in &plan.statuses {
        if let Some(app) = snapshot.apps.iter_mut().find(|a| a.metadata.name.as_deref() == Some(&update.name)) {
            *revision += 1;
            let app = Arc::make_mut(app);
            app.status = Some(update.status.clone());
            app.metadata.resource_version = Some(revision.to_string());
        }
    }
    for change in &plan.finalizers {
        if let Some(app) = snapshot.apps.iter_mut().find(|a| a.metadata.name.as_deref() == Some(&change.name)) {
            *revision += 1;
            let app = Arc::make_mut(app);
            app.metadata.finalizers = Some(change.finalizers.clone());
            app.metadata.resource_version = Some(revision.to_string());
        }
    }
    // The statuses found up to date, kept for the next tick as the runtime keeps them.
    snapshot.settled = Some(Arc::new(plan.settled.iter().cloned().collect()));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let ticks: usize = std::env::var("TICKS").ok().and_then(|t| t.parse().ok()).unwrap_or(40);
    let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(3600);
    let mut snapshot = Snapshot { apps: fleet::apps(), agents: fleet::agents(), ..Snapshot::default() };

    // The empty cluster: one plan places everything.
    let ctx = PlanContext::at(now, 42);
    let started = Instant::now();
    let first = plan(&snapshot, &ctx);
    let placing = started.elapsed().as_secs_f64();
    println!(
        "empty cluster: {} placements in {:.3} s = {:.0} placements/s",
        first.launches.len(),
        placing,
        first.launches.len() as f64 / placing
    );

    // Everything runs: the instances and their statuses, then ticks until nothing is left to do.
    let before = LIVE.load(Ordering::Relaxed);
    let mut revision = 1;
    apply(&mut snapshot, &first, now, &mut revision);
    let instance_bytes = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let instances = snapshot.instances.len();
    for _ in 0..5 {
        let next = plan(&snapshot, &ctx);
        if next.is_empty() {
            break;
        }
        apply(&mut snapshot, &next, now, &mut revision);
    }
    let steady = plan(&snapshot, &ctx);
    assert!(steady.launches.is_empty() && steady.stops.is_empty(), "not steady: {} launches", steady.launches.len());
    snapshot.settled = Some(Arc::new(steady.settled.iter().cloned().collect()));
    println!(
        "steady tick: {} of {} apps' statuses found up to date, not built again the next tick",
        steady.settled.len(),
        snapshot.apps.len()
    );
    println!(
        "snapshot: {instances} instances on {} agents, {} apps; instances take {:.0} bytes each",
        snapshot.agents.len(),
        snapshot.apps.len(),
        instance_bytes as f64 / instances as f64
    );

    // As the runtime's cache keeps it beside the instances, and the runtime the versions.
    snapshot.held = Some(snapshot.held());
    let mut versions = baton_controllers::snapshot::AppVersions::default();
    versions.refresh(&snapshot.apps);
    snapshot.versions = Some(Arc::new(versions));
    // Steady ticks: on one thread (the controller's default), then on as many as the machine
    // has cores (`baton controller --plan-threads`).
    let mut threads = vec![1, std::thread::available_parallelism().map_or(1, |n| n.get())];
    threads.dedup();
    for threads in threads {
        let mut transient = 0;
        let mut times: Vec<f64> = (0..ticks)
            .map(|tick| {
                let ctx = PlanContext {
                    threads,
                    ..PlanContext::at(now + jiff::SignedDuration::from_secs(tick as i64), tick as u64)
                };
                let before = LIVE.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let started = Instant::now();
                let decided = plan(&snapshot, &ctx);
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                transient = transient.max(PEAK.load(Ordering::Relaxed) - before);
                assert!(decided.launches.is_empty() && decided.stops.is_empty());
                elapsed
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "steady tick, {threads} thread{}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {ticks} ticks",
            if threads == 1 { "" } else { "s" },
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
        println!(
            "steady tick, {threads} thread{}: allocates at most {:.0} bytes per instance while it plans ({:.1} MiB), \
             freed when done",
            if threads == 1 { "" } else { "s" },
            transient as f64 / instances as f64,
            transient as f64 / (1 << 20) as f64
        );
    }

    // One app's spec changes: a rollout starts.
    let changed = &mut snapshot.apps[7];
    let changed = Arc::make_mut(changed);
    changed.spec.env.insert("RELEASE".into(), "2".into());
    // As the API server marks every change.
    changed.metadata.resource_version = Some((revision + 1).to_string());
    let started = Instant::now();
    let rollout = plan(&snapshot, &ctx);
    println!(
        "one app changed: {:.1} ms ({} launches, {} stops)",
        started.elapsed().as_secs_f64() * 1000.0,
        rollout.launches.len(),
        rollout.stops.len()
    );
}
