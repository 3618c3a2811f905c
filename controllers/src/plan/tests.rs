//! Planner table tests over built snapshots.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_api::{Goal, Phase};

use super::*;
use crate::snapshot::InstanceState;
use crate::testing::{agent, app, instance, now, snapshot, with_backoff, with_kill_request, with_marker};

fn ctx() -> PlanContext {
    PlanContext::at(now(), 42)
}

fn stopped_ids(plan: &Plan) -> Vec<&str> {
    plan.stops.iter().map(|s| s.record.id.as_str()).collect()
}

#[test]
fn scale_up_launches_the_missing_instances() {
    let web = app("web").instances(5).build();
    let running = (0..3).map(|n| instance(&web, "a1", n).running().build()).collect();
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build(), agent("a2").build()], running), &ctx());
    assert_eq!(plan.launches.len(), 2);
    assert!(plan.stops.is_empty() && plan.removals.is_empty());
    // Bin-packing: both go to the busy agent while it has room; a2 stays whole.
    let agents: Vec<&str> = plan.launches.iter().map(|l| l.record.agent.as_str()).collect();
    assert_eq!(agents, ["a1", "a1"]);
    let record = &plan.launches[0].record;
    assert_eq!((record.goal, record.run.version.as_str()), (Goal::Running, web.version().as_str()));
    assert!(record.id.starts_with("web-") && record.id.len() == "web-".len() + 10, "{}", record.id);
}

#[test]
fn scale_down_stops_the_youngest_and_those_not_running_first() {
    let web = app("web").instances(2).build();
    let instances = vec![
        instance(&web, "a1", 1).running().build(),
        instance(&web, "a1", 2).running().build(),
        instance(&web, "a1", 3).running().build(), // youngest running
        instance(&web, "a1", 0).phase(Phase::Staging).build(), // oldest, but not running
    ];
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build()], instances), &ctx());
    assert_eq!(stopped_ids(&plan), ["web-000", "web-003"]);
    assert!(plan.stops.iter().all(|s| s.reason == StopReason::ScaledDown));
    assert!(plan.launches.is_empty());
}

#[test]
fn a_failure_is_counted_with_a_mark_on_its_record_and_delays_the_replacement() {
    let web = app("web").instances(2).build();
    let instances = vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).failed(0).build()];
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build()], instances), &ctx());
    assert!(plan.launches.is_empty(), "not within the backoff");
    assert!(plan.removals.is_empty(), "the failed record stays, for its status and logs");
    let change = &plan.backoffs[0];
    let record = change.next.as_ref().expect("a backoff record");
    assert_eq!((record.failures, record.delay_until), (1, Some(now() + jiff::SignedDuration::from_secs(1))));
    assert_eq!(change.counted.iter().map(|c| c.record.id.as_str()).collect::<Vec<_>>(), ["web-001"]);
    assert_eq!(record.last_failure.as_ref().map(|f| f.instance.as_str()), Some("web-001"));
    assert_eq!(plan.next_wakeup, Some(now() + jiff::SignedDuration::from_secs(1)));
    let status = &plan.statuses[0].status;
    let progressing = status.condition(baton_api::app::CONDITION_PROGRESSING).unwrap();
    assert_eq!(progressing.reason, "Backoff");
    assert!(progressing.message.contains("after 1 failure"), "{}", progressing.message);
    assert_eq!(status.last_failure.as_ref().map(|f| f.instance.as_str()), Some("web-001"));
}

#[test]
fn the_backoff_grows_with_each_failure_and_releases_launches_when_it_ends() {
    let web = app("web").instances(2).build();
    let one_left = || vec![instance(&web, "a1", 0).running_for(0).build()];
    // Still waiting.
    let waiting = plan(&with_backoff(snapshot(&[&web], vec![agent("a1").build()], one_left()), &web, 3, 5), &ctx());
    assert!(waiting.launches.is_empty());
    assert_eq!(waiting.next_wakeup, Some(now() + jiff::SignedDuration::from_secs(5)));
    // Over: the replacement launches.
    let over = plan(&with_backoff(snapshot(&[&web], vec![agent("a1").build()], one_left()), &web, 3, -1), &ctx());
    assert_eq!(over.launches.len(), 1);
    // Another failure while backing off grows the delay: 1 s × 1.15³.
    let mut failing = one_left();
    failing.push(instance(&web, "a1", 1).failed(0).build());
    let grown = plan(&with_backoff(snapshot(&[&web], vec![agent("a1").build()], failing), &web, 3, -1), &ctx());
    let record = grown.backoffs[0].next.as_ref().unwrap();
    assert_eq!(record.failures, 4);
    assert_eq!(record.delay_until, Some(now() + jiff::SignedDuration::from_millis(1521)));
}

#[test]
fn the_backoff_starts_afresh_once_an_instance_has_run_long_enough_or_the_version_changes() {
    let web = app("web").instances(1).build();
    // Failures 3: the delay is 1.3 s; the instance has run for 5 s.
    let healthy = vec![instance(&web, "a1", 0).running_for(5).build()];
    let reset = plan(&with_backoff(snapshot(&[&web], vec![agent("a1").build()], healthy), &web, 3, -10), &ctx());
    assert_eq!(reset.backoffs[0].next.as_ref().map(|r| r.failures), Some(0));
    // Running for less than the delay: nothing changes.
    let fresh = vec![instance(&web, "a1", 0).running_for(1).build()];
    let kept = plan(&with_backoff(snapshot(&[&web], vec![agent("a1").build()], fresh), &web, 3, -10), &ctx());
    assert!(kept.backoffs.is_empty());
    // A new version starts afresh too.
    let changed = app("web").instances(1).env("A", "2").build();
    let old = with_backoff(snapshot(&[&changed], vec![agent("a1").build()], vec![]), &web, 5, 100);
    let next = plan(&old, &ctx());
    assert_eq!(next.backoffs[0].next.as_ref().map(|r| (r.failures, r.version.clone())), Some((0, changed.version())));
    assert_eq!(next.launches.len(), 1, "the new version launches at once");
}

#[test]
fn nothing_fits_nothing_is_launched_and_the_reason_is_recorded() {
    let big = app("big").instances(2).mem(8192.0).build();
    let agents = vec![agent("a1").mem(4096).build(), agent("a2").mem(4096).build(), agent("a3").build()];
    let plan = plan(&snapshot(&[&big], agents, vec![]), &ctx());
    assert!(plan.launches.is_empty());
    let status = &plan.statuses[0].status;
    let pending = status.condition(baton_api::app::CONDITION_PENDING).expect("a Pending condition");
    assert_eq!((pending.status.as_str(), pending.reason.as_str()), ("True", "Unschedulable"));
    assert_eq!(pending.message, "2 of 2 instances cannot be placed: 3 agents: insufficient mem");
    let summary = status.pending.as_ref().expect("a pending summary");
    assert_eq!(summary.instances, 2);
    assert_eq!(summary.rejections, [baton_api::app::Rejection { reason: "insufficient mem".into(), agents: 3 }]);
    let progressing = status.condition(baton_api::app::CONDITION_PROGRESSING).unwrap();
    assert_eq!((progressing.status.as_str(), progressing.reason.as_str()), ("False", "Stuck"));
}

#[test]
fn no_agents_is_said_plainly() {
    let web = app("web").instances(1).build();
    let plan = plan(&snapshot(&[&web], vec![], vec![]), &ctx());
    let pending = plan.statuses[0].status.condition(baton_api::app::CONDITION_PENDING).unwrap().clone();
    assert_eq!(pending.message, "1 of 1 instances cannot be placed: no agents are registered");
}

#[test]
fn placements_in_one_plan_see_each_other() {
    // Room for exactly three 1-cpu instances with one port each on one agent with 3 ports.
    let web = app("web").instances(5).cpus(1.0).ports(1).build();
    let one = agent("a1").port_range(31000, 31002).build();
    let plan = plan(&snapshot(&[&web], vec![one], vec![]), &ctx());
    assert_eq!(plan.launches.len(), 3);
    let ports: BTreeSet<u16> = plan.launches.iter().map(|l| l.record.ports[0].port).collect();
    assert_eq!(ports, BTreeSet::from([31000, 31001, 31002]), "no port is handed out twice");
    let pending = plan.statuses[0].status.condition(baton_api::app::CONDITION_PENDING).unwrap().clone();
    assert_eq!(pending.message, "2 of 5 instances cannot be placed: 1 agent: not enough free ports");
}

