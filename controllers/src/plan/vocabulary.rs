//! The plan's vocabulary: what the planner is given besides the snapshot, and what a plan
//! is made of — launches, stops (with their reasons), removals, markers, backoff changes,
//! statuses, finalizers and events. Plain data: the executor carries it out.

use jiff::Timestamp;

use baton_api::{App, AppGroupStatus, AppRef, AppStatus, BackoffRecord, InstanceRecord};
use baton_store::Revision;

use super::classify::{HealthCounts, Retention};

/// What the planner is given besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    pub now: Timestamp,
    /// Randomness for instance ids and port choice, drawn by the caller.
    pub seed: u64,
    /// How long ended instances are kept.
    pub retention: Retention,
    /// Empty agents kept free for instances that take whole agents.
    pub keep_free_agents: usize,
    /// The most instances one app runs, scale factors applied (what the API server admits;
    /// an app stored past it under older rules runs this many and says so).
    pub max_instances_per_app: usize,
    /// How many threads a tick may use for the passes over every instance (the plan is the
    /// same whatever the number; 1 plans on the caller's thread alone).
    pub threads: usize,
}

impl PlanContext {
    /// A tick at `now`, with the default retention of ended instances.
    pub fn at(now: Timestamp, seed: u64) -> Self {
        Self {
            now,
            seed,
            retention: Retention::default(),
            keep_free_agents: 0,
            max_instances_per_app: baton_api::limits::DEFAULT_MAX_INSTANCES_PER_APP as usize,
            threads: 1,
        }
    }
}

/// Why an instance is stopped. Constant strings: they end up in the instance record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The spec asks for fewer instances.
    ScaledDown,
    /// The app was deleted.
    AppDeleted,
    /// A newer version replaces it.
    Upgraded,
    /// It failed a health check `maxConsecutiveFailures` times in a row.
    Unhealthy,
    /// A user asked (`kubectl delete instance`).
    Killed,
    /// Its agent is in maintenance, and its replacement elsewhere is healthy and ready.
    Moved,
    /// Its agent has been draining longer than the Maintenance's `forceAfter`: stopped
    /// without waiting for a replacement.
    MoveForced,
    /// Its tenant is above its guarantee, and another tenant below its own needs the room.
    Preempted,
}

impl StopReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaledDown => "ScaledDown",
            StopReason::AppDeleted => "AppDeleted",
            StopReason::Upgraded => "Upgraded",
            StopReason::Unhealthy => "Unhealthy",
            StopReason::Killed => "Killed",
            StopReason::Moved => "Moved",
            StopReason::MoveForced => "MoveForced",
            StopReason::Preempted => "Preempted",
        }
    }
}

/// A new instance on an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub record: InstanceRecord,
}

/// An instance to stop: its record's goal becomes `Stopped`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub record: InstanceRecord,
    /// The record's revision the decision was made on.
    pub revision: Revision,
    pub reason: StopReason,
    /// SIGTERM to SIGKILL, if not the app's (a user's kill request may say).
    pub grace_seconds: Option<u32>,
    /// A health kill that takes a replacement slot: the record is marked to hold it.
    pub takes_slot: bool,
}

/// A replacement slot released: the killed instance's record loses its mark (it goes when the
/// retention of ended instances says).
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRelease {
    pub record: InstanceRecord,
    pub revision: Revision,
}

/// A record that is over and can be deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub agent: String,
    pub id: String,
    pub revision: Revision,
}

/// A note that an agent stopped reporting at `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub agent: String,
    pub since: Timestamp,
}

/// A note to forget: the agent is back, or nothing of it is left.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmark {
    pub agent: String,
    pub revision: Revision,
}

/// A change of an app's launch backoff, written in one transaction with the marks on the
/// failed instances it counts (`endNoted`) — so a failure is counted exactly once, and
/// the failed instance's record stays for its status and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffChange {
    pub namespace: String,
    pub name: String,
    /// The new record; `None` deletes it (the app is gone).
    pub next: Option<BackoffRecord>,
    /// The revision of the record the change was made on (0: there was none).
    pub revision: Revision,
    /// The failed instances counted in `next`.
    pub counted: Vec<Counted>,
}

