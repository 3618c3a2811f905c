//! Placement: which agent runs a new instance, and on which host ports.
//!
//! A pipeline of named parts, run for each instance:
//! 1. **candidates** ([`Placer::place`]): for most apps, agents in best-fit order of the
//!    request's dominant resource (the tightest agent with room first), taken from an index
//!    that skips agents too small in that resource outright, the first [`CANDIDATES`] that
//!    pass scored; for an app that spreads (`GROUP_BY`, `MAX_PER`) on one field, the same,
//!    over the agents of the values with the fewest of its instances first; with several
//!    spreading constraints, every agent;
//! 2. **filters** ([`filters::FILTERS`]) drop candidates that cannot take the instance —
//!    resources, ports, constraints — each with its name and constant [`Reason`];
//! 3. **scorers** ([`scorers::SCORERS`]) rank those that pass: spread, then bin-packing on
//!    the dominant resource;
//! 4. **select** ([`Placer::select`], the one selection loop) keeps the best, and the placer
//!    reserves what it takes, so later placements in the same plan see it (two instances of a
//!    UNIQUE app never land together in one tick).
//!
//! Only when nothing fits is every agent filtered, to count the rejections per reason that
//! the app's status reports. Constraints are compiled per app against per-field value ids
//! ([`compiled`]), so no check hashes or compares strings. Pure: no I/O, no clock; the port
//! choice is driven by a seed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use baton_api::constraints::{Constraint, Field};
use baton_api::{AgentRecord, ResourceAmounts, Scope};

use std::sync::Arc;

use crate::snapshot::{AgentUse, InstanceState, Snapshot};

pub mod compiled;
pub mod filters;
pub mod scorers;

use compiled::{Check, Compiled, FieldCounts, FieldIndex};
pub use filters::{Candidate, Reason, Rejection};

/// How many feasible agents are scored per placement, in best-fit order: the index already
/// orders them by fit in one resource; scoring a few more finds the best fit across all.
pub const CANDIDATES: usize = 4;

/// One host port an instance asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAsk {
    /// Any free port from the agent's ranges.
    Dynamic,
    /// Exactly this port (`requirePorts`).
    Fixed(u16),
}

/// What one instance needs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The scope whose app asks: what the instance is placed for (where quotas and fair
    /// shares will be counted).
    pub scope: &'a Scope,
    /// The app's uid: constraints count the instances of the same app.
    pub app_uid: &'a str,
    /// The app's `namespace/name`: agents being freed for it take it.
    pub app: &'a str,
    /// It takes a whole agent.
    pub whole_agent: bool,
    pub resources: ResourceAmounts,
    pub ports: &'a [PortAsk],
    pub constraints: &'a [Constraint],
    /// Drives which free ports are picked.
    pub seed: u64,
}

/// Where an instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub agent: String,
    pub host: String,
    /// Assigned host ports, one per requested port, in order.
    pub ports: Vec<u16>,
}

/// Why no agent fits: how many agents were rejected for each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    pub by_reason: BTreeMap<Rejection, usize>,
    /// Agents considered (0: none is registered).
    pub agents: usize,
}

impl Rejections {
    /// `(reason, agents)`, the most common reason first.
    pub fn list(&self, constraints: &[Constraint]) -> Vec<(String, usize)> {
        let mut list: Vec<(String, usize)> =
            self.by_reason.iter().map(|(r, n)| (r.describe(constraints), *n)).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }

