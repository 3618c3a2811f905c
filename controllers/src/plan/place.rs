//! Stage 4, place: every app's launch demand, through one [`Placer`] in one order, so that
//! placements see each other (two instances of a UNIQUE app never land together in one
//! tick) and capacity is given out once. The placer is built only when there is demand: a
//! tick with nothing to launch does not index the cluster.
//!
//! Only the platform's controller places: it is the one arbiter of capacity, binding every
//! instance to an agent in its fenced transactions. A controller of another scope reports its
//! demand as waiting for the platform (docs/contributors/planner.md says how it will get there).
//!
//! Agents in maintenance take nothing ([`Drains`]); apps spread over the maintenance
//! partitions (soft, after constraints), so one window takes the smallest share of any app.
//! The stage that will order demand across tenants (share) sits between decide and place
//! (DESIGN.md §5); it takes and gives a queue of [`Demand`].

use std::sync::Arc;

use baton_api::constraints::Constraint;
use baton_api::records::{AssignedPort, Command};
use baton_api::{App, AppRef, Goal, InstanceRecord, RunSpec, Scope};

use super::maintain::Drains;
use super::status::Unplaced;
use super::vocabulary::Launch;
use crate::schedule::{Fit, Placer, PortAsk, Request, Usage};
use crate::snapshot::Snapshot;

/// Instances of one app to place.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'s> {
    /// The app's index among the decisions.
    pub index: usize,
    /// The scope the app belongs to.
    pub scope: &'s Scope,
    pub app: &'s App,
    /// The version they run.
    pub version: &'s str,
    pub count: usize,
}

/// What was placed for one demand.
#[derive(Default)]
pub struct Placed {
    pub launches: Vec<Launch>,
    /// What could not be placed, and why.
    pub unplaced: Option<Unplaced>,
}

/// Other scopes' apps whose controllers ask the platform to launch instances
/// (`status.launchRequest`), as demand of their scope, indexed from `first`: what each asks for
/// less the instances of its version created after the revision it decided on (those it has
/// not seen yet). Only the platform serves them.
pub fn requests<'s>(snapshot: &'s Snapshot, usage: &Usage<'s>, first: usize) -> Vec<Demand<'s>> {
    if !snapshot.scope.places() {
        return Vec::new();
    }
    snapshot
        .other_apps
        .iter()
        .enumerate()
        .filter_map(|(i, app)| {
            let request = app.status.as_ref()?.launch_request.as_ref()?;
            let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
            let scope = snapshot.namespaces.get(namespace).filter(|s| !s.places())?;
            if app.metadata.deletion_timestamp.is_some() || request.version != snapshot.version_of(app) {
                return None; // Gone, or changed since: its controller asks again.
            }
            let uid = app.metadata.uid.as_deref().unwrap_or_default();
            let served = usage
                .foreign_of(uid)
                .filter(|i| i.record.run.version == request.version && i.created > request.revision)
                .count();
            let count = (request.count.max(0) as usize).saturating_sub(served);
            (count > 0).then_some(Demand { index: first + i, scope, app, version: &request.version, count })
        })
        .collect()
}

/// Places the queue, in its order; `seed` drives instance ids and port choice. Returns what
/// was placed for each demand, with its app's index.
/// Where placement may go: agents in maintenance take nothing; apps spread over the
/// partitions of `spread_over`.
pub struct Room<'a> {
    pub drains: &'a Drains,
    /// Agents reserved for tenants.
    pub reserved: &'a super::share::Reserved,
    pub spread_over: Option<&'a str>,
    /// Empty agents kept for whole-agent instances.
    pub keep_free: usize,
}

pub fn place<'s>(
    snapshot: &'s Snapshot,
    usage: &'s Usage<'s>,
    queue: &[Demand<'_>],
    room: &Room<'_>,
    now: jiff::Timestamp,
    seed: u64,
) -> Vec<(usize, Placed)> {
    let rules = Rules { drains: room.drains, reserved: room.reserved };
    let mut placer: Option<Placer<'_>> = None;
    let mut ids = IdSource::new(seed);
    queue
        .iter()
        .filter(|demand| demand.count > 0)
        .map(|demand| {
            let mut placed = Placed::default();
            placed.unplaced = if snapshot.scope.places() {
                let placer = placer.get_or_insert_with(|| {
                    Placer::with_rules(snapshot, usage, &rules).spread_over(room.spread_over).keep_free(room.keep_free)
                });
                launch(demand, now, placer, &mut ids, &mut placed.launches)
            } else {
                Some(Unplaced {
                    count: demand.count,
                    why: format!(
                        "the {} controller asks the platform's to place them (status.launchRequest)",
                        snapshot.scope
                    ),
                    rejections: Vec::new(),
                })
            };
            (demand.index, placed)
        })
        .collect()
}