/// An ended instance whose end is noted (counted in its app's backoff, or reported lost): its
/// record is marked (`endNoted`), at the revision read.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub record: InstanceRecord,
    pub revision: Revision,
}

/// A user's kill request to forget: its instance is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct KillDone {
    pub namespace: String,
    pub id: String,
    pub revision: Revision,
}

/// A status to write to an app.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: AppStatus,
}

/// A status to write to a Maintenance (cluster-scoped).
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceStatusUpdate {
    pub name: String,
    pub status: baton_api::MaintenanceStatus,
}

/// A namespace to create for a tenant, labelled `baton.dev/tenant=TENANT`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceCreate {
    pub name: String,
    pub tenant: String,
}

/// A tenant controller's App in `baton-system`: applied (created or brought to what the
/// platform asks of it) or deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum ControllerApp {
    Apply(Box<App>),
    Delete { name: String },
}

/// A Tenant's finalizers to become `finalizers`, on the version read.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantFinalizer {
    pub name: String,
    pub finalizers: Vec<String>,
    pub resource_version: String,
}

impl TenantFinalizer {
    pub(super) fn of(tenant: &baton_api::Tenant, finalizers: Vec<String>) -> Self {
        Self {
            name: tenant.metadata.name.clone().unwrap_or_default(),
            finalizers,
            resource_version: tenant.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// A status to write to a Tenant (cluster-scoped).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantStatusUpdate {
    pub name: String,
    pub status: baton_api::TenantStatus,
}

/// A status to write to an AppGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: AppGroupStatus,
}

/// The controller's finalizer goes on an App ([`baton_api::app::STOP_FINALIZER`]), or comes
/// off once nothing of a deleted App runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalizerChange {
    pub namespace: String,
    pub name: String,
    /// The App's finalizers after the change.
    pub finalizers: Vec<String>,
    /// The resourceVersion the change was decided on: the write is refused if it moved.
    pub resource_version: String,
}

