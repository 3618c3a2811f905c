//! Planner tests of groups: dependency gates, deletion order, scale factors, group status.
//! A small world applies each plan (launches start on the next tick, stops end at once) so
//! that an ordering shows tick by tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_api::app::{CONDITION_DEPENDENCIES, CONDITION_PROGRESSING, STOP_FINALIZER};
use baton_api::{App, AppGroup, AppStatus, Phase, StatusRecord};

use super::*;
use crate::snapshot::InstanceState;
use crate::testing::{agent, app, group, instance, now, snapshot};

fn ctx() -> PlanContext {
    PlanContext::at(now(), 7)
}

/// Apps, groups and instances; [`World::tick`] plans and applies.
struct World {
    apps: Vec<Arc<App>>,
    groups: Vec<Arc<AppGroup>>,
    instances: BTreeMap<String, InstanceState>,
    revision: i64,
    /// Events of every tick, `(tick, reason, app, message)`.
    events: Vec<(usize, &'static str, String, String)>,
    ticks: usize,
}

impl World {
    fn new(apps: Vec<Arc<App>>, groups: Vec<Arc<AppGroup>>) -> Self {
        Self { apps, groups, instances: BTreeMap::new(), revision: 100, events: Vec::new(), ticks: 0 }
    }

    fn app(&self, name: &str) -> &Arc<App> {
        self.apps.iter().find(|a| a.metadata.name.as_deref() == Some(name)).expect("the app")
    }

    fn status(&self, name: &str) -> &AppStatus {
        self.app(name).status.as_ref().expect("a status")
    }

    fn condition(&self, name: &str, type_: &str) -> (String, String) {
        let c = self.status(name).condition(type_).expect("the condition");
        (c.reason.clone(), c.message.clone())
    }

    /// Instances of `app` whose process runs.
    fn running(&self, name: &str) -> usize {
        self.instances.values().filter(|i| i.record.run.app.name == name && i.is_running()).count()
    }

    fn replace_app(&mut self, name: &str, change: impl FnOnce(&mut App)) {
        let at = self.apps.iter().position(|a| a.metadata.name.as_deref() == Some(name)).expect("the app");
        let mut app = (*self.apps[at]).clone();
        change(&mut app);
        self.apps[at] = Arc::new(app);
    }

    fn tick(&mut self) -> Plan {
        self.ticks += 1;
        // What was launched last tick runs now (healthy: these apps have no checks).
        for state in self.instances.values_mut() {
            if state.phase() == Some(Phase::Staging) {
                state.set_status(Some(Arc::new(StatusRecord::new(Phase::Running))));
            }
        }
        let mut snapshot = snapshot(&[], vec![agent("a1").mem(64 * 1024).build()], Vec::new());
        snapshot.apps = self.apps.clone();
        snapshot.groups = self.groups.clone();
        snapshot.instances = self.instances.clone().into();
        // A seed per tick, as the controller draws one: ids must not repeat.
        let plan = plan(&snapshot, &PlanContext::at(now(), self.ticks as u64));
        for launch in &plan.launches {
            self.revision += 1;
            let state = InstanceState::new(
                Arc::new(launch.record.clone()),
                self.revision,
                Some(Arc::new(StatusRecord::new(Phase::Staging))),
            );
            self.instances.insert(launch.record.id.clone(), state);
        }
        for stop in &plan.stops {
            self.instances.remove(&stop.record.id);
        }
        for removal in &plan.removals {
            self.instances.remove(&removal.id);
        }
        for update in &plan.statuses {
            self.replace_app(&update.name, |app| app.status = Some(update.status.clone()));
        }
        for change in &plan.finalizers {
            let gone = self.app(&change.name).metadata.deletion_timestamp.is_some() && change.finalizers.is_empty();
            if gone {
                self.apps.retain(|a| a.metadata.name.as_deref() != Some(change.name.as_str()));
            } else {
                self.replace_app(&change.name, |app| app.metadata.finalizers = Some(change.finalizers.clone()));
            }
        }
        for update in &plan.group_statuses {
            let at = self.groups.iter().position(|g| g.metadata.name.as_deref() == Some(&update.name)).unwrap();
            let mut group = (*self.groups[at]).clone();
            group.status = Some(update.status.clone());
            self.groups[at] = Arc::new(group);
        }
        for event in &plan.events {
            if let events::Regarding::App(app) = &event.regarding {
                self.events.push((self.ticks, event.reason, app.name.clone(), event.message.clone()));
            }
        }
        plan
    }