/// Maintenance's rules and tenants' reserved agents, for the placer.
struct Rules<'a> {
    drains: &'a Drains,
    reserved: &'a super::share::Reserved,
}

impl crate::schedule::AgentRules for Rules<'_> {
    fn cordons(&self, agent: &str) -> bool {
        self.drains.cordons(agent)
    }

    fn reserved_for(&self, agent: &str) -> Option<&str> {
        self.drains.reserved_for(agent)
    }

    fn barred(&self, agent: &str) -> &[String] {
        self.drains.barred(agent)
    }

    fn tenant_of(&self, agent: &str) -> Option<&str> {
        self.reserved.tenant_of(agent)
    }
}

/// Places the demand's new instances into `launches`; returns what could not be placed and
/// why.
fn launch(
    demand: &Demand<'_>,
    now: jiff::Timestamp,
    placer: &mut Placer<'_>,
    ids: &mut IdSource,
    launches: &mut Vec<Launch>,
) -> Option<Unplaced> {
    let Demand { scope, app, version, count, .. } = *demand;
    let spec = &app.spec;
    let (command, constraints) = match runnable(app) {
        Ok(runnable) => runnable,
        Err(why) => return (count > 0).then(|| Unplaced { count, why, rejections: Vec::new() }),
    };
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let app_name = format!("{}/{name}", app.metadata.namespace.as_deref().unwrap_or_default());
    let resources = spec.resources.amounts();
    // One run spec for every instance placed here.
    let run = Arc::new(RunSpec {
        app: AppRef {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            uid: uid.clone(),
        },
        scope: scope.clone(),
        version: version.to_string(),
        whole_agent: spec.placement.whole_agent,
        command,
        user: spec.user.clone(),
        fetch: spec.fetch.clone(),
        env: spec.env.clone(),
        labels: spec.labels.clone(),
        resources,
        kill_grace_seconds: spec.kill_grace_seconds(),
        health_checks: spec.health_checks.clone(),
        readiness_checks: spec.readiness_checks.clone(),
    });
    let asks: Vec<PortAsk> = spec
        .ports
        .iter()
        .map(|p| if spec.require_ports && p.port > 0 { PortAsk::Fixed(p.port as u16) } else { PortAsk::Dynamic })
        .collect();
    for placed in 0..count {
        let request = Request {
            scope,
            app_uid: &uid,
            app: &app_name,
            whole_agent: spec.placement.whole_agent,
            resources,
            ports: &asks,
            constraints: &constraints,
            seed: ids.next(),
        };
        let placement = match placer.place(&request) {
            Fit::Placed(placement) => placement,
            Fit::Unschedulable(rejections) => {
                // Every instance of an app asks for the same: if one does not fit, the
                // rest do not either.
                return Some(Unplaced {
                    count: count - placed,
                    why: rejections.summary(&constraints),
                    rejections: rejections.list(&constraints),
                });
            }
        };
        let ports = spec
            .ports
            .iter()
            .zip(&placement.ports)
            .map(|(definition, port)| AssignedPort {
                name: definition.name.clone(),
                port: *port,
                requested: u16::try_from(definition.port).unwrap_or(0),
            })
            .collect();
        launches.push(Launch {
            record: InstanceRecord {
                id: format!("{name}-{}", ids.suffix()),
                agent: placement.agent,
                host: placement.host,
                created_at: now,
                goal: Goal::Running,
                stop_reason: None,
                replaces: None,
                holds_slot: false,
                end_noted: false,
                ports,
                term: 0,
                planned_at: 0,
                run: run.clone(),
            },
        });
    }
    None
}

/// The command and parsed constraints of an app, or why it cannot run. Validation at apply
/// refuses such apps; this keeps one stored under older rules from being placed wrongly.
fn runnable(app: &App) -> Result<(Command, Vec<Constraint>), String> {
    let command = match (&app.spec.cmd, &app.spec.args) {
        (Some(cmd), _) => Command::Shell(cmd.clone()),
        (None, Some(args)) if !args.is_empty() => Command::Exec(args.clone()),
        _ => return Err("the app has neither cmd nor args".into()),
    };
    let constraints = app
        .spec
        .constraints
        .iter()
        .enumerate()
        .map(|(i, parts)| Constraint::parse(parts).map_err(|e| format!("spec.constraints[{i}] is invalid: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((command, constraints))
}

/// Deterministic pseudo-random numbers from the plan's seed (splitmix64): the same seed and
/// snapshot give the same ids and ports.
struct IdSource(u64);

impl IdSource {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Ten lowercase base-32 characters (50 bits), valid in a DNS label.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let mut n = self.next();
        (0..10)
            .map(|_| {
                let c = ALPHABET[(n & 31) as usize] as char;
                n >>= 5;
                c
            })
            .collect()
    }
}
