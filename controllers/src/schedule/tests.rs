//! Placement tests: every filter and scorer through the placer, over built snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_api::constraints::Constraint;
use baton_api::{AgentRecord, App, ResourceAmounts};

use super::*;
use crate::plan::{PlanContext, plan};
use crate::snapshot::InstanceState;
use crate::testing::{agent, app, instance, now, snapshot};

fn request<'a>(app: &'a App, asks: &'a [PortAsk], constraints: &'a [Constraint]) -> Request<'a> {
    Request {
        scope: &baton_api::Scope::Platform,
        app_uid: app.metadata.uid.as_deref().unwrap(),
        app: app.metadata.name.as_deref().unwrap(),
        whole_agent: app.spec.placement.whole_agent,
        resources: app.spec.resources.amounts(),
        ports: asks,
        constraints,
        seed: 7,
    }
}

fn constraints_of(app: &App) -> Vec<Constraint> {
    app.spec.constraints.iter().map(|c| Constraint::parse(c).unwrap()).collect()
}

/// Places `n` instances of `app` on `agents` (with `existing` instances), one plan.
fn place_n(
    app: &Arc<App>,
    agents: Vec<Arc<AgentRecord>>,
    existing: Vec<InstanceState>,
    n: usize,
) -> (Vec<String>, Option<Rejections>) {
    let snap = snapshot(&[app], agents, existing);
    let usage = Usage::of(&snap);
    let mut placer = Placer::new(&snap, &usage);
    let constraints = constraints_of(app);
    let asks: Vec<PortAsk> = vec![PortAsk::Dynamic; app.spec.ports.len()];
    let mut placed = Vec::new();
    for _ in 0..n {
        match placer.place(&request(app, &asks, &constraints)) {
            Fit::Placed(p) => placed.push(p.agent),
            Fit::Unschedulable(r) => return (placed, Some(r)),
        }
    }
    (placed, None)
}

fn summary(app: &App, rejections: &Rejections) -> String {
    rejections.summary(&constraints_of(app))
}

#[test]
fn resources_filter_names_the_first_missing_resource() {
    let cases: Vec<(Arc<App>, &str)> = vec![
        (app("cpu").cpus(8.0).build(), "1 agent: insufficient cpus"),
        (app("mem").mem(8192.0).build(), "1 agent: insufficient mem"),
        (app("gpu").gpus(1).build(), "1 agent: insufficient gpus"),
    ];
    for (app, expected) in cases {
        let (placed, rejections) = place_n(&app, vec![agent("a1").build()], vec![], 1);
        assert!(placed.is_empty());
        assert_eq!(summary(&app, &rejections.unwrap()), expected);
    }
    let gpu = app("gpu").gpus(1).build();
    let (placed, _) = place_n(&gpu, vec![agent("a1").build(), agent("g1").gpus(2).build()], vec![], 2);
    assert_eq!(placed, ["g1", "g1"], "gpu instances go to the agent with gpus");
}

#[test]
fn fixed_ports_must_be_offered_and_free() {
    let fixed = app("fixed").fixed_port(31005).build();
    let asks = [PortAsk::Fixed(31005)];
    let constraints = [];
    let taken = instance(&fixed, "a1", 0).running().port(31005).build();
    let agents = vec![agent("a1").build(), agent("a2").build(), agent("a3").port_range(40000, 40010).build()];
    let snap = snapshot(&[&fixed], agents, vec![taken]);
    let usage = Usage::of(&snap);
    let mut placer = Placer::new(&snap, &usage);
    match placer.place(&request(&fixed, &asks, &constraints)) {
        Fit::Placed(p) => assert_eq!((p.agent.as_str(), p.ports.as_slice()), ("a2", &[31005][..])),
        other => panic!("a2 has the port free: {other:?}"),
    }
    match placer.place(&request(&fixed, &asks, &constraints)) {
        Fit::Unschedulable(r) => assert_eq!(r.summary(&constraints), "3 agents: port 31005 not free"),
        other => panic!("no agent has the port left: {other:?}"),
    }
}

#[test]
fn dynamic_ports_need_enough_free_ones() {
    let three_ports = app("web").ports(3).build();
    let (placed, rejections) = place_n(&three_ports, vec![agent("a1").port_range(31000, 31001).build()], vec![], 1);
    assert!(placed.is_empty());
    assert_eq!(summary(&three_ports, &rejections.unwrap()), "1 agent: not enough free ports");
}

