//! Errors as Kubernetes `Status` objects: every non-2xx answer says what failed, about which
//! object or field, in the form kubectl and kube-rs know how to print.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use baton_api::FieldError;
use serde_json::{Value, json};

/// A failed request, rendered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    /// Machine-readable reason (`NotFound`, `Conflict`, `Invalid`…).
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// What an object is called in messages: `apps.baton.dev "web"`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub(crate) fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.plural})
    }
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn not_found(target: &Target<'_>) -> Self {
        Self {
            details: Some(target.details()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} {:?} not found", target.qualified(), target.name),
            )
        }
    }

    pub fn already_exists(target: &Target<'_>) -> Self {
        Self {
            details: Some(target.details()),
            ..Self::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} {:?} already exists", target.qualified(), target.name),
            )
        }
    }

    /// A write based on a stale `resourceVersion`.
    pub fn conflict(target: &Target<'_>, why: &str) -> Self {
        Self {
            details: Some(target.details()),
            ..Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {} {:?}: {why}", target.qualified(), target.name),
            )
        }
    }

    /// 422 with one cause per field error; the message reads like kubectl's:
    /// `App.baton.dev "web" is invalid: spec.instances: Invalid value: -1: …`.
    pub fn invalid(target: &Target<'_>, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.cause_reason(), "message": e.message(), "field": e.field}))
            .collect();
        let mut details = target.details();
        details["kind"] = json!(target.kind);
        details["causes"] = json!(causes);
        let kind_group =
            if target.group.is_empty() { target.kind.to_string() } else { format!("{}.{}", target.kind, target.group) };
        Self {
            details: Some(details),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{kind_group} {:?} is invalid: {joined}", target.name),
            )
        }
    }

    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on {what}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str, supported: &[&str]) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}); accepted media types include: {}",
                supported.join(", ")
            ),
        )
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml (Accept: {accept:?})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl From<baton_store::Error> for ApiError {
    fn from(e: baton_store::Error) -> Self {
        match e {
            baton_store::Error::Compacted { .. } => Self::new(StatusCode::GONE, "Expired", e.to_string()),
            other => Self::internal(format!("store: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.is_server_error() {
            tracing::error!(code = self.code.as_u16(), message = %self.message, "request failed");
        }
        (self.code, [(axum::http::header::CONTENT_TYPE, "application/json")], self.to_status().to_string())
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
