//! Admission checks: what a kind declares ([`crate::kinds::Kind::admission`]) to check a
//! write against other stored objects — a dependency graph without cycles, a tenant's
//! quota — beyond the object's own validation. The generic write path runs a kind's checks
//! inside its read-modify-write loop and knows nothing of what they check.
//!
//! A check either refuses the write (an error naming the field and the value) or lets it
//! through with a [`Guard`]: compares and operations that go into the write's own
//! transaction, so that two concurrent writes that are each fine alone but not together
//! cannot both land — the second finds a guard key moved and is checked again.

use std::sync::Arc;

use baton_store::{Compare, Keyspace, Op, Store};
use serde_json::Value;

use crate::status::{ApiResult, Target};

/// What a check adds to the write's transaction.
#[derive(Debug, Default)]
pub struct Guard {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// One write under check.
pub struct Proposed<'a> {
    /// The object written, for errors.
    pub target: Target<'a>,
    pub namespace: Option<&'a str>,
    /// The object as stored now (`None` for a create).
    pub before: Option<&'a Value>,
    /// The object as it would be stored.
    pub after: &'a Value,
}

/// What a check reads the other objects from.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a Keyspace,
}

/// A check of writes of one kind.
#[async_trait::async_trait]
pub trait Admission: Send + Sync {
    /// Refuses `write` (an [`crate::status::ApiError`]), or lets it through with a guard;
    /// `None` when the write changes nothing the check looks at.
    async fn admit(&self, context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Option<Guard>>;
}

/// Runs `checks` in order; the first refusal refuses the write, the guards add up.
pub async fn admit(checks: &[Arc<dyn Admission>], context: Context<'_>, write: &Proposed<'_>) -> ApiResult<Guard> {
    let mut all = Guard::default();
    for check in checks {
        if let Some(guard) = check.admit(context, write).await? {
            all.compares.extend(guard.compares);
            all.ops.extend(guard.ops);
        }
    }
    Ok(all)
}
