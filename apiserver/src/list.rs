//! Lists, whole or in pages (`limit` and `continue`, as `kubectl get` asks 500 at a time).
//!
//! A continue token carries the revision of the first page and the last key read, so every
//! page of a stored kind reads the same revision: one consistent list, however the objects
//! change meanwhile. Once that revision is compacted the token is refused with 410
//! `Expired`, as Kubernetes does. Views (instances, agents) are paged over their current
//! state, by namespace and name.

use base64::Engine;
use baton_store::{PageRequest, Revision};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::kinds::Kind;
use crate::objects::object_of;
use crate::request::Query;
use crate::status::{ApiError, ApiResult};

/// Keys read per store page when a selector may skip many.
const MIN_PAGE: usize = 100;

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Continue {
    /// The revision of the first page.
    rv: Revision,
    /// The last key read, relative to the list's prefix (`<ns>/<name>` or `<name>`).
    start: String,
}

impl Continue {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> ApiResult<Self> {
        let invalid = || {
            ApiError::bad_request(format!(
                "continue {token:?} is not a token this server issued: start the list again without it"
            ))
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let token: Continue = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if token.rv <= 0 || token.start.is_empty() || token.start.split('/').any(|part| part.is_empty() || part == "..")
        {
            return Err(invalid());
        }
        Ok(token)
    }
}

/// A list: its items and the `metadata` of the List (resourceVersion, continue).
pub struct Listed {
    pub items: Vec<Value>,
    pub metadata: Value,
}

fn metadata(revision: Revision, next: Option<Continue>) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next.encode());
    }
    metadata
}

fn expired() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GONE,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new list \
         without the continue parameter.",
    )
}

impl ApiServer {
    /// `GET` of a collection: the objects that match the query's selectors, whole or one
    /// page of them.
    pub async fn list(&self, kind: &Kind, namespace: Option<&str>, query: &Query) -> ApiResult<Listed> {
        let token = query.continue_token.as_deref().map(Continue::decode).transpose()?;
        if kind.is_read_only() {
            return self.list_view_page(kind, namespace, query, token).await;
        }
        let prefix = self.keys.registry(kind.store_group(), &kind.plural, namespace);
        let mut request = PageRequest {
            after: token.as_ref().map(|t| format!("{prefix}{}", t.start)),
            revision: token.as_ref().map(|t| t.rv),
            prefix,
            limit: 0,
        };
        let mut items = Vec::new();
        loop {
            let remaining = query.limit.saturating_sub(items.len());
            request.limit = if query.limit == 0 { 0 } else { remaining.max(MIN_PAGE) };
            let page = match self.store.range_page(&request).await {
                Err(baton_store::Error::Compacted { .. }) if token.is_some() => return Err(expired()),
                other => other?,
            };
            request.revision = Some(page.revision);
            let mut stopped_at = None;
            for kv in &page.kvs {
                if query.limit > 0 && items.len() == query.limit {
                    break;
                }
                let object = object_of(kv)?;
                if query.selectors.matches(&object) {
                    items.push(object);
                }
                stopped_at = Some(kv.key.clone());
            }
            let read_all = stopped_at.as_ref() == page.kvs.last().map(|kv| &kv.key);
            let full = query.limit > 0 && items.len() == query.limit;
            if full && (!read_all || page.more) {
                let start = stopped_at.expect("a full page read a key");
                let next = Continue { rv: page.revision, start: start[request.prefix.len()..].to_string() };
                return Ok(Listed { items, metadata: metadata(page.revision, Some(next)) });
            }
            if !page.more {
                return Ok(Listed { items, metadata: metadata(page.revision, None) });
            }
            request.after = page.kvs.last().map(|kv| kv.key.clone());
        }
    }

    async fn list_view_page(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        query: &Query,
        token: Option<Continue>,
    ) -> ApiResult<Listed> {
        let (views, revision) = self.list_view(kind, namespace).await?;
        let key = |view: &Value| {
            let field = |f: &str| view["metadata"][f].as_str().unwrap_or_default().to_string();
            match view["metadata"]["namespace"].as_str() {
                Some(_) => format!("{}/{}", field("namespace"), field("name")),
                None => field("name"),
            }
        };
        let after = token.as_ref().map(|t| t.start.clone());
        let mut items = Vec::new();
        let mut next = None;
        for view in views.into_iter().filter(|v| after.as_ref().is_none_or(|a| key(v) > *a)) {
            if !query.selectors.matches(&view) {
                continue;
            }
            if query.limit > 0 && items.len() == query.limit {
                let start = key(items.last().expect("a full page"));
                next = Some(Continue { rv: token.as_ref().map_or(revision, |t| t.rv), start });
                break;
            }
            items.push(view);
        }
        Ok(Listed { items, metadata: metadata(revision, next) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_refuse_anything_else() {
        let token = Continue { rv: 42, start: "default/web".into() };
        assert_eq!(Continue::decode(&token.encode()).unwrap(), token);
        for bad in ["", "not base64!", "e30", &Continue { rv: 1, start: "../x".into() }.encode()] {
            let err = Continue::decode(bad).unwrap_err();
            assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.contains("start the list again"), "{}", err.message);
        }
    }
}
