//! Strategic merge patches for the core kinds Baton serves (Namespace, Event), which kubectl
//! sends when it updates built-in types (`kubectl apply` of a Namespace, `kubectl label`
//! in older versions). Custom resources never get them (415, as from Kubernetes).
//!
//! For these kinds it is a JSON merge patch plus the directives kubectl writes:
//! `$patch: replace|delete` on a map, `$retainKeys`, `$setElementOrder/<list>` (order only),
//! `$deleteFromPrimitiveList/<list>`, and the one list Kubernetes merges instead of
//! replacing here, `metadata.finalizers` (a set of strings).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// Lists that merge as sets, by their path of keys.
const MERGED_LISTS: [&[&str]; 1] = [&["metadata", "finalizers"]];

/// Applies a strategic merge `patch` to `object`.
pub fn merge(object: &mut Value, patch: &Value) -> ApiResult<()> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
    }
    merge_at(object, patch, &mut Vec::new())
}

fn merge_at(target: &mut Value, patch: &Value, path: &mut Vec<String>) -> ApiResult<()> {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = Value::Object(strip_directives(replaced));
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "strategic merge patch: $patch {other:?} is not supported here"
            )));
        }
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.as_object_mut().expect("an object").retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed: Vec<&Value> = value.as_array().map(|v| v.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(list) {
                items.retain(|item| !doomed.contains(&item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(ApiError::bad_request(format!(
                "strategic merge patch: directive {key:?} is not supported here"
            )));
        }
        let map = target.as_object_mut().expect("an object");
        path.push(key.clone());
        match value {
            Value::Null => _ = map.remove(key),
            Value::Array(items) if MERGED_LISTS.iter().any(|p| p.iter().eq(path.iter())) => {
                let list = map.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(existing) = list {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                } else {
                    *list = value.clone();
                }
            }
            Value::Object(_) => {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                merge_at(slot, value, path)?;
                if slot.is_null() {
                    map.remove(key);
                }
            }
            other => _ = map.insert(key.clone(), other.clone()),
        }
        path.pop();
    }
    Ok(())
}

fn strip_directives(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().filter(|(k, _)| !k.starts_with('$')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_finalizers_are_a_set_and_directives_apply() {
        let mut ns = json!({"metadata": {"name": "shop", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                            "spec": {"finalizers": ["kubernetes"]}});
        let patch = json!({
            "metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"], "$setElementOrder/finalizers": [{"x": 1}]},
        });
        merge(&mut ns, &patch).unwrap();
        assert_eq!(ns["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(ns["metadata"]["finalizers"], json!(["x", "y"]));
        merge(&mut ns, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})).unwrap();
        assert_eq!(ns["metadata"]["finalizers"], json!(["y"]));
        merge(&mut ns, &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}})).unwrap();
        assert_eq!(ns["metadata"]["labels"], json!({"z": "9"}));
        merge(&mut ns, &json!({"spec": {"finalizers": []}})).unwrap();
        assert_eq!(ns["spec"]["finalizers"], json!([]), "other lists are replaced");
        assert!(merge(&mut ns, &json!({"$bogus": 1})).is_err());
    }
}
