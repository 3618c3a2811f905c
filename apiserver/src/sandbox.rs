//! An instance's output, read from its agent: the `log` subresource of instances
//! (`GET …/namespaces/<ns>/instances/<name>/log`), as Kubernetes serves a pod's log.
//!
//! The API server connects to the agent's sandbox endpoint, which the agent published in its
//! record in the store, over TLS trusting exactly the certificate published there (the
//! store is the trust root: the agent wrote it under its own lease), and shows the token it
//! keeps in the store ([`baton_store::Keyspace::sandbox_token`]), which only it and the
//! agents read. Authorization is that of reading the instance (`get instances`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use baton_api::{AgentRecord, SandboxEndpoint};

use crate::ApiServer;
use crate::status::{ApiError, ApiResult};

/// What a `log` request asks for (Kubernetes' `PodLogOptions`, the ones that apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub stderr: bool,
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub since_millis: Option<i64>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Parses the query; every refusal names the parameter and the value.
    pub fn parse(raw: Option<&str>, now: jiff::Timestamp) -> ApiResult<Self> {
        let mut options = LogOptions::default();
        let number = |key: &str, value: &str| -> ApiResult<u64> {
            value.parse().map_err(|_| {
                ApiError::bad_request(format!("{key}: Invalid value: {value:?}: must be a whole number, 0 or more"))
            })
        };
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "stream" => {
                    options.stderr = match value.to_ascii_lowercase().as_str() {
                        "stdout" | "" => false,
                        "stderr" => true,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "stream: Unsupported value: {value:?}: supported values: \"Stdout\", \"Stderr\" \
                                 (an instance's streams are read one at a time)"
                            )));
                        }
                    }
                }
                "follow" => options.follow = matches!(value.as_ref(), "true" | "1"),
                "tailLines" => options.tail_lines = Some(number("tailLines", &value)?),
                "limitBytes" => options.limit_bytes = Some(number("limitBytes", &value)?),
                "sinceSeconds" => {
                    let seconds = number("sinceSeconds", &value)?.min(i64::MAX as u64 / 1000) as i64;
                    options.since_millis = Some(now.as_millisecond() - seconds * 1000);
                }
                "sinceTime" => {
                    let time: jiff::Timestamp = value.parse().map_err(|_| {
                        ApiError::bad_request(format!("sinceTime: Invalid value: {value:?}: must be an RFC 3339 time"))
                    })?;
                    options.since_millis = Some(time.as_millisecond());
                }
                // kubectl's `logs` sends these; an instance has one process, always "current".
                "container" | "previous" | "pretty" | "insecureSkipTLSVerifyBackend" => {}
                "timestamps" if matches!(value.as_ref(), "true" | "1") => {
                    return Err(ApiError::bad_request(
                        "timestamps: Unsupported value: true: an instance's output has no time per line",
                    ));
                }
                "timestamps" => {}
                other => return Err(ApiError::bad_request(format!("{other}: unknown parameter of an instance's log"))),
            }
        }
        Ok(options)
    }

    /// The agent's query.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("stream", if self.stderr { "stderr" } else { "stdout" });
        if self.follow {
            query.append_pair("follow", "true");
        }
        if let Some(n) = self.tail_lines {
            query.append_pair("tailLines", &n.to_string());
        }
        if let Some(millis) = self.since_millis {
            query.append_pair("sinceMillis", &millis.to_string());
        }
        if let Some(n) = self.limit_bytes {
            query.append_pair("limitBytes", &n.to_string());
        }
        query.finish()
    }
}

/// Trusts exactly one certificate (the one the agent published); checks the handshake's
/// signatures as usual.
#[derive(Debug)]
struct Pinned {
    certificate: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the certificate this agent published".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn unavailable(agent: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("cannot read from agent {agent}: {why}"),
    )
}

/// Opens the log on the agent; the response streams its body.
async fn fetch(
    agent: &str,
    endpoint: &SandboxEndpoint,
    token: &str,
    instance: &str,
    options: &LogOptions,
) -> ApiResult<Response> {
    use hyper_util::rt::TokioIo;
    let url: http::Uri = endpoint.url.parse().map_err(|_| unavailable(agent, format!("its URL {:?}", endpoint.url)))?;
    let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_u16().unwrap_or(443);
    let certificate = CertificateDer::from_pem_slice(endpoint.certificate.as_bytes())
        .map_err(|e| unavailable(agent, format!("its published certificate: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { certificate, provider }))
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|_| unavailable(agent, format!("its host {host:?}")))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    };
    let tls = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| unavailable(agent, format!("{} did not answer within 10 s", endpoint.url)))?
        .map_err(|e| unavailable(agent, format!("{}: {e}", endpoint.url)))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tls)).await.map_err(|e| unavailable(agent, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "sandbox connection ended");
        }
    });
    let request = http::Request::get(format!("/v1/sandboxes/{instance}/logs?{}", options.query()))
        .header(header::HOST, host.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| unavailable(agent, e))?;
    let status = response.status();
    if status == StatusCode::OK {
        let body = Body::new(response.into_body());
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    let text = axum::body::to_bytes(Body::new(response.into_body()), 64 << 10).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).into_owned();
    Err(match status {
        StatusCode::NOT_FOUND => ApiError::new(StatusCode::NOT_FOUND, "NotFound", message),
        StatusCode::BAD_REQUEST => ApiError::bad_request(message),
        _ => unavailable(agent, format!("it answered {status}: {message}")),
    })
}

