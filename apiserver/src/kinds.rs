//! The kinds the server serves, described once: names for discovery, printer columns for
//! tables, subresources, and how objects are decoded and validated or built from the store.
//!
//! Stored kinds are described from their CRD (`baton_api::crds::app()`), so the API server, the Helm
//! install and `crds/` can never disagree on names, columns or subresources.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use baton_api::FieldError;
use baton_api::limits::InputLimits;

use crate::admission::Admission;
use crate::graph::DependencyGraph;
use crate::quota::{QuotaCheck, TenantClaims};
use crate::status::Target;

/// One column of `kubectl get`.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
    /// A simple path such as `.status.running`.
    pub json_path: String,
    /// Computes the cell instead of reading `json_path` (e.g. `used/total`).
    pub compute: Option<fn(&Value) -> Option<Value>>,
}

impl Column {
    fn new(name: &str, type_: &str, json_path: &str, priority: i32, description: &str) -> Self {
        Column {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            description: description.into(),
            priority,
            json_path: json_path.into(),
            compute: None,
        }
    }

    fn computed(mut self, compute: fn(&Value) -> Option<Value>) -> Self {
        self.compute = Some(compute);
        self
    }

    /// The cell's value in `object`.
    pub fn value(&self, object: &Value) -> Option<Value> {
        match self.compute {
            Some(compute) => compute(object),
            None => column_value(object, &self.json_path).cloned(),
        }
    }
}

/// Where the scale subresource reads and writes its replicas.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
}

/// An object decoded from a request: normalized (defaults filled in), with the fields the
/// server did not recognize.
pub struct Decoded {
    pub object: Value,
    pub unknown_fields: Vec<String>,
}

/// Turns a request body into a stored object, or field errors, under the operator's limits.
pub type Decoder = fn(&Value, &InputLimits) -> Result<Decoded, Vec<FieldError>>;

/// Where a kind's OpenAPI schema comes from.
#[derive(Clone, Copy)]
pub enum SchemaOf {
    /// The CRD's structural schema: what validation enforces.
    Crd(fn() -> CustomResourceDefinition),
    /// A Rust type's schemars schema: registers it with the generator and returns its name.
    Typed(fn(&mut schemars::SchemaGenerator) -> String),
}

/// Registers `T`'s schema (and those it refers to) with `generator`; returns its name.
fn typed<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// How the objects of a kind come to be.
#[derive(Clone, Copy)]
pub enum Source {
    /// Written by clients, stored under `/baton/registry/…`.
    Registry(Decoder),
    /// Built from the instance and status records; read-only.
    InstanceView,
    /// Built from the agent, instance and unreachable records; read-only.
    AgentView,
}

/// A served kind: everything about it in one place — names, printer columns, subresources,
/// how its objects are decoded and validated, and the admission checks their writes pass.
/// Adding a kind is adding an entry to [`all`].
#[derive(Clone)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub columns: Vec<Column>,
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    pub source: Source,
    /// Field selectors the kind supports besides `metadata.name` and `metadata.namespace`:
    /// `(field, JSON path)`.
    pub fields: Vec<(String, String)>,
    /// Objects expire this long after their last write (events).
    pub ttl: Option<std::time::Duration>,
    /// Sets what the server owns in a new object (a namespace's phase).
    pub on_create: Option<fn(&mut Value)>,
    /// Checks of a write against other stored objects, in order (see [`crate::admission`]).
    pub admission: Vec<Arc<dyn Admission>>,
    /// For the OpenAPI documents (`kubectl explain`).
    pub schema: SchemaOf,
}

