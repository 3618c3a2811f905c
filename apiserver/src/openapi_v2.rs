//! `/openapi/v2` in protobuf, the form kubectl (and client-go's discovery) ask for: the
//! Swagger document in gnostic's `openapi.v2` messages. The messages below declare the
//! fields Baton writes, with the field numbers of gnostic's `OpenAPIv2.proto`; values
//! without a fixed type (`enum`, `default`, vendor extensions such as
//! `x-kubernetes-group-version-kind`) travel as YAML text, which JSON text is.

use prost::Message;
use serde_json::Value;

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// gnostic's `oneof`: one of the two is set (the same bytes on the wire).
#[derive(Clone, PartialEq, Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, boxed, tag = "1")]
    schema: Option<Box<Schema>>,
    #[prost(bool, optional, tag = "2")]
    boolean: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    reference: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "3")]
    title: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(message, optional, tag = "5")]
    default: Option<Any>,
    #[prost(double, tag = "7")]
    maximum: f64,
    #[prost(double, tag = "9")]
    minimum: f64,
    #[prost(int64, tag = "11")]
    max_length: i64,
    #[prost(int64, tag = "12")]
    min_length: i64,
    #[prost(string, tag = "13")]
    pattern: String,
    #[prost(int64, tag = "14")]
    max_items: i64,
    #[prost(int64, tag = "15")]
    min_items: i64,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    enumeration: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    type_: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    read_only: bool,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

fn yaml(value: &Value) -> Any {
    Any { yaml: value.to_string() }
}

fn named(map: &serde_json::Map<String, Value>) -> Vec<NamedSchema> {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    names.into_iter().map(|name| NamedSchema { name: name.clone(), value: Some(schema(&map[name])) }).collect()
}

/// A Swagger 2.0 schema (JSON) as a gnostic `Schema`.
fn schema(value: &Value) -> Schema {
    let mut out = Schema::default();
    let Some(map) = value.as_object() else { return out };
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let number = |key: &str| map.get(key).and_then(Value::as_f64).unwrap_or_default();
    let integer = |key: &str| map.get(key).and_then(Value::as_i64).unwrap_or_default();
    out.reference = text("$ref");
    out.format = text("format");
    out.title = text("title");
    out.description = text("description");
    out.pattern = text("pattern");
    out.maximum = number("maximum");
    out.minimum = number("minimum");
    out.max_length = integer("maxLength");
    out.min_length = integer("minLength");
    out.max_items = integer("maxItems");
    out.min_items = integer("minItems");
    out.read_only = map.get("readOnly").and_then(Value::as_bool).unwrap_or_default();
    out.default = map.get("default").map(yaml);
    out.required = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    out.enumeration =
        map.get("enum").and_then(Value::as_array).map(|e| e.iter().map(yaml).collect()).unwrap_or_default();
    out.type_ = match map.get("type") {
        Some(Value::String(t)) => Some(TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => {
            Some(TypeItem { value: ts.iter().filter_map(Value::as_str).map(str::to_string).collect() })
        }
        _ => None,
    };
    out.items = match map.get("items") {
        Some(Value::Array(items)) => Some(ItemsItem { schema: items.iter().map(schema).collect() }),
        Some(item @ Value::Object(_)) => Some(ItemsItem { schema: vec![schema(item)] }),
        _ => None,
    };
    out.all_of = map.get("allOf").and_then(Value::as_array).map(|a| a.iter().map(schema).collect()).unwrap_or_default();
    out.properties =
        map.get("properties").and_then(Value::as_object).map(|p| Properties { additional_properties: named(p) });
    out.additional_properties = match map.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(Box::new(AdditionalPropertiesItem { schema: None, boolean: Some(*b) })),
        Some(s @ Value::Object(_)) => {
            Some(Box::new(AdditionalPropertiesItem { schema: Some(Box::new(schema(s))), boolean: None }))
        }
        _ => None,
    };
    let mut extensions: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| k.starts_with("x-")).collect();
    extensions.sort_by_key(|(k, _)| *k);
    out.vendor_extension =
        extensions.into_iter().map(|(name, value)| NamedAny { name: name.clone(), value: Some(yaml(value)) }).collect();
    out
}

/// The Swagger document (JSON, with `definitions`) in protobuf.
pub fn encode(document: &Value) -> Vec<u8> {
    let info = &document["info"];
    let definitions = document["definitions"].as_object().map(|d| Definitions { additional_properties: named(d) });
    Document {
        swagger: document["swagger"].as_str().unwrap_or("2.0").to_string(),
        info: Some(Info {
            title: info["title"].as_str().unwrap_or_default().to_string(),
            version: info["version"].as_str().unwrap_or_default().to_string(),
        }),
        definitions,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_round_trip_through_protobuf() {
        let document = json!({"swagger": "2.0", "info": {"title": "Baton", "version": "1"}, "definitions": {
            "dev.baton.v1alpha1.App": {
                "type": "object", "description": "An app", "required": ["spec"],
                "x-kubernetes-group-version-kind": [{"group": "baton.dev", "kind": "App", "version": "v1alpha1"}],
                "properties": {
                    "spec": {"type": "object", "properties": {"instances": {"type": "integer", "format": "int32", "minimum": 0}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "ports": {"type": "array", "items": {"$ref": "#/definitions/Port"}},
                    "killSelection": {"type": "string", "enum": ["YoungestFirst", "OldestFirst"]},
                },
            },
        }});
        let bytes = encode(&document);
        let decoded = Document::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.swagger, "2.0");
        let app = &decoded.definitions.unwrap().additional_properties[0];
        assert_eq!(app.name, "dev.baton.v1alpha1.App");
        let schema = app.value.as_ref().unwrap();
        assert_eq!(schema.vendor_extension[0].name, "x-kubernetes-group-version-kind");
        let gvk: Value = serde_json::from_str(&schema.vendor_extension[0].value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(gvk[0]["kind"], "App");
        let properties = &schema.properties.as_ref().unwrap().additional_properties;
        let names: Vec<&str> = properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["killSelection", "labels", "ports", "spec"]);
        let ports = properties[2].value.as_ref().unwrap();
        assert_eq!(ports.items.as_ref().unwrap().schema[0].reference, "#/definitions/Port");
        let labels = properties[1].value.as_ref().unwrap();
        assert!(labels.additional_properties.as_ref().unwrap().schema.is_some());
        assert_eq!(properties[0].value.as_ref().unwrap().enumeration.len(), 2);
    }
}
