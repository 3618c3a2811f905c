//! App groups, Marathon's way: every app lives at a path (`spec.group` plus its name, e.g.
//! `/shop/db`), groups exist implicitly from those paths, and an [`AppGroup`] adds settings
//! to one — `dependencies` and `scaleFactor`.
//!
//! Dependencies name apps or groups by absolute path or by a path relative to the app's
//! group (for an app) or to the group's own path (for an AppGroup): on the group
//! `/product/service`, `../database`, `/product/database` and `specific/../../database` all
//! mean `/product/database` (Marathon's documented example). Depending on a path means
//! depending on the app with that id, if any, and on every app below it. Every app inherits
//! the dependencies of the AppGroups at its group and above.
//!
//! [`Graph`] is pure: the API server uses it to refuse cycles at apply, the controller to
//! gate starts and upgrades, order deletions and scale groups.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::limits::{MAX_DEPENDENCIES, MAX_GROUP_DEPTH};
use crate::names;
use crate::validation::FieldError;

/// Settings for the group at `path`, inherited by every app below it.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "AppGroup",
    plural = "appgroups",
    shortname = "ag",
    namespaced,
    status = "AppGroupStatus",
    category = "baton",
    derive = "PartialEq",
    doc = "Settings for a group of apps (the apps whose spec.group is the path or below it): dependencies every \
           app in it inherits, and a factor that scales them.",
    printcolumn(name = "Path", type_ = "string", json_path = ".spec.path", description = "The group's path"),
    printcolumn(
        name = "Apps",
        type_ = "integer",
        json_path = ".status.apps",
        description = "Apps in the group and below it"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Instances ready at their app's current version / instances wanted, over every app in the group"
    ),
    printcolumn(
        name = "Scale",
        type_ = "number",
        json_path = ".spec.scaleFactor",
        description = "The group's scale factor",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AppGroupSpec {
    /// The group's absolute path, e.g. `/shop`. At most one AppGroup per path in a
    /// namespace.
    pub path: String,

    /// Apps or groups every app in this group depends on: absolute paths, or paths relative
    /// to this group's path (`../database` on `/product/service` is `/product/database`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DEPENDENCIES))]
    pub dependencies: Vec<String>,

    /// Every app in the group (and below) runs `ceil(instances × factor)` instances, the
    /// factors of nested groups multiplying. Changing it scales; it restarts nothing.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub scale_factor: f64,
}

fn one() -> f64 {
    1.0
}

/// What the controller observed about a group's apps.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppGroupStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Apps in the group and below it.
    #[serde(default)]
    pub apps: i32,
    /// Of those, the apps with every instance healthy at their current version.
    #[serde(default)]
    pub available_apps: i32,
    /// Instances the group's apps want, scale factors applied.
    #[serde(default)]
    pub instances: i32,
    /// Instances ready at their app's current version.
    #[serde(default)]
    pub ready_instances: i32,
    /// `readyInstances/instances`, for `kubectl get appgroups`.
    #[serde(default)]
    pub ready: String,
    /// The product of this group's factor and its ancestors'.
    #[serde(default)]
    pub scale: f64,
    /// `Available`: every app in the group is available; else which are not.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A canonical absolute path: `/`, `/shop`, `/shop/frontend`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupPath(Vec<String>);

impl GroupPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses an absolute path as written in `spec.group` or an AppGroup's `spec.path`:
    /// starts with `/`, segments are RFC 1123 labels, no `.` or `..`. A trailing `/` is
    /// allowed.
    pub fn parse_absolute(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err("must be an absolute path, starting with '/' (e.g. '/shop/frontend')".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Self::root());
        }
        let depth = rest.split('/').count();
        if depth > MAX_GROUP_DEPTH {
            return Err(too_deep(depth));
        }
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            if segment == "." || segment == ".." {
                return Err(format!("must not contain '{segment}': write the path it stands for"));
            }
            check_segment(segment)?;
            segments.push(segment.to_string());
        }
        Ok(Self(segments))
    }

    /// Resolves a dependency as written against `base` (the app's group, or the
    /// AppGroup's own path): absolute paths stand as they are, relative ones are appended
    /// to `base`; `.` and `..` are resolved.
    pub fn resolve(written: &str, base: &GroupPath) -> Result<Self, String> {
        if written.is_empty() {
            return Err("must not be empty".into());
        }
        let (mut segments, rest) = match written.strip_prefix('/') {
            Some(rest) => (Vec::new(), rest),
            None => (base.0.clone(), written),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Self(segments));
        }
        for segment in rest.split('/') {
            match segment {
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(format!("goes above the root '/' (resolved against '{base}')"));
                    }
                }
                _ => {
                    check_segment(segment)?;
                    segments.push(segment.to_string());
                }
            }
        }
        if segments.len() > MAX_GROUP_DEPTH {
            return Err(format!("resolves to a path that {}", too_deep(segments.len())));
        }
        Ok(Self(segments))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path one level down.
    pub fn child(&self, name: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(name.to_string());
        Self(segments)
    }

    /// The path one level up (the root's parent is the root).
    pub fn parent(&self) -> Self {
        Self(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    /// This path and every path above it, nearest first, ending with the root.
    pub fn ancestors(&self) -> impl Iterator<Item = GroupPath> + '_ {
        (0..=self.0.len()).rev().map(|n| Self(self.0[..n].to_vec()))
    }

    /// Whether `other` is this path or below it.
    pub fn contains(&self, other: &GroupPath) -> bool {
        other.0.starts_with(&self.0)
    }
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.0 {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// The problem with a path of `depth` segments.
fn too_deep(depth: usize) -> String {
    format!("has {depth} segments; at most {MAX_GROUP_DEPTH} are allowed")
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("must not contain an empty segment ('//')".into());
    }
    match names::dns_label_problem(segment) {
        Some(problem) => Err(format!("segment '{segment}': {problem}")),
        None => Ok(()),
    }
}

impl App {
    /// The app's group (`spec.group`, `/` when unset or unreadable).
    pub fn group_path(&self) -> GroupPath {
        self.spec.group.as_deref().and_then(|g| GroupPath::parse_absolute(g).ok()).unwrap_or_default()
    }

    /// The app's id: its group plus its name, e.g. `/shop/db`.
    pub fn path(&self) -> GroupPath {
        self.group_path().child(self.metadata.name.as_deref().unwrap_or_default())
    }
}

impl AppGroup {
    /// The group's path (`/` when unreadable, which validation refuses).
    pub fn group_path(&self) -> GroupPath {
        GroupPath::parse_absolute(&self.spec.path).unwrap_or_default()
    }
}

/// Field errors of `spec.group` and `spec.dependencies` of an app.
pub fn validate_app_paths(app: &App, errors: &mut Vec<FieldError>) {
    let mut base = GroupPath::root();
    if let Some(group) = &app.spec.group {
        match GroupPath::parse_absolute(group) {
            Ok(path) => base = path,
            Err(problem) => errors.push(FieldError::invalid("spec.group", group.as_str(), problem)),
        }
    }
    validate_dependencies(&app.spec.dependencies, &base, errors);
}

/// Field errors of an AppGroup.
pub fn validate_app_group(group: &AppGroup) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = &group.metadata.name
        && let Some(problem) = names::dns_subdomain_problem(name)
    {
        errors.push(FieldError::invalid("metadata.name", name.as_str(), problem));
    }
    let base = match GroupPath::parse_absolute(&group.spec.path) {
        Ok(path) => path,
        Err(problem) => {
            errors.push(FieldError::invalid("spec.path", group.spec.path.as_str(), problem));
            GroupPath::root()
        }
    };
    validate_dependencies(&group.spec.dependencies, &base, &mut errors);
    let factor = group.spec.scale_factor;
    if !(0.0..=1000.0).contains(&factor) || !factor.is_finite() {
        errors.push(FieldError::invalid("spec.scaleFactor", factor, "must be between 0 and 1000"));
    }
    errors
}

