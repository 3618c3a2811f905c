//! Baton's resource types and the values that flow between its parts.
//!
//! This crate is the vocabulary shared by every other crate: the `App` custom resource that
//! users `kubectl apply` (group `baton.dev`, version `v1alpha1`), the records that the
//! controller and the agents exchange through the store (`/baton/agents/…`,
//! `/baton/instances/…`, `/baton/status/…`), the read-only `Instance` view the API server
//! builds from those records, and the validation that turns bad input into field errors
//! that name the field and the value. It holds data and validation only: no I/O.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod app;
pub mod constraints;
pub mod crds;
pub mod groups;
pub mod health;
pub mod instance;
pub mod join;
pub mod limits;
pub mod maintenance;
pub mod names;
pub mod records;
pub mod resources;
pub mod scope;
pub mod tenant;
pub mod validation;

pub use agent::{Agent, AgentSpec, AgentStatus};
pub use app::{App, AppSpec, AppStatus, Backoff, KillSelection, PortDefinition, UnreachableStrategy, UpgradeStrategy};
pub use groups::{AppGroup, AppGroupSpec, AppGroupStatus, GroupPath};
pub use health::{CheckResult, HealthCheck, HealthPolicy, HealthProtocol, ReadinessCheck};
pub use instance::{Instance, InstanceSpec, InstanceViewStatus};
pub use maintenance::{DrainRecord, DrainState, Maintenance, MaintenanceSpec, MaintenanceStatus};
pub use records::{
    AgentRecord, AppRef, BackoffRecord, Failure, Goal, InstanceRecord, KillRequest, Phase, PortRange, RunSpec,
    SandboxEndpoint, StatusRecord, UnreachableMarker,
};
pub use resources::{ResourceAmounts, Resources};
pub use scope::Scope;
pub use tenant::{Tenant, TenantSpec, TenantStatus};
pub use validation::{FieldError, FieldErrorKind};

/// The API group of every Baton kind.
pub const GROUP: &str = "baton.dev";
/// The one served version of the group.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as it appears in `apiVersion`.
pub const API_VERSION: &str = "baton.dev/v1alpha1";
/// The label that ties an instance to its app (`kubectl get instances -l app=web`).
pub const APP_LABEL: &str = "app";