    /// The tick at which each app first launched.
    fn first_launches(&mut self, ticks: usize) -> BTreeMap<String, usize> {
        let mut first = BTreeMap::new();
        for _ in 0..ticks {
            let tick = self.ticks + 1;
            for launch in self.tick().launches {
                first.entry(launch.record.run.app.name.clone()).or_insert(tick);
            }
        }
        first
    }
}

/// db ← api ← web in `/shop`, with relative dependencies.
fn shop() -> Vec<Arc<App>> {
    vec![
        app("db").group("/shop").instances(1).build(),
        app("api").group("/shop").instances(2).dependencies(&["db"]).build(),
        app("web").group("/shop").instances(2).dependencies(&["/shop/api"]).build(),
    ]
}

#[test]
fn a_three_layer_chain_deploys_layer_by_layer() {
    let mut world = World::new(shop(), Vec::new());
    let first = world.first_launches(6);
    assert_eq!(first, BTreeMap::from([("db".into(), 1), ("api".into(), 2), ("web".into(), 3)]));
    for (name, wanted) in [("db", 1), ("api", 2), ("web", 2)] {
        assert_eq!(world.running(name), wanted, "{name}");
        assert_eq!(world.condition(name, CONDITION_DEPENDENCIES).0, "Available", "{name}");
    }
    assert_eq!(world.status("web").id.as_deref(), Some("/shop/web"));
    // Tick 1: web waited for api, and said so once.
    let waiting: Vec<_> = world.events.iter().filter(|e| e.1 == "WaitingForDependencies").collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(waiting[0].2, "api");
    assert_eq!(waiting[0].3, "waiting for /shop/db (0 of 1 instances available) before starting");
}

#[test]
fn a_failing_dependency_blocks_its_dependents_with_the_reason() {
    let db = app("db").group("/shop").tcp_check(3).build();
    let api = app("api").group("/shop").dependencies(&["db"]).build();
    // db runs but has never passed its health check.
    let failing = instance(&db, "a1", 0).failing(1).never_healthy().build();
    let plan = plan(&snapshot(&[&db, &api], vec![agent("a1").build()], vec![failing]), &ctx());
    assert!(plan.launches.iter().all(|l| l.record.run.app.name != "api"), "api must not start");
    let status = &plan.statuses.iter().find(|s| s.name == "api").expect("api's status").status;
    assert_eq!(status.waiting_for, ["/shop/db"]);
    let dependencies = status.condition(CONDITION_DEPENDENCIES).unwrap();
    assert_eq!((dependencies.status.as_str(), dependencies.reason.as_str()), ("False", "Waiting"));
    assert_eq!(dependencies.message, "waiting for /shop/db (0 of 1 instances available) before starting");
    let progressing = status.condition(CONDITION_PROGRESSING).unwrap();
    assert_eq!(progressing.reason, "WaitingForDependencies");
    let event = plan.events.iter().find(|e| e.reason == "WaitingForDependencies").expect("an event");
    assert_eq!(event.message, dependencies.message);
}

#[test]
fn a_dependency_on_nothing_waits_and_names_it() {
    let api = app("api").group("/shop").dependencies(&["../infra/db"]).build();
    let groups = vec![group("/shop", &["/dns"], 1.0)];
    let mut world = World::new(vec![api], groups);
    let plan = world.tick();
    assert!(plan.launches.is_empty());
    assert_eq!(world.status("api").waiting_for, ["/infra/db", "/dns"]);
    assert_eq!(
        world.condition("api", CONDITION_DEPENDENCIES).1,
        "waiting for /infra/db (no app there yet), /dns (no app there yet; inherited from the AppGroup at /shop) \
         before starting"
    );
}

#[test]
fn a_group_dependency_waits_for_every_app_in_the_group() {
    let apps = vec![
        app("mongo").group("/product/database").build(),
        app("mysql").group("/product/database").instances(2).build(),
        app("rails").group("/product/service").build(),
    ];
    // Marathon's example: the service group depends on the database group, relatively.
    let groups = vec![group("/product/service", &["../database"], 1.0)];
    let mut world = World::new(apps, groups);
    let first = world.first_launches(4);
    assert_eq!(first, BTreeMap::from([("mongo".into(), 1), ("mysql".into(), 1), ("rails".into(), 2)]));
}

#[test]
fn a_new_version_waits_until_the_dependencies_run_theirs() {
    let mut world = World::new(shop(), Vec::new());
    world.first_launches(4);
    // Every app gets a new command at once: db moves first, then api, then web.
    for name in ["db", "api", "web"] {
        world.replace_app(name, |app| app.spec.cmd = Some("sleep 2000".into()));
    }
    let first = world.first_launches(8);
    assert_eq!(first, BTreeMap::from([("db".into(), 1 + 4), ("api".into(), 3 + 4), ("web".into(), 5 + 4)]));
    let api_waits = world.events.iter().find(|e| e.1 == "WaitingForDependencies" && e.2 == "api" && e.0 > 4);
    let message = &api_waits.expect("api waited for db").3;
    assert!(message.starts_with("waiting for /shop/db (moving to version "), "{message}");
    assert!(
        message.contains("0 of 1 instances available, 1 at older versions) before moving to version "),
        "{message}"
    );
    for (name, wanted) in [("db", 1), ("api", 2), ("web", 2)] {
        assert_eq!(world.running(name), wanted, "{name}");
    }
}

#[test]
fn an_app_at_its_current_version_keeps_scaling_while_a_dependency_is_down() {
    let db = app("db").build();
    let api = app("api").instances(3).dependencies(&["/db"]).build();
    let instances = vec![instance(&api, "a1", 0).running().build()];
    let plan = plan(&snapshot(&[&db, &api], vec![agent("a1").build()], instances), &ctx());
    let api_launches = plan.launches.iter().filter(|l| l.record.run.app.name == "api").count();
    assert_eq!(api_launches, 2, "scaling is not held back");
    let status = &plan.statuses.iter().find(|s| s.name == "api").unwrap().status;
    assert!(status.waiting_for.is_empty());
    assert_eq!(status.condition(CONDITION_DEPENDENCIES).unwrap().reason, "Unavailable");
}

#[test]
fn deleted_together_dependents_stop_before_what_they_depend_on() {
    let mut world = World::new(shop(), Vec::new());
    world.first_launches(4);
    for name in ["db", "api", "web"] {
        world.replace_app(name, |app| {
            app.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()))
        });
    }
    let mut stopped: Vec<(usize, String)> = Vec::new();
    for tick in 1..=6 {
        let plan = world.tick();
        for stop in &plan.stops {
            assert_eq!(stop.reason, StopReason::AppDeleted);
            stopped.push((tick, stop.record.run.app.name.clone()));
        }
        if tick == 1 {
            assert_eq!(world.condition("db", CONDITION_PROGRESSING).0, "WaitingForDependents");
            assert_eq!(
                world.condition("api", CONDITION_PROGRESSING).1,
                "deleted: stopping after the apps that depend on it: /shop/web"
            );
        }
    }
    stopped.dedup();
    let order: Vec<(usize, &str)> = stopped.iter().map(|(t, a)| (*t, a.as_str())).collect();
    assert_eq!(order, [(1, "web"), (2, "api"), (3, "db")]);
    assert!(world.apps.is_empty(), "each App goes once its instances are gone (finalizer removed)");
}

