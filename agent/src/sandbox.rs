//! The agent's sandbox endpoint: where the API server reads instances' output.
//!
//! HTTPS with a certificate the agent makes at start and publishes in its record in the store
//! (`sandbox.certificate`): the API server trusts exactly that certificate for this agent, so
//! the connection is encrypted and the agent authenticated without another PKI. The API
//! server authenticates with a bearer token it writes for this agent alone
//! ([`baton_store::Keyspace::agent_sandbox_token`]); only it may ask, and it checks that the
//! user may read the instance before it does.
//!
//! `GET /v1/sandboxes/<instance>/logs?stream=stdout|stderr&follow=true&tailLines=N&sinceMillis=T&limitBytes=N`
//! answers the output, as it is written when following (see [`crate::logs`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use baton_api::SandboxEndpoint;
use baton_store::{Keyspace, Store};

use crate::logs::{Reader, Selection};

/// Instances whose process runs on this agent: a followed log ends once its instance has.
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<RwLock<HashSet<String>>>);

impl Running {
    pub fn insert(&self, id: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(id.to_string());
    }

    pub fn remove(&self, id: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains(id)
    }
}

/// What the endpoint serves: the sandboxes under `work_dir`, to whoever shows the token in
/// the store.
pub struct Sandboxes {
    pub store: Arc<dyn Store>,
    pub keys: Keyspace,
    pub work_dir: PathBuf,
    pub running: Running,
}

struct Served {
    sandboxes: Sandboxes,
    /// The agent's name: its token is its own ([`Keyspace::agent_sandbox_token`]).
    agent: String,
    /// The token last read from the store.
    token: Mutex<Option<String>>,
}

/// Starts serving on `listen`; returns what to publish in the agent's record (the URL names
/// `host`, where the API server reaches the agent `name`).
pub async fn start(
    listen: SocketAddr,
    host: &str,
    name: &str,
    sandboxes: Sandboxes,
    shutdown: CancellationToken,
) -> std::io::Result<SandboxEndpoint> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let port = listener.local_addr()?.port();
    let (config, certificate) = tls(name, host).map_err(std::io::Error::other)?;
    let served = Arc::new(Served { sandboxes, agent: name.to_string(), token: Mutex::new(None) });
    let router = axum::Router::new().route("/v1/sandboxes/{id}/logs", axum::routing::get(logs)).with_state(served);
    tokio::spawn(crate::https::serve(listener, config, router, shutdown));
    let host = if host.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{host}]") } else { host.to_string() };
    Ok(SandboxEndpoint { url: format!("https://{host}:{port}"), certificate })
}

/// A self-signed certificate for `host` and the rustls configuration serving it.
fn tls(name: &str, host: &str) -> Result<(Arc<rustls::ServerConfig>, String), String> {
    let mut params = rcgen::CertificateParams::new(vec![]).map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("baton-agent {name}"));
    params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rcgen::SanType::IpAddress(ip),
        Err(_) => rcgen::SanType::DnsName(host.to_string().try_into().map_err(|e: rcgen::Error| e.to_string())?),
    }];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert.pem()))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into()).into_response()
}

impl Served {
    /// Whether `presented` is the token in the store (read again when it differs from the one
    /// read before, so a new token takes effect).
    async fn authorized(&self, presented: &str) -> bool {
        let cached = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if cached.as_deref().is_some_and(|t| constant_time_eq(t.as_bytes(), presented.as_bytes())) {
            return true;
        }
        let Sandboxes { store, keys, .. } = &self.sandboxes;
        let Ok(Some(kv)) = store.get(&keys.agent_sandbox_token(&self.agent)).await else { return false };
        let token = String::from_utf8_lossy(&kv.value).into_owned();
        let ok = !token.is_empty() && constant_time_eq(token.as_bytes(), presented.as_bytes());
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a log request asks for.
#[derive(Debug)]
struct LogQuery {
    stream: &'static str,
    follow: bool,
    selection: Selection,
}

fn parse_query(raw: Option<&str>) -> Result<LogQuery, String> {
    let mut query = LogQuery { stream: "stdout", follow: false, selection: Selection::default() };
    let number = |key: &str, value: &str| -> Result<u64, String> {
        value.parse().map_err(|_| format!("{key} {value:?} is not a whole number, 0 or more"))
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "stream" => {
                query.stream = match value.as_ref() {
                    "stdout" => "stdout",
                    "stderr" => "stderr",
                    other => return Err(format!("stream {other:?}: use stdout or stderr")),
                }
            }
            "follow" => query.follow = matches!(value.as_ref(), "true" | "1"),
            "tailLines" => query.selection.tail_lines = Some(number("tailLines", &value)?),
            "limitBytes" => query.selection.limit_bytes = Some(number("limitBytes", &value)?),
            "sinceMillis" => {
                query.selection.since_millis =
                    Some(value.parse().map_err(|_| format!("sinceMillis {value:?} is not a time in milliseconds"))?)
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(query)
}

/// Instance ids are DNS labels: nothing else names a sandbox (no `..`, no `/`).
fn is_instance_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 253 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

async fn logs(
    State(served): State<Arc<Served>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if presented.is_empty() || !served.authorized(presented).await {
        return refuse(StatusCode::UNAUTHORIZED, "only the API server reads sandboxes");
    }
    let query = match parse_query(raw.as_deref()) {
        Ok(query) => query,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    if !is_instance_id(&id) {
        return refuse(StatusCode::BAD_REQUEST, format!("{id:?} is not an instance id"));
    }
    let log = crate::process::sandbox_dir(&served.sandboxes.work_dir, &id).join(query.stream);
    let reader = match Reader::open(&log, query.selection, query.follow).await {
        Ok(Some(reader)) => reader,
        Ok(None) => {
            return refuse(StatusCode::NOT_FOUND, format!("no {} of instance {id} on this agent", query.stream));
        }
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", log.display())),
    };
    let running = served.sandboxes.running.clone();
    let stream = futures::stream::unfold((reader, running, id), |(mut reader, running, id)| async move {
        match reader.next(|| running.contains(&id)).await {
            Ok(Some(bytes)) => Some((Ok::<_, std::io::Error>(bytes), (reader, running, id))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(instance = id, error = %e, "reading a log");
                None
            }
        }
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], axum::body::Body::from_stream(stream))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_refuse_with_the_parameter_named() {
        let q = parse_query(Some("stream=stderr&follow=true&tailLines=5&limitBytes=10&sinceMillis=1000")).unwrap();
        assert_eq!((q.stream, q.follow), ("stderr", true));
        assert_eq!(q.selection, Selection { tail_lines: Some(5), since_millis: Some(1000), limit_bytes: Some(10) });
        assert!(parse_query(Some("tailLines=-1")).unwrap_err().contains("tailLines"));
        assert!(parse_query(Some("stream=both")).unwrap_err().contains("stream"));
        assert!(parse_query(Some("previous=true")).unwrap_err().contains("previous"));
        assert!(is_instance_id("web-1bg8qqtdg8"));
        assert!(!is_instance_id("../etc") && !is_instance_id("a/b") && !is_instance_id(""));
    }
}
