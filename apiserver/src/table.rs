//! `kubectl get` output: content negotiation for `meta.k8s.io` Tables, and the Tables
//! themselves, built from a kind's printer columns.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::kinds::{Column, Kind};
use crate::status::{ApiError, ApiResult};

/// What the client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// A `meta.k8s.io` Table of the given version (`v1` or `v1beta1`).
    Table(&'static str),
}

/// Picks the first media type of `Accept` the server can produce. A missing `Accept` (as
/// kube-rs sends) means JSON.
pub fn negotiate(accept: Option<&str>) -> ApiResult<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Ok(Format::Json) };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> =
            parts.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if !matches!(media, "application/json" | "application/*" | "*/*") {
            continue;
        }
        match (param("as"), param("g"), param("v")) {
            (None, _, _) => return Ok(Format::Json),
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Ok(Format::Table("v1")),
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => return Ok(Format::Table("v1beta1")),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> ApiResult<Self> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject {other:?} is not supported; use None, Metadata or Object"
            ))),
        }
    }
}

/// A Table of `objects` with the kind's columns (Name first); `metadata` is the list's
/// (resourceVersion, continue).
pub fn table(kind: &Kind, version: &str, objects: &[Value], metadata: Value, include: IncludeObject) -> Value {
    let now = Timestamp::now();
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    definitions.extend(kind.columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(kind.columns.iter().map(|c| cell(object, c, now)));
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(object: &Value, column: &Column, now: Timestamp) -> Value {
    let Some(value) = column.value(object) else { return Value::Null };
    match (column.type_.as_str(), &value) {
        ("date", Value::String(s)) => match s.parse::<Timestamp>() {
            Ok(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
            Err(_) => Value::String(s.clone()),
        },
        // Lists read better as `31000,31001` than as JSON.
        (_, Value::Array(items)) => Value::String(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => value,
    }
}

/// Ages as kubectl prints them (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`):
/// 90s, 5m30s, 45m, 3h20m, 10h, 3d4h, 40d, 2y30d.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_accept_order() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)).unwrap(), Format::Table("v1"));
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io")).unwrap(),
            Format::Table("v1beta1")
        );
        assert_eq!(negotiate(None).unwrap(), Format::Json);
        assert_eq!(negotiate(Some("*/*")).unwrap(), Format::Json);
        assert_eq!(
            negotiate(Some("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"))
                .unwrap(),
            Format::Json
        );
        assert!(negotiate(Some("application/vnd.kubernetes.protobuf")).is_err());
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (seconds, expected) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 1200, "3h20m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }
}