fn validate_dependencies(dependencies: &[String], base: &GroupPath, errors: &mut Vec<FieldError>) {
    if dependencies.len() > MAX_DEPENDENCIES {
        errors.push(FieldError::invalid(
            "spec.dependencies",
            dependencies.len(),
            format!("has {} dependencies; at most {MAX_DEPENDENCIES} are allowed", dependencies.len()),
        ));
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, written) in dependencies.iter().enumerate() {
        let field = format!("spec.dependencies[{i}]");
        match GroupPath::resolve(written, base) {
            Ok(path) => {
                if !seen.insert(path.clone()) {
                    errors.push(FieldError::invalid(field, written.as_str(), format!("repeats {path}")));
                }
            }
            Err(problem) => errors.push(FieldError::invalid(field, written.as_str(), problem)),
        }
    }
}

/// Where a dependency was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// In the app's own `spec.dependencies`.
    App,
    /// In the AppGroup at this path, an ancestor of the app.
    Group(GroupPath),
}

/// One dependency of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// As written.
    pub written: String,
    /// Resolved; `None` when it cannot be (an object stored under older rules).
    pub path: Option<GroupPath>,
    pub origin: Origin,
}

impl Dependency {
    /// The resolved path, or what was written.
    pub fn display(&self) -> String {
        self.path.as_ref().map_or_else(|| self.written.clone(), ToString::to_string)
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())?;
        if let Origin::Group(group) = &self.origin {
            write!(f, " (inherited from the AppGroup at {group})")?;
        }
        Ok(())
    }
}