#[test]
fn a_deleted_app_alone_waits_a_moment_for_its_dependents_then_stops() {
    let mut world = World::new(shop(), Vec::new());
    world.first_launches(4);
    let deleted_at = |seconds_ago: i64| {
        move |app: &mut App| {
            let at = now() - jiff::SignedDuration::from_secs(seconds_ago);
            app.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
        }
    };
    // `kubectl delete -f` deletes one object after the other: api may be next.
    world.replace_app("db", deleted_at(1));
    let plan = world.tick();
    assert!(plan.stops.is_empty(), "db waits for api, which may be deleted too");
    assert_eq!(plan.next_wakeup, Some(now() + jiff::SignedDuration::from_secs(2)), "and looks again when it settles");
    world.replace_app("db", deleted_at(3));
    let plan = world.tick();
    assert_eq!(plan.stops.iter().map(|s| s.record.run.app.name.as_str()).collect::<Vec<_>>(), ["db"]);
    world.tick();
    assert!(world.apps.iter().all(|a| a.metadata.name.as_deref() != Some("db")));
    assert_eq!(world.running("api"), 2, "dependents already running keep running");
}

#[test]
fn the_finalizer_goes_on_every_app() {
    let web = app("web").without_finalizer().build();
    let plan = plan(&snapshot(&[&web], vec![agent("a1").build()], Vec::new()), &ctx());
    assert_eq!(plan.finalizers.len(), 1);
    assert_eq!(plan.finalizers[0].finalizers, [STOP_FINALIZER]);
    assert_eq!(plan.finalizers[0].resource_version, "10", "conditional on the version it was decided on");
}