    /// "3 agents: insufficient mem; 1 agent: constraint hostname UNIQUE", or "no agents are
    /// registered".
    pub fn summary(&self, constraints: &[Constraint]) -> String {
        if self.agents == 0 {
            return "no agents are registered".into();
        }
        self.list(constraints)
            .iter()
            .map(|(reason, n)| format!("{n} agent{}: {reason}", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The outcome of placing one instance: an expected misfit is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Placed(Placement),
    Unschedulable(Rejections),
}

/// The host ports in use on an agent, in order: what its instances hold, as the snapshot
/// has it (sorted once there), copied only for an agent that takes an instance. An agent's
/// instances hold a handful of ports each, and 10,000 agents' sets are made every plan that
/// places: no hashing, no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsedPorts<'a>(Cow<'a, [u16]>);

impl<'a> UsedPorts<'a> {
    /// `ports` in order, each once ([`AgentUse::ports`]).
    fn of(ports: &'a [u16]) -> Self {
        debug_assert!(ports.windows(2).all(|w| w[0] < w[1]), "held ports in order, each once: {ports:?}");
        Self(Cow::Borrowed(ports))
    }

    pub fn contains(&self, port: &u16) -> bool {
        self.0.binary_search(port).is_ok()
    }

    /// Adds `port`; false if it was in use already.
    fn insert(&mut self, port: u16) -> bool {
        match self.0.binary_search(&port) {
            Ok(_) => false,
            Err(at) => {
                self.0.to_mut().insert(at, port);
                true
            }
        }
    }
}

/// An agent's keys in the best-fit indexes.
struct IndexKeys {
    millicpus: u64,
    mem_mib: u64,
    gpus: Option<u64>,
}

/// An agent as placement sees it: what is left on it.
#[derive(Debug, Clone)]
pub struct AgentSlot<'a> {
    pub record: &'a AgentRecord,
    pub free: ResourceAmounts,
    pub used_ports: UsedPorts<'a>,
    /// Ports of the agent's ranges not in use.
    pub free_ports: usize,
    /// In maintenance: nothing new goes on it.
    pub cordoned: bool,
    /// Being freed for this app (`namespace/name`): only it goes on it.
    pub reserved_for: Option<&'a str>,
    /// Reserved for this tenant (its guarantee's `agents`): only its instances go on it.
    pub tenant: Option<&'a str>,
    /// Apps (uids) moved off it within the hour.
    pub barred: &'a [String],
    /// Instances not over on it (and placed this tick).
    pub live: usize,
    /// One of them takes the whole agent.
    pub exclusive: bool,
}

impl<'a> AgentSlot<'a> {
    /// Nothing on it, and open to any app.
    fn is_empty_and_open(&self) -> bool {
        self.live == 0 && !self.cordoned && self.reserved_for.is_none() && self.tenant.is_none()
    }

    fn in_ranges(&self, port: u16) -> bool {
        self.record.ports.iter().any(|r| r.contains(port))
    }

    /// Takes `port`.
    fn use_port(&mut self, port: u16) {
        if self.used_ports.insert(port) && self.in_ranges(port) {
            self.free_ports = self.free_ports.saturating_sub(1);
        }
    }

    /// Where it stands in the best-fit indexes: none while cordoned; in the GPU index only
    /// if it has GPUs.
    fn index_keys(&self) -> Option<IndexKeys> {
        let free = self.free;
        (!self.cordoned).then(|| IndexKeys {
            millicpus: free.millicpus,
            mem_mib: free.mem_mib,
            gpus: (self.record.resources.gpus > 0).then_some(free.gpus),
        })
    }

    /// Takes the ports its instances hold, all at once.
    fn use_ports(&mut self, held: &'a [u16]) {
        self.used_ports = UsedPorts::of(held);
        let in_ranges = self.used_ports.0.iter().filter(|p| self.in_ranges(**p)).count();
        self.free_ports = self.free_ports.saturating_sub(in_ranges);
    }

    /// Host ports for `asks`: fixed ones as asked, dynamic ones scanning the agent's ranges
    /// from a position picked by `seed` (so a port just freed is not handed out at once).
    fn pick_ports(&self, asks: &[PortAsk], seed: u64) -> Vec<u16> {
        let fixed: HashSet<u16> = asks
            .iter()
            .filter_map(|a| match a {
                PortAsk::Fixed(p) => Some(*p),
                PortAsk::Dynamic => None,
            })
            .collect();
        let capacity: usize = self.record.ports.iter().map(|r| r.len()).sum();
        let nth = |mut i: usize| -> u16 {
            for range in &self.record.ports {
                if i < range.len() {
                    return range.begin + i as u16;
                }
                i -= range.len();
            }
            unreachable!("index within capacity")
        };
        let start = if capacity == 0 { 0 } else { (seed % capacity as u64) as usize };
        let mut dynamic = (0..capacity)
            .map(|i| nth((start + i) % capacity))
            .filter(|p| !self.used_ports.contains(p) && !fixed.contains(p));
        asks.iter()
            .map(|ask| match ask {
                PortAsk::Fixed(port) => *port,
                // The ports filter made sure there are enough.
                PortAsk::Dynamic => dynamic.next().unwrap_or(0),
            })
            .collect()
    }
}

/// What the plan says about agents beyond what they hold: maintenance and defragmentation.
pub trait AgentRules {
    /// In maintenance: nothing new goes on it.
    fn cordons(&self, agent: &str) -> bool;
    /// Being freed for this app (`namespace/name`): only it goes on it.
    fn reserved_for(&self, agent: &str) -> Option<&str>;
    /// The uids of apps moved off it within the hour.
    fn barred(&self, agent: &str) -> &[String];
    /// Reserved for this tenant: only its instances go on it.
    fn tenant_of(&self, _agent: &str) -> Option<&str> {
        None
    }
}

/// No agent is in maintenance, reserved or barred.
pub struct NoRules;

impl AgentRules for NoRules {
    fn cordons(&self, _: &str) -> bool {
        false
    }

    fn reserved_for(&self, _: &str) -> Option<&str> {
        None
    }

    fn barred(&self, _: &str) -> &[String] {
        &[]
    }
}

/// An app's constraints compiled for this plan, and its instances per value of each field
/// they read.
pub struct AppState {
    /// For each of the app's fields, the placer's field index.
    pub field_ids: Vec<usize>,
    /// Per app field (parallel to `field_ids`).
    pub counts: Vec<FieldCounts>,
    /// Per request constraint (same order, so a rejection names the constraint).
    pub compiled: Vec<Compiled>,
    /// The maintenance partitions' field index and the app's instances per partition, when
    /// the placer spreads apps over them.
    pub partition: Option<(usize, FieldCounts)>,
}

/// What placement starts from: what each agent's instances hold ([`Snapshot::held`]) and
/// each app's instances (for the constraints of those placed). The planner's observe stage
/// gathers the apps' instances while it reads every instance anyway, so a placer is made in
/// one pass over the agents.
#[derive(Default)]
pub struct Usage<'a> {
    pub held: Arc<BTreeMap<String, AgentUse>>,
    /// Every instance, in id order.
    all: Vec<&'a InstanceState>,
    /// Per app uid, where its instances are in `all`, in id order.
    runs: HashMap<&'a str, Vec<std::ops::Range<usize>>>,
    /// Other scopes' instances, per app uid (the platform places for their controllers).
    foreign: HashMap<&'a str, Vec<&'a InstanceState>>,
}

impl<'a> Usage<'a> {
    /// Every instance of `snapshot`.
    pub fn of(snapshot: &'a Snapshot) -> Self {
        Self::in_parts(snapshot, 1)
    }