impl Kind {
    /// `group/version`, or just the version in the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn is_read_only(&self) -> bool {
        matches!(self.source, Source::InstanceView | Source::AgentView)
    }

    /// What errors about the object `name` of this kind name.
    pub fn target<'a>(&'a self, name: &'a str) -> Target<'a> {
        Target { group: &self.group, plural: &self.plural, kind: &self.kind, name }
    }

    /// Whether this is the core `namespaces` kind.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == NAMESPACES
    }

    /// `apps.baton.dev`, or `namespaces` in the core group.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The group's name in store keys (`core` for the core group).
    pub fn store_group(&self) -> &str {
        if self.group.is_empty() { "core" } else { &self.group }
    }

    /// Whether DELETE works: on stored kinds, and on instances (it kills them).
    pub fn deletable(&self) -> bool {
        !self.is_read_only() || matches!(self.source, Source::InstanceView)
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.deletable() && self.is_read_only() {
            vec!["delete", "get", "list", "watch"]
        } else if self.is_read_only() {
            vec!["get", "list", "watch"]
        } else {
            vec!["create", "delete", "get", "list", "patch", "update", "watch"]
        }
    }

    /// Describes a stored kind from its CRD (first served version).
    pub fn from_crd(crd: fn() -> CustomResourceDefinition, decoder: Decoder) -> Self {
        let schema = SchemaOf::Crd(crd);
        let crd = &crd();
        let names = &crd.spec.names;
        let version = &crd.spec.versions[0];
        let subresources = version.subresources.as_ref();
        Kind {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            kind: names.kind.clone(),
            plural: names.plural.clone(),
            singular: names.singular.clone().unwrap_or_else(|| names.kind.to_lowercase()),
            short_names: names.short_names.clone().unwrap_or_default(),
            categories: names.categories.clone().unwrap_or_default(),
            namespaced: crd.spec.scope == "Namespaced",
            columns: version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| Column {
                    name: c.name.clone(),
                    type_: c.type_.clone(),
                    format: c.format.clone().unwrap_or_default(),
                    description: c.description.clone().unwrap_or_default(),
                    priority: c.priority.unwrap_or(0),
                    json_path: c.json_path.clone(),
                    compute: None,
                })
                .collect(),
            status_subresource: subresources.is_some_and(|s| s.status.is_some()),
            scale: subresources.and_then(|s| s.scale.as_ref()).map(|s| ScalePaths {
                spec_replicas: s.spec_replicas_path.clone(),
                status_replicas: s.status_replicas_path.clone(),
            }),
            source: Source::Registry(decoder),
            fields: Vec::new(),
            ttl: None,
            on_create: None,
            admission: Vec::new(),
            schema,
        }
    }

    /// With `check` run on every write of the kind's objects.
    pub fn admitted_by(mut self, check: impl Admission + 'static) -> Self {
        self.admission.push(Arc::new(check));
        self
    }
}

/// The plural of the core `Namespace` kind.
pub const NAMESPACES: &str = "namespaces";
/// The plural of the core `Event` kind.
pub const EVENTS: &str = "events";
/// How long an event lives after its last update (Kubernetes' default `--event-ttl`).
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every kind served, in discovery order: Baton's group, then the core group.
pub fn all() -> Vec<Kind> {
    vec![
        Kind { on_create: Some(with_stop_finalizer), ..Kind::from_crd(baton_api::crds::app, decode_app) }
            .admitted_by(DependencyGraph::Apps)
            .admitted_by(QuotaCheck::Apps),
        Kind::from_crd(baton_api::crds::app_group, decode_app_group)
            .admitted_by(DependencyGraph::Groups)
            .admitted_by(QuotaCheck::Groups),
        instance_kind(),
        agent_kind(),
        Kind::from_crd(baton_api::crds::maintenance, decode_maintenance),
        Kind::from_crd(baton_api::crds::tenant, decode_tenant).admitted_by(TenantClaims),
        namespace_kind(),
        event_kind(),
    ]
}

/// A new App carries the controller's finalizer from its create on, as Kubernetes' admission
/// puts `kubernetes.io/pvc-protection` on each new PersistentVolumeClaim: deleting the App
/// stops its instances before it goes, and the controller does not patch every new App to
/// add it (2,000 new Apps: 2,000 patches fewer, `hack/bench.sh cluster`). The controller
/// still adds it to an App without it (one created on a Kubernetes API server, or whose
/// finalizer someone removed). A `finalizers` that is not a list is left to validation.
fn with_stop_finalizer(object: &mut Value) {
    let finalizers = &mut object["metadata"]["finalizers"];
    if finalizers.is_null() {
        *finalizers = Value::Array(Vec::new());
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f == baton_api::app::STOP_FINALIZER)
    {
        list.push(baton_api::app::STOP_FINALIZER.into());
    }
}

