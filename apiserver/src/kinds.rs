//! The kinds the server serves, described once: names for discovery, printer columns for
//! tables, subresources, and how objects are decoded and validated or built from the store.
//!
//! Stored kinds are described from their CRD (`App::crd()`), so the API server, the Helm
//! install and `crds/` can never disagree on names, columns or subresources.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use baton_api::FieldError;

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

/// Turns a request body into a stored object, or field errors.
pub type Decoder = fn(&Value) -> Result<Decoded, Vec<FieldError>>;

/// How the objects of a kind come to be.
#[derive(Clone, Copy)]
pub enum Source {
    /// Written by clients, stored under `/baton/registry/…`.
    Registry(Decoder),
    /// Built from the instance and status records; read-only.
    InstanceView,
}

/// A served kind.
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
}

impl Kind {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    pub fn is_read_only(&self) -> bool {
        matches!(self.source, Source::InstanceView)
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_read_only() {
            vec!["get", "list", "watch"]
        } else {
            vec!["create", "delete", "get", "list", "patch", "update", "watch"]
        }
    }

    /// Describes a stored kind from its CRD (first served version).
    pub fn from_crd(crd: &CustomResourceDefinition, decoder: Decoder) -> Self {
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
                })
                .collect(),
            status_subresource: subresources.is_some_and(|s| s.status.is_some()),
            scale: subresources.and_then(|s| s.scale.as_ref()).map(|s| ScalePaths {
                spec_replicas: s.spec_replicas_path.clone(),
                status_replicas: s.status_replicas_path.clone(),
            }),
            source: Source::Registry(decoder),
        }
    }
}

/// Every kind served, in discovery order.
pub fn all() -> Vec<Kind> {
    vec![Kind::from_crd(&baton_api::App::crd(), decode_app), instance_kind()]
}

/// The read-only `Instance` view.
fn instance_kind() -> Kind {
    let column = |name: &str, type_: &str, json_path: &str, priority: i32, description: &str| Column {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: description.into(),
        priority,
        json_path: json_path.into(),
    };
    Kind {
        group: baton_api::GROUP.into(),
        version: baton_api::VERSION.into(),
        kind: baton_api::instance::INSTANCE_KIND.into(),
        plural: "instances".into(),
        singular: "instance".into(),
        short_names: vec!["inst".into()],
        categories: vec!["baton".into()],
        namespaced: true,
        columns: vec![
            column("App", "string", ".spec.app", 1, "The app the instance belongs to"),
            column("Agent", "string", ".spec.agent", 0, "The agent that runs it"),
            column("Host", "string", ".spec.host", 0, "Where its ports are reachable"),
            column("Ports", "string", ".spec.ports", 0, "Assigned host ports, in the app's port order"),
            column("Phase", "string", ".status.phase", 0, "What the agent reported"),
            column("Version", "string", ".spec.version", 1, "The app version it runs"),
            column("Pid", "integer", ".status.pid", 1, "The process id on the agent's host"),
            column("Age", "date", ".metadata.creationTimestamp", 0, ""),
        ],
        status_subresource: false,
        scale: None,
        source: Source::InstanceView,
    }
}

/// Decodes an App: typed parse (type errors and unknown fields named by path), then
/// validation, then the normalized form with defaults filled in.
fn decode_app(value: &Value) -> Result<Decoded, Vec<FieldError>> {
    let (app, unknown_fields) = decode_typed::<baton_api::App>(value).map_err(|e| vec![e])?;
    let errors = baton_api::validation::validate_app(&app);
    if !errors.is_empty() {
        return Err(errors);
    }
    let object = serde_json::to_value(&app).map_err(|e| vec![FieldError::invalid("", "", e.to_string())])?;
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
        assert_eq!(names, ["Instances", "Running", "Staged", "Version", "Age"]);
    }

    #[test]
    fn decoding_names_unknown_fields_and_type_errors() {
        let body = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": "web", "colour": 1},
                          "spec": {"cmd": "x", "replicas": 3, "ports": [{"port": 0, "protocol": "tcp"}]}});
        let decoded = decode_app(&body).expect("valid apart from unknown fields");
        assert_eq!(decoded.unknown_fields, ["metadata.colour", "spec.ports[0].protocol", "spec.replicas"]);
        assert_eq!(decoded.object["spec"]["instances"], 1, "defaults are filled in");

        let body = json!({"metadata": {"name": "web"}, "spec": {"cmd": "x", "ports": [{"port": "http"}]}});
        let errors = decode_app(&body).err().expect("a type error");
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