#[test]
fn ports_in_use_are_not_assigned_again() {
    let web = app("web").instances(2).ports(1).build();
    let taken = instance(&web, "a1", 0).running().port(31000).build();
    let plan = plan(&snapshot(&[&web], vec![agent("a1").port_range(31000, 31001).build()], vec![taken]), &ctx());
    assert_eq!(plan.launches[0].record.ports[0].port, 31001);
}

#[test]
fn a_deleted_apps_instances_are_stopped_then_removed() {
    let gone = app("gone").build();
    let instances = vec![
        instance(&gone, "a1", 0).running().build(),
        instance(&gone, "a1", 1).stopping().running().build(),
        instance(&gone, "a1", 2).stopping().phase(Phase::Killed).build(),
    ];
    let plan = plan(&snapshot(&[], vec![agent("a1").build()], instances), &ctx());
    assert_eq!(stopped_ids(&plan), ["gone-000"]);
    assert_eq!(plan.stops[0].reason, StopReason::AppDeleted);
    assert_eq!(plan.removals.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["gone-002"]);
}

#[test]
fn other_scopes_instances_take_capacity_and_nothing_else() {
    let web = app("web").instances(2).cpus(1.0).build();
    let theirs = app("theirs").cpus(2.0).build();
    let tenant = baton_api::Scope::Tenant("team-a".into());
    let instances = vec![
        instance(&web, "a1", 0).running().build(),
        // Of an app this scope does not have, on a full a1: not an orphan, not counted.
        instance(&theirs, "a1", 0).scope(tenant.clone()).running().build(),
        instance(&theirs, "a1", 1).scope(tenant.clone()).running().build(),
        instance(&theirs, "a2", 2).scope(tenant.clone()).failed(1).build(),
    ];
    let snap = snapshot(&[&web], vec![agent("a1").build(), agent("a2").build()], instances);
    assert_eq!((snap.instances.len(), snap.foreign.len()), (1, 3));
    let plan = plan(&snap, &ctx());
    assert!(plan.stops.is_empty() && plan.removals.is_empty() && plan.noted.is_empty(), "{plan:?}");
    assert!(plan.backoffs.is_empty(), "another scope's failure is not this scope's to count");
    let agents: Vec<&str> = plan.launches.iter().map(|l| l.record.agent.as_str()).collect();
    assert_eq!(agents, ["a2"], "a1's cpus are taken by the other scope's instances");
    assert_eq!(plan.launches[0].record.run.scope, baton_api::Scope::Platform);
    let status = &plan.statuses[0].status;
    assert_eq!((status.instances, status.running), (1, 1), "only the app's own instances are counted");
}

#[test]
fn a_tenant_scope_plans_its_apps_and_asks_the_platform_to_place_them() {
    let web = app("web").instances(3).build();
    let tenant = baton_api::Scope::Tenant("team-a".into());
    let own = vec![instance(&web, "a1", 0).scope(tenant.clone()).running().build()];
    let mut snap = snapshot(&[&web], vec![agent("a1").build()], vec![]);
    snap.scope = tenant.clone();
    snap.instances = Arc::new(own.into_iter().map(|i| (i.record.id.clone(), i)).collect());
    // An agent with an instance that stopped reporting: the platform marks it, not a tenant.
    snap.agents.clear();
    let plan = plan(&snap, &ctx());
    assert!(plan.launches.is_empty() && plan.marks.is_empty(), "{plan:?}");
    let pending = plan.statuses[0].status.condition(baton_api::app::CONDITION_PENDING).expect("Pending");
    assert_eq!(
        pending.message,
        "2 of 3 instances cannot be placed: the tenant/team-a controller asks the platform's to place them \
         (status.launchRequest)"
    );
    let request = plan.statuses[0].status.launch_request.clone().expect("a launch request");
    assert_eq!((request.count, request.revision), (2, snap.revision));
}

#[test]
fn a_changed_spec_rolls_within_the_default_strategy() {
    let web = app("web").instances(2).env("A", "2").build();
    let old = vec![
        instance(&web, "a1", 0).version("old").running().build(),
        instance(&web, "a1", 1).version("old").running().build(),
    ];
    let first = plan(&snapshot(&[&web], vec![agent("a1").build()], old.clone()), &ctx());
    assert_eq!(first.launches.len(), 2, "new instances start first");
    assert!(first.stops.is_empty(), "no old one goes while nothing new runs");

    let mut one_new_runs = old;
    one_new_runs.push(instance(&web, "a1", 2).running().build());
    one_new_runs.push(instance(&web, "a1", 3).phase(Phase::Staging).build());
    let second = plan(&snapshot(&[&web], vec![agent("a1").build()], one_new_runs), &ctx());
    assert!(second.launches.is_empty());
    assert_eq!(stopped_ids(&second).len(), 1, "one running new instance lets one old one go");
    assert_eq!(second.stops[0].reason, StopReason::Upgraded);
}

#[test]
fn status_counts_and_is_written_only_when_it_changes() {
    let web = app("web").instances(2).build();
    let instances =
        vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).phase(Phase::Staging).build()];
    let snap = snapshot(&[&web], vec![agent("a1").build()], instances);
    let first = plan(&snap, &ctx());
    let status = first.statuses[0].status.clone();
    assert_eq!((status.instances, status.running, status.staged), (2, 1, 1));
    assert_eq!(status.observed_generation, Some(1));

    // Once the app carries that status, the same snapshot writes nothing, even later.
    let mut with_status = (*web).clone();
    with_status.status = Some(status);
    let with_status = std::sync::Arc::new(with_status);
    let snap =
        snapshot(&[&with_status], snap.agents.values().cloned().collect(), snap.instances.values().cloned().collect());
    let later = PlanContext::at(now() + jiff::SignedDuration::from_secs(60), 7);
    assert!(plan(&snap, &later).statuses.is_empty());
}

#[test]
fn the_same_snapshot_and_seed_give_the_same_plan() {
    let web = app("web").instances(4).ports(2).build();
    let snap = snapshot(&[&web], vec![agent("a1").build(), agent("a2").build()], vec![]);
    assert_eq!(plan(&snap, &ctx()), plan(&snap, &ctx()));
}

fn three_on_a1_two_agents(web: &std::sync::Arc<baton_api::App>) -> Vec<crate::snapshot::InstanceState> {
    (0..3).map(|n| instance(web, "a1", n).running().build()).collect()
}

#[test]
fn a_gone_agent_is_marked_and_its_instances_hold_their_places() {
    let web = app("web").instances(3).build();
    // a1 is not registered any more; a2 is.
    let snap = snapshot(&[&web], vec![agent("a2").build()], three_on_a1_two_agents(&web));
    let plan = plan(&snap, &ctx());
    assert_eq!(plan.marks, [Mark { agent: "a1".into(), since: now() }], "the first tick to notice marks the agent");
    assert!(plan.launches.is_empty() && plan.stops.is_empty(), "nothing is replaced before inactiveAfterSeconds");
    let status = &plan.statuses[0].status;
    assert_eq!((status.instances, status.running, status.unreachable), (3, 0, 3));
    assert_eq!(plan.next_wakeup, Some(now() + jiff::SignedDuration::from_secs(300)));
}

#[test]
fn unreachable_instances_are_replaced_after_inactive_and_forgotten_after_expunge() {
    let web = app("web").instances(3).unreachable_strategy(60, 120).build();
    let gone = |seconds_ago| {
        with_marker(snapshot(&[&web], vec![agent("a2").build()], three_on_a1_two_agents(&web)), "a1", seconds_ago)
    };
    let before = plan(&gone(59), &ctx());
    assert!(before.launches.is_empty() && before.marks.is_empty(), "the marker's time counts, not the tick's");
    assert_eq!(before.next_wakeup, Some(now() + jiff::SignedDuration::from_secs(1)));

    let inactive = plan(&gone(60), &ctx());
    assert_eq!(inactive.launches.len(), 3, "replaced once inactive");
    assert!(inactive.launches.iter().all(|l| l.record.agent == "a2"));
    assert!(inactive.removals.is_empty() && inactive.stops.is_empty(), "the records stay until expunged");

    let expunged = plan(&gone(120), &ctx());
    assert_eq!(expunged.removals.len(), 3, "forgotten after expungeAfterSeconds");
}