fn racks(n: usize) -> Vec<Arc<AgentRecord>> {
    (1..=n).map(|i| agent(&format!("a{i}")).attribute("rack", &format!("r{i}")).build()).collect()
}

#[test]
fn unique_places_once_per_value_even_within_one_plan() {
    let unique = app("u").constraint(&["hostname", "UNIQUE"]).build();
    let (placed, rejections) = place_n(&unique, racks(3), vec![], 4);
    let distinct: std::collections::BTreeSet<&String> = placed.iter().collect();
    assert_eq!((placed.len(), distinct.len()), (3, 3));
    assert_eq!(summary(&unique, &rejections.unwrap()), "3 agents: constraint hostname UNIQUE");
}

#[test]
fn cluster_group_by_max_per_like_unlike_is() {
    let counts = |placed: &[String]| -> BTreeMap<String, usize> {
        placed.iter().fold(BTreeMap::new(), |mut m, a| {
            *m.entry(a.clone()).or_default() += 1;
            m
        })
    };
    let cluster = app("c").constraint(&["rack", "CLUSTER", "r2"]).build();
    assert_eq!(place_n(&cluster, racks(3), vec![], 3).0, ["a2", "a2", "a2"]);
    let cluster_any = app("c").constraint(&["rack", "CLUSTER"]).build();
    let (placed, _) = place_n(&cluster_any, racks(3), vec![], 3);
    assert_eq!(counts(&placed).len(), 1, "CLUSTER without a value keeps to one value: {placed:?}");

    let group = app("g").constraint(&["rack", "GROUP_BY"]).build();
    let (placed, _) = place_n(&group, racks(3), vec![], 6);
    assert_eq!(counts(&placed).values().copied().collect::<Vec<_>>(), [2, 2, 2], "GROUP_BY spreads evenly");

    let max_per = app("m").constraint(&["rack", "MAX_PER", "2"]).build();
    let (placed, rejections) = place_n(&max_per, racks(2), vec![], 5);
    assert_eq!(placed.len(), 4);
    assert_eq!(summary(&max_per, &rejections.unwrap()), "2 agents: constraint rack MAX_PER 2");

    let like = app("l").constraint(&["rack", "LIKE", "r[23]"]).build();
    assert!(place_n(&like, racks(3), vec![], 4).0.iter().all(|a| a != "a1"));
    let unlike = app("n").constraint(&["rack", "UNLIKE", "r[12]"]).build();
    let mut with_bare = racks(3);
    with_bare.push(agent("bare").build());
    let (placed, _) = place_n(&unlike, with_bare, vec![], 4);
    assert!(placed.iter().all(|a| a == "a3" || a == "bare"), "UNLIKE matches agents without the attribute: {placed:?}");
    let is = app("i").constraint(&["rack", "IS", "r1"]).build();
    let (placed, rejections) = place_n(&is, racks(2), vec![], 1);
    assert_eq!(placed, ["a1"]);
    assert!(rejections.is_none());
}

#[test]
fn existing_instances_count_for_constraints() {
    let unique = app("u").constraint(&["hostname", "UNIQUE"]).build();
    let existing = vec![instance(&unique, "a1", 0).running().build(), instance(&unique, "a2", 1).running().build()];
    let (placed, rejections) = place_n(&unique, racks(3), existing, 2);
    assert_eq!(placed, ["a3"]);
    assert_eq!(summary(&unique, &rejections.unwrap()), "3 agents: constraint hostname UNIQUE");
}

#[test]
fn bin_packing_keeps_whole_agents_free_for_big_instances() {
    let small = app("small").cpus(1.0).mem(100.0).build();
    let agents = || vec![agent("a1").build(), agent("a2").build(), agent("a3").build()];
    let (placed, _) = place_n(&small, agents(), vec![], 4);
    assert_eq!(placed, ["a1", "a1", "a1", "a1"], "small instances fill one agent first");
    // After them, two whole agents remain for instances that need all of one.
    let existing: Vec<InstanceState> = (0..4).map(|n| instance(&small, "a1", n).running().build()).collect();
    let big = app("big").cpus(4.0).mem(4000.0).build();
    let (placed, rejections) = place_n(&big, agents(), existing, 2);
    assert_eq!(placed, ["a2", "a3"]);
    assert!(rejections.is_none());
}

