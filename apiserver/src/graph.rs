//! The checks that span objects: a write of an App or AppGroup that changes the namespace's
//! dependency graph (an app's group or dependencies, a group's path or dependencies) is
//! refused if it would close a dependency cycle or give two AppGroups one path.
//!
//! Keys per namespace keep concurrent writes honest, each compared or written in the same
//! transaction as the object:
//! - a write that may add dependency edges (an app with dependencies, own or inherited, or
//!   any AppGroup) compares them all as it read them and bumps `/baton/graph/<ns>`: of two
//!   such writes that would each close half of a cycle, the second finds the key moved and
//!   is checked again;
//! - an app with no dependencies, own or inherited, cannot be on a cycle, but joining a group
//!   it may make one for a concurrent write that gives the group dependencies: it compares
//!   `/baton/graph/<ns>` and bumps its mark under `/baton/graph/<ns>/members/` (one of a fixed
//!   set of keys, by its name), which such writes compare. Writes of this kind do not wait
//!   for each other, and seldom write one key (so they can go to the store together).

use baton_api::groups::{Graph, GroupPath};
use baton_api::{App, AppGroup, FieldError};
use baton_store::{Compare, Keyspace, Op};
use serde_json::{Value, json};

use crate::admission::{Admission, Context, Guard, Proposed, Read};
use crate::status::{ApiError, ApiResult};

/// The dependency graph's check, for the two kinds that shape it.
pub enum DependencyGraph {
    /// Apps: their group and dependencies.
    Apps,
    /// AppGroups: their path and dependencies.
    Groups,
}

/// A compare that holds while `key` is as it was read.
pub(crate) fn unchanged(key: &str, seen: Option<&baton_store::KeyValue>) -> Compare {
    match seen {
        Some(kv) => Compare::mod_revision(key, kv.mod_revision),
        None => Compare::absent(key),
    }
}

impl DependencyGraph {
    /// The fields of `object` that shape the dependency graph.
    fn shape(&self, object: &Value) -> Value {
        let spec = &object["spec"];
        let position = match self {
            DependencyGraph::Apps => &spec["group"],
            DependencyGraph::Groups => &spec["path"],
        };
        json!([object["metadata"]["name"], position, spec["dependencies"]])
    }

    /// The namespace of a write that changes the graph.
    fn changed_in<'a>(&self, write: &Proposed<'a>) -> Option<&'a str> {
        write.namespace.filter(|_| write.changes(|object| self.shape(object)))
    }
}

#[async_trait::async_trait]
impl Admission for DependencyGraph {
    /// The graph's guard keys and the namespace's groups; its apps too when the write
    /// declares dependencies (a group always may).
    fn reads(&self, keys: &Keyspace, write: &Proposed<'_>) -> Vec<Read> {
        let Some(namespace) = self.changed_in(write) else { return Vec::new() };
        let mut reads =
            vec![Read::Key(keys.dependency_graph(namespace)), Read::Prefix(registry(keys, namespace, "appgroups"))];
        let declares =
            write.after.pointer("/spec/dependencies").and_then(Value::as_array).is_some_and(|d| !d.is_empty());
        if declares || matches!(self, DependencyGraph::Groups) {
            // The marks with the apps: see `admit`.
            reads.push(Read::Prefix(keys.dependency_graph_members(namespace)));
            reads.push(Read::Prefix(registry(keys, namespace, "apps")));
        }
        reads
    }

