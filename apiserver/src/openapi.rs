//! The OpenAPI documents, generated from the same schemas the server validates with: the
//! CRD's structural schema for stored Baton kinds, the schemars schemas of the views and of
//! the core kinds.
//!
//! - `/openapi/v3` lists one document per group version; `/openapi/v3/apis/baton.dev/v1alpha1`
//!   (and `/openapi/v3/api/v1`) is that document: every kind's schema under
//!   `components/schemas`, tagged with `x-kubernetes-group-version-kind` (how
//!   `kubectl explain app.spec.upgradeStrategy` finds it), and every path with its
//!   operations. Write operations list `fieldValidation`, `dryRun` and `fieldManager`, which
//!   is how kubectl learns that the server validates fields itself.
//! - `/openapi/v2`: the same schemas as Swagger 2.0 definitions, in JSON or in protobuf
//!   (see [`crate::openapi_v2`]).

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::kinds::{Kind, SchemaOf};

/// The schema every object's metadata refers to.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The documents, built once.
pub struct OpenApi {
    /// `/openapi/v3`.
    index: Value,
    /// `api/v1`, `apis/baton.dev/v1alpha1` → document.
    documents: BTreeMap<String, Value>,
    /// `/openapi/v2` in JSON.
    v2: Value,
}

/// `api/v1` or `apis/<group>/<version>`.
fn group_version_path(kind: &Kind) -> String {
    if kind.group.is_empty() {
        format!("api/{}", kind.version)
    } else {
        format!("apis/{}/{}", kind.group, kind.version)
    }
}

fn gvk(kind: &Kind) -> Value {
    json!({"group": kind.group, "version": kind.version, "kind": kind.kind})
}

/// The name of a kind's schema, and the schema if the generator does not hold it.
fn kind_schema(kind: &Kind, generator: &mut schemars::SchemaGenerator) -> (String, Option<Value>) {
    match kind.schema {
        SchemaOf::Typed(register) => (register(generator), None),
        SchemaOf::Crd(crd) => {
            let crd = crd();
            let version = &crd.spec.versions[0];
            let mut schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_else(|| json!({"type": "object"}));
            // The CRD says only `type: object` for metadata; the document says what it holds.
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            schema["properties"]["metadata"] = json!({
                "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
                "description": "Standard object's metadata.",
            });
            let group_reversed: Vec<&str> = crd.spec.group.split('.').rev().collect();
            (format!("{}.{}.{}", group_reversed.join("."), version.name, crd.spec.names.kind), Some(schema))
        }
    }
}

fn parameter(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "required": location == "path",
           "schema": {"type": "string", "uniqueItems": true}})
}

fn write_parameters(patch: bool) -> Vec<Value> {
    let mut parameters = vec![
        parameter("dryRun", "query", "When present (All), the request is checked and answered but nothing is stored."),
        parameter("fieldManager", "query", "The name of the actor making the change, for managed fields."),
        parameter(
            "fieldValidation",
            "query",
            "What to do with fields the schema does not have: Strict (the default here) refuses the request, Warn \
             drops them with a warning, Ignore drops them.",
        ),
    ];
    if patch {
        parameters.push(parameter("force", "query", "Server-side apply takes the fields other managers own."));
    }
    parameters
}

