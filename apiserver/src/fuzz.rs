//! Property-based fuzzing (proptest, stable Rust) of everything the API server reads from a
//! request before it stores anything: bodies (JSON, YAML, protobuf), queries, patches (merge,
//! JSON, strategic, server-side apply), label and field selectors, object validation (Apps,
//! AppGroups, Tenants, Maintenances, metadata), group paths and the dependency graph, and
//! placement constraints. Each property holds for arbitrary input — random bytes, random
//! JSON, valid objects mutated, and nesting tens of thousands deep:
//!
//! - **no panic** (a panic fails the case);
//! - **no hang**: each case runs within [`CASE_BUDGET`], measured in a watchdog thread, far
//!   above what a case takes (microseconds), so only a super-linear blow-up trips it;
//! - **bounded memory**: what a case allocates (counted per thread by this test binary's
//!   allocator) stays within [`MEMORY_FACTOR`] times its input plus 16 MiB.
//!
//! `hack/fuzz.sh` runs many more cases (`BATON_FUZZ_CASES`, default here 256 per property).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

/// What one case may take at most.
const CASE_BUDGET: Duration = Duration::from_secs(5);

/// What one case may allocate, per byte of its input (plus 16 MiB).
const MEMORY_FACTOR: usize = 256;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

/// Counts what each thread allocates (then hands every call to the system allocator).
struct Counting;

// SAFETY: every call is passed to `System` unchanged; only a thread-local counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(layout.size())));
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(new_size)));
        // SAFETY: as `GlobalAlloc::realloc` requires, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn cases() -> u32 {
    std::env::var("BATON_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

/// Runs `case` on a thread of its own with the stack the server's threads have, within the
/// time and memory bounds.
fn bounded(what: &str, input_len: usize, case: impl FnOnce() + Send + 'static) {
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        // As a tokio worker thread of the server has (2 MiB): a parser that recurses per
        // level of nesting must stop before it.
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            ALLOCATED.with(|a| a.set(0));
            case();
            ALLOCATED.with(Cell::get)
        })
        .expect("a fuzz thread");
    while !worker.is_finished() {
        assert!(started.elapsed() < CASE_BUDGET, "{what}: a case of {input_len} bytes ran past {CASE_BUDGET:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    let allocated = match worker.join() {
        Ok(bytes) => bytes,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let limit = MEMORY_FACTOR * input_len + 16 * 1024 * 1024;
    assert!(allocated <= limit, "{what}: a case of {input_len} bytes allocated {allocated} bytes (limit {limit})");
}

/// Any JSON, up to a few levels and a few dozen nodes.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z/.$~0-9_-]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid App, one of its fields replaced by arbitrary JSON.
fn mutated_app() -> impl Strategy<Value = Value> {
    let fields = prop::sample::select(vec![
        "/spec/instances",
        "/spec/cmd",
        "/spec/resources",
        "/spec/ports",
        "/spec/constraints",
        "/spec/env",
        "/spec/healthChecks",
        "/spec/group",
        "/spec/dependencies",
        "/spec/upgradeStrategy",
        "/metadata/labels",
        "/metadata/annotations",
        "/metadata/name",
    ]);
    (fields, any_json()).prop_map(|(field, value)| {
        let mut app = json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "App",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"instances": 2, "cmd": "sleep 1", "resources": {"cpus": 0.1, "mem": 32},
                     "ports": [{"name": "http"}], "constraints": [["hostname", "UNIQUE"]],
                     "group": "/shop", "dependencies": ["../db"]},
        });
        if let Some(slot) = app.pointer_mut(field) {
            *slot = value;
        }
        app
    })
}

/// Text of `[`, `{`, `- ` or protobuf-like bytes nested `depth` deep.
fn nested(depth: usize, kind: u8) -> Vec<u8> {
    match kind % 4 {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
        1 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes(),
        2 => (0..depth).map(|i| format!("{}- \n", "  ".repeat(i % 200))).collect::<String>().into_bytes(),
        _ => {
            // Protobuf length-delimited fields inside each other.
            let mut bytes = b"k8s\0".to_vec();
            bytes.extend(std::iter::repeat_n([0x0a, 0x7f], depth.min(4096)).flatten());
            bytes
        }
    }
}

fn media() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "application/json".to_string(),
        "application/yaml".to_string(),
        crate::protobuf::MEDIA_TYPE.to_string(),
        "application/merge-patch+json".to_string(),
        "application/json-patch+json".to_string(),
        "application/strategic-merge-patch+json".to_string(),
        "application/apply-patch+yaml".to_string(),
        "text/plain; charset=utf-8".to_string(),
    ]))
}

