//! Parsing what a request carries: query parameters, bodies and their media types.

use serde_json::Value;

use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::{ApiError, ApiResult};
use crate::table::IncludeObject;

/// The body of a patch, by media type.
pub enum Patch {
    Merge(Value),
    Json(Vec<json_patch::PatchOperation>),
    /// Only for the core kinds (see [`crate::strategic`]).
    Strategic(Value),
    /// Server-side apply: the configuration (see [`crate::managed`]).
    Apply(Value),
}

/// What to do with fields the schema does not have (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request with 422 naming each unknown field.
    Strict,
    /// Drop them and say so in `Warning` headers.
    Warn,
    /// Drop them silently.
    Ignore,
}

/// The query parameters the server understands.
#[derive(Debug, Clone)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub selectors: Selectors,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub include_object: IncludeObject,
    /// At most this many items per list page; 0 for all.
    pub limit: usize,
    pub continue_token: Option<String>,
    /// Who writes (`fieldManager`), for managed fields.
    pub field_manager: Option<String>,
    /// The client's name from its User-Agent: the manager when `fieldManager` is absent.
    pub client: String,
    /// Server-side apply takes fields other managers own (`force`).
    pub force: bool,
}

impl Query {
    /// Takes what a DELETE's `DeleteOptions` body says that the query string could also
    /// say: `dryRun` (kubectl sends `kubectl delete --dry-run=server` there, not in the query).
    pub fn merge_delete_options(&mut self, options: &Value) -> ApiResult<()> {
        match options.get("dryRun") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Array(values)) => {
                for value in values {
                    match value.as_str() {
                        Some("All") => self.dry_run = true,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "dryRun: Unsupported value: {value}: supported values: \"All\""
                            )));
                        }
                    }
                }
                Ok(())
            }
            Some(other) => Err(ApiError::bad_request(format!("dryRun: Invalid value: {other}: must be a list"))),
        }
    }

    /// The field manager of a write.
    pub fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or(&self.client)
    }

    /// Parses a query string; a leading `&` (as some clients send) is fine.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let mut query = Query {
            watch: false,
            resource_version: None,
            selectors: Selectors::default(),
            timeout_seconds: None,
            allow_bookmarks: false,
            send_initial_events: false,
            dry_run: false,
            // Unknown fields are refused unless the client asks otherwise: a misspelt field
            // silently dropped is a setting the user believes is in force and is not.
            field_validation: FieldValidation::Strict,
            include_object: IncludeObject::Metadata,
            limit: 0,
            continue_token: None,
            field_manager: None,
            client: "unknown".into(),
            force: false,
        };
        let mut include_object = None;
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let flag = || matches!(value.as_ref(), "true" | "1");
            match key.as_ref() {
                "watch" => query.watch = flag(),
                "resourceVersion" => query.resource_version = Some(value.to_string()).filter(|v| !v.is_empty()),
                "labelSelector" => query.selectors.labels = LabelSelector::parse(&value)?,
                "fieldSelector" => query.selectors.fields = FieldSelector::parse(&value)?,
                "timeoutSeconds" => {
                    query.timeout_seconds = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!("timeoutSeconds {value:?} is not a whole number of seconds"))
                    })?)
                }
                "allowWatchBookmarks" => query.allow_bookmarks = flag(),
                "sendInitialEvents" => query.send_initial_events = flag(),
                "dryRun" => match value.as_ref() {
                    "All" => query.dry_run = true,
                    "" => {}
                    other => return Err(ApiError::bad_request(format!("dryRun {other:?} is not supported; use All"))),
                },
                "fieldValidation" => {
                    query.field_validation = match value.as_ref() {
                        "Strict" | "" => FieldValidation::Strict,
                        "Warn" => FieldValidation::Warn,
                        "Ignore" => FieldValidation::Ignore,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation {other:?} is not supported; use Strict, Warn or Ignore"
                            )));
                        }
                    }
                }
                "includeObject" => include_object = Some(value.to_string()),
                "limit" => {
                    query.limit = value
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("limit {value:?} is not a whole number of items")))?
                }
                "continue" => query.continue_token = Some(value.to_string()).filter(|v| !v.is_empty()),
                "fieldManager" => {
                    if value.chars().count() > 128 || value.chars().any(char::is_control) {
                        return Err(ApiError::bad_request(format!(
                            "fieldManager {value:?}: must be at most 128 printable characters"
                        )));
                    }
                    query.field_manager = Some(value.to_string()).filter(|v| !v.is_empty());
                }
                "force" => query.force = flag(),
                // Other parameters (pretty, propagationPolicy, gracePeriodSeconds…) do not
                // change the answer here.
                _ => {}
            }
        }
        query.include_object = IncludeObject::parse(include_object.as_deref())?;
        Ok(query)
    }
}