    /// Checks a write against the rest of the namespace's apps and groups. `None` when the
    /// write does not change the graph.
    async fn admit(&self, context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Option<Guard>> {
        let Some(namespace) = self.changed_in(write) else {
            return Ok(None);
        };
        let Proposed { target, after, .. } = *write;
        let keys = context.keys;
        let name = target.name;
        let graph_key = keys.dependency_graph(namespace);
        // Read with the objects (or before them), so that a write after this read is noticed.
        let graph_seen = context.get(&graph_key).await?;
        let changed_by = json!({"changedBy": format!("{}/{name}", target.plural)}).to_string();
        let mut groups: Vec<AppGroup> = load(context, namespace, "appgroups").await?;
        let decode_error =
            |e: serde_json::Error| ApiError::internal(format!("decoded {} no longer reads: {e}", target.kind));
        let app: Option<App> = match self {
            DependencyGraph::Apps => Some(serde_json::from_value(after.clone()).map_err(decode_error)?),
            DependencyGraph::Groups => None,
        };
        if let Some(app) = &app {
            let group = app.group_path();
            let inherits = groups.iter().any(|g| !g.spec.dependencies.is_empty() && g.group_path().contains(&group));
            if app.spec.dependencies.is_empty() && !inherits {
                return Ok(Some(Guard {
                    compares: vec![unchanged(&graph_key, graph_seen.as_ref())],
                    ops: vec![Op::put(keys.dependency_graph_member(namespace, name), changed_by)],
                }));
            }
        }
        // The members' marks before (or with) the apps: an app that joined after the apps
        // were read moved its mark after this read too.
        let marks = context.range(&keys.dependency_graph_members(namespace)).await?;
        let mut apps: Vec<App> = load(context, namespace, "apps").await?;
        let before_graph = Graph::new(&apps, &groups);
        let errors = match app {
            Some(app) => {
                apps.retain(|a| a.metadata.name.as_deref() != Some(name));
                let me = app.path();
                apps.push(app);
                cycle_errors(&before_graph, &Graph::new(&apps, &groups), Some(&me), "spec.group", after)
            }
            None => {
                let group: AppGroup = serde_json::from_value(after.clone()).map_err(decode_error)?;
                groups.retain(|g| g.metadata.name.as_deref() != Some(name));
                let path = group.group_path();
                let mut errors = Vec::new();
                if let Some(other) = groups.iter().find(|g| g.group_path() == path) {
                    errors.push(FieldError::invalid(
                        "spec.path",
                        group.spec.path.as_str(),
                        format!(
                            "the AppGroup {:?} already holds the settings of {path}: edit that one",
                            other.metadata.name.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                groups.push(group);
                errors.extend(cycle_errors(&before_graph, &Graph::new(&apps, &groups), None, "spec.path", after));
                errors
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(&target, &errors));
        }
        let marks_unchanged = keys.dependency_graph_member_keys(namespace).map(|key| {
            let seen = marks.iter().find(|kv| kv.key == key);
            unchanged(&key, seen)
        });
        Ok(Some(Guard {
            compares: std::iter::once(unchanged(&graph_key, graph_seen.as_ref())).chain(marks_unchanged).collect(),
            ops: vec![Op::put(&graph_key, changed_by)],
        }))
    }
}

/// Every stored object of a Baton kind in `namespace` that still reads.
pub(crate) async fn load<T: serde::de::DeserializeOwned>(
    context: Context<'_>,
    namespace: &str,
    plural: &str,
) -> ApiResult<Vec<T>> {
    let listed = context.range(&registry(context.keys, namespace, plural)).await?;
    Ok(listed.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// Where the objects of a Baton kind in `namespace` are stored.
pub(crate) fn registry(keys: &Keyspace, namespace: &str, plural: &str) -> String {
    keys.registry(baton_api::GROUP, plural, Some(namespace))
}

/// A cycle the write would close, reported on its dependencies — or, for an object without
/// dependencies of its own that joins a group whose dependencies lead back to it, on
/// `position` (`spec.group`, `spec.path`). A cycle that was there before (stored under older
/// rules) is not this write's to answer for.
fn cycle_errors(
    before: &Graph,
    after: &Graph,
    me: Option<&GroupPath>,
    position: &str,
    object: &Value,
) -> Vec<FieldError> {
    let Some(mut cycle) = after.find_cycle().filter(|_| before.find_cycle().is_none()) else {
        return Vec::new();
    };
    if let Some(me) = me {
        cycle = cycle.starting_at(me);
    }
    let dependencies = object.pointer("/spec/dependencies").filter(|d| d.as_array().is_some_and(|d| !d.is_empty()));
    let error = match dependencies {
        Some(written) => FieldError::invalid("spec.dependencies", written.clone(), cycle.to_string()),
        None => {
            let written = object.pointer(&format!("/{}", position.replace('.', "/"))).and_then(Value::as_str);
            let path = written.and_then(|w| GroupPath::parse_absolute(w).ok()).unwrap_or_default();
            FieldError::invalid(position, path.to_string(), cycle.to_string())
        }
    };
    vec![error]
}