#[test]
fn when_the_agent_comes_back_the_extras_go_by_kill_selection() {
    let run = |selection| {
        let web = app("web").instances(3).kill_selection(selection).build();
        let mut instances = three_on_a1_two_agents(&web); // the originals, launched first
        instances.extend((10..13).map(|n| instance(&web, "a2", n).running().build())); // their replacements
        let snap = with_marker(snapshot(&[&web], vec![agent("a1").build(), agent("a2").build()], instances), "a1", 500);
        plan(&snap, &ctx())
    };
    let youngest = run(baton_api::KillSelection::YoungestFirst);
    assert_eq!(stopped_ids(&youngest), ["web-012", "web-011", "web-010"], "YoungestFirst stops the replacements");
    assert_eq!(youngest.unmarks.len(), 1, "the marker goes once the agent is back");
    let oldest = run(baton_api::KillSelection::OldestFirst);
    assert_eq!(stopped_ids(&oldest), ["web-000", "web-001", "web-002"], "OldestFirst stops the originals");
}

#[test]
fn with_inactive_after_zero_a_gone_agents_instances_are_replaced_at_once() {
    let web = app("web").instances(2).unreachable_strategy(0, 0).build();
    let instances = vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).running().build()];
    let plan = plan(&snapshot(&[&web], vec![agent("a2").build()], instances), &ctx());
    assert_eq!(plan.launches.len(), 2);
    assert_eq!(plan.removals.len(), 2, "expunged at once too");
}

#[test]
fn a_deleted_apps_instances_on_a_gone_agent_are_forgotten_at_once() {
    let gone = app("gone").build();
    let plan = plan(&snapshot(&[], vec![], vec![instance(&gone, "a1", 0).running().build()]), &ctx());
    assert!(plan.stops.is_empty());
    assert_eq!(plan.removals.len(), 1);
}

#[test]
fn a_marker_without_instances_is_forgotten() {
    let snap = with_marker(snapshot(&[], vec![], vec![]), "old-agent", 1000);
    assert_eq!(plan(&snap, &ctx()).unmarks.len(), 1);
}

fn reasons(plan: &Plan) -> Vec<(&'static str, &str)> {
    plan.events.iter().map(|e| (e.reason, e.message.as_str())).collect()
}

#[test]
fn events_say_what_was_launched_and_stopped_and_why() {
    let web = app("web").instances(1).build();
    let instances = (0..3).map(|n| instance(&web, "a1", n).running().build()).collect();
    let down = plan(&snapshot(&[&web], vec![agent("a1").build()], instances), &ctx());
    assert_eq!(
        reasons(&down),
        [("Killing", "stopping 2 instances (more than the 1 wanted): web-002, web-001")],
        "the youngest go, in kill order"
    );
    assert!(down.events.iter().all(|e| e.of_writes && e.type_ == events::EventType::Normal));

    let up = app("web").instances(2).build();
    let launched = plan(&snapshot(&[&up], vec![agent("a1").build()], vec![]), &ctx());
    let (reason, message) = reasons(&launched)[0];
    assert_eq!(reason, "Launched");
    assert!(message.starts_with("launched 2 instances of version "), "{message}");
    assert!(message.contains(" on a1, "), "{message}");
}

#[test]
fn scaling_is_reported_once_from_the_observed_instances() {
    let mut web = (*app("web").instances(5).build()).clone();
    web.status = Some(baton_api::AppStatus { observed_instances: Some(3), ..Default::default() });
    let web = std::sync::Arc::new(web);
    let first = plan(&snapshot(&[&web], vec![agent("a1").build()], vec![]), &ctx());
    assert!(reasons(&first).contains(&("Scaled", "scaled from 3 to 5 instances")), "{:?}", reasons(&first));
    assert_eq!(first.statuses[0].status.observed_instances, Some(5), "the status records what was observed");
}

#[test]
fn unschedulable_instances_are_a_warning_once_per_reason() {
    let big = app("big").instances(2).mem(8192.0).build();
    let agents = || vec![agent("a1").mem(4096).build()];
    let first = plan(&snapshot(&[&big], agents(), vec![]), &ctx());
    let warning = first.events.iter().find(|e| e.reason == "FailedScheduling").expect("a FailedScheduling event");
    assert_eq!(warning.type_, events::EventType::Warning);
    assert_eq!(warning.message, "2 of 2 instances cannot be placed: 1 agent: insufficient mem");
    // With that status in place, the next tick says nothing new.
    let mut seen = (*big).clone();
    seen.status = Some(first.statuses[0].status.clone());
    let seen = std::sync::Arc::new(seen);
    let again = plan(&snapshot(&[&seen], agents(), vec![]), &ctx());
    assert!(again.events.is_empty(), "{:?}", reasons(&again));
}

#[test]
fn failures_and_unreachable_agents_are_warnings() {
    let web = app("web").instances(2).build();
    let instances = vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).failed(0).build()];
    let failed = plan(&snapshot(&[&web], vec![agent("a1").build()], instances), &ctx());
    let back_off = failed.events.iter().find(|e| e.reason == "BackOff").expect("a BackOff event");
    assert!(back_off.message.starts_with("an instance of version "), "{}", back_off.message);
    assert!(back_off.message.ends_with("failed: ; launches back off"), "{}", back_off.message);

    let gone = plan(&snapshot(&[&web], vec![agent("a2").build()], three_on_a1_two_agents(&web)), &ctx());
    let unreachable = gone.events.iter().find(|e| e.reason == "AgentUnreachable").expect("an AgentUnreachable event");
    assert_eq!(unreachable.regarding, events::Regarding::Agent("a1".into()));
    assert!(unreachable.message.starts_with("agent a1 stopped reporting; its 3 instances"), "{}", unreachable.message);
}

/// An app with a check that kills after 3 failures, a policy of 0.5 and 2, and 10 wanted.
fn checked_pool() -> std::sync::Arc<baton_api::App> {
    app("pool").instances(10).cpus(0.1).mem(10.0).ports(1).tcp_check(3).health_policy(0.5, 2).build()
}

fn with_status(app: &std::sync::Arc<baton_api::App>, plan: &Plan) -> std::sync::Arc<baton_api::App> {
    let mut app = (**app).clone();
    app.status = plan.statuses.first().map(|s| s.status.clone());
    std::sync::Arc::new(app)
}

#[test]
fn one_failing_instance_of_ten_is_killed_and_replaced_in_the_same_tick() {
    let pool = checked_pool();
    let mut instances: Vec<_> = (0..9).map(|n| instance(&pool, "a1", n).passing().build()).collect();
    instances.push(instance(&pool, "a1", 9).failing(3).build());
    let plan = plan(&snapshot(&[&pool], vec![agent("a1").build()], instances), &ctx());
    assert_eq!(stopped_ids(&plan), ["pool-009"]);
    assert_eq!(plan.stops[0].reason, StopReason::Unhealthy);
    assert_eq!(plan.launches.len(), 1, "its replacement");
    let (reason, message) = reasons(&plan).into_iter().find(|(r, _)| *r == "Killing").unwrap();
    assert_eq!(reason, "Killing");
    assert!(message.contains("pool-009 on a1 (3 failures in a row; last: connection refused)"), "{message}");
    assert!(plan.withheld_kills.is_empty());
}