    /// The same, gathered in up to `threads` parts side by side (one pass over 100,000
    /// instances takes ~3 ms): parts of the id order, split at the names of apps spaced
    /// evenly in the app list (an instance's id starts with its app's name).
    pub fn in_parts(snapshot: &'a Snapshot, threads: usize) -> Self {
        Self::visiting(snapshot, snapshot.held(), threads, |_, _| ()).0
    }

    /// As [`Usage::in_parts`], calling `visit` on each run of one app's instances (the app's
    /// uid, the run) as soon as the run is gathered, while its instances are still in the
    /// processor's cache: a second pass over 100,000 instances would miss it for most of
    /// them. With what each call gave, in id order (an app's runs in the order of its ids).
    /// `held`: what each agent holds, as [`Snapshot::held`] has it.
    pub fn visiting<R: Send>(
        snapshot: &'a Snapshot,
        held: Arc<BTreeMap<String, AgentUse>>,
        threads: usize,
        visit: impl Fn(&'a str, &[&'a InstanceState]) -> R + Sync,
    ) -> (Self, Vec<(&'a str, R)>) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let instances = &snapshot.instances;
        let n = crate::parallel::parts(instances.len(), threads, crate::parallel::MIN_PER_PART).len();
        let mut splits: Vec<&str> =
            (1..n).filter_map(|i| snapshot.apps.get(snapshot.apps.len() * i / n)?.metadata.name.as_deref()).collect();
        splits.sort_unstable();
        splits.dedup();
        let bounds: Vec<_> = (0..=splits.len())
            .map(|i| {
                let start = if i == 0 { Unbounded } else { Included(splits[i - 1]) };
                let end = splits.get(i).map_or(Unbounded, |&split| Excluded(split));
                (start, end)
            })
            .collect();
        let expected = instances.len() / bounds.len();
        let pieces = crate::parallel::map(bounds, |bounds| {
            let mut all: Vec<&'a InstanceState> = Vec::with_capacity(expected);
            // Where each app's runs are: ids start with the app's name, so an app's instances
            // are mostly one run, found without hashing each instance.
            let mut runs: Vec<(&'a str, std::ops::Range<usize>)> = Vec::new();
            let mut visited = Vec::new();
            let mut start = 0;
            let mut end_run = |all: &[&'a InstanceState], start: usize| {
                let uid = all[start].record.run.app.uid.as_str();
                visited.push((uid, visit(uid, &all[start..])));
                runs.push((uid, start..all.len()));
            };
            for (_, instance) in instances.range::<str, _>(bounds) {
                if all.get(start).is_some_and(|first| !instance.same_app(first)) {
                    end_run(&all, start);
                    start = all.len();
                }
                all.push(instance);
            }
            if start < all.len() {
                end_run(&all, start);
            }
            (all, runs, visited)
        });
        let mut all: Vec<&'a InstanceState> = Vec::new();
        let mut runs: HashMap<&'a str, Vec<std::ops::Range<usize>>> = HashMap::default();
        runs.reserve(snapshot.apps.len());
        let mut visits = Vec::new();
        for (piece, piece_runs, piece_visits) in pieces {
            let offset = all.len();
            if all.is_empty() {
                // The first (on one thread, the only) piece, not copied.
                all = piece;
                all.reserve(instances.len() - all.len());
            } else {
                all.extend(piece);
            }
            for (uid, run) in piece_runs {
                runs.entry(uid).or_default().push(run.start + offset..run.end + offset);
            }
            visits.extend(piece_visits);
        }
        let mut foreign: HashMap<&'a str, Vec<&'a InstanceState>> = HashMap::default();
        for instance in &snapshot.foreign {
            foreign.entry(instance.record.run.app.uid.as_str()).or_default().push(instance);
        }
        (Usage { held, all, runs, foreign }, visits)
    }

    /// The instances of another scope's app `uid`.
    pub fn foreign_of(&self, uid: &str) -> impl Iterator<Item = &'a InstanceState> + '_ {
        self.foreign.get(uid).into_iter().flatten().copied()
    }

    /// The instances of the app `uid` (an exact size: their sets are made at the right size).
    pub fn instances_of(&self, uid: &str) -> InstancesOf<'_, 'a> {
        let runs = self.runs.get(uid).map(Vec::as_slice).unwrap_or_default();
        let left = runs.iter().map(|run| run.len()).sum();
        InstancesOf { all: &self.all, runs: runs.iter(), run: [].iter(), left }
    }

    /// The uids of the apps that have instances.
    pub fn apps(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.runs.keys().copied()
    }
}

/// An app's instances, run after run ([`Usage::instances_of`]).
pub struct InstancesOf<'u, 'a> {
    all: &'u [&'a InstanceState],
    runs: std::slice::Iter<'u, std::ops::Range<usize>>,
    run: std::slice::Iter<'u, &'a InstanceState>,
    left: usize,
}

impl<'a> Iterator for InstancesOf<'_, 'a> {
    type Item = &'a InstanceState;