impl ApiServer {
    /// Makes the token the API server shows agents, if there is none yet (the first API
    /// server to start makes it; the others read it).
    pub(crate) async fn ensure_sandbox_token(&self) -> ApiResult<()> {
        let key = self.keys.sandbox_token();
        let token: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
        };
        let txn = baton_store::Txn::new()
            .when([baton_store::Compare::absent(&key)])
            .and_then([baton_store::Op::put(&key, token.into_bytes())]);
        self.store.txn(txn).await?;
        Ok(())
    }

    /// `GET …/instances/<name>/log`: the instance's output, from its agent.
    pub(crate) async fn instance_log(
        &self,
        kind: &crate::kinds::Kind,
        namespace: Option<&str>,
        name: &str,
        raw_query: Option<&str>,
    ) -> ApiResult<Response> {
        let options = LogOptions::parse(raw_query, jiff::Timestamp::now())?;
        let view = self.get_view(kind, namespace, name).await?;
        let agent = view.pointer("/spec/agent").and_then(Value::as_str).unwrap_or_default().to_string();
        let record: Option<AgentRecord> =
            self.store.get(&self.keys.agent(&agent)).await?.and_then(|kv| serde_json::from_slice(&kv.value).ok());
        let Some(record) = record else {
            return Err(unavailable(&agent, "it is not reporting (its sandboxes are out of reach until it is back)"));
        };
        let Some(endpoint) = record.sandbox else {
            return Err(unavailable(&agent, "it does not serve sandboxes (started without --sandbox-listen?)"));
        };
        let secret = match self.store.get(&self.keys.sandbox_token()).await? {
            Some(kv) => kv.value,
            None => return Err(ApiError::internal("no sandbox token in the store")),
        };
        let token = agent_token(&secret, &agent);
        // Where the agent reads it: written when missing or made from another secret.
        let key = self.keys.agent_sandbox_token(&agent);
        if self.store.get(&key).await?.is_none_or(|kv| kv.value != token.as_bytes()) {
            self.store.txn(baton_store::Txn::new().and_then([baton_store::Op::put(&key, token.clone())])).await?;
        }
        fetch(&agent, &endpoint, &token, name, &options).await
    }
}

/// Agent `agent`'s sandbox token: HMAC-SHA256 of its name under the API servers' secret, in
/// hex. Knowing one agent's tells nothing of another's.
pub fn agent_token(secret: &[u8], agent: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"sandbox-token:");
    mac.update(agent.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_has_its_own_token() {
        let a1 = agent_token(b"secret", "a1");
        assert_eq!(a1.len(), 64);
        assert_eq!(a1, agent_token(b"secret", "a1"), "the same for every API server");
        assert_ne!(a1, agent_token(b"secret", "a2"));
        assert_ne!(a1, agent_token(b"other secret", "a1"));
    }

    #[test]
    fn log_options_parse_as_kubernetes_names_them_and_refuse_with_the_parameter_named() {
        let now: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let options = LogOptions::parse(Some("stream=Stderr&follow=true&tailLines=3&sinceSeconds=60"), now).unwrap();
        assert!(options.stderr && options.follow);
        assert_eq!((options.tail_lines, options.since_millis), (Some(3), Some(now.as_millisecond() - 60_000)));
        assert_eq!(
            options.query(),
            format!("stream=stderr&follow=true&tailLines=3&sinceMillis={}", now.as_millisecond() - 60_000)
        );
        let time = LogOptions::parse(Some("sinceTime=2026-12-01T11:00:00Z&container=x"), now).unwrap();
        assert_eq!(time.since_millis, Some(now.as_millisecond() - 3_600_000));
        for (query, named) in [
            ("tailLines=-1", "tailLines"),
            ("stream=All", "stream"),
            ("sinceTime=yesterday", "sinceTime"),
            ("timestamps=true", "timestamps"),
            ("colour=yes", "colour"),
        ] {
            let error = LogOptions::parse(Some(query), now).unwrap_err();
            assert!(error.message.contains(named), "{query}: {}", error.message);
        }
    }
}