/// The group of the views when they are served apart from Baton's other kinds: on a
/// Kubernetes cluster whose API server holds Apps and AppGroups (CRDs of `baton.dev`), Baton's
/// API server serves the views behind the aggregation layer, in a group of their own.
pub const VIEWS_GROUP: &str = "views.baton.dev";

/// The kinds an API server behind the Kubernetes aggregation layer serves: the `Instance` and
/// `Agent` views, in [`VIEWS_GROUP`].
pub fn aggregated_views() -> Vec<Kind> {
    [instance_kind(), agent_kind()].into_iter().map(|kind| Kind { group: VIEWS_GROUP.into(), ..kind }).collect()
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(f, p)| (f.to_string(), p.to_string())).collect()
}

/// The read-only `Instance` view.
fn instance_kind() -> Kind {
    let column = Column::new;
    Kind {
        group: baton_api::GROUP.into(),
        version: baton_api::VERSION.into(),
        kind: baton_api::instance::INSTANCE_KIND.into(),
        plural: "instances".into(),
        singular: "instance".into(),
        short_names: vec!["inst".into()],
        // `kubectl get all` lists apps and instances, as it lists deployments and pods.
        categories: vec!["all".into(), "baton".into()],
        namespaced: true,
        columns: vec![
            column("App", "string", ".spec.app", 1, "The app the instance belongs to"),
            column("Agent", "string", ".spec.agent", 0, "The agent that runs it"),
            column("Host", "string", ".spec.host", 0, "Where its ports are reachable"),
            column("Ports", "string", ".spec.ports", 0, "Assigned host ports, in the app's port order"),
            column("Phase", "string", ".status.phase", 0, "What the agent reported"),
            column(
                "Health",
                "string",
                ".status.health",
                0,
                "Healthy, Unhealthy (a health check fails), NotReady (readiness not passed yet) or Unknown",
            ),
            column("Exit", "string", ".status.exitCode", 0, "How it ended: its exit code, or the signal that ended it")
                .computed(exit),
            column("Ended", "date", ".status.finishedAt", 0, "When its process ended"),
            column(
                "Reason",
                "string",
                ".status.reason",
                1,
                "Why the agent ended it: OOMKilled, DiskLimitExceeded, FetchFailed, PortInUse",
            ),
            column("CPU", "string", ".status.usage.cpu", 1, "CPU in use, as last measured (250m: a quarter of a cpu)"),
            column("Memory", "string", ".status.usage.memory", 1, "Memory in use, as last measured"),
            column("CPU Time", "string", ".status.usage.cpuMillis", 1, "CPU time used since it started")
                .computed(cpu_time),
            column("Version", "string", ".spec.version", 1, "The app version it runs"),
            column("Pid", "integer", ".status.pid", 1, "The process id on the agent's host"),
            column("Replaces", "string", ".spec.replaces", 1, "The instance killed for its health it replaces"),
            column("Age", "date", ".metadata.creationTimestamp", 0, ""),
        ],
        status_subresource: false,
        scale: None,
        source: Source::InstanceView,
        fields: fields(&[("spec.app", "spec.app"), ("spec.agent", "spec.agent"), ("status.phase", "status.phase")]),
        ttl: None,
        on_create: None,
        admission: Vec::new(),
        schema: SchemaOf::Typed(typed::<baton_api::Instance>),
    }
}

/// The cpu time an instance used, in seconds to a tenth: `12.3s`.
fn cpu_time(object: &Value) -> Option<Value> {
    let millis = object.pointer("/status/usage/cpuMillis").and_then(Value::as_u64)?;
    Some(Value::String(baton_api::instance::cpu_time_text(millis)))
}

/// How an instance ended: its exit code (`3`), or the signal (`SIGKILL`); empty while it runs.
fn exit(object: &Value) -> Option<Value> {
    if let Some(signal) = object.pointer("/status/signal").and_then(Value::as_i64) {
        let name = i32::try_from(signal)
            .ok()
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
            .map_or_else(|| format!("signal {signal}"), |s| s.as_str().to_string());
        return Some(Value::String(name));
    }
    object.pointer("/status/exitCode").and_then(Value::as_i64).map(|code| Value::String(code.to_string()))
}