    fn next(&mut self) -> Option<&'a InstanceState> {
        loop {
            if let Some(instance) = self.run.next() {
                self.left -= 1;
                return Some(instance);
            }
            self.run = self.all[self.runs.next()?.clone()].iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for InstancesOf<'_, '_> {}

/// Places instances on the agents of one snapshot.
pub struct Placer<'a> {
    /// In name order.
    agents: Vec<AgentSlot<'a>>,
    /// Best-fit indexes: `(free amount, agent index)`.
    by_cpus: BTreeSet<(u64, usize)>,
    by_mem: BTreeSet<(u64, usize)>,
    by_gpus: BTreeSet<(u64, usize)>,
    /// Mean capacity of an agent, to tell which resource dominates a request.
    mean: ResourceAmounts,
    /// The agents' index by name.
    index_of: HashMap<&'a str, usize>,
    /// The instances of each app, for the constraints of those placed.
    usage: &'a Usage<'a>,
    /// Per app uid: its state, made on its first placement.
    apps: HashMap<String, AppState>,
    /// Value ids of each field any constraint reads, made on first use.
    fields: Vec<FieldIndex>,
    field_ids: HashMap<Field, usize>,
    /// The attribute of the maintenance partitions apps spread over (soft: after constraints).
    partition: Option<Field>,
    /// Empty agents other instances leave alone.
    keep_free: usize,
    /// Agents with nothing on them, not cordoned nor reserved.
    empty: usize,
}

impl<'a> Placer<'a> {
    /// Agents with what their current instances leave free (every instance not yet over,
    /// including those being stopped, whose processes still hold their resources), as
    /// `usage` gathered them: one pass over the agents.
    pub fn new(snapshot: &'a Snapshot, usage: &'a Usage<'a>) -> Self {
        Self::with_rules(snapshot, usage, &NoRules)
    }