struct AppEntry {
    name: String,
    dependencies: Vec<(String, Option<GroupPath>)>,
}

struct GroupEntry {
    dependencies: Vec<(String, Option<GroupPath>)>,
    scale_factor: f64,
}

/// The apps and AppGroups of one namespace, by path.
#[derive(Default)]
pub struct Graph {
    apps: BTreeMap<GroupPath, AppEntry>,
    groups: BTreeMap<GroupPath, GroupEntry>,
    /// Some app or AppGroup declares a dependency (in most namespaces none does).
    depends: bool,
}

/// A dependency cycle: each app depends on the next, and the last on the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle {
    /// `(app, the dependency that leads to the next app)`.
    pub hops: Vec<(GroupPath, Dependency)>,
}

impl Cycle {
    /// The apps on the cycle, in order.
    pub fn apps(&self) -> impl Iterator<Item = &GroupPath> {
        self.hops.iter().map(|(app, _)| app)
    }

    /// The same cycle told from `app`, if it is on it.
    pub fn starting_at(mut self, app: &GroupPath) -> Self {
        if let Some(at) = self.hops.iter().position(|(a, _)| a == app) {
            self.hops.rotate_left(at);
        }
        self
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chain: Vec<String> = self.apps().map(ToString::to_string).collect();
        chain.push(self.hops[0].0.to_string());
        let why: Vec<String> =
            self.hops.iter().map(|(app, dependency)| format!("{app} depends on {dependency}")).collect();
        write!(f, "dependency cycle: {} ({})", chain.join(" → "), why.join("; "))
    }
}