#[test]
fn the_dominant_resource_decides_the_fit() {
    let memory_heavy = app("m").cpus(0.1).mem(3000.0).build();
    let a1 = agent("a1").build(); // 4 cpus, 4096 MiB
    let a2 = agent("a2").build();
    // a2 has little memory left, a1 few cpus: the memory-heavy instance fits only on a1,
    // and is placed there although a1's cpus are the more used.
    let used_cpus = app("cpu-user").cpus(3.5).mem(10.0).build();
    let used_mem = app("mem-user").cpus(0.1).mem(2000.0).build();
    let existing =
        vec![instance(&used_cpus, "a1", 0).running().build(), instance(&used_mem, "a2", 1).running().build()];
    let (placed, _) = place_n(&memory_heavy, vec![a1, a2], existing, 1);
    assert_eq!(placed, ["a1"]);
}

#[test]
fn scorers_are_pure_functions_of_the_slot() {
    let record = agent("a1").build();
    let slot = AgentSlot {
        record: &record,
        free: ResourceAmounts { millicpus: 2000, mem_mib: 4096, disk_mib: 1024, gpus: 0 },
        used_ports: Default::default(),
        free_ports: 100,
        cordoned: false,
        reserved_for: None,
        tenant: None,
        barred: &[],
        live: 0,
        exclusive: false,
    };
    let small = app("s").cpus(1.0).mem(100.0).build();
    let req = request(&small, &[], &[]);
    assert_eq!(scorers::binpack(&slot, &req), 750_000, "cpus dominate: (2 + 1) of 4");
    assert_eq!(scorers::binpack(&AgentSlot { free: slot.record.resources, ..slot.clone() }, &req), 250_000);
}

#[test]
fn the_planner_reports_why_a_unique_app_is_pending() {
    let unique = app("u").instances(4).constraint(&["hostname", "UNIQUE"]).build();
    let plan = plan(&snapshot(&[&unique], racks(3), vec![]), &PlanContext::at(now(), 1));
    assert_eq!(plan.launches.len(), 3);
    let status = &plan.statuses[0].status;
    assert_eq!(status.pending.as_ref().map(|p| p.instances), Some(1));
    let pending = status.condition(baton_api::app::CONDITION_PENDING).unwrap();
    assert_eq!(pending.message, "1 of 4 instances cannot be placed: 3 agents: constraint hostname UNIQUE");
}

#[test]
fn max_concurrent_starts_and_the_strategy_reach_the_plan() {
    let limited = app("l").instances(10).max_concurrent_starts(3).build();
    let plan1 = plan(
        &snapshot(&[&limited], vec![agent("a1").build(), agent("a2").build()], vec![]),
        &PlanContext::at(now(), 1),
    );
    assert_eq!(plan1.launches.len(), 3);
    let half = app("h").instances(4).strategy(0.5, 0.0).env("V", "2").build();
    let old: Vec<InstanceState> = (0..4).map(|n| instance(&half, "a1", n).version("old").running().build()).collect();
    let plan2 = plan(&snapshot(&[&half], vec![agent("a1").build()], old), &PlanContext::at(now(), 1));
    assert_eq!((plan2.stops.len(), plan2.launches.len()), (2, 0), "half stop first; the new start once they are gone");
}

#[test]
fn an_apps_instances_are_found_in_each_of_their_runs() {
    // In id order "web-1-000" comes between "web-005" and "web-100": web's instances are in
    // two runs, and the iterator knows how many are left all along.
    let (web, web1) = (app("web").build(), app("web-1").build());
    let instances =
        vec![instance(&web, "a1", 5).build(), instance(&web, "a1", 100).build(), instance(&web1, "a1", 0).build()];
    let snap = snapshot(&[&web, &web1], vec![agent("a1").build()], instances);
    let usage = Usage::of(&snap);
    let ids = |app: &App| {
        let mut found = usage.instances_of(app.metadata.uid.as_deref().unwrap());
        let mut ids = Vec::new();
        while found.len() > 0 {
            let before = found.len();
            ids.push(found.next().expect("as many as it said").id().to_string());
            assert_eq!(found.len(), before - 1);
        }
        assert!(found.next().is_none());
        ids
    };
    assert_eq!(ids(&web), ["web-005", "web-100"]);
    assert_eq!(ids(&web1), ["web-1-000"]);
    assert_eq!(usage.instances_of("no-such-uid").len(), 0);
}