#[test]
fn a_snowball_kills_only_the_budget_and_says_why_the_rest_are_spared() {
    let pool = checked_pool();
    let failing: Vec<_> = (0..10).map(|n| instance(&pool, "a1", n).failing(3).build()).collect();
    let first = plan(&snapshot(&[&pool], vec![agent("a1").build()], failing.clone()), &ctx());
    assert_eq!(stopped_ids(&first), ["pool-000", "pool-001"], "the budget: 2");
    assert!(first.stops.iter().all(|s| s.reason == StopReason::Unhealthy));
    assert_eq!(first.launches.len(), 2, "replaced at once");
    assert_eq!(first.withheld_kills.len(), 8);
    let status = &first.statuses[0].status;
    assert_eq!((status.healthy, status.unhealthy), (0, 8), "the two killed are being stopped");
    let condition = status.condition(baton_api::app::CONDITION_HEALTHY).unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "KillsWithheld"));
    assert!(
        condition.message.starts_with(
            "not killing 8 instances that fail their health checks: only 0 of 10 instances are healthy \
             (minHealthyRatio 0.5) and 2 are being replaced (maxConcurrentReplacements 2)"
        ),
        "{}",
        condition.message
    );
    assert!(reasons(&first).iter().any(|(r, m)| *r == "KillsWithheld" && *m == condition.message));
    // More failures of the same instances change nothing in what is said.
    let more: Vec<_> =
        (0..10).map(|n| instance(&pool, "a1", n).failing(if n < 2 { 9 } else { 3 + n % 4 }).build()).collect();
    let later = plan(&snapshot(&[&pool], vec![agent("a1").build()], more), &ctx());
    let same = later.statuses[0].status.condition(baton_api::app::CONDITION_HEALTHY).unwrap();
    assert_eq!(same.message.split(": ").last(), condition.message.split(": ").last(), "listed by id");

    // Next tick: the two are being stopped; their replacements start. Nothing more is killed,
    // and the withheld event is not repeated.
    let pool_with_status = with_status(&pool, &first);
    let mut next: Vec<_> = failing[2..].to_vec();
    next.extend((0..2).map(|n| instance(&pool, "a1", n).failing(3).killed_for_health().build()));
    let replacing = |n: u32| format!("pool-{:03}", n - 10);
    next.extend((10..12).map(|n| instance(&pool, "a1", n).running().replacing(&replacing(n)).build()));
    let second = plan(&snapshot(&[&pool_with_status], vec![agent("a1").build()], next), &ctx());
    assert!(second.stops.is_empty() && second.launches.is_empty(), "{:?}", stopped_ids(&second));
    assert_eq!(second.withheld_kills.len(), 8);
    let slots = &second.statuses[0].status.replacements;
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert_eq!(
        (slots[0].killed.as_str(), slots[0].replacement.as_deref(), slots[0].waiting_for.as_str()),
        ("pool-000", Some("pool-010"), "pool-010 to pass its health checks")
    );

    // The replacements became healthy: the slots are free (the killed records are unmarked,
    // and kept a while as ended instances), the next two are killed.
    let mut healed: Vec<_> = failing[2..].to_vec();
    healed.extend((0..2).map(|n| instance(&pool, "a1", n).failed(5).killed_for_health().build()));
    healed.extend((10..12).map(|n| instance(&pool, "a1", n).passing().replacing(&replacing(n)).build()));
    let third = plan(&snapshot(&[&pool_with_status], vec![agent("a1").build()], healed), &ctx());
    assert_eq!(stopped_ids(&third), ["pool-002", "pool-003"]);
    let unmarked: Vec<&str> = third.slot_releases.iter().map(|r| r.record.id.as_str()).collect();
    assert_eq!(unmarked, ["pool-000", "pool-001"]);
    assert!(third.removals.is_empty(), "ended instances are kept a while");
    let slots: Vec<&str> = third.statuses[0].status.replacements.iter().map(|r| r.killed.as_str()).collect();
    assert_eq!(slots, ["pool-002", "pool-003"], "the new kills hold the slots now");

    // The cause went away: everything passes, nothing is killed, the condition clears.
    let recovered: Vec<_> = (0..10).map(|n| instance(&pool, "a1", n).recovered(3).build()).collect();
    let fixed = plan(&snapshot(&[&pool_with_status], vec![agent("a1").build()], recovered), &ctx());
    assert!(fixed.stops.is_empty() && fixed.launches.is_empty() && fixed.withheld_kills.is_empty());
    let condition = fixed.statuses[0].status.condition(baton_api::app::CONDITION_HEALTHY).unwrap().clone();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "AllHealthy"));
}

#[test]
fn instances_on_an_unreachable_agent_are_never_killed_for_failing_checks() {
    let pool = app("pool").instances(2).ports(1).tcp_check(3).health_policy(0.0, 0).build();
    let instances = vec![instance(&pool, "a1", 0).failing(5).build(), instance(&pool, "a2", 1).passing().build()];
    let snap = with_marker(snapshot(&[&pool], vec![agent("a2").build()], instances), "a1", 10);
    let plan = plan(&snap, &ctx());
    assert!(plan.stops.is_empty(), "{:?}", stopped_ids(&plan));
}

#[test]
fn a_new_instance_counts_towards_a_deployment_only_once_ready() {
    let mut spec = (*app("web").instances(1).ports(1).build()).clone();
    spec.spec.ports[0].name = Some("http".into());
    spec.spec.readiness_checks =
        vec![serde_json::from_value(serde_json::json!({"portName": "http"})).expect("a readiness check")];
    let web = std::sync::Arc::new(spec);
    let old = instance(&web, "a1", 0).version("old").running().ready(true).build();
    let not_ready = vec![old.clone(), instance(&web, "a1", 1).running().ready(false).build()];
    let plan_not_ready = plan(&snapshot(&[&web], vec![agent("a1").build()], not_ready), &ctx());
    assert!(plan_not_ready.stops.is_empty(), "the old instance stays until the new one is ready");
    let ready = vec![old, instance(&web, "a1", 1).running().ready(true).build()];
    let plan_ready = plan(&snapshot(&[&web], vec![agent("a1").build()], ready), &ctx());
    assert_eq!(stopped_ids(&plan_ready), ["web-000"]);
}

#[test]
fn a_blip_during_a_deployment_does_not_stop_the_old_instances_that_failed() {
    let pool = app("pool").instances(3).ports(1).tcp_check(3).env("V", "2").build();
    // The old ones served, then failed once (not due); the new ones start.
    let mut instances: Vec<_> = (0..3).map(|n| instance(&pool, "a1", n).version("old").failing(1).build()).collect();
    instances.extend((3..6).map(|n| instance(&pool, "a1", n).running().build()));
    let plan = plan(&snapshot(&[&pool], vec![agent("a1").build()], instances), &ctx());
    assert!(plan.stops.is_empty(), "kept to recover: {:?}", stopped_ids(&plan));
}

#[test]
fn when_a_blip_ends_the_first_recoveries_free_no_budget_for_the_rest() {
    let pool = checked_pool();
    // The cause went away a moment ago: the two replacements and three originals passed one
    // probe; five originals have not been probed since.
    let mut instances: Vec<_> = (0..3).map(|n| instance(&pool, "a1", n).recovered(1).build()).collect();
    instances.extend((3..8).map(|n| instance(&pool, "a1", n).failing(12).build()));
    instances.extend((10..12).map(|n| instance(&pool, "a1", n).failed(30).killed_for_health().build()));
    instances.extend(
        (8..10).map(|n| {
            instance(&pool, "a1", n).recovered(1).never_healthy().replacing(&format!("pool-0{}", n + 2)).build()
        }),
    );
    let plan = plan(&snapshot(&[&pool], vec![agent("a1").build()], instances), &ctx());
    assert!(plan.stops.is_empty(), "the replacements are not steadily healthy yet: {:?}", stopped_ids(&plan));
    assert_eq!(plan.withheld_kills.len(), 5);
}

