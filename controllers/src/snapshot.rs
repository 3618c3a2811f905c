//! The snapshot: everything a plan may look at, frozen for one tick.
//!
//! It is plain data — the apps as the API server has them, the agents that are registered,
//! and every instance record with the status its agent reported — so a plan computed from
//! it depends on nothing else, and a new leader given the same snapshot decides the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_api::{AgentRecord, App, BackoffRecord, Goal, InstanceRecord, Phase, StatusRecord};
use baton_store::Revision;
use jiff::Timestamp;

/// One instance: what the controller assigned and what the agent reported.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceState {
    pub record: Arc<InstanceRecord>,
    /// Mod revision of the record: writes to it compare against this.
    pub revision: Revision,
    pub status: Option<Arc<StatusRecord>>,
}

impl InstanceState {
    /// The phase the agent reported, if any.
    pub fn phase(&self) -> Option<Phase> {
        self.status.as_ref().map(|s| s.phase)
    }

    /// Over: the process ran and ended (or never will run).
    pub fn is_terminal(&self) -> bool {
        self.phase().is_some_and(Phase::is_terminal)
    }

    /// Its process runs.
    pub fn is_running(&self) -> bool {
        self.phase() == Some(Phase::Running)
    }

    /// It counts towards the app's capacity: its process runs. (Health checks, when an
    /// app has them, narrow this.)
    pub fn is_healthy(&self) -> bool {
        self.is_running()
    }

    /// Since when its process has run, when it does.
    pub fn running_since(&self) -> Option<Timestamp> {
        self.status.as_ref().filter(|s| s.phase == Phase::Running)?.started_at
    }

    /// The controller wants it to run, and it has not ended.
    pub fn is_active(&self) -> bool {
        self.record.goal == Goal::Running && !self.is_terminal()
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }
}

/// The controller's marker of an agent that stopped reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub since: Timestamp,
    /// Mod revision of the marker key.
    pub revision: Revision,
}

/// The full observed state for one tick.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every App, in (namespace, name) order.
    pub apps: Vec<Arc<App>>,
    /// Registered (live) agents by name.
    pub agents: BTreeMap<String, Arc<AgentRecord>>,
    /// Every instance record, by id.
    pub instances: BTreeMap<String, InstanceState>,
    /// Agents known to have stopped reporting, and since when.
    pub unreachable: BTreeMap<String, Marker>,
    /// Launch backoffs by `(namespace, app)`, with the revision of each.
    pub backoffs: BTreeMap<(String, String), (Arc<BackoffRecord>, Revision)>,
}