/// `used/total` of one resource of an agent, e.g. `0.5/4`.
fn allocation(object: &Value, resource: &str) -> Option<Value> {
    // 2.0 cpus reads as 2, 0.25 as 0.25.
    let number = |v: Option<&Value>| v.and_then(Value::as_f64).map(|n| format!("{}", (n * 1000.0).round() / 1000.0));
    let allocated = number(object.pointer(&format!("/status/allocated/{resource}"))).unwrap_or_else(|| "0".into());
    let capacity = number(object.pointer(&format!("/status/capacity/{resource}"))).unwrap_or_else(|| "?".into());
    Some(Value::String(format!("{allocated}/{capacity}")))
}

/// The read-only, cluster-scoped `Agent` view.
fn agent_kind() -> Kind {
    let column = Column::new;
    Kind {
        group: baton_api::GROUP.into(),
        version: baton_api::VERSION.into(),
        kind: baton_api::agent::AGENT_KIND.into(),
        plural: "agents".into(),
        singular: "agent".into(),
        short_names: vec![],
        categories: vec!["baton".into()],
        namespaced: false,
        columns: vec![
            column("Host", "string", ".spec.host", 0, "Where its instances are reached"),
            column("State", "string", ".status.state", 0, "Ready while it reports"),
            column(
                "Maintenance",
                "string",
                ".status.maintenance.state",
                0,
                "Draining, Drained or Released while a Maintenance takes it",
            ),
            column("CPUs", "string", ".status.allocated.cpus", 0, "Allocated/capacity")
                .computed(|o| allocation(o, "cpus")),
            column("Mem", "string", ".status.allocated.mem", 0, "Allocated/capacity, MiB")
                .computed(|o| allocation(o, "mem")),
            column("Disk", "string", ".status.allocated.disk", 1, "Allocated/capacity, MiB")
                .computed(|o| allocation(o, "disk")),
            column("GPUs", "string", ".status.allocated.gpus", 1, "Allocated/capacity")
                .computed(|o| allocation(o, "gpus")),
            column("Instances", "integer", ".status.instances", 0, "Instances assigned and not over"),
            column("Attributes", "string", ".spec.attributes", 1, "Attributes for constraints").computed(|o| {
                let attributes = o.pointer("/spec/attributes")?.as_object()?;
                let pairs: Vec<String> =
                    attributes.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
                Some(Value::String(pairs.join(",")))
            }),
            column("Version", "string", ".spec.version", 1, "The Baton version it runs"),
            column("Age", "date", ".metadata.creationTimestamp", 0, ""),
        ],
        status_subresource: false,
        scale: None,
        source: Source::AgentView,
        fields: fields(&[("status.state", "status.state"), ("spec.host", "spec.host")]),
        ttl: None,
        on_create: None,
        admission: Vec::new(),
        schema: SchemaOf::Typed(typed::<baton_api::Agent>),
    }
}

/// The core `Namespace` kind.
fn namespace_kind() -> Kind {
    Kind {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        plural: NAMESPACES.into(),
        singular: "namespace".into(),
        short_names: vec!["ns".into()],
        categories: vec![],
        namespaced: false,
        columns: vec![
            Column::new("Status", "string", ".status.phase", 0, "Active, or Terminating while its objects are deleted"),
            Column::new("Age", "date", ".metadata.creationTimestamp", 0, ""),
        ],
        status_subresource: true,
        scale: None,
        source: Source::Registry(decode_namespace),
        fields: fields(&[("status.phase", "status.phase")]),
        ttl: None,
        on_create: Some(|object| object["status"] = serde_json::json!({"phase": "Active"})),
        admission: Vec::new(),
        schema: SchemaOf::Typed(typed::<k8s_openapi::api::core::v1::Namespace>),
    }
}