impl Graph {
    /// The graph of `apps` and `groups` (all of one namespace). Of several AppGroups with
    /// one path (which the API server refuses), the first counts.
    pub fn new<'a>(apps: impl IntoIterator<Item = &'a App>, groups: impl IntoIterator<Item = &'a AppGroup>) -> Self {
        // Built in one go (paths are unique: an app's name is, in its namespace).
        let apps = apps
            .into_iter()
            .map(|app| {
                let base = app.group_path();
                let dependencies = resolve_all(&app.spec.dependencies, &base);
                let name = app.metadata.name.clone().unwrap_or_default();
                (base.child(&name), AppEntry { name, dependencies })
            })
            .collect();
        let mut graph = Self { apps, ..Self::default() };
        for group in groups {
            let path = group.group_path();
            let dependencies = resolve_all(&group.spec.dependencies, &path);
            graph.groups.entry(path).or_insert(GroupEntry { dependencies, scale_factor: group.spec.scale_factor });
        }
        graph.depends = graph.apps.values().any(|a| !a.dependencies.is_empty())
            || graph.groups.values().any(|g| !g.dependencies.is_empty());
        graph
    }

    /// The name of the App at `path`, if one is there.
    pub fn app_name(&self, path: &GroupPath) -> Option<&str> {
        self.apps.get(path).map(|a| a.name.as_str())
    }

    /// The apps a dependency on `path` means: the app with that id, if any, and every app
    /// below it, in path order.
    pub fn members<'g>(&'g self, path: &GroupPath) -> impl Iterator<Item = &'g GroupPath> + 'g {
        let path = path.clone();
        self.apps.range(path.clone()..).map(|(p, _)| p).take_while(move |p| path.contains(p))
    }

    /// Every dependency of the app at `app`: its own, then those of the AppGroups at its
    /// group and above, nearest first.
    pub fn dependencies_of(&self, app: &GroupPath) -> Vec<Dependency> {
        let mut all = Vec::new();
        if !self.depends {
            return all;
        }
        if let Some(entry) = self.apps.get(app) {
            all.extend(entry.dependencies.iter().map(|(written, path)| Dependency {
                written: written.clone(),
                path: path.clone(),
                origin: Origin::App,
            }));
        }
        // Most namespaces have no AppGroups: then nothing to look up level by level.
        let ancestors = if self.groups.is_empty() { None } else { Some(app.parent()) };
        for ancestor in ancestors.iter().flat_map(GroupPath::ancestors) {
            if let Some(group) = self.groups.get(&ancestor) {
                all.extend(group.dependencies.iter().map(|(written, path)| Dependency {
                    written: written.clone(),
                    path: path.clone(),
                    origin: Origin::Group(ancestor.clone()),
                }));
            }
        }
        all
    }

    /// The product of the scale factors of the AppGroups at `group` and above.
    pub fn scale_of_group(&self, group: &GroupPath) -> f64 {
        if self.groups.is_empty() {
            return 1.0;
        }
        group.ancestors().filter_map(|p| self.groups.get(&p)).map(|g| g.scale_factor).product()
    }

    /// `ceil(instances × the product of the factors of the app's AppGroups)`.
    pub fn effective_instances(&self, app: &GroupPath, instances: i32) -> i32 {
        if self.groups.is_empty() {
            return instances.max(0);
        }
        let scaled = f64::from(instances.max(0)) * self.scale_of_group(&app.parent());
        // Less a rounding allowance: 10 × 1.1 is 11.000000000000002 in binary, and means 11.
        (scaled - 1e-9).ceil().clamp(0.0, f64::from(i32::MAX)) as i32
    }

    /// Whether an AppGroup sits at `path`.
    pub fn has_group(&self, path: &GroupPath) -> bool {
        self.groups.contains_key(path)
    }

    /// A dependency cycle, if there is one (the first found, in path order).
    pub fn find_cycle(&self) -> Option<Cycle> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        // Apps not yet seen are New. An app with no dependency, of its own or of an AppGroup
        // above it, has no edge: no cycle goes through it, and in most fleets most apps are
        // such, so only the others start a search.
        let groups_depend = self.groups.values().any(|g| !g.dependencies.is_empty());
        let mut marks: BTreeMap<&GroupPath, Mark> = BTreeMap::new();
        let mark = |marks: &BTreeMap<&GroupPath, Mark>, app: &GroupPath| marks.get(app).copied().unwrap_or(Mark::New);
        // Iterative depth-first search: a chain of thousands of apps must not overflow
        // the stack. Each frame: the app, its edges, the next edge to follow.
        struct Frame<'g> {
            app: &'g GroupPath,
            edges: Vec<(&'g GroupPath, Dependency)>,
            next: usize,
        }
        for (start, entry) in &self.apps {
            if (entry.dependencies.is_empty() && !groups_depend) || mark(&marks, start) != Mark::New {
                continue;
            }
            let mut stack = vec![Frame { app: start, edges: self.edges(start), next: 0 }];
            marks.insert(start, Mark::OnPath);
            while let Some(frame) = stack.last_mut() {
                let Some((to, _)) = frame.edges.get(frame.next) else {
                    marks.insert(frame.app, Mark::Done);
                    stack.pop();
                    continue;
                };
                let to: &GroupPath = to;
                frame.next += 1;
                match mark(&marks, to) {
                    Mark::Done => {}
                    Mark::OnPath => {
                        let from = stack.iter().position(|f| f.app == to).expect("on the path");
                        let hops =
                            stack[from..].iter().map(|f| (f.app.clone(), f.edges[f.next - 1].1.clone())).collect();
                        return Some(Cycle { hops });
                    }
                    Mark::New => {
                        marks.insert(to, Mark::OnPath);
                        let edges = self.edges(to);
                        stack.push(Frame { app: to, edges, next: 0 });
                    }
                }
            }
        }
        None
    }

    /// The apps `app` depends on, each with the dependency that makes it so.
    fn edges<'g>(&'g self, app: &GroupPath) -> Vec<(&'g GroupPath, Dependency)> {
        let mut edges = Vec::new();
        for dependency in self.dependencies_of(app) {
            let Some(path) = &dependency.path else { continue };
            for member in self.members(path) {
                edges.push((member, dependency.clone()));
            }
        }
        edges
    }
}