/// Validates whatever the body decodes to, as every kind the API server stores.
fn validate_everything(value: &Value) {
    let _ = baton_api::validation::validate_metadata(value.get("metadata").unwrap_or(&Value::Null));
    if let Ok(app) = serde_json::from_value::<baton_api::App>(value.clone()) {
        let _ = baton_api::validation::validate_app(&app);
        let groups: Vec<baton_api::AppGroup> = Vec::new();
        let _ = baton_api::groups::Graph::new([&app], &groups).effective_instances(&app.path(), 1);
    }
    if let Ok(group) = serde_json::from_value::<baton_api::AppGroup>(value.clone()) {
        let _ = baton_api::groups::validate_app_group(&group);
    }
    if let Ok(tenant) = serde_json::from_value::<baton_api::Tenant>(value.clone()) {
        let _ = baton_api::tenant::validate_tenant(&tenant);
    }
    if let Ok(maintenance) = serde_json::from_value::<baton_api::Maintenance>(value.clone()) {
        let _ = baton_api::maintenance::validate_maintenance(&maintenance);
    }
}

/// Decodes `body` as a body and as a patch of `media`, and validates what decodes.
fn decode(what: &str, media: Option<String>, body: Vec<u8>) {
    bounded(what, body.len(), move || {
        if let Ok(value) = crate::request::parse_body(media.as_deref(), &body) {
            validate_everything(&value);
        }
        let _ = crate::request::parse_patch(media.as_deref(), &body);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bodies_of_any_bytes_decode_or_are_refused(media in media(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode("body", media, body);
    }

    #[test]
    fn deeply_nested_bodies_are_refused_without_overflowing(depth in 1usize..60_000, kind in any::<u8>(), media in media()) {
        let body = nested(depth, kind);
        decode("nested body", media, body);
    }

    #[test]
    fn objects_of_any_shape_validate_or_are_refused(value in prop_oneof![any_json(), mutated_app()]) {
        let len = value.to_string().len();
        bounded("validation", len, move || validate_everything(&value));
    }

    #[test]
    fn patches_of_any_shape_apply_or_are_refused(object in mutated_app(), patch in any_json(), ops in any_json()) {
        let len = patch.to_string().len() + ops.to_string().len() + object.to_string().len();
        bounded("patch", len, move || {
            let target = crate::status::Target { group: "baton.dev", plural: "apps", kind: "App", name: "web" };
            let _ = crate::objects::apply_patch(object.clone(), &crate::request::Patch::Merge(patch.clone()), &target);
            let _ = crate::objects::apply_patch(object.clone(), &crate::request::Patch::Strategic(patch.clone()), &target);
            if let Ok(operations) = serde_json::from_value(ops) {
                let _ = crate::objects::apply_patch(object.clone(), &crate::request::Patch::Json(operations), &target);
            }
            let writer = crate::managed::Writer { manager: "fuzz", api_version: "baton.dev/v1alpha1", time: "2026-01-01T00:00:00Z" };
            let scope = crate::managed::Scope { part: crate::managed::Part::Main, status_subresource: true };
            let _ = crate::managed::apply(Some(&object), &patch, &writer, scope, false);
            let _ = crate::managed::apply(None, &patch, &writer, scope, true);
        });
    }

    #[test]
    fn selectors_and_queries_of_any_text_parse_or_are_refused(
        text in prop_oneof![".{0,200}", "[a-z0-9=!(),. _/-]{0,200}"],
        labels in prop::collection::btree_map("[a-z./-]{0,10}", "[a-z0-9.-]{0,10}", 0..6),
    ) {
        let len = text.len();
        bounded("selector", len, move || {
            if let Ok(selector) = crate::selectors::LabelSelector::parse(&text) {
                let _ = selector.matches(&labels);
            }
            if let Ok(mut selector) = crate::selectors::FieldSelector::parse(&text)
                && selector.resolve("apps", &[]).is_ok()
            {
                let _ = selector.matches(&json!({"metadata": {"name": "web", "namespace": "default"}}));
            }
            let _ = crate::request::Query::parse(Some(&text));
        });
    }

    #[test]
    fn group_paths_and_constraints_of_any_text_parse_or_are_refused(
        path in prop_oneof![".{0,200}", "(/|\\.\\./|\\./|[a-z0-9-]{1,8}/){0,40}[a-z-]{0,8}"],
        parts in prop::collection::vec(".{0,30}", 0..5),
    ) {
        let len = path.len() + parts.iter().map(String::len).sum::<usize>();
        bounded("path", len, move || {
            if let Ok(base) = baton_api::GroupPath::parse_absolute(&path) {
                let _ = baton_api::GroupPath::resolve("../x/./y", &base);
            }
            let _ = baton_api::GroupPath::resolve(&path, &baton_api::GroupPath::root());
            let _ = baton_api::constraints::Constraint::parse(&parts);
        });
    }
}

#[test]
fn a_group_path_thousands_deep_is_refused_at_once() {
    let deep = "/a".repeat(400_000);
    bounded("deep path", deep.len(), move || {
        assert!(baton_api::GroupPath::parse_absolute(&deep).is_err());
    });
}