#[test]
fn a_kill_request_stops_the_instance_at_once_and_a_replacement_launches() {
    // A user's kill is carried out whatever the health policy says (here: kill nothing).
    let web = app("web").instances(3).health_policy(1.0, 0).build();
    let running: Vec<InstanceState> = (0..3).map(|n| instance(&web, "a1", n).running().build()).collect();
    let base = snapshot(&[&web], vec![agent("a1").build()], running);
    let plan = plan(&with_kill_request(base.clone(), "web-001", Some(0)), &ctx());
    assert_eq!(stopped_ids(&plan), ["web-001"]);
    assert_eq!((plan.stops[0].reason, plan.stops[0].grace_seconds), (StopReason::Killed, Some(0)));
    assert_eq!(plan.launches.len(), 1, "the replacement");
    assert!(plan.kills_done.is_empty(), "kept until the instance is gone");
    let event = plan.events.iter().find(|e| e.reason == "Killing").expect("a Killing event");
    assert_eq!(event.message, "killing 1 instance: web-001 on a1 (requested by ops)");

    // Once it is stopping, the request asks nothing more; once it is gone, it is forgotten.
    let mut stopping = base.clone();
    let victim = stopping.instances_mut().get_mut("web-001").unwrap();
    *victim = instance(&web, "a1", 1).running().stopped("Killed").build();
    let replacement = instance(&web, "a1", 7).build();
    stopping.instances_mut().insert(replacement.record.id.clone(), replacement);
    let plan = super::plan(&with_kill_request(stopping.clone(), "web-001", None), &ctx());
    assert!(plan.stops.is_empty() && plan.launches.is_empty() && plan.kills_done.is_empty(), "{plan:?}");
    stopping.instances_mut().remove("web-001");
    let plan = super::plan(&with_kill_request(stopping, "web-001", None), &ctx());
    assert_eq!(plan.kills_done, [KillDone { namespace: "default".into(), id: "web-001".into(), revision: 11 }]);
}

#[test]
fn killing_an_unreachable_instance_forgets_it_and_replaces_it() {
    let web = app("web").instances(3).unreachable_strategy(300, 600).build();
    let instances = (0..3).map(|n| instance(&web, "a1", n).running().build()).collect();
    let gone = with_marker(snapshot(&[&web], vec![agent("a2").build()], instances), "a1", 10);
    let plan = plan(&with_kill_request(gone, "web-002", None), &ctx());
    let removed: Vec<&str> = plan.removals.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed, ["web-002"], "its agent is gone: the record goes at once");
    assert!(plan.stops.is_empty());
    assert_eq!(plan.launches.len(), 1, "replaced at once, not after inactiveAfterSeconds");
}

#[test]
fn ended_instances_are_kept_the_last_few_per_app_for_a_while_then_removed() {
    let web = app("web").instances(1).build();
    // Seven ended: 10 s, 20 s … 70 s ago (counted failures), and one two hours ago.
    let mut instances: Vec<InstanceState> = vec![instance(&web, "a1", 100).running_for(600).build()];
    for n in 1..=7u32 {
        instances.push(instance(&web, "a1", n).failed(i64::from(n) * 10).counted().build());
    }
    instances.push(instance(&web, "a1", 8).failed(7200).counted().build());
    let retention = super::Retention { per_app: 5, max_age: jiff::SignedDuration::from_secs(3600) };
    let ctx = PlanContext { retention, ..ctx() };
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build()], instances.clone()), &ctx);
    let mut removed: Vec<&str> = plan.removals.iter().map(|r| r.id.as_str()).collect();
    removed.sort();
    assert_eq!(removed, ["web-006", "web-007", "web-008"], "beyond the last 5, or older than an hour");
    assert!(plan.backoffs.iter().all(|b| b.counted.is_empty()), "each failure is counted once");
    // The oldest kept one goes when it is an hour old: the controller wakes up then.
    assert_eq!(
        plan.next_wakeup,
        Some(now() - jiff::SignedDuration::from_secs(50) + jiff::SignedDuration::from_secs(3600))
    );

    // A deleted app's ended instances go at once.
    let plan = super::plan(&snapshot(&[], vec![agent("a1").build()], instances), &ctx);
    assert_eq!(plan.removals.len(), 8);
}

#[test]
fn the_state_says_in_one_word_what_the_app_is_doing() {
    let state = |plan: &Plan| {
        let status = &plan.statuses[0].status;
        (status.state.clone().unwrap_or_default(), status.failures)
    };
    let web = app("web").instances(2).build();
    let agents = || vec![agent("a1").build()];
    let running = vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).running().build()];
    assert_eq!(state(&plan(&snapshot(&[&web], agents(), running.clone()), &ctx())), ("Running".into(), 0));
    let starting = vec![instance(&web, "a1", 0).running().build()];
    assert_eq!(state(&plan(&snapshot(&[&web], agents(), starting.clone()), &ctx())).0, "Scaling");
    let crash = vec![instance(&web, "a1", 0).running().build(), instance(&web, "a1", 1).failed(0).build()];
    assert_eq!(state(&plan(&snapshot(&[&web], agents(), crash), &ctx())), ("BackingOff".into(), 1));
    let waiting = with_backoff(snapshot(&[&web], agents(), starting), &web, 4, 30);
    assert_eq!(state(&plan(&waiting, &ctx())), ("BackingOff".into(), 4));
    let old = vec![instance(&web, "a1", 0).version("old").running().build()];
    assert_eq!(state(&plan(&snapshot(&[&web], agents(), old), &ctx())).0, "Deploying");
    let huge = app("huge").instances(1).mem(1_000_000.0).build();
    assert_eq!(state(&plan(&snapshot(&[&huge], agents(), vec![]), &ctx())).0, "Pending");
    let none = app("none").instances(0).build();
    assert_eq!(state(&plan(&snapshot(&[&none], agents(), vec![]), &ctx())).0, "Stopped");
}

#[test]
fn a_crash_loop_repeats_the_same_two_events_so_they_aggregate() {
    let web = app("web").instances(1).build();
    let agents = || vec![agent("a1").build()];
    let event = |plan: &Plan, reason: &str| {
        plan.events.iter().find(|e| e.reason == reason).map(|e| e.message.clone()).unwrap_or_default()
    };
    let mut failing = instance(&web, "a1", 1).failed(0).build();
    std::sync::Arc::make_mut(failing.status.as_mut().unwrap()).message = Some("exited with status 3".into());
    let first = plan(&snapshot(&[&web], agents(), vec![failing.clone()]), &ctx());
    // The second failure of the loop, after a relaunch.
    let mut second = failing.clone();
    std::sync::Arc::make_mut(&mut second.record).id = "web-009".into();
    let again = plan(&with_backoff(snapshot(&[&web], agents(), vec![second]), &web, 1, -1), &ctx());
    assert_eq!(event(&first, "BackOff"), event(&again, "BackOff"), "the same words for the same failure");
    assert!(event(&again, "BackOff").contains("failed: exited with status 3; launches back off"));
    // Relaunches once the backoff is over.
    let later = PlanContext::at(now() + jiff::SignedDuration::from_secs(5), 1);
    let relaunch = plan(&with_backoff(snapshot(&[&web], agents(), vec![]), &web, 2, -1), &later);
    let relaunch_again = plan(&with_backoff(snapshot(&[&web], agents(), vec![]), &web, 3, -1), &ctx());
    let launched = event(&relaunch, "Launched");
    assert!(launched.ends_with("in place of a failed one"), "{launched}");
    assert_eq!(launched, event(&relaunch_again, "Launched"));
}

#[test]
fn a_lost_instance_is_reported_once_and_replaced_and_a_forced_kill_is_reported() {
    let web = app("web").instances(1).build();
    let mut lost = instance(&web, "a1", 0).phase(Phase::Lost).build();
    std::sync::Arc::make_mut(lost.status.as_mut().unwrap()).message =
        Some("the process ended while the agent was not running".into());
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build()], vec![lost.clone()]), &ctx());
    assert_eq!(plan.launches.len(), 1, "replaced");
    let event = plan.events.iter().find(|e| e.reason == "Lost").expect("a Lost event");
    assert_eq!(
        event.message,
        "lost 1 instance, replaced: web-000 on a1 (the process ended while the agent was not running)"
    );
    assert_eq!(plan.noted.len(), 1, "noted, so reported once");
    let mut noted = lost;
    std::sync::Arc::make_mut(&mut noted.record).end_noted = true;
    let again = super::plan(&snapshot(&[&web], vec![agent("a1").build()], vec![noted]), &ctx());
    assert!(again.events.iter().all(|e| e.reason != "Lost") && again.noted.is_empty());

    // A stopped instance that needed SIGKILL after its grace period: said when its record goes.
    let mut forced = instance(&web, "a1", 1).stopped("ScaledDown").phase(Phase::Killed).build();
    std::sync::Arc::make_mut(forced.status.as_mut().unwrap()).forced_after_seconds = Some(3);
    let running = instance(&web, "a1", 2).running().build();
    let plan = super::plan(&snapshot(&[&web], vec![agent("a1").build()], vec![forced, running]), &ctx());
    assert_eq!(plan.removals.len(), 1);
    let event = plan.events.iter().find(|e| e.reason == "GracePeriodExceeded").expect("an event");
    assert_eq!(
        event.message,
        "1 instance did not stop within the grace period after SIGTERM and was killed with SIGKILL: web-001 on a1 (grace period 3 s)"
    );
}

