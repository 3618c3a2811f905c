//! Managed fields and server-side apply, as Kubernetes defines them for custom resources:
//! maps are merged key by key, lists are atomic.
//!
//! Every write records which manager (`fieldManager`, or the client's name) set which
//! fields in `metadata.managedFields`: an update takes ownership of the fields it changed
//! from whoever owned them; an apply owns exactly the fields of its configuration. A field
//! an applier stops applying is removed from the object unless another manager owns it.
//! An apply that would change a field another manager owns is refused with a conflict per
//! field, unless forced, which takes the fields over. Pure: no I/O.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status` (when the kind has a status subresource).
    Main,
    /// Only `status`.
    Status,
    /// Only the replicas of the scale subresource.
    Scale,
}

/// A field: its path of keys from the object's root, e.g. `["spec", "instances"]`.
pub type Path = Vec<String>;

/// The fields one manager owns (leaves only: scalars, lists and empty maps).
pub type FieldSet = BTreeSet<Path>;

/// Metadata fields nobody manages: identity, and what the server sets.
const UNMANAGED_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// What kind of write an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// Which part of an object a write manages, and how the kind splits it.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub part: Part,
    /// Whether `status` is written through its own subresource.
    pub status_subresource: bool,
}

impl Scope {
    fn subresource(self) -> Option<String> {
        match self.part {
            Part::Main => None,
            Part::Status => Some("status".into()),
            Part::Scale => Some("scale".into()),
        }
    }

    /// Whether a top-level field belongs to this part.
    fn covers(self, top: &str) -> bool {
        match self.part {
            Part::Status => top == "status",
            Part::Main | Part::Scale => !(top == "status" && self.status_subresource),
        }
    }
}

/// The leaf fields of `value` in `scope`.
pub fn fields_of(value: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(object) = value.as_object() else { return out };
    for (key, child) in object {
        if matches!(key.as_str(), "apiVersion" | "kind") || !scope.covers(key) {
            continue;
        }
        let mut path = vec![key.clone()];
        if key == "metadata" {
            for (field, value) in child.as_object().into_iter().flatten() {
                if !UNMANAGED_METADATA.contains(&field.as_str()) {
                    path.push(field.clone());
                    leaves(value, &mut path, &mut out);
                    path.pop();
                }
            }
        } else {
            leaves(child, &mut path, &mut out);
        }
    }
    out
}

fn leaves(value: &Value, path: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => _ = out.insert(path.clone()),
    }
}

/// The value at `path`.
fn value_at<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Equal as JSON, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The leaf fields of `after` in `scope` whose value `before` does not have.
pub fn changed_fields(before: &Value, after: &Value, scope: Scope) -> FieldSet {
    fields_of(after, scope)
        .into_iter()
        .filter(|path| value_at(before, path).is_none_or(|old| !same(old, value_at(after, path).expect("a leaf"))))
        .collect()
}

/// Whether `set` owns `path`: the path itself, a field above it (an atomic value that holds
/// it) or a field below it.
fn owns(set: &FieldSet, path: &Path) -> bool {
    if set.contains(path) || (1..path.len()).any(|n| set.contains(&path[..n].to_vec())) {
        return true;
    }
    set.range(path.clone()..).next().is_some_and(|next| next.starts_with(path))
}

/// Drops from `set` what `taken` now owns (the same fields, those above and below them).
fn release(set: &mut FieldSet, taken: &FieldSet) {
    set.retain(|path| !owns(taken, path));
}

/// `.spec.instances`, as Kubernetes writes fields in conflicts.
pub fn display(path: &Path) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// The entries of an object's `metadata.managedFields`.
pub fn entries_of(object: &Value) -> Vec<Entry> {
    let Some(list) = object.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
            let operation = match text("operation")?.as_str() {
                "Apply" => Operation::Apply,
                _ => Operation::Update,
            };
            let mut fields = FieldSet::new();
            if let Some(tree) = entry.get("fieldsV1") {
                collect_fields_v1(tree, &mut Vec::new(), &mut fields);
            }
            Some(Entry {
                manager: text("manager").unwrap_or_default(),
                operation,
                api_version: text("apiVersion").unwrap_or_default(),
                time: text("time").unwrap_or_default(),
                subresource: text("subresource").filter(|s| !s.is_empty()),
                fields,
            })
        })
        .collect()
}

/// Reads a `fieldsV1` tree (`{"f:spec": {"f:instances": {}}}`) into leaf paths.
fn collect_fields_v1(tree: &Value, path: &mut Path, out: &mut FieldSet) {
    let children: Vec<(&String, &Value)> =
        tree.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (key, child) in children {
        path.push(key[2..].to_string());
        collect_fields_v1(child, path, out);
        path.pop();
    }
}