    /// As [`Placer::new`], with `rules` saying which agents are in maintenance (they take
    /// nothing), being freed for an app, or barred to apps moved off them.
    pub fn with_rules(snapshot: &'a Snapshot, usage: &'a Usage<'a>, rules: &'a dyn AgentRules) -> Self {
        // Both in name order: what each agent holds is found walking along.
        let mut held = usage.held.iter().peekable();
        let agents: Vec<AgentSlot<'a>> = snapshot
            .agents
            .values()
            .map(|record| {
                let mut slot = AgentSlot {
                    record: record.as_ref(),
                    free: record.resources,
                    used_ports: UsedPorts::default(),
                    free_ports: record.ports.iter().map(|r| r.len()).sum(),
                    cordoned: rules.cordons(&record.name),
                    reserved_for: rules.reserved_for(&record.name),
                    tenant: rules.tenant_of(&record.name),
                    barred: rules.barred(&record.name),
                    live: 0,
                    exclusive: false,
                };
                while held.next_if(|(agent, _)| agent.as_str() < record.name.as_str()).is_some() {}
                if let Some((_, used)) = held.next_if(|(agent, _)| **agent == record.name) {
                    slot.live = used.live;
                    slot.exclusive = used.exclusive;
                    slot.free = slot.free.minus(used.resources);
                    slot.use_ports(&used.ports);
                }
                slot
            })
            .collect();
        let index_of: HashMap<&str, usize> =
            agents.iter().enumerate().map(|(i, a)| (a.record.name.as_str(), i)).collect();
        let count = agents.len().max(1) as u64;
        let total = agents.iter().fold(ResourceAmounts::default(), |sum, a| sum.plus(a.record.resources));
        let mean = total.divided_by(count);
        let mut placer = Placer {
            agents,
            by_cpus: BTreeSet::new(),
            by_mem: BTreeSet::new(),
            by_gpus: BTreeSet::new(),
            mean,
            index_of,
            usage,
            apps: HashMap::default(),
            fields: Vec::new(),
            field_ids: HashMap::default(),
            partition: None,
            keep_free: 0,
            empty: 0,
        };
        placer.empty = placer.agents.iter().filter(|a| a.is_empty_and_open()).count();
        // The best-fit indexes, built sorted in one go (10,000 inserts one by one were a
        // twentieth of a steady plan).
        let keys: Vec<(usize, IndexKeys)> =
            placer.agents.iter().enumerate().filter_map(|(i, a)| Some((i, a.index_keys()?))).collect();
        placer.by_cpus = keys.iter().map(|(i, k)| (k.millicpus, *i)).collect();
        placer.by_mem = keys.iter().map(|(i, k)| (k.mem_mib, *i)).collect();
        placer.by_gpus = keys.iter().filter_map(|(i, k)| Some((k.gpus?, *i))).collect();
        placer
    }

    /// Keeps `n` empty agents for instances that take whole agents: other instances go on an
    /// empty agent only while more than `n` are empty.
    pub fn keep_free(mut self, n: usize) -> Self {
        self.keep_free = n;
        self
    }

    /// Spreads each app over the values of `attribute` (the maintenance partitions), softly:
    /// among the agents that pass every filter, those of the values with the fewest of the
    /// app's instances first, so a window takes the smallest share of any app. An app that
    /// spreads by its own constraints keeps to them.
    pub fn spread_over(mut self, attribute: Option<&str>) -> Self {
        self.partition = attribute.map(|a| Field::Attribute(a.to_string()));
        self
    }

    fn index(&mut self, i: usize) {
        let Some(keys) = self.agents[i].index_keys() else { return };
        self.by_cpus.insert((keys.millicpus, i));
        self.by_mem.insert((keys.mem_mib, i));
        if let Some(gpus) = keys.gpus {
            self.by_gpus.insert((gpus, i));
        }
    }