/// The core `Event` kind.
fn event_kind() -> Kind {
    let column = Column::new;
    Kind {
        group: String::new(),
        version: "v1".into(),
        kind: "Event".into(),
        plural: EVENTS.into(),
        singular: "event".into(),
        short_names: vec!["ev".into()],
        categories: vec![],
        namespaced: true,
        columns: vec![
            column("Last Seen", "date", ".lastTimestamp", 0, "When it last happened"),
            column("Type", "string", ".type", 0, "Normal or Warning"),
            column("Reason", "string", ".reason", 0, "Why, in one word"),
            column("Object", "string", ".involvedObject.name", 0, "What it is about").computed(|o| {
                let kind = o.pointer("/involvedObject/kind")?.as_str()?.to_lowercase();
                let name = o.pointer("/involvedObject/name")?.as_str()?;
                Some(Value::String(format!("{kind}/{name}")))
            }),
            column("Message", "string", ".message", 0, "What happened"),
            column("Source", "string", ".source.component", 1, "Who reported it"),
            column("First Seen", "date", ".firstTimestamp", 1, "When it first happened"),
            column("Count", "integer", ".count", 1, "How often it happened"),
        ],
        status_subresource: false,
        scale: None,
        source: Source::Registry(decode_event),
        fields: fields(&[
            ("involvedObject.kind", "involvedObject.kind"),
            ("involvedObject.namespace", "involvedObject.namespace"),
            ("involvedObject.name", "involvedObject.name"),
            ("involvedObject.uid", "involvedObject.uid"),
            ("involvedObject.apiVersion", "involvedObject.apiVersion"),
            ("involvedObject.resourceVersion", "involvedObject.resourceVersion"),
            ("involvedObject.fieldPath", "involvedObject.fieldPath"),
            ("reason", "reason"),
            ("reportingComponent", "reportingComponent"),
            ("source", "source.component"),
            ("type", "type"),
        ]),
        ttl: Some(EVENT_TTL),
        on_create: None,
        admission: Vec::new(),
        schema: SchemaOf::Typed(typed::<k8s_openapi::api::core::v1::Event>),
    }
}

/// Decodes a Namespace: its name must be a DNS label.
fn decode_namespace(value: &Value, _: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    let (namespace, unknown_fields) =
        decode_typed::<k8s_openapi::api::core::v1::Namespace>(value).map_err(|e| vec![e])?;
    let name = namespace.metadata.name.clone().unwrap_or_default();
    if let Some(problem) = baton_api::names::dns_label_problem(&name) {
        return Err(vec![FieldError::invalid("metadata.name", name.as_str(), problem)]);
    }
    let object = serde_json::to_value(&namespace).map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
    Ok(Decoded { object, unknown_fields })
}

/// The longest event message kept.
const MAX_EVENT_MESSAGE: usize = 4096;