#[test]
fn the_platform_places_a_tenants_launch_request_once() {
    let tenant = baton_api::Scope::Tenant("team-a".into());
    let mut api = (*app("api").instances(3).build()).clone();
    api.metadata.namespace = Some("team-a".into());
    // Its controller asked for 3 at revision 100; one was launched for it at revision 105
    // (created after: serving it), one at 90 (before: the tenant's count already has it).
    api.status = Some(baton_api::AppStatus {
        launch_request: Some(baton_api::app::LaunchRequest { version: api.version(), count: 3, revision: 100 }),
        ..Default::default()
    });
    let served = instance(&api, "a1", 1).scope(tenant.clone()).build().with_created(105);
    let older = instance(&api, "a1", 2).scope(tenant.clone()).build().with_created(90);
    let mut snap = snapshot(&[], vec![agent("a1").build()], vec![served, older]);
    snap.namespaces.insert("team-a".into(), tenant.clone());
    snap.other_apps.push(Arc::new(api.clone()));
    let placed = plan(&snap, &ctx());
    assert_eq!(placed.launches.len(), 2, "3 asked, 1 served");
    assert!(placed.launches.iter().all(|l| l.record.run.scope == tenant && l.record.run.app.name == "api"));
    assert!(placed.statuses.is_empty(), "the platform writes no status of another scope's app");

    // A request for a version the app no longer has is not served (its controller asks again).
    let mut changed = api.clone();
    changed.spec.env.insert("V".into(), "2".into());
    snap.other_apps = vec![Arc::new(changed)];
    assert!(plan(&snap, &ctx()).launches.is_empty());
}

#[test]
fn tenants_launch_requests_are_served_by_weighted_dominant_share_when_room_is_short() {
    // One agent of 4 cpus; team-a already holds 2, team-b nothing; both ask for 2 more of 1 cpu.
    let mut snap = snapshot(&[], vec![agent("a1").build()], Vec::new());
    let mut requesting = |team: &str| {
        let scope = baton_api::Scope::Tenant(team.into());
        let mut app = (*app(&format!("{team}-api")).instances(2).cpus(1.0).build()).clone();
        app.metadata.namespace = Some(team.into());
        app.metadata.uid = Some(format!("uid-{team}"));
        app.status = Some(baton_api::AppStatus {
            launch_request: Some(baton_api::app::LaunchRequest { version: app.version(), count: 2, revision: 100 }),
            ..Default::default()
        });
        snap.namespaces.insert(team.into(), scope.clone());
        snap.other_apps.push(Arc::new(app));
        scope
    };
    let (a, _) = (requesting("team-a"), requesting("team-b"));
    let holder = app("holder").cpus(2.0).build();
    snap.foreign.push(instance(&holder, "a1", 1).scope(a.clone()).running().build().with_created(50));
    let placed = plan(&snap, &ctx());
    let teams: Vec<&str> = placed.launches.iter().map(|l| l.record.run.app.namespace.as_str()).collect();
    assert_eq!(teams, ["team-b", "team-b"], "team-b, holding less, is served first; then the agent is full");
}

#[test]
fn an_app_stored_past_the_maximum_runs_the_maximum_and_says_so() {
    // Stored under older rules, bypassing the API server's limit.
    let huge = app("huge").instances(1_000_000_000).cpus(0.001).mem(1.0).build();
    let web = app("web").instances(2).build();
    let snap = snapshot(&[&huge, &web], vec![agent("a1").build()], Vec::new());
    let ctx = PlanContext { max_instances_per_app: 50, ..ctx() };
    let started = std::time::Instant::now();
    let placed = plan(&snap, &ctx);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded work");
    let count = |name: &str| placed.launches.iter().filter(|l| l.record.run.app.name == name).count();
    assert_eq!((count("huge"), count("web")), (50, 2), "the others are planned as usual");
    let status = &placed.statuses.iter().find(|s| s.name == "huge").unwrap().status;
    let planned = status.condition(baton_api::app::CONDITION_PLANNED).expect("Planned");
    assert_eq!((planned.status.as_str(), planned.reason.as_str()), ("False", "TooManyInstances"));
    assert!(planned.message.contains("asks for 1000000000 instances"), "{}", planned.message);
}

#[test]
fn an_app_whose_decision_fails_does_nothing_and_says_so_while_the_others_are_planned() {
    let bad = app("bad").instances(3).build();
    let web = app("web").instances(2).build();
    let snap = snapshot(&[&bad, &web], vec![agent("a1").build()], Vec::new());
    super::decide::POISONED.with(|p| p.borrow_mut().push("uid-bad".into()));
    let placed = plan(&snap, &ctx());
    super::decide::POISONED.with(|p| p.borrow_mut().clear());
    let count = |name: &str| placed.launches.iter().filter(|l| l.record.run.app.name == name).count();
    assert_eq!((count("bad"), count("web")), (0, 2));
    let status = &placed.statuses.iter().find(|s| s.name == "bad").unwrap().status;
    let planned = status.condition(baton_api::app::CONDITION_PLANNED).expect("Planned");
    assert_eq!(planned.reason, "PlanningFailed");
    assert!(planned.message.contains("poisoned for a test"), "{}", planned.message);
}

/// A tenant asking the platform for `count` instances of `cpus` each (`status.launchRequest`),
/// with `guarantee` cpus; its apps' uid is `uid-<team>-api`.
fn tenant_asking(snap: &mut crate::snapshot::Snapshot, team: &str, count: i32, cpus: f64, guarantee: Option<f64>) {
    let scope = baton_api::Scope::Tenant(team.into());
    let mut app = (*app(&format!("{team}-api")).instances(count).cpus(cpus).strategy(0.5, 1.0).build()).clone();
    app.metadata.namespace = Some(team.into());
    app.metadata.uid = Some(format!("uid-{team}-api"));
    app.status = Some(baton_api::AppStatus {
        launch_request: (count > 0).then(|| baton_api::app::LaunchRequest {
            version: app.version(),
            count,
            revision: 1_000,
        }),
        ..Default::default()
    });
    snap.namespaces.insert(team.into(), scope);
    snap.other_apps.push(Arc::new(app));
    let spec = baton_api::tenant::TenantSpec {
        namespaces: vec![team.into()],
        quota: Default::default(),
        weight: 1,
        users: Vec::new(),
        groups: Vec::new(),
        guarantee: baton_api::tenant::Guarantee { cpus: guarantee, ..Default::default() },
        controller: Default::default(),
        service_domain: None,
    };
    snap.tenants.push(Arc::new(baton_api::tenant::Tenant::new(team, spec)));
}

/// `n` running instances of 1 cpu of `team`'s app on `agent`, created at revisions 10, 20, ….
fn held_by(team: &str, agent: &str, n: u32) -> Vec<InstanceState> {
    let mut holder = (*app(&format!("{team}-api")).cpus(1.0).build()).clone();
    holder.metadata.uid = Some(format!("uid-{team}-api"));
    (1..=n)
        .map(|i| {
            let built = instance(&holder, agent, i).scope(baton_api::Scope::Tenant(team.into())).running().passing();
            built.build().with_created(i64::from(i) * 10)
        })
        .collect()
}