/// A `fieldsV1` tree of leaf paths.
fn fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Writes `entries` (without empty ones) into the object's metadata.
pub fn set_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = json!({
                "manager": e.manager,
                "operation": e.operation.as_str(),
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&e.fields),
            });
            if let Some(subresource) = &e.subresource {
                entry["subresource"] = json!(subresource);
            }
            entry
        })
        .collect();
    if list.is_empty() {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        return;
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]["managedFields"] = Value::Array(list);
}

/// Who writes, and when.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
}

/// Records an update (create, replace, patch) of `before` into `after` by `writer`: the
/// fields it changed become its own; fields that no longer exist are nobody's.
pub fn record_update(before: &Value, after: &mut Value, writer: &Writer<'_>, scope: Scope) {
    let changed = changed_fields(before, after, scope);
    let mut entries = entries_of(before);
    let present = |path: &Path| value_at(after, path).is_some_and(|v| !v.is_null());
    for entry in &mut entries {
        release(&mut entry.fields, &changed);
        entry.fields.retain(present);
    }
    if !changed.is_empty() {
        let subresource = scope.subresource();
        match entries
            .iter_mut()
            .find(|e| e.manager == writer.manager && e.operation == Operation::Update && e.subresource == subresource)
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = writer.time.to_string();
                entry.api_version = writer.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: writer.manager.to_string(),
                operation: Operation::Update,
                api_version: writer.api_version.to_string(),
                time: writer.time.to_string(),
                subresource,
                fields: changed,
            }),
        }
    }
    set_entries(after, &entries);
}

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: Path,
}

/// Applies `config` by `writer` to `live` (`None`: the object does not exist yet): the new
/// object (before defaults and validation) with its managed fields, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer<'_>,
    scope: Scope,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live_object = live.unwrap_or(&empty);
    let applied = fields_of(config, scope);
    let subresource = scope.subresource();
    let mut entries = entries_of(live_object);
    let is_mine =
        |e: &Entry| e.manager == writer.manager && e.operation == Operation::Apply && e.subresource == subresource;
    let mut conflicts = Vec::new();
    for path in &applied {
        let wanted = value_at(config, path).expect("a leaf of the config");
        if value_at(live_object, path).is_some_and(|current| same(current, wanted)) {
            continue; // Setting a field to its value takes nobody's ownership away.
        }
        for entry in entries.iter().filter(|e| !is_mine(e) && owns(&e.fields, path)) {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                api_version: entry.api_version.clone(),
                field: path.clone(),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let previously: FieldSet = entries.iter().filter(|e| is_mine(e)).flat_map(|e| e.fields.clone()).collect();
    if force {
        // Forced: the changed fields are taken from their owners.
        let taken: FieldSet = conflicts.iter().map(|c| c.field.clone()).collect();
        for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
            release(&mut entry.fields, &taken);
        }
    }
    let mut object = live_object.clone();
    // Fields this manager stopped applying go, unless someone else owns them too.
    for path in previously.difference(&applied) {
        if !entries.iter().filter(|e| !is_mine(e)).any(|e| owns(&e.fields, path)) {
            remove_at(&mut object, path);
        }
    }
    merge_config(&mut object, config, scope);
    // The same fields applied again keep their time, so an apply that changes nothing
    // writes nothing.
    let time = match entries.iter().find(|e| is_mine(e)) {
        Some(mine) if mine.fields == applied => mine.time.clone(),
        _ => writer.time.to_string(),
    };
    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: writer.manager.to_string(),
        operation: Operation::Apply,
        api_version: writer.api_version.to_string(),
        time,
        subresource,
        fields: applied,
    });
    let present = |path: &Path| value_at(&object, path).is_some_and(|v| !v.is_null());
    for entry in &mut entries {
        entry.fields.retain(present);
    }
    set_entries(&mut object, &entries);
    Ok(object)
}

/// Removes the field at `path`, and maps it leaves empty below the top level.
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let Some(parent) = parents.iter().try_fold(&mut *object, |v, key| v.get_mut(key)) else { return };
    if let Some(map) = parent.as_object_mut() {
        map.remove(last);
        if map.is_empty() && parents.len() > 1 {
            remove_at(object, parents);
        }
    }
}

/// Sets every field of `config` in `scope` on `object`: maps merge, everything else is
/// replaced; a null removes the field.
fn merge_config(object: &mut Value, config: &Value, scope: Scope) {
    let Some(config) = config.as_object() else { return };
    for (key, value) in config {
        if matches!(key.as_str(), "apiVersion" | "kind") || !scope.covers(key) {
            continue;
        }
        if key == "metadata" {
            for (field, value) in value.as_object().into_iter().flatten() {
                if !UNMANAGED_METADATA.contains(&field.as_str()) {
                    merge_value(&mut object["metadata"], field, value);
                }
            }
            continue;
        }
        merge_value(object, key, value);
    }
}