    fn unindex(&mut self, i: usize) {
        let free = self.agents[i].free;
        self.by_cpus.remove(&(free.millicpus, i));
        self.by_mem.remove(&(free.mem_mib, i));
        self.by_gpus.remove(&(free.gpus, i));
    }

    /// What is left on an agent.
    pub fn free(&self, agent: &str) -> Option<ResourceAmounts> {
        self.agents.iter().find(|a| a.record.name == agent).map(|a| a.free)
    }

    /// Finds the best agent for `request` and reserves what it takes there.
    pub fn place(&mut self, request: &Request<'_>) -> Fit {
        // Taken out while the agents are read, put back updated.
        let mut app = match self.apps.remove(request.app_uid) {
            Some(app) => app,
            None => self.app_state(request),
        };
        let spreading: Vec<usize> = app
            .compiled
            .iter()
            .filter(|c| matches!(c.check, Check::GroupBy { .. } | Check::MaxPer(_)))
            .map(|c| c.field)
            .collect();
        let chosen = match spreading.as_slice() {
            [] if app.partition.is_some() => {
                let (id, counts) = app.partition.as_ref().expect("checked");
                let values = &self.fields[*id].value_of;
                let mut levels = counts.per_value.clone();
                levels.sort_unstable();
                levels.dedup();
                levels
                    .into_iter()
                    .find_map(|level| {
                        let at_level =
                            self.best_fit_order(request).filter(|i| values[*i].is_some_and(|v| counts.of(v) == level));
                        self.select(request, &app, at_level, CANDIDATES)
                    })
                    // Agents without the attribute come last.
                    .or_else(|| {
                        let outside = self.best_fit_order(request).filter(|i| values[*i].is_none());
                        self.select(request, &app, outside, CANDIDATES)
                    })
            }
            [] => self.select(request, &app, self.best_fit_order(request), CANDIDATES),
            [field] => self.spread_levels(&app, *field).into_iter().find_map(|level| {
                let values = &self.fields[app.field_ids[*field]].value_of;
                let counts = &app.counts[*field];
                let at_level =
                    self.best_fit_order(request).filter(|i| values[*i].is_some_and(|v| counts.of(v) == level));
                self.select(request, &app, at_level, CANDIDATES)
            }),
            _ => self.select(request, &app, 0..self.agents.len(), usize::MAX),
        };
        let fit = match chosen {
            Some(i) => Fit::Placed(self.reserve(i, request, &mut app)),
            None => Fit::Unschedulable(self.rejections(request, &app)),
        };
        self.apps.insert(request.app_uid.to_string(), app);
        fit
    }