impl FinalizerChange {
    /// `app`'s finalizers to become `finalizers`, on the version of `app` read.
    pub(super) fn of(app: &App, finalizers: Vec<String>) -> Self {
        Self {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            finalizers,
            resource_version: app.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// The earlier of two moments, either of which may be unknown (when the next decision
/// falls due: the earliest of every stage's and app's).
pub(crate) fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What an app's status is built from when nothing out of the ordinary holds for it — no
/// replacement slot, nothing unplaced or withheld, no backoff, no dependency waited for, not
/// deleted — besides the App itself: its counts ([`super::status::basis`]). Built again from
/// the same App (same uid and resourceVersion: the API server gives every change a new one)
/// and the same counts, its status is the same (`now` only stamps a condition whose status
/// changes, and none does), so a tick that finds one [`Settled`] need not build the status
/// again to know there is nothing to write (building and comparing 2,000 statuses was ~12 %
/// of a steady tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    pub resource_version: String,
    pub wanted: usize,
    /// How many are in each of the app's sets ([`super::classify::AppInstances::sets`]).
    pub sets: [usize; 9],
    pub health: HealthCounts,
}

/// Apps whose status was found up to date, by uid, with its [`Basis`]: what a tick hands the
/// next (the runtime keeps it between ticks; a new leader starts without).
pub type Settled = rustc_hash::FxHashMap<String, Basis>;

/// Everything one tick decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub launches: Vec<Launch>,
    pub stops: Vec<Stop>,
    pub slot_releases: Vec<SlotRelease>,
    /// Ended instances whose end is noted (lost ones, reported), apart from a backoff.
    pub noted: Vec<Counted>,
    pub removals: Vec<Removal>,
    pub statuses: Vec<StatusUpdate>,
    pub group_statuses: Vec<GroupStatusUpdate>,
    pub maintenance_statuses: Vec<MaintenanceStatusUpdate>,
    pub tenant_statuses: Vec<TenantStatusUpdate>,
    /// Tenants' namespaces to create.
    pub namespace_creates: Vec<NamespaceCreate>,
    /// Deleted tenants' namespaces to delete.
    pub namespace_deletes: Vec<String>,
    pub tenant_finalizers: Vec<TenantFinalizer>,
    /// Tenants' controllers' Apps to apply or delete.
    pub controller_apps: Vec<ControllerApp>,
    /// Drain records to write or delete: agents entering, changing state in, or leaving
    /// maintenance.
    pub drains: Vec<super::maintain::DrainWrite>,
    pub finalizers: Vec<FinalizerChange>,
    pub marks: Vec<Mark>,
    pub unmarks: Vec<Unmark>,
    pub backoffs: Vec<BackoffChange>,
    /// Users' kill requests whose instances are gone.
    pub kills_done: Vec<KillDone>,
    /// What to report as Kubernetes events.
    pub events: Vec<Event>,
    /// Instances due to be killed for failing health checks that the health policy spares
    /// this tick (for metrics; the apps' statuses and events say why).
    pub withheld_kills: Vec<String>,
    /// When the next decision that depends on time falls due (a replacement delay ends, an
    /// unreachable instance becomes inactive or is expunged).
    pub next_wakeup: Option<Timestamp>,
    /// Apps whose status is up to date, by uid, with what it was built from: for the next
    /// tick's [`Snapshot::settled`](crate::snapshot::Snapshot::settled). Nothing to write.
    pub settled: Vec<(String, Basis)>,
}

impl Plan {
    /// Adds `other`'s decisions after this one's (a part of the plan made on its own: the
    /// same plan as if made here, in order).
    pub fn append(&mut self, other: Plan) {
        // Every field named: one added to the plan cannot be forgotten here.
        let Plan {
            launches,
            stops,
            slot_releases,
            noted,
            removals,
            statuses,
            group_statuses,
            maintenance_statuses,
            tenant_statuses,
            namespace_creates,
            namespace_deletes,
            tenant_finalizers,
            controller_apps,
            drains,
            finalizers,
            marks,
            unmarks,
            backoffs,
            kills_done,
            events,
            withheld_kills,
            next_wakeup,
            settled,
        } = other;
        self.launches.extend(launches);
        self.stops.extend(stops);
        self.slot_releases.extend(slot_releases);
        self.noted.extend(noted);
        self.removals.extend(removals);
        self.statuses.extend(statuses);
        self.group_statuses.extend(group_statuses);
        self.maintenance_statuses.extend(maintenance_statuses);
        self.tenant_statuses.extend(tenant_statuses);
        self.namespace_creates.extend(namespace_creates);
        self.namespace_deletes.extend(namespace_deletes);
        self.tenant_finalizers.extend(tenant_finalizers);
        self.controller_apps.extend(controller_apps);
        self.drains.extend(drains);
        self.finalizers.extend(finalizers);
        self.marks.extend(marks);
        self.unmarks.extend(unmarks);
        self.backoffs.extend(backoffs);
        self.kills_done.extend(kills_done);
        self.events.extend(events);
        self.withheld_kills.extend(withheld_kills);
        self.next_wakeup = min_time(self.next_wakeup, next_wakeup);
        self.settled.extend(settled);
    }

    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
            && self.stops.is_empty()
            && self.slot_releases.is_empty()
            && self.noted.is_empty()
            && self.removals.is_empty()
            && self.statuses.is_empty()
            && self.group_statuses.is_empty()
            && self.maintenance_statuses.is_empty()
            && self.tenant_statuses.is_empty()
            && self.namespace_creates.is_empty()
            && self.namespace_deletes.is_empty()
            && self.tenant_finalizers.is_empty()
            && self.controller_apps.is_empty()
            && self.drains.is_empty()
            && self.finalizers.is_empty()
            && self.marks.is_empty()
            && self.unmarks.is_empty()
            && self.backoffs.is_empty()
            && self.kills_done.is_empty()
            && self.events.is_empty()
    }
}

/// Normal or Warning, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regarding {
    App(AppRef),
    Agent(String),
    /// A Maintenance: its name and uid.
    Maintenance(String, String),
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub regarding: Regarding,
    pub type_: EventType,
    /// One CamelCase word: `Launched`, `Killing`, `Scaled`, `FailedScheduling`, `BackOff`…
    pub reason: &'static str,
    pub message: String,
    /// Reports writes of the plan (launches, stops): true when it holds only if those
    /// writes were made.
    pub of_writes: bool,
}