fn merge_value(target: &mut Value, key: &str, value: &Value) {
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object");
    match value {
        Value::Null => _ = map.remove(key),
        Value::Object(fields) if !fields.is_empty() => {
            let slot = map.entry(key.to_string()).or_insert_with(|| json!({}));
            for (field, value) in fields {
                merge_value(slot, field, value);
            }
        }
        other => _ = map.insert(key.to_string(), other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope { part: Part::Main, status_subresource: true };

    fn writer(manager: &str) -> Writer<'_> {
        Writer { manager, api_version: "baton.dev/v1alpha1", time: "2026-11-21T00:00:00Z" }
    }

    fn path(dotted: &str) -> Path {
        dotted.split('.').map(str::to_string).collect()
    }

    fn owned_by(object: &Value, manager: &str) -> Vec<String> {
        let entries = entries_of(object);
        entries.iter().filter(|e| e.manager == manager).flat_map(|e| e.fields.iter().map(|p| p.join("."))).collect()
    }

    #[test]
    fn fields_are_leaves_maps_merge_lists_are_atomic() {
        let object = json!({"apiVersion": "x", "kind": "App", "metadata": {"name": "web", "labels": {"a": "1"}},
                            "spec": {"instances": 2, "ports": [{"port": 0}], "env": {}}, "status": {"running": 1}});
        let fields: Vec<String> = fields_of(&object, MAIN).iter().map(|p| p.join(".")).collect();
        assert_eq!(fields, ["metadata.labels.a", "spec.env", "spec.instances", "spec.ports"]);
        let status = Scope { part: Part::Status, status_subresource: true };
        assert_eq!(fields_of(&object, status).len(), 1);
        let tree = fields_v1(&fields_of(&object, MAIN));
        assert_eq!(tree["f:spec"]["f:instances"], json!({}));
        let mut back = FieldSet::new();
        collect_fields_v1(&tree, &mut Vec::new(), &mut back);
        assert_eq!(back, fields_of(&object, MAIN), "fieldsV1 round-trips");
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let created = json!({"metadata": {"name": "web"}, "spec": {"instances": 1, "cmd": "x"}});
        let mut first = created.clone();
        record_update(&json!({}), &mut first, &writer("kubectl-create"), MAIN);
        assert_eq!(owned_by(&first, "kubectl-create"), ["spec.cmd", "spec.instances"]);
        let mut scaled = first.clone();
        scaled["spec"]["instances"] = json!(5);
        record_update(&first, &mut scaled, &writer("kubectl-scale"), MAIN);
        assert_eq!(owned_by(&scaled, "kubectl-create"), ["spec.cmd"]);
        assert_eq!(owned_by(&scaled, "kubectl-scale"), ["spec.instances"]);
        let mut same = scaled.clone();
        record_update(&scaled, &mut same, &writer("other"), MAIN);
        assert_eq!(same, scaled, "a write that changes nothing records nothing");
    }

    #[test]
    fn apply_owns_its_config_removes_what_it_drops_and_reports_conflicts() {
        let config = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "App", "metadata": {"name": "web"},
                            "spec": {"instances": 2, "cmd": "x", "env": {"A": "1", "B": "2"}}});
        let created = apply(None, &config, &writer("ci"), MAIN, false).unwrap();
        assert_eq!(owned_by(&created, "ci"), ["spec.cmd", "spec.env.A", "spec.env.B", "spec.instances"]);

        // Dropping B from the config removes it; A stays.
        let mut smaller = config.clone();
        smaller["spec"]["env"] = json!({"A": "1"});
        let next = apply(Some(&created), &smaller, &writer("ci"), MAIN, false).unwrap();
        assert_eq!(next["spec"]["env"], json!({"A": "1"}));

        // Another applier changing instances conflicts; the same value does not; force takes it.
        let theirs = json!({"metadata": {"name": "web"}, "spec": {"instances": 3}});
        let conflicts = apply(Some(&next), &theirs, &writer("ops"), MAIN, false).unwrap_err();
        assert_eq!(
            conflicts,
            [Conflict {
                manager: "ci".into(),
                api_version: "baton.dev/v1alpha1".into(),
                field: path("spec.instances")
            }]
        );
        let agreeing = json!({"metadata": {"name": "web"}, "spec": {"instances": 2.0}});
        let shared = apply(Some(&next), &agreeing, &writer("ops"), MAIN, false).unwrap();
        assert_eq!(owned_by(&shared, "ops"), ["spec.instances"], "both own it now");
        let forced = apply(Some(&next), &theirs, &writer("ops"), MAIN, true).unwrap();
        assert_eq!(forced["spec"]["instances"], 3);
        assert!(!owned_by(&forced, "ci").contains(&"spec.instances".to_string()), "force takes the field");

        // A field the first applier drops but another manager owns stays.
        let mut without_instances = config.clone();
        without_instances["spec"].as_object_mut().unwrap().remove("instances");
        let kept = apply(Some(&shared), &without_instances, &writer("ci"), MAIN, false).unwrap();
        assert_eq!(kept["spec"]["instances"].as_f64(), Some(2.0), "ops still owns it");
    }
}