    /// Candidates: the agents in best-fit order of the request's dominant resource, from
    /// the index of that resource, starting at the first with enough of it.
    fn best_fit_order(&self, request: &Request<'_>) -> impl Iterator<Item = usize> + '_ {
        let ask = request.resources;
        let (index, amount) = if ask.gpus > 0 {
            (&self.by_gpus, ask.gpus)
        } else if u128::from(ask.millicpus) * u128::from(self.mean.mem_mib.max(1))
            >= u128::from(ask.mem_mib) * u128::from(self.mean.millicpus.max(1))
        {
            (&self.by_cpus, ask.millicpus)
        } else {
            (&self.by_mem, ask.mem_mib)
        };
        index.range((amount, 0)..).map(|&(_, i)| i)
    }

    /// For an app that spreads on its field `field`: the instance counts its values have,
    /// fewest first (the values to fill first).
    fn spread_levels(&self, app: &AppState, field: usize) -> Vec<usize> {
        let mut levels = app.counts[field].per_value.clone();
        levels.sort_unstable();
        levels.dedup();
        levels
    }

    /// The one selection loop: of `candidates`, in order, the best by [`scorers::SCORERS`]
    /// among the first `enough` that pass every filter (ties: the agent first in name order).
    fn select(
        &self,
        request: &Request<'_>,
        app: &AppState,
        candidates: impl Iterator<Item = usize>,
        enough: usize,
    ) -> Option<usize> {
        let mut best: Option<(scorers::Score, usize)> = None;
        let mut found = 0;
        for index in candidates {
            let candidate = self.candidate(index, request, app);
            if filters::check(&candidate).is_some() {
                continue;
            }
            let score = scorers::score(&candidate);
            if best.is_none_or(|(s, j)| score > s || (score == s && index < j)) {
                best = Some((score, index));
            }
            found += 1;
            if found == enough {
                break;
            }
        }
        best.map(|(_, i)| i)
    }

    fn candidate<'c>(&'c self, index: usize, request: &'c Request<'c>, app: &'c AppState) -> Candidate<'c> {
        let keep_empty = self.keep_free > 0 && self.empty <= self.keep_free;
        Candidate { index, agent: &self.agents[index], request, app, fields: &self.fields, keep_empty }
    }

    /// The id of `field`'s index, made if needed.
    fn field_index(&mut self, field: &Field) -> usize {
        if let Some(&id) = self.field_ids.get(field) {
            return id;
        }
        let mut index = FieldIndex { field: Some(field.clone()), ..FieldIndex::default() };
        let mut ids: HashMap<String, u32> = HashMap::default();
        for agent in &self.agents {
            let id = filters::value_of(agent, field).map(|value| {
                *ids.entry(value.to_string()).or_insert_with(|| {
                    index.values.push(value.to_string());
                    (index.values.len() - 1) as u32
                })
            });
            index.value_of.push(id);
        }
        self.fields.push(index);
        self.field_ids.insert(field.clone(), self.fields.len() - 1);
        self.fields.len() - 1
    }

    /// The app's live instances per value of the field with index `id`.
    fn counts_of(&self, app_uid: &str, id: usize) -> FieldCounts {
        let field = &self.fields[id];
        let mut counts = FieldCounts::new(field.values.len());
        let on = self
            .usage
            .instances_of(app_uid)
            .chain(self.usage.foreign_of(app_uid))
            .filter(|i| !i.is_terminal())
            .filter_map(|i| self.index_of.get(i.record.agent.as_str()));
        for &i in on {
            if let Some(value) = field.value_of[i] {
                counts.add(value);
            }
        }
        counts
    }

    /// Compiles the app's constraints and counts its instances per value of each field.
    fn app_state(&mut self, request: &Request<'_>) -> AppState {
        let mut app = AppState { field_ids: Vec::new(), counts: Vec::new(), compiled: Vec::new(), partition: None };
        if let Some(field) = self.partition.clone() {
            let id = self.field_index(&field);
            app.partition = Some((id, self.counts_of(request.app_uid, id)));
        }
        for constraint in request.constraints {
            let id = self.field_index(&constraint.field);
            let position = match app.field_ids.iter().position(|f| *f == id) {
                Some(position) => position,
                None => {
                    app.field_ids.push(id);
                    app.counts.push(self.counts_of(request.app_uid, id));
                    app.field_ids.len() - 1
                }
            };
            app.compiled.push(compiled::compile(constraint, position, &self.fields[id].values));
        }
        app
    }

    /// Why each agent rejects the request.
    fn rejections(&self, request: &Request<'_>, app: &AppState) -> Rejections {
        let mut rejections = Rejections { agents: self.agents.len(), ..Rejections::default() };
        for index in 0..self.agents.len() {
            if let Some(rejection) = filters::check(&self.candidate(index, request, app)) {
                *rejections.by_reason.entry(rejection).or_default() += 1;
            }
        }
        rejections
    }

    fn reserve(&mut self, i: usize, request: &Request<'_>, app: &mut AppState) -> Placement {
        let ports = self.agents[i].pick_ports(request.ports, request.seed);
        self.unindex(i);
        if self.agents[i].is_empty_and_open() {
            self.empty -= 1;
        }
        let agent = &mut self.agents[i];
        agent.live += 1;
        agent.exclusive |= request.whole_agent;
        agent.free = agent.free.minus(request.resources);
        for port in &ports {
            agent.use_port(*port);
        }
        for (position, id) in app.field_ids.iter().enumerate() {
            if let Some(value) = self.fields[*id].value_of[i] {
                app.counts[position].add(value);
            }
        }
        if let Some((id, counts)) = &mut app.partition
            && let Some(value) = self.fields[*id].value_of[i]
        {
            counts.add(value);
        }
        self.index(i);
        let agent = &self.agents[i];
        Placement { agent: agent.record.name.clone(), host: agent.record.host.clone(), ports }
    }
}

#[cfg(test)]
mod tests;