#[test]
fn a_scale_factor_scales_and_restarts_nothing() {
    let apps = vec![app("web").group("/shop/front").instances(2).build(), app("db").group("/shop").build()];
    let mut world = World::new(apps, vec![group("/shop", &[], 2.0), group("/shop/front", &[], 1.5)]);
    world.first_launches(3);
    assert_eq!((world.running("web"), world.running("db")), (6, 2), "2 × 2 × 1.5 and 1 × 2");
    assert_eq!(world.status("web").desired, 6);
    let version = world.status("web").version.clone();
    world.groups[0] = group("/shop", &[], 1.0);
    let plan = world.tick();
    assert!(plan.stops.iter().all(|s| s.reason == StopReason::ScaledDown));
    assert_eq!(plan.stops.len(), 3 + 1, "web to ceil(2 × 1.5) = 3, db to 1");
    assert!(plan.launches.is_empty());
    assert_eq!(world.status("web").version, version, "the version does not change");
    let scaled = world.events.iter().find(|e| e.1 == "Scaled" && e.2 == "web").expect("a Scaled event");
    assert_eq!(scaled.3, "scaled from 6 to 3 instances by its groups' scale factors");
}

#[test]
fn an_app_groups_status_counts_its_apps_and_their_instances() {
    let mut world = World::new(shop(), vec![group("/shop", &[], 1.0), group("/empty", &[], 1.0)]);
    world.tick();
    let status = world.groups[0].status.clone().expect("a status");
    assert_eq!((status.apps, status.available_apps, status.ready.as_str()), (3, 0, "0/5"));
    world.first_launches(4);
    let status = world.groups[0].status.clone().expect("a status");
    assert_eq!((status.apps, status.available_apps, status.ready.as_str()), (3, 3, "5/5"));
    assert_eq!(status.conditions[0].reason, "AllAppsAvailable");
    let empty = world.groups[1].status.clone().expect("a status");
    assert_eq!((empty.apps, empty.ready.as_str(), empty.conditions[0].reason.as_str()), (0, "0/0", "NoApps"));
    // Written only when it changes.
    assert!(world.tick().group_statuses.is_empty());
}

/// The API server refuses cycles, but apps stored before (or around) the check may form
/// one: its apps never start, and say why.
#[test]
fn a_stored_cycle_holds_its_apps_and_is_named() {
    let a = app("a").dependencies(&["/b"]).build();
    let b = app("b").dependencies(&["/a"]).build();
    let c = app("c").build();
    let plan = plan(&snapshot(&[&a, &b, &c], vec![agent("a1").build()], Vec::new()), &ctx());
    let launched: Vec<&str> = plan.launches.iter().map(|l| l.record.run.app.name.as_str()).collect();
    assert_eq!(launched, ["c"], "only the app outside the cycle starts");
    let status = &plan.statuses.iter().find(|s| s.name == "b").unwrap().status;
    let message = &status.condition(CONDITION_DEPENDENCIES).unwrap().message;
    assert!(
        message.starts_with("waiting for /b (dependency cycle: /b → /a → /b (/b depends on /a; /a depends on /b)"),
        "{message}"
    );
}
