//! Joining a cluster (`baton agent --join URL`): the agent gets a store identity of its own
//! from the registrar, once, and keeps it on its machine.
//!
//! The key is made here and never leaves the machine (`<dir>/store.key`, mode 0600); the
//! registrar gets a certificate signing request and answers a client certificate for
//! `baton-agent:NAME` (`<dir>/store.crt`). Later starts use what is kept — the registrar need
//! not be up — and join again with the same key only when the certificate is missing, is for
//! another name, or expires within [`RENEW_BEFORE`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_api::join::{JOIN_PATH, JoinRequest, JoinResponse};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;

/// A kept certificate this close to its expiry is replaced at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest wait between two attempts to reach the registrar.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The registrar's URL, `https://host:port`.
    pub url: String,
    /// The cluster's join token.
    pub token: String,
    /// The CA (PEM) the registrar's certificate chains to: etcd's.
    pub ca_pem: Vec<u8>,
    /// Where the key and certificate are kept.
    pub dir: PathBuf,
    /// The agent's name.
    pub name: String,
}

/// The agent's store identity: its client certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The identity kept in `config.dir`, or a new one from the registrar (waiting for it while
/// it cannot be reached, until `shutdown`). A refusal (a wrong token, a name another key
/// holds) is an error saying what to do.
pub async fn identity(config: &JoinConfig, shutdown: &CancellationToken) -> Result<Identity, String> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create it: {e}", dir.display()))?;
    set_mode(dir, 0o700)?;
    let (key_file, cert_file) = (dir.join("store.key"), dir.join("store.crt"));
    let key = match std::fs::read_to_string(&key_file) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", key_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            write_file(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
            key
        }
        Err(e) => return Err(format!("{}: {e}", key_file.display())),
    };
    let key_pem = key.serialize_pem().into_bytes();
    if let Ok(cert_pem) = std::fs::read(&cert_file) {
        match usable(&cert_pem, &key, &config.name, jiff::Timestamp::now()) {
            Ok(()) => return Ok(Identity { cert_pem, key_pem }),
            Err(why) => tracing::info!(file = %cert_file.display(), why, "joining again"),
        }
    }
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, baton_store::etcd_auth::agent_user(&config.name));
    let csr = params.serialize_request(&key).and_then(|r| r.pem()).map_err(|e| e.to_string())?;
    let request = JoinRequest { name: config.name.clone(), csr };
    let certificate = ask(config, &request, shutdown).await?;
    usable(certificate.as_bytes(), &key, &config.name, jiff::Timestamp::now())
        .map_err(|why| format!("the registrar at {} answered a certificate that {why}", config.url))?;
    write_file(&cert_file, certificate.as_bytes(), 0o644)?;
    tracing::info!(file = %cert_file.display(), "joined: the store identity is kept here");
    Ok(Identity { cert_pem: certificate.into_bytes(), key_pem })
}

/// Whether a kept certificate (PEM) serves agent `name` with `key` at `now`; why not.
fn usable(pem: &[u8], key: &rcgen::KeyPair, name: &str, now: jiff::Timestamp) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| format!("is not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("does not parse: {e}"))?;
    let user = baton_store::etcd_auth::agent_user(name);
    let names: Vec<&str> = cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
    if names != [user.as_str()] {
        return Err(format!("is for {names:?}, not {user}"));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("is not for the kept key".into());
    }
    let left = cert.validity().not_after.timestamp() - now.as_second();
    if left < RENEW_BEFORE.as_secs() as i64 {
        return Err(format!("expires in {} days", left.max(0) / 86_400));
    }
    Ok(())
}

/// Posts `request` until the registrar answers: its certificate, or its refusal.
async fn ask(config: &JoinConfig, request: &JoinRequest, shutdown: &CancellationToken) -> Result<String, String> {
    let ca = ureq::tls::Certificate::from_pem(&config.ca_pem).map_err(|e| format!("the CA: {e}"))?.to_owned();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca]))).build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("{}{JOIN_PATH}", config.url.trim_end_matches('/'));
    let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
    let mut backoff = Duration::from_millis(500);
    for attempt in 1u32.. {
        let (agent, url, body, token) = (agent.clone(), url.clone(), body.clone(), config.token.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let mut response = agent
                .post(&url)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
                .map_err(|e| e.to_string())?;
            let text = response.body_mut().with_config().limit(1 << 20).read_to_string().map_err(|e| e.to_string())?;
            Ok::<_, String>((response.status().as_u16(), text))
        })
        .await
        .map_err(|e| e.to_string())?;
        let why = match answer {
            Ok((200, text)) => {
                let response: JoinResponse = serde_json::from_str(&text).map_err(|e| {
                    format!("the registrar at {} answered what is not a join response: {e}", config.url)
                })?;
                return Ok(response.certificate);
            }
            Ok((status @ (401 | 403 | 409 | 422), text)) => {
                return Err(format!(
                    "the registrar at {} refused agent {} ({status}): {text}",
                    config.url, config.name
                ));
            }
            Ok((status, text)) => format!("it answered {status}: {text}"),
            Err(e) => e,
        };
        tracing::warn!(registrar = %config.url, attempt, error = %why, "waiting for the registrar to issue this agent's identity");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Err(format!("stopped while joining through {}", config.url)),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the attempts never run out")
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `contents` to `path` whole or not at all (a file beside it, renamed), with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{}: no directory", path.display()))?;
    let failed = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    set_mode(temp.path(), mode)?;
    temp.write_all(contents).map_err(failed)?;
    temp.as_file().sync_all().map_err(failed)?;
    temp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(key: &rcgen::KeyPair, cn: &str, not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(key).unwrap().pem().into_bytes()
    }

    #[test]
    fn a_kept_certificate_serves_only_its_name_and_key_until_a_month_before_it_expires() {
        let key = rcgen::KeyPair::generate().unwrap();
        let now = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(usable(&certificate(&key, "baton-agent:n1", (2031, 1, 1)), &key, "n1", now), Ok(()));
        let other_key = rcgen::KeyPair::generate().unwrap();
        let cases = [
            (certificate(&key, "baton-agent:n2", (2031, 1, 1)), "is for [\"baton-agent:n2\"], not baton-agent:n1"),
            (certificate(&other_key, "baton-agent:n1", (2031, 1, 1)), "is not for the kept key"),
            (certificate(&key, "baton-agent:n1", (2030, 1, 20)), "expires in 19 days"),
            (certificate(&key, "baton-agent:n1", (2029, 1, 1)), "expires in 0 days"),
            (b"garbage".to_vec(), "is not a PEM certificate"),
        ];
        for (pem, why) in cases {
            let got = usable(&pem, &key, "n1", now).unwrap_err();
            assert!(got.starts_with(why), "{got} (expected {why})");
        }
    }
}