#[test]
fn a_tenant_below_its_guarantee_reclaims_the_youngest_instances_of_a_tenant_above_its_own() {
    // One agent of 4 cpus, all held by team-b (no guarantee); team-a, guaranteed 2, asks for 2.
    let mut snap = snapshot(&[], vec![agent("a1").build()], Vec::new());
    tenant_asking(&mut snap, "team-a", 2, 1.0, Some(2.0));
    tenant_asking(&mut snap, "team-b", 4, 1.0, None);
    snap.foreign = held_by("team-b", "a1", 4);
    let first = plan(&snap, &ctx());
    let preempted: Vec<&str> = first.stops.iter().map(|s| s.record.id.as_str()).collect();
    assert_eq!(preempted, ["team-b-api-004", "team-b-api-003"], "the youngest two");
    assert!(first.stops.iter().all(|s| s.reason == StopReason::Preempted));
    assert!(first.launches.is_empty(), "team-a waits for the room");
    assert!(first.events.iter().any(|e| e.reason == "Preempted"));

    // While they stop, nothing more is taken: the room being freed is counted.
    for victim in snap.foreign.iter_mut().filter(|i| i.record.id.ends_with("003") || i.record.id.ends_with("004")) {
        let mut record = (*victim.record).clone();
        record.goal = Goal::Stopped;
        record.stop_reason = Some("Preempted".into());
        victim.set_record(Arc::new(record));
    }
    let waiting = plan(&snap, &ctx());
    assert!(waiting.stops.is_empty() && waiting.launches.is_empty(), "{:?}", waiting.stops);

    // Once they are gone, the room is team-a's, not back to team-b (whose controller asks again).
    snap.foreign.retain(|i| i.record.goal == Goal::Running);
    let b = snap.other_apps.iter_mut().find(|a| a.metadata.name.as_deref() == Some("team-b-api")).unwrap();
    let mut b_app = (**b).clone();
    b_app.status.as_mut().unwrap().launch_request.as_mut().unwrap().count = 2;
    *b = Arc::new(b_app);
    let served = plan(&snap, &ctx());
    let teams: Vec<&str> = served.launches.iter().map(|l| l.record.run.app.namespace.as_str()).collect();
    assert_eq!(teams, ["team-a", "team-a"]);
    assert!(served.stops.is_empty(), "team-b, without a guarantee, takes nothing back");
}

#[test]
fn reclaiming_never_takes_a_tenant_below_its_own_guarantee_nor_the_platforms_instances() {
    let platform_app = app("platform").cpus(1.0).build();
    let platform = instance(&platform_app, "a1", 1).running().passing().build();
    let mut snap = snapshot(&[&platform_app], vec![agent("a1").build()], vec![platform]);
    tenant_asking(&mut snap, "team-a", 2, 1.0, Some(2.0));
    tenant_asking(&mut snap, "team-b", 3, 1.0, Some(2.0));
    snap.foreign = held_by("team-b", "a1", 3);
    let plan = plan(&snap, &ctx());
    let preempted: Vec<&str> = plan.stops.iter().map(|s| s.record.id.as_str()).collect();
    assert_eq!(preempted, ["team-b-api-003"], "team-b keeps its 2 guaranteed; the platform keeps its own");
}

#[test]
fn guaranteed_demand_goes_before_fair_shares() {
    // Room for one instance of 1 cpu; a-team would win a tie by name, but z-team is guaranteed.
    let mut a1 = (*agent("a1").build()).clone();
    a1.resources.millicpus = 1_000;
    let mut snap = snapshot(&[], vec![Arc::new(a1)], Vec::new());
    tenant_asking(&mut snap, "a-team", 1, 1.0, None);
    tenant_asking(&mut snap, "z-team", 1, 1.0, Some(1.0));
    let placed = plan(&snap, &ctx());
    let teams: Vec<&str> = placed.launches.iter().map(|l| l.record.run.app.namespace.as_str()).collect();
    assert_eq!(teams, ["z-team"]);
}

#[test]
fn reserved_agents_take_their_tenants_instances_only() {
    let mut a1 = (*agent("a1").build()).clone();
    a1.resources.millicpus = 1_000;
    let mut r1 = (*agent("r1").attribute("pool", "z").build()).clone();
    r1.resources.millicpus = 2_000;
    let platform_app = app("platform").instances(2).cpus(1.0).build();
    let mut snap = snapshot(&[&platform_app], vec![Arc::new(a1), Arc::new(r1)], Vec::new());
    tenant_asking(&mut snap, "a-team", 1, 1.0, None);
    tenant_asking(&mut snap, "z-team", 3, 1.0, None);
    let z = snap.tenants.iter_mut().find(|t| t.metadata.name.as_deref() == Some("z-team")).unwrap();
    let mut z_tenant = (**z).clone();
    z_tenant.spec.guarantee.agents.insert("pool".into(), "z".into());
    *z = Arc::new(z_tenant);
    let placed = plan(&snap, &ctx());
    let mut on: Vec<(&str, &str)> =
        placed.launches.iter().map(|l| (l.record.run.app.name.as_str(), l.record.agent.as_str())).collect();
    on.sort();
    assert_eq!(on, [("platform", "a1"), ("z-team-api", "r1"), ("z-team-api", "r1")], "r1 takes z-team only");
    let status = &placed.statuses.iter().find(|s| s.name == "platform").unwrap().status;
    let pending = status.condition(baton_api::app::CONDITION_PENDING).map(|c| c.message.clone()).unwrap_or_default();
    assert!(pending.contains("reserved for another tenant"), "{pending}");
}

#[test]
fn reclaiming_counts_every_instance_it_takes_from_one_tenant_against_that_tenants_guarantee() {
    // team-a (guaranteed 3) needs 3 cpus on the one agent; team-b (guaranteed 2) holds all 4 in
    // 1-cpu instances, its app's pace allowing 4 at once: room would need 3 of them, leaving
    // team-b 1, below its guarantee — so none is taken.
    let mut snap = snapshot(&[], vec![agent("a1").build()], Vec::new());
    tenant_asking(&mut snap, "team-a", 1, 3.0, Some(3.0));
    tenant_asking(&mut snap, "team-b", 8, 1.0, Some(2.0));
    snap.foreign = held_by("team-b", "a1", 4);
    let plan = plan(&snap, &ctx());
    assert!(plan.stops.is_empty(), "{:?}", plan.stops.iter().map(|s| &s.record.id).collect::<Vec<_>>());
}

#[test]
fn the_platform_places_a_tenants_requests_only_within_its_quota() {
    // team-a holds 2 instances of 1 cpu and asks for 4 more; its quota: 5 cpus, 4 instances.
    let mut snap = snapshot(&[], vec![agent("a1").build(), agent("a2").build()], Vec::new());
    tenant_asking(&mut snap, "team-a", 4, 1.0, None);
    snap.foreign = held_by("team-a", "a1", 2);
    let quota = baton_api::tenant::Quota { cpus: Some(5.0), instances: Some(4), ..Default::default() };
    let mut tenant = (*snap.tenants[0]).clone();
    tenant.spec.quota = quota;
    snap.tenants[0] = Arc::new(tenant.clone());
    let planned = plan(&snap, &ctx());
    assert_eq!(planned.launches.len(), 2, "4 instances at most: 2 held, 2 placed");
    let warning = planned.events.iter().find(|e| e.reason == "QuotaExceeded").expect("a QuotaExceeded event");
    assert_eq!(warning.type_, EventType::Warning);
    assert_eq!(
        warning.message, "instances held back: they would take tenant team-a past its quota (instances=4)",
        "the limit that binds is named"
    );

    // At its quota: nothing more, whatever the cluster has room for; what runs keeps running.
    snap.foreign = held_by("team-a", "a1", 4);
    let planned = plan(&snap, &ctx());
    assert!(planned.launches.is_empty() && planned.stops.is_empty());
    // Cpus bind first when they are the tighter limit.
    tenant.spec.quota = baton_api::tenant::Quota { cpus: Some(3.5), ..Default::default() };
    snap.tenants[0] = Arc::new(tenant.clone());
    snap.foreign = held_by("team-a", "a1", 2);
    let planned = plan(&snap, &ctx());
    assert_eq!(planned.launches.len(), 1, "3.5 cpus: 2 held, 1 more");
    assert!(planned.events.iter().any(|e| e.message.ends_with("(cpus=3.5)")));
    // Without a quota, every request is placed.
    tenant.spec.quota = Default::default();
    snap.tenants[0] = Arc::new(tenant);
    assert_eq!(plan(&snap, &ctx()).launches.len(), 4);
}