/// One operation of a path.
fn operation(kind: &Kind, action: &str, schema_ref: &Value, extra: Vec<Value>) -> Value {
    let id = format!("{action}{}{}", kind.kind, if kind.group.is_empty() { "Core" } else { "" });
    let mut op = json!({
        "operationId": id,
        "description": format!("{action} {}", kind.plural),
        "parameters": extra,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind),
    });
    if matches!(action, "put" | "post" | "patch") {
        let content_types: &[&str] = if action == "patch" {
            &["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        } else {
            &["application/json", "application/yaml"]
        };
        let content: Map<String, Value> =
            content_types.iter().map(|t| (t.to_string(), json!({"schema": schema_ref}))).collect();
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

/// The paths of one kind.
fn kind_paths(kind: &Kind, schema_name: &str) -> Vec<(String, Value)> {
    let schema_ref = json!({"$ref": format!("#/components/schemas/{schema_name}")});
    let list_ref = json!({"type": "object", "description": format!("A list of {}", kind.plural)});
    let base = format!("/{}", group_version_path(kind));
    let namespace = parameter("namespace", "path", "The namespace of the objects");
    let name = parameter("name", "path", &format!("The name of the {}", kind.singular));
    let scope = if kind.namespaced { format!("{base}/namespaces/{{namespace}}") } else { base.clone() };
    let scope_params = if kind.namespaced { vec![namespace] } else { vec![] };
    let writable = !kind.is_read_only();
    let with = |params: &[Value], extra: Vec<Value>| [params.to_vec(), extra].concat();

    let mut paths = Vec::new();
    let mut collection = json!({"get": operation(kind, "list", &list_ref, with(&scope_params, vec![]))});
    if writable {
        collection["post"] = operation(kind, "post", &schema_ref, with(&scope_params, write_parameters(false)));
    }
    paths.push((format!("{scope}/{}", kind.plural), collection));
    if kind.namespaced {
        paths.push((format!("{base}/{}", kind.plural), json!({"get": operation(kind, "list", &list_ref, vec![])})));
    }
    let item_params = with(&scope_params, vec![name]);
    let mut item = json!({"get": operation(kind, "get", &schema_ref, item_params.clone())});
    if writable {
        item["put"] = operation(kind, "put", &schema_ref, with(&item_params, write_parameters(false)));
        item["patch"] = operation(kind, "patch", &schema_ref, with(&item_params, write_parameters(true)));
    }
    if kind.deletable() {
        item["delete"] = operation(kind, "delete", &json!({"type": "object"}), with(&item_params, vec![]));
    }
    paths.push((format!("{scope}/{}/{{name}}", kind.plural), item));
    let mut subresources = Vec::new();
    if kind.status_subresource {
        subresources.push(("status", schema_ref.clone()));
    }
    if kind.scale.is_some() {
        subresources.push(("scale", json!({"type": "object", "description": "autoscaling/v1 Scale"})));
    }
    for (subresource, response) in subresources {
        let mut path = json!({"get": operation(kind, "get", &response, item_params.clone())});
        path["put"] = operation(kind, "put", &response, with(&item_params, write_parameters(false)));
        path["patch"] = operation(kind, "patch", &response, with(&item_params, write_parameters(true)));
        // Subresource operations are not the kind's own: kubectl looks for the kind's PATCH.
        for op in ["get", "put", "patch"] {
            path[op].as_object_mut().expect("an operation").remove("x-kubernetes-group-version-kind");
        }
        paths.push((format!("{scope}/{}/{{name}}/{subresource}", kind.plural), path));
    }
    paths
}

/// The hash clients cache a document by.
fn hash(document: &Value) -> String {
    let digest = Sha256::digest(document.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

/// Swagger 2.0 form of OpenAPI 3.0 schemas: other reference paths, no `nullable`.
fn to_v2(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "nullable")
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        (k.clone(), Value::String(r.replace("#/components/schemas/", "#/definitions/")))
                    }
                    _ => (k.clone(), to_v2(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

impl OpenApi {
    pub fn build(kinds: &[Kind]) -> Self {
        let mut by_group_version: BTreeMap<String, Vec<&Kind>> = BTreeMap::new();
        for kind in kinds {
            by_group_version.entry(group_version_path(kind)).or_default().push(kind);
        }
        let mut documents = BTreeMap::new();
        let mut definitions = Map::new();
        for (path, kinds) in by_group_version {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let mut own = Vec::new();
            let mut paths = Map::new();
            for kind in &kinds {
                let (name, schema) = kind_schema(kind, &mut generator);
                for (path, item) in kind_paths(kind, &name) {
                    paths.insert(path, item);
                }
                own.push((name, schema, gvk(kind)));
            }
            let mut schemas = generator.take_definitions(true);
            // The views' doc comments, as the CRDs' (`kubectl explain` wraps them itself).
            schemas.values_mut().for_each(baton_api::crds::unwrap_descriptions);
            for (name, schema, gvk) in own {
                if let Some(schema) = schema {
                    schemas.insert(name.clone(), schema);
                }
                if let Some(schema) = schemas.get_mut(&name) {
                    schema["x-kubernetes-group-version-kind"] = json!([gvk]);
                }
            }
            for (name, schema) in &schemas {
                definitions.insert(name.clone(), to_v2(schema));
            }
            let document = json!({
                "openapi": "3.0.0",
                "info": {"title": "Baton", "version": env!("CARGO_PKG_VERSION")},
                "paths": paths,
                "components": {"schemas": schemas},
            });
            documents.insert(path, document);
        }
        let index_paths: Map<String, Value> = documents
            .iter()
            .map(|(path, document)| {
                let url = format!("/openapi/v3/{path}?hash={}", hash(document));
                (path.clone(), json!({"serverRelativeURL": url}))
            })
            .collect();
        let v2 = json!({
            "swagger": "2.0",
            "info": {"title": "Baton", "version": env!("CARGO_PKG_VERSION")},
            "paths": {},
            "definitions": definitions,
        });
        OpenApi { index: json!({"paths": index_paths}), documents, v2 }
    }

    /// `/openapi/v3`.
    pub fn index(&self) -> &Value {
        &self.index
    }

    /// `/openapi/v3/<path>`, e.g. `apis/baton.dev/v1alpha1`.
    pub fn document(&self, path: &str) -> Option<&Value> {
        self.documents.get(path)
    }

    /// `/openapi/v2` as JSON.
    pub fn v2(&self) -> &Value {
        &self.v2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows `$ref`s and `allOf` wrappers within a document.
    fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/components/schemas/");
            return resolve(document, &document["components"]["schemas"][name]);
        }
        if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            return resolve(document, only);
        }
        schema
    }

    /// Every field of Baton's own schemas says what it is (for `kubectl explain`), in
    /// lines that `kubectl explain` can wrap.
    #[test]
    fn every_baton_field_is_described_in_unwrapped_lines() {
        fn check(schema: &Value, path: &str, missing: &mut Vec<String>) {
            let properties = schema.get("properties").and_then(Value::as_object).into_iter().flatten();
            for (name, field) in properties {
                let path = format!("{path}.{name}");
                let referenced = field.get("$ref").is_some() || field.get("allOf").is_some();
                match field.get("description").and_then(Value::as_str) {
                    None if !referenced => missing.push(format!("{path}: no description")),
                    Some(text) if text.replace("\n\n", "").contains('\n') => {
                        missing.push(format!("{path}: a line break within a paragraph"))
                    }
                    _ => {}
                }
                check(field, &path, missing);
                if let Some(items) = field.get("items") {
                    check(items, &format!("{path}[]"), missing);
                }
            }
        }
        let openapi = OpenApi::build(&crate::kinds::all());
        let baton = openapi.document("apis/baton.dev/v1alpha1").expect("the baton.dev document");
        let mut missing = Vec::new();
        for (name, schema) in baton["components"]["schemas"].as_object().unwrap() {
            if name.starts_with("dev.baton.") {
                check(schema, name, &mut missing);
            }
        }
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn every_kind_has_a_tagged_schema_and_a_patch_with_field_validation() {
        let openapi = OpenApi::build(&crate::kinds::all());
        let baton = openapi.document("apis/baton.dev/v1alpha1").expect("the baton.dev document");
        let app = &baton["components"]["schemas"]["dev.baton.v1alpha1.App"];
        assert_eq!(app["x-kubernetes-group-version-kind"][0]["kind"], "App");
        let strategy = resolve(baton, &app["properties"]["spec"]["properties"]["upgradeStrategy"]);
        assert!(strategy["properties"]["minimumHealthCapacity"]["description"].is_string(), "{strategy}");
        let meta = resolve(baton, &app["properties"]["metadata"]);
        assert!(meta["properties"]["labels"].is_object(), "metadata is ObjectMeta");
        let instance = &baton["components"]["schemas"]["dev.baton.v1alpha1.Instance"];
        assert_eq!(instance["x-kubernetes-group-version-kind"][0]["kind"], "Instance");

        let patch = &baton["paths"]["/apis/baton.dev/v1alpha1/namespaces/{namespace}/apps/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "App");
        let names: Vec<&str> =
            patch["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"fieldValidation") && names.contains(&"dryRun"), "{names:?}");
        assert!(baton["paths"]["/apis/baton.dev/v1alpha1/agents/{name}"].get("patch").is_none(), "views are read-only");

        let core = openapi.document("api/v1").expect("the core document");
        let namespace = &core["components"]["schemas"]["io.k8s.api.core.v1.Namespace"];
        assert_eq!(
            namespace["x-kubernetes-group-version-kind"][0],
            json!({"group": "", "version": "v1", "kind": "Namespace"})
        );
        let url = openapi.index()["paths"]["apis/baton.dev/v1alpha1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/baton.dev/v1alpha1?hash="), "{url}");
        let v2 = openapi.v2();
        assert!(v2["definitions"]["dev.baton.v1alpha1.App"].is_object());
        assert!(!v2.to_string().contains("#/components/"), "v2 refers to its definitions");
    }
}