/// The media type of a request body, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type.unwrap_or("application/json").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Parses a JSON or YAML body (a missing Content-Type means JSON).
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let media = media_type(content_type);
    let value: Value = match media.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text =
                std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?
        }
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body)?,
        other => {
            return Err(ApiError::unsupported_media_type(other, &["application/json", "application/yaml"]));
        }
    };
    Ok(value)
}

/// The patch media types of custom resources.
pub const PATCH_TYPES: &[&str] =
    &["application/merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml"];

/// Parses a PATCH body by its media type.
pub fn parse_patch(content_type: Option<&str>, body: &[u8]) -> ApiResult<Patch> {
    let media = media_type(content_type);
    let json = |body: &[u8]| -> ApiResult<Value> {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
    };
    match media.as_str() {
        "application/merge-patch+json" => Ok(Patch::Merge(json(body)?)),
        "application/json-patch+json" => {
            let operations = serde_json::from_value(json(body)?)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}")))?;
            Ok(Patch::Json(operations))
        }
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(json(body)?)),
        "application/apply-patch+yaml" => {
            // kubectl sends JSON (which is YAML too); others send YAML.
            let config = match serde_json::from_slice(body) {
                Ok(config) => config,
                Err(_) => {
                    let text = std::str::from_utf8(body)
                        .map_err(|_| ApiError::bad_request("the apply configuration is not valid UTF-8"))?;
                    serde_saphyr::from_str(text)
                        .map_err(|e| ApiError::bad_request(format!("the apply configuration is not valid YAML: {e}")))?
                }
            };
            Ok(Patch::Apply(config))
        }
        other => Err(ApiError::unsupported_media_type(other, PATCH_TYPES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_in_delete_options_counts() {
        let mut q = Query::parse(None).unwrap();
        q.merge_delete_options(&serde_json::json!({"propagationPolicy": "Background"})).unwrap();
        assert!(!q.dry_run);
        q.merge_delete_options(&serde_json::json!({"dryRun": ["All"]})).unwrap();
        assert!(q.dry_run);
        let error = q.merge_delete_options(&serde_json::json!({"dryRun": ["Some"]})).unwrap_err();
        assert!(error.to_status()["message"].as_str().unwrap().contains(r#"dryRun: Unsupported value: "Some""#));
        assert!(q.merge_delete_options(&serde_json::json!({"dryRun": "All"})).is_err(), "a list, as Kubernetes has it");
    }

    #[test]
    fn query_parsing() {
        let q = Query::parse(Some(
            "&watch=true&resourceVersion=12&labelSelector=app%3Dweb&timeoutSeconds=290&fieldValidation=Warn",
        ))
        .unwrap();
        assert!(q.watch);
        assert_eq!(q.resource_version.as_deref(), Some("12"));
        assert_eq!(q.timeout_seconds, Some(290));
        assert_eq!(q.field_validation, FieldValidation::Warn);
        assert_eq!(Query::parse(None).unwrap().field_validation, FieldValidation::Strict);
        let err = Query::parse(Some("timeoutSeconds=soon")).unwrap_err();
        assert!(err.message.contains("soon"));
    }

    #[test]
    fn bodies_by_media_type() {
        assert_eq!(parse_body(None, br#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(parse_body(Some("application/yaml"), b"a: 1\n").unwrap()["a"], 1);
        assert!(parse_body(Some("application/json"), b"{").unwrap_err().message.contains("not valid JSON"));
        assert_eq!(parse_body(Some("text/plain"), b"").unwrap_err().code.as_u16(), 415);
        let strategic = parse_patch(Some("application/strategic-merge-patch+json"), b"{}").ok().unwrap();
        assert!(matches!(strategic, Patch::Strategic(_)), "refused later for custom resources");
        assert!(matches!(parse_patch(Some("application/merge-patch+json"), b"{}").ok().unwrap(), Patch::Merge(_)));
        let yaml = parse_patch(Some("application/apply-patch+yaml"), b"spec:\n  instances: 2\n").ok().unwrap();
        assert!(matches!(yaml, Patch::Apply(config) if config["spec"]["instances"] == 2));
        assert_eq!(parse_patch(Some("text/x-diff"), b"").err().unwrap().code.as_u16(), 415);
    }
}