/// A tick's passes over every instance are split over threads at scale: the plan is the same
/// whatever the number of threads. 13,000 instances (parts of 4,096 at least) of 520 apps
/// (reported in parts of 256 at least),
/// some of whose ids interleave (`a1-1-000` sorts between `a1-019` and `a1-120`), at old
/// versions, failed, failing their checks, on an agent that stopped reporting, scaled up and
/// down, a new app, and the instances of a deleted app.
#[test]
fn a_plan_is_the_same_on_any_number_of_threads() {
    use crate::schedule::Usage;
    let mut apps = Vec::new();
    for i in 0..520 {
        let name = if i % 8 == 7 { format!("a{}-1", i / 8) } else { format!("a{i}") };
        let builder = app(&name).instances(25 + (i % 5) - 2);
        apps.push(if i % 3 == 0 { builder.tcp_check(3).build() } else { builder.build() });
    }
    // And a new app: nothing runs yet.
    apps.push(app("new").instances(30).build());
    let deleted = app("z-deleted").build();
    let mut instances = Vec::new();
    for app in apps.iter().filter(|a| a.metadata.name.as_deref() != Some("new")).chain([&deleted]) {
        for n in 0..25u32 {
            let agent = if n % 7 == 3 { "gone".to_string() } else { format!("n{}", n % 50) };
            // The last five after a gap: `a1-1-000` sorts between `a1-019` and `a1-120`.
            let built = instance(app, &agent, if n < 20 { n } else { 100 + n });
            instances.push(match n % 10 {
                0 => built.version("old").running().build(),
                1 => built.failed(30).build(),
                2 if !app.spec.health_checks.is_empty() => built.failing(3).build(),
                _ if !app.spec.health_checks.is_empty() => built.passing().build(),
                _ => built.running().build(),
            });
        }
    }
    let agents = (0..50).map(|n| agent(&format!("n{n}")).mem(1 << 20).build()).collect();
    let snap = snapshot(&apps.iter().collect::<Vec<_>>(), agents, instances);
    assert!(snap.instances.len() >= 3 * crate::parallel::MIN_PER_PART, "{} instances", snap.instances.len());

    let one = Usage::of(&snap);
    for threads in [2, 3, 8] {
        let split = Usage::in_parts(&snap, threads);
        assert_eq!(split.apps().collect::<BTreeSet<_>>(), one.apps().collect::<BTreeSet<_>>());
        for uid in one.apps() {
            let ids = |usage: &Usage<'_>| usage.instances_of(uid).map(|i| i.id().to_string()).collect::<Vec<_>>();
            assert_eq!(ids(&split), ids(&one), "{uid} in {threads} parts");
        }
    }

    // Each app's instances, classified run by run as they are gathered, fall into the same
    // sets as when classified in one go — some apps' ids in more than one run.
    use super::classify::AppInstances;
    let runs = 1 + snap.instances.values().zip(snap.instances.values().skip(1)).filter(|(a, b)| !a.same_app(b)).count();
    assert!(runs > 521, "{runs} runs of 521 apps' instances: some apps' ids interleave");
    let described = |sets: &AppInstances<'_>| {
        let ids = |set: &[&InstanceState]| set.iter().map(|i| i.id()).collect::<Vec<_>>().join(" ");
        format!("{:?} {:?} {:?}", sets.sets().map(|set| ids(set)), sets.next_change, sets.observed)
    };
    for threads in [1, 2, 3, 8] {
        let observed = super::observe::observe(&snap, &PlanContext { threads, ..ctx() });
        for seen in &observed.apps {
            let uid = seen.app.metadata.uid.as_deref().unwrap();
            let strategy = seen.app.spec.unreachable_strategy;
            let whole =
                AppInstances::classify(observed.usage.instances_of(uid), &seen.version, strategy, &observed.reach);
            assert_eq!(described(&seen.sets), described(&whole), "{} on {threads} threads", seen.path);
        }
    }

    let on_one = plan(&snap, &ctx());
    assert!(
        !on_one.launches.is_empty() && !on_one.stops.is_empty() && !on_one.removals.is_empty(),
        "a tick with work of every kind: {} launches, {} stops, {} removals",
        on_one.launches.len(),
        on_one.stops.len(),
        on_one.removals.len()
    );
    for threads in [2, 3, 8] {
        let on_more = plan(&snap, &PlanContext { threads, ..ctx() });
        assert!(
            on_more == on_one,
            "{threads} threads planned otherwise: {} launches, {} stops, {} statuses (one thread: {}, {}, {})",
            on_more.launches.len(),
            on_more.stops.len(),
            on_more.statuses.len(),
            on_one.launches.len(),
            on_one.stops.len(),
            on_one.statuses.len()
        );
    }
}

/// A status found up to date is not built again while what it is built from stays (the App,
/// by its resourceVersion, and its counts); when any of it changes, it is built and written.
/// (Debug builds, as here, build it anyway and check it is the same.)
#[test]
fn a_status_found_up_to_date_is_built_again_only_when_its_basis_changes() {
    let web = app("web").instances(3).build();
    let agents = || vec![agent("a1").build()];
    let running = |web: &Arc<baton_api::App>| (0..3).map(|n| instance(web, "a1", n).running().build()).collect();
    let first = plan(&snapshot(&[&web], agents(), running(&web)), &ctx());
    assert_eq!(first.statuses.len(), 1, "a new App gets its status");
    assert!(first.settled.is_empty(), "nothing up to date yet");

    // As the API server has it once the status is written.
    let mut written = (*web).clone();
    written.status = Some(first.statuses[0].status.clone());
    written.metadata.resource_version = Some("2".into());
    let web = Arc::new(written);
    let found = plan(&snapshot(&[&web], agents(), running(&web)), &ctx());
    assert!(found.statuses.is_empty(), "up to date: {:?}", found.statuses);
    let uids: Vec<&str> = found.settled.iter().map(|(uid, _)| uid.as_str()).collect();
    assert_eq!(uids, ["uid-web"]);
    let settled = || Some(Arc::new(found.settled.iter().cloned().collect::<super::Settled>()));

    // The next tick, the same: nothing to write, up to date again.
    let snap = Snapshot { settled: settled(), ..snapshot(&[&web], agents(), running(&web)) };
    let again = plan(&snap, &PlanContext::at(now() + jiff::SignedDuration::from_secs(30), 7));
    assert!(again.statuses.is_empty(), "{:?}", again.statuses);
    assert_eq!(again.settled, found.settled);

    // An instance stops running: its counts change, the status is written.
    let mut instances: Vec<InstanceState> = running(&web);
    instances[2] = instance(&web, "a1", 2).phase(Phase::Staging).build();
    let snap = Snapshot { settled: settled(), ..snapshot(&[&web], agents(), instances) };
    let changed = plan(&snap, &ctx());
    assert_eq!(changed.statuses.len(), 1);
    assert_eq!(changed.statuses[0].status.running, 2);
    assert!(changed.settled.is_empty());

    // Someone else writes the status (a new resourceVersion): it is built, and written back.
    let mut overwritten = (*web).clone();
    overwritten.status.as_mut().unwrap().running = 0;
    overwritten.metadata.resource_version = Some("3".into());
    let overwritten = Arc::new(overwritten);
    let snap = Snapshot { settled: settled(), ..snapshot(&[&overwritten], agents(), running(&overwritten)) };
    let restored = plan(&snap, &ctx());
    assert_eq!(restored.statuses.len(), 1);
    assert_eq!(restored.statuses[0].status.running, 3);

    // Without a resourceVersion (not read from the API server), never taken as settled.
    let mut unversioned = (*web).clone();
    unversioned.metadata.resource_version = None;
    let unversioned = Arc::new(unversioned);
    assert!(plan(&snapshot(&[&unversioned], agents(), running(&unversioned)), &ctx()).settled.is_empty());
}
