//! Kubernetes' protobuf encoding, for the one request kubectl sends in it to Baton:
//! `kubectl create namespace NAME` (a typed client call, which kubectl makes in protobuf).
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` envelope that names the
//! apiVersion and kind and carries the object's own encoding. The messages below declare
//! the fields Baton reads, with the field numbers of Kubernetes' `generated.proto` files;
//! other fields are skipped.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
    #[prost(string, tag = "3")]
    content_encoding: String,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

fn metadata_json(meta: ObjectMeta) -> Value {
    let mut out = json!({});
    for (field, value) in [("name", meta.name), ("generateName", meta.generate_name), ("namespace", meta.namespace)] {
        if !value.is_empty() {
            out[field] = json!(value);
        }
    }
    if !meta.labels.is_empty() {
        out["labels"] = json!(meta.labels);
    }
    if !meta.annotations.is_empty() {
        out["annotations"] = json!(meta.annotations);
    }
    if !meta.finalizers.is_empty() {
        out["finalizers"] = json!(meta.finalizers);
    }
    out
}

/// Decodes a protobuf body into the JSON form of its object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad =
        |what: String| ApiError::bad_request(format!("the request body is not a valid {MEDIA_TYPE} body: {what}"));
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with the k8s magic".into()))?;
    let unknown = Unknown::decode(envelope).map_err(|e| bad(e.to_string()))?;
    if !unknown.content_encoding.is_empty() {
        return Err(bad(format!("content encoding {:?} is not supported", unknown.content_encoding)));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    match (type_meta.api_version.as_str(), type_meta.kind.as_str()) {
        ("v1", "Namespace") => {
            let namespace = Namespace::decode(unknown.raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut object = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": metadata_json(namespace.metadata.unwrap_or_default()),
            });
            if let Some(spec) = namespace.spec.filter(|s| !s.finalizers.is_empty()) {
                object["spec"] = json!({"finalizers": spec.finalizers});
            }
            Ok(object)
        }
        (api_version, kind) => Err(ApiError::unsupported_media_type(
            &format!("{MEDIA_TYPE} for {api_version}/{kind}"),
            &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf (v1 Namespace only)"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create namespace shop` (1.32) sends.
    const KUBECTL_CREATE_NAMESPACE: &[u8] = &[
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x4e, 0x61, 0x6d, 0x65, 0x73, 0x70,
        0x61, 0x63, 0x65, 0x12, 0x1c, 0x0a, 0x14, 0x0a, 0x04, 0x73, 0x68, 0x6f, 0x70, 0x12, 0x00, 0x1a, 0x00, 0x22,
        0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12, 0x00, 0x1a, 0x02, 0x0a, 0x00, 0x1a, 0x00, 0x22,
        0x00,
    ];

    #[test]
    fn kubectls_create_namespace_decodes() {
        let object = decode(KUBECTL_CREATE_NAMESPACE).unwrap();
        assert_eq!(object, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    }

    #[test]
    fn labels_and_annotations_decode() {
        let meta = ObjectMeta {
            name: "team".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            annotations: [("note".to_string(), "x".to_string())].into(),
            ..ObjectMeta::default()
        };
        let raw = Namespace { metadata: Some(meta), spec: None }.encode_to_vec();
        let envelope = Unknown {
            type_meta: Some(TypeMeta { api_version: "v1".into(), kind: "Namespace".into() }),
            raw,
            content_encoding: String::new(),
        };
        let body = [MAGIC, envelope.encode_to_vec().as_slice()].concat();
        let object = decode(&body).unwrap();
        assert_eq!(object["metadata"]["labels"]["env"], "prod");
        assert_eq!(object["metadata"]["annotations"]["note"], "x");
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        assert_eq!(decode(b"{}").unwrap_err().code, axum::http::StatusCode::BAD_REQUEST);
        let envelope = Unknown {
            type_meta: Some(TypeMeta { api_version: "v1".into(), kind: "Pod".into() }),
            raw: vec![],
            content_encoding: String::new(),
        };
        let body = [MAGIC, envelope.encode_to_vec().as_slice()].concat();
        assert_eq!(decode(&body).unwrap_err().code, axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