/// Decodes an Event: it must name the object it is about; its type is Normal or Warning.
fn decode_event(value: &Value, _: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    let (event, unknown_fields) = decode_typed::<k8s_openapi::api::core::v1::Event>(value).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    if event.involved_object.kind.as_deref().unwrap_or_default().is_empty() {
        errors.push(FieldError::required("involvedObject.kind", "the kind of the object the event is about"));
    }
    if event.involved_object.name.as_deref().unwrap_or_default().is_empty() {
        errors.push(FieldError::required("involvedObject.name", "the name of the object the event is about"));
    }
    if let Some(type_) = event.type_.as_deref()
        && !matches!(type_, "Normal" | "Warning")
    {
        errors.push(FieldError::invalid("type", type_, "must be Normal or Warning"));
    }
    if let Some(message) = &event.message
        && message.len() > MAX_EVENT_MESSAGE
    {
        errors.push(FieldError::invalid(
            "message",
            format!("{}…", &message[..message.floor_char_boundary(40)]),
            format!("must be at most {MAX_EVENT_MESSAGE} bytes, not {}", message.len()),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let object = serde_json::to_value(&event).map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
    Ok(Decoded { object, unknown_fields })
}

/// Decodes an App: typed parse (type errors and unknown fields named by path), then
/// validation, then the normalized form with defaults filled in.
fn decode_app(value: &Value, limits: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    decode_validated(value, |app| baton_api::validation::validate_app_with(app, limits))
}

fn decode_app_group(value: &Value, _: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    decode_validated(value, baton_api::groups::validate_app_group)
}

fn decode_tenant(value: &Value, _: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    decode_validated(value, baton_api::tenant::validate_tenant)
}

fn decode_maintenance(value: &Value, _: &InputLimits) -> Result<Decoded, Vec<FieldError>> {
    decode_validated(value, baton_api::maintenance::validate_maintenance)
}

/// Decodes `T` and validates it; the stored object is `T` serialized (defaults filled in).
fn decode_validated<T: DeserializeOwned + Serialize>(
    value: &Value,
    validate: impl Fn(&T) -> Vec<FieldError>,
) -> Result<Decoded, Vec<FieldError>> {
    let (typed, unknown_fields) = decode_typed::<T>(value).map_err(|e| vec![e])?;
    let errors = validate(&typed);
    if !errors.is_empty() {
        return Err(errors);
    }
    let object = serde_json::to_value(&typed).map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
    Ok(Decoded { object, unknown_fields })
}

/// Deserializes `T`, collecting the paths of fields `T` does not have. A type error is a
/// field error at the path where it happened, with the value found there.
pub fn decode_typed<T: DeserializeOwned + Serialize>(value: &Value) -> Result<(T, Vec<String>), FieldError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let ignored = serde_ignored::Deserializer::new(value, &mut record);
    match serde_path_to_error::deserialize::<_, T>(ignored) {
        // Type meta is checked against the URL before decoding; derived resource types skip it.
        Ok(typed) => Ok((typed, unknown.into_iter().filter(|p| p != "apiVersion" && p != "kind").collect())),
        Err(e) => {
            let path = e.path().to_string();
            let found = lookup(value, &path).cloned().unwrap_or(Value::Null);
            let message = e.into_inner().to_string();
            Err(FieldError::type_invalid(if path == "." { String::new() } else { path }, found, message))
        }
    }
}

/// `spec.ports[0].name` for a serde_ignored path.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// The value at a path like `spec.ports[0].port` (serde_path_to_error's form).
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = value;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            current = current.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(current)
}

/// Evaluates a simple printer-column path (`.status.running`) against an object.
pub fn column_value<'v>(object: &'v Value, json_path: &str) -> Option<&'v Value> {
    let pointer: String = json_path.split('.').filter(|s| !s.is_empty()).map(|s| format!("/{s}")).collect();
    object.pointer(&pointer).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_kind_comes_from_its_crd() {
        let kinds = all();
        let app = &kinds[0];
        assert_eq!((app.plural.as_str(), app.singular.as_str(), app.namespaced), ("apps", "app", true));
        assert!(app.status_subresource);
        assert_eq!(app.scale.as_ref().unwrap().spec_replicas, ".spec.instances");
        let names: Vec<&str> = app.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "State",
                "Instances",
                "Running",
                "Healthy",
                "Unhealthy",
                "Failures",
                "Staged",
                "Desired",
                "Id",
                "Version",
                "Age"
            ]
        );
        let group = &kinds[1];
        assert_eq!((group.plural.as_str(), group.short_names.as_slice()), ("appgroups", ["ag".to_string()].as_slice()));
        let names: Vec<&str> = group.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Path", "Apps", "Ready", "Scale", "Age"]);
    }

    #[test]
    fn decoding_names_unknown_fields_and_type_errors() {
        let body = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": "web", "colour": 1},
                          "spec": {"cmd": "x", "replicas": 3, "ports": [{"port": 0, "protocol": "tcp"}]}});
        let decoded = decode_app(&body, &InputLimits::default()).expect("valid apart from unknown fields");
        assert_eq!(decoded.unknown_fields, ["metadata.colour", "spec.ports[0].protocol", "spec.replicas"]);
        assert_eq!(decoded.object["spec"]["instances"], 1, "defaults are filled in");

        let body = json!({"metadata": {"name": "web"}, "spec": {"cmd": "x", "ports": [{"port": "http"}]}});
        let errors = decode_app(&body, &InputLimits::default()).err().expect("a type error");
        assert_eq!(errors[0].field, "spec.ports[0].port");
        assert!(errors[0].to_string().contains("\"http\""), "{}", errors[0]);
    }

    #[test]
    fn column_values() {
        let obj = json!({"status": {"running": 3}, "spec": {"ports": [1, 2]}});
        assert_eq!(column_value(&obj, ".status.running"), Some(&json!(3)));
        assert_eq!(column_value(&obj, ".status.staged"), None);
        assert_eq!(lookup(&obj, "spec.ports[1]"), Some(&json!(2)));
    }
}
