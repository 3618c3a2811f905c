//! The store's operations as JSON, for a controller that reaches the store only through the
//! API server (a tenant's controller, DESIGN.md §10): each [`Store`](crate::Store) call is a
//! `POST` of one request type below to `/baton/store/v1/<operation>`, answered with the
//! trait's own result types; a watch answers with one [`WatchLine`] per line. Values travel
//! in base64.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, LeaseId, Revision};

/// The path every operation is under.
pub const PATH: &str = "/baton/store/v1";

/// `POST {PATH}/get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    pub key: String,
}

/// `POST {PATH}/range`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangeRequest {
    pub prefix: String,
}

/// `POST {PATH}/watch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRequest {
    pub prefix: String,
    pub from: Revision,
}

/// `POST {PATH}/lease/grant`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    pub ttl_ms: u64,
}

/// `POST {PATH}/lease/keepalive` and `{PATH}/lease/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub lease: LeaseId,
}

/// The answer to a grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Granted {
    pub lease: LeaseId,
}

/// The answer to a keep-alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptAlive {
    pub ttl_ms: u64,
}

/// One line of a watch's answer: changes, a heartbeat (no events, so an idle watch is not
/// taken for a dead connection), or the error that ends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchLine {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::WatchEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A store error on the wire (the body of a failed answer, or a watch's last line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum WireError {
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    LeaseNotFound {
        lease: LeaseId,
    },
    TooManyOps {
        ops: usize,
        max: usize,
    },
    InvalidTtl {
        ttl_ms: u64,
    },
    /// What the caller's identity may not read or write.
    Forbidden {
        message: String,
    },
    Backend {
        message: String,
    },
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        match error {
            Error::Compacted { requested, compact_revision } => {
                WireError::Compacted { requested: *requested, compact_revision: *compact_revision }
            }
            Error::LeaseNotFound(lease) => WireError::LeaseNotFound { lease: *lease },
            Error::TooManyOps { ops, max } => WireError::TooManyOps { ops: *ops, max: *max },
            Error::InvalidTtl(ttl) => WireError::InvalidTtl { ttl_ms: ttl.as_millis() as u64 },
            other => WireError::Backend { message: other.to_string() },
        }
    }
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Self {
        match error {
            WireError::Compacted { requested, compact_revision } => Error::Compacted { requested, compact_revision },
            WireError::LeaseNotFound { lease } => Error::LeaseNotFound(lease),
            WireError::TooManyOps { ops, max } => Error::TooManyOps { ops, max },
            WireError::InvalidTtl { ttl_ms } => Error::InvalidTtl(Duration::from_millis(ttl_ms)),
            WireError::Forbidden { message } => Error::Backend(format!("forbidden: {message}")),
            WireError::Backend { message } => Error::Backend(message),
        }
    }
}

/// Bytes as a base64 string.
pub mod bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compare, KeyValue, Op, Txn};

    #[test]
    fn transactions_and_values_round_trip() {
        let txn = Txn::new()
            .when([Compare::absent("/a"), Compare::mod_revision("/b", 7)])
            .and_then([Op::put_with_lease("/a", vec![0, 159, 146, 150], 12), Op::delete("/b")])
            .or_else([Op::get("/a")]);
        let text = serde_json::to_string(&txn).unwrap();
        assert_eq!(serde_json::from_str::<Txn>(&text).unwrap(), txn);
        let kv = KeyValue {
            key: "/k".into(),
            value: b"{\"x\":1}".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: 0,
        };
        let text = serde_json::to_string(&kv).unwrap();
        assert!(text.contains("eyJ4IjoxfQ=="), "{text}");
        assert_eq!(serde_json::from_str::<KeyValue>(&text).unwrap(), kv);
    }

    #[test]
    fn errors_round_trip() {
        for error in [
            Error::Compacted { requested: 3, compact_revision: 9 },
            Error::LeaseNotFound(5),
            Error::TooManyOps { ops: 200, max: 128 },
            Error::InvalidTtl(Duration::from_millis(500)),
        ] {
            let wire = WireError::from(&error);
            let back = Error::from(serde_json::from_str::<WireError>(&serde_json::to_string(&wire).unwrap()).unwrap());
            assert_eq!(back.to_string(), error.to_string());
        }
        let forbidden = Error::from(WireError::Forbidden { message: "no".into() });
        assert_eq!(forbidden.to_string(), "store backend: forbidden: no");
    }
}