fn resolve_all(written: &[String], base: &GroupPath) -> Vec<(String, Option<GroupPath>)> {
    written.iter().map(|w| (w.clone(), GroupPath::resolve(w, base).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> GroupPath {
        GroupPath::parse_absolute(text).unwrap()
    }

    fn resolve(written: &str, base: &str) -> Result<String, String> {
        GroupPath::resolve(written, &path(base)).map(|p| p.to_string())
    }

    fn app(name: &str, group: &str, dependencies: &[&str]) -> App {
        let mut app = App::new(
            name,
            serde_json::from_value(serde_json::json!({
                "cmd": "sleep 100", "group": group, "dependencies": dependencies,
            }))
            .unwrap(),
        );
        app.metadata.namespace = Some("default".into());
        app
    }

    fn group(path: &str, dependencies: &[&str], scale_factor: f64) -> AppGroup {
        AppGroup::new(
            &path.trim_matches('/').replace('/', "-"),
            AppGroupSpec {
                path: path.into(),
                dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
                scale_factor,
            },
        )
    }

    #[test]
    fn absolute_paths_parse_canonically() {
        for (written, canonical) in
            [("/", "/"), ("/shop", "/shop"), ("/shop/", "/shop"), ("/shop/frontend", "/shop/frontend")]
        {
            assert_eq!(path(written).to_string(), canonical, "{written}");
        }
        for bad in ["shop", "", "/shop//x", "/Shop", "/shop/../x", "/./x", "/a_b", "/-a"] {
            assert!(GroupPath::parse_absolute(bad).is_err(), "{bad:?} must be refused");
        }
    }

    /// Marathon's documented example: defined on the group `/product/service`, these three
    /// mean the same.
    #[test]
    fn marathons_relative_dependency_example() {
        for written in ["/product/database", "../database", "specific/../../database"] {
            assert_eq!(resolve(written, "/product/service").as_deref(), Ok("/product/database"), "{written}");
        }
    }

    #[test]
    fn resolution_table() {
        let cases = [
            // (written, base, resolved)
            ("db", "/shop", Ok("/shop/db")),
            ("./db", "/shop", Ok("/shop/db")),
            ("../db", "/shop/frontend", Ok("/shop/db")),
            ("../../db", "/shop/frontend", Ok("/db")),
            ("/db", "/shop/frontend", Ok("/db")),
            ("db/", "/", Ok("/db")),
            ("..", "/shop/frontend", Ok("/shop")),
            ("/", "/shop", Ok("/")),
            ("../..", "/shop", Err(())),
            ("..", "/", Err(())),
            ("", "/shop", Err(())),
            ("a//b", "/shop", Err(())),
            ("DB", "/shop", Err(())),
        ];
        for (written, base, want) in cases {
            let got = resolve(written, base);
            match want {
                Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{written:?} against {base}"),
                Err(()) => assert!(got.is_err(), "{written:?} against {base} must be refused, got {got:?}"),
            }
        }
    }

    #[test]
    fn ancestors_run_from_the_path_to_the_root() {
        let all: Vec<String> = path("/a/b").ancestors().map(|p| p.to_string()).collect();
        assert_eq!(all, ["/a/b", "/a", "/"]);
        assert!(path("/a").contains(&path("/a/b")));
        assert!(path("/").contains(&path("/a")));
        assert!(!path("/a").contains(&path("/ab")));
        assert_eq!(path("/").parent(), path("/"));
    }

    /// Marathon's documented group: `/product/service` depends on `/product/database`, so
    /// both its apps depend on both database apps, and nothing else does.
    #[test]
    fn group_dependencies_are_inherited_by_every_transitive_app() {
        let apps = [
            app("mongo", "/product/database", &[]),
            app("mysql", "/product/database", &[]),
            app("rails-app", "/product/service", &[]),
            app("play-app", "/product/service/nested", &[]),
        ];
        let groups = [group("/product/service", &["../database"], 1.0)];
        let graph = Graph::new(&apps, &groups);
        let play = graph.dependencies_of(&path("/product/service/nested/play-app"));
        assert_eq!(play.len(), 1);
        assert_eq!(play[0].path, Some(path("/product/database")));
        assert_eq!(play[0].origin, Origin::Group(path("/product/service")));
        let members: Vec<String> = graph.members(&path("/product/database")).map(ToString::to_string).collect();
        assert_eq!(members, ["/product/database/mongo", "/product/database/mysql"]);
        assert!(graph.dependencies_of(&path("/product/database/mongo")).is_empty());
        assert_eq!(graph.dependencies_of(&path("/product/service/rails-app")).len(), 1);
        assert!(graph.find_cycle().is_none());
    }

    #[test]
    fn an_apps_own_dependencies_come_first_then_the_nearest_groups() {
        let apps = [app("web", "/shop/front", &["api"])];
        let groups =
            [group("/shop", &["/infra"], 1.0), group("/shop/front", &["../cache"], 1.0), group("/", &["/dns"], 1.0)];
        let graph = Graph::new(&apps, &groups);
        let all: Vec<String> =
            graph.dependencies_of(&path("/shop/front/web")).iter().map(Dependency::display).collect();
        assert_eq!(all, ["/shop/front/api", "/shop/cache", "/infra", "/dns"]);
    }

    #[test]
    fn a_path_means_the_app_there_and_every_app_below() {
        let apps = [app("db", "/shop", &[]), app("x", "/shop/db", &[]), app("other", "/shopping", &[])];
        let graph = Graph::new(&apps, &[]);
        let members: Vec<String> = graph.members(&path("/shop/db")).map(ToString::to_string).collect();
        assert_eq!(members, ["/shop/db", "/shop/db/x"]);
        assert_eq!(graph.members(&path("/")).count(), 3);
        assert_eq!(graph.members(&path("/nothing")).count(), 0);
    }

    #[test]
    fn cycles_between_apps_are_found_and_named() {
        let apps = [app("a", "/", &["/b"]), app("b", "/", &["/c"]), app("c", "/", &["/a"]), app("d", "/", &["/a"])];
        let cycle = Graph::new(&apps, &[]).find_cycle().expect("a cycle");
        let names: Vec<String> = cycle.apps().map(ToString::to_string).collect();
        assert_eq!(names, ["/a", "/b", "/c"]);
        let from_c: Vec<String> = cycle.clone().starting_at(&path("/c")).apps().map(ToString::to_string).collect();
        assert_eq!(from_c, ["/c", "/a", "/b"]);
        let text = cycle.to_string();
        assert!(text.starts_with("dependency cycle: /a → /b → /c → /a"), "{text}");
        assert!(text.contains("/c depends on /a"), "{text}");
    }

    #[test]
    fn cycles_through_groups_are_found() {
        // /front depends on /back (a group); /back/api depends on /front/web.
        let apps = [app("web", "/front", &[]), app("api", "/back", &["/front/web"])];
        let groups = [group("/front", &["/back"], 1.0)];
        let cycle = Graph::new(&apps, &groups).find_cycle().expect("a cycle through a group");
        let text = cycle.to_string();
        assert!(text.contains("/back/api → /front/web → /back/api"), "{text}");
        assert!(text.contains("inherited from the AppGroup at /front"), "{text}");
        // An AppGroup with no apps yet closes no cycle; its first app does.
        let groups = [group("/front", &["/back"], 1.0)];
        let apps = [app("api", "/back", &["/front"])];
        assert!(Graph::new(&apps, &groups).find_cycle().is_none());
        let apps = [app("api", "/back", &["/front"]), app("web", "/front", &[])];
        assert!(Graph::new(&apps, &groups).find_cycle().is_some());
    }

    #[test]
    fn depending_on_ones_own_group_is_a_cycle() {
        let apps = [app("a", "/g", &["/g"])];
        let cycle = Graph::new(&apps, &[]).find_cycle().expect("a self-loop");
        assert_eq!(cycle.to_string(), "dependency cycle: /g/a → /g/a (/g/a depends on /g)");
        // A group that depends on one of its own apps makes that app depend on itself.
        let apps = [app("db", "/shop", &[]), app("web", "/shop", &[])];
        let groups = [group("/shop", &["db"], 1.0)];
        let cycle = Graph::new(&apps, &groups).find_cycle().expect("db depends on itself");
        assert_eq!(cycle.apps().map(ToString::to_string).collect::<Vec<_>>(), ["/shop/db"]);
    }

    #[test]
    fn a_long_chain_is_not_a_cycle_and_does_not_overflow() {
        let apps: Vec<App> = (0..20_000)
            .map(|i| {
                let deps: Vec<String> = if i > 0 { vec![format!("/a{}", i - 1)] } else { vec![] };
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                app(&format!("a{i}"), "/", &deps)
            })
            .collect();
        assert!(Graph::new(&apps, &[]).find_cycle().is_none());
    }

    #[test]
    fn scale_factors_multiply_down_the_tree() {
        let apps = [app("web", "/shop/front", &[]), app("db", "/shop", &[]), app("x", "/other", &[])];
        let groups = [group("/shop", &[], 2.0), group("/shop/front", &[], 1.5)];
        let graph = Graph::new(&apps, &groups);
        assert_eq!(graph.effective_instances(&path("/shop/front/web"), 3), 9, "3 × 2 × 1.5");
        assert_eq!(graph.effective_instances(&path("/shop/db"), 3), 6);
        assert_eq!(graph.effective_instances(&path("/other/x"), 3), 3);
        let groups = [group("/shop", &[], 0.5)];
        let graph = Graph::new(&apps, &groups);
        assert_eq!(graph.effective_instances(&path("/shop/db"), 3), 2, "ceil(1.5)");
        assert_eq!(graph.effective_instances(&path("/shop/db"), 0), 0);
        let groups = [group("/shop", &[], 1.1)];
        let graph = Graph::new(&apps, &groups);
        assert_eq!(graph.effective_instances(&path("/shop/db"), 3), 4, "ceil(3.3)");
        assert_eq!(graph.effective_instances(&path("/shop/db"), 10), 11, "10 × 1.1 is 11, not 12");
        let groups = [group("/shop", &[], 0.0)];
        assert_eq!(Graph::new(&apps, &groups).effective_instances(&path("/shop/db"), 5), 0);
    }

    #[test]
    fn validation_names_the_field_and_the_value() {
        let mut errors = Vec::new();
        validate_app_paths(&app("web", "shop", &["../../../x", "db", "./db"]), &mut errors);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0].starts_with("spec.group: Invalid value: \"shop\": must be an absolute path"),
            "{messages:?}"
        );
        assert!(messages[1].starts_with("spec.dependencies[0]: Invalid value: \"../../../x\": goes above the root"));
        assert!(messages[2].contains("spec.dependencies[2]: Invalid value: \"./db\": repeats /db"), "{messages:?}");
        let errors = validate_app_group(&group("/shop", &[], -1.0));
        assert_eq!(errors[0].to_string(), "spec.scaleFactor: Invalid value: -1.0: must be between 0 and 1000");
    }
}
