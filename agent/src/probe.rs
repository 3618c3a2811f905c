//! One probe of one instance: an HTTP(S) GET, a TCP connect, or a command. Each returns an
//! [`Outcome`] with a short text of what it saw, for the instance's status.
//!
//! The HTTP probe reads only the status line of the response, as Marathon's does: it makes
//! `GET <path> HTTP/1.1` with `Connection: close`, and the first status line decides — so an
//! informational (1xx) status is seen as such and can be discarded (`ignoreHttp1xx`). The
//! HTTPS probe does not verify the server's certificate (instances commonly serve
//! self-signed ones); the TLS handshake itself is verified.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
    /// Neither: the result is discarded (an ignored 1xx status).
    Discard(String),
}

impl Outcome {
    pub fn output(&self) -> &str {
        match self {
            Outcome::Pass(s) | Outcome::Fail(s) | Outcome::Discard(s) => s,
        }
    }
}

/// The most of a command's output or an error kept as the last output.
pub const MAX_OUTPUT: usize = 512;

/// `GET path` on `host:port`; the status of the response, or what went wrong. The timeout
/// covers everything from connecting to reading the status line.
pub async fn http_status(host: &str, port: u16, path: &str, tls: bool, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let stream = TcpStream::connect((host, port)).await.map_err(|e| connect_error(&e))?;
        let _ = stream.set_nodelay(true);
        if tls {
            let server_name = ServerName::try_from(host.to_string())
                .map_err(|_| format!("{host:?} is not a host name or IP address for TLS"))?;
            let connector = tokio_rustls::TlsConnector::from(insecure_tls_config());
            let stream = connector.connect(server_name, stream).await.map_err(|e| format!("TLS handshake: {e}"))?;
            request_status(stream, host, port, path).await
        } else {
            request_status(stream, host, port, path).await
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}", seconds(timeout))),
    }
}

async fn request_status<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    port: u16,
    path: &str,
) -> Result<u16, String> {
    let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: baton-agent/{}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending the request: {e}"))?;
    stream.flush().await.map_err(|e| format!("sending the request: {e}"))?;
    // The status line: at most 1 KiB up to the first CRLF.
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err(if line.is_empty() {
                "the connection closed without a response".into()
            } else {
                "the connection closed within the status line".into()
            });
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.windows(2).position(|w| w == b"\r\n") {
            line.truncate(end);
            break;
        }
        if line.len() > 1024 {
            return Err("the response's status line is longer than 1 KiB".into());
        }
    }
    parse_status_line(&line)
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok()).filter(|c| (100..=999).contains(c));
    match code {
        Some(code) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP response: {:?}", truncate(&text, 80))),
    }
}

/// A TCP connection to `host:port` within `timeout`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Pass(format!("connected to {host}:{port}")),
        Ok(Err(e)) => Outcome::Fail(connect_error(&e)),
        Err(_) => Outcome::Fail(format!("connecting timed out after {}", seconds(timeout))),
    }
}

/// Runs `script` by `sh -c` in `dir` with `env` (as `user`, if given), in its own process
/// group (killed whole on timeout); passes on exit status 0. The output is the end of stdout
/// and stderr.
pub async fn command(
    script: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
    user: Option<&str>,
    timeout: Duration,
) -> Outcome {
    let mut command = tokio::process::Command::new("/bin/sh");
    if let Some(user) = user {
        match crate::process::run_as(user) {
            Ok((uid, gid)) => _ = command.uid(uid.as_raw()).gid(gid.as_raw()),
            Err(e) => return Outcome::Fail(format!("could not run the command: {e}")),
        }
    }
    command
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Fail(format!("could not run the command: {e}")),
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            if let Some(pid) = pid {
                // Whatever the command left running in its group goes with it.
                crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let text = tail_chars(text.trim(), MAX_OUTPUT);
            let status = crate::process::Exit::of(output.status).describe();
            let described = if text.is_empty() { status } else { format!("{status}: {text}") };
            if output.status.success() { Outcome::Pass(described) } else { Outcome::Fail(described) }
        }
        Ok(Err(e)) => Outcome::Fail(format!("could not wait for the command: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            Outcome::Fail(format!("timed out after {}", seconds(timeout)))
        }
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => format!("could not connect: {e}"),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn truncate(s: &str, max: usize) -> &str {
    let cut = (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..cut]
}

/// The last `max` bytes of `s`, on a character boundary.
fn tail_chars(s: &str, max: usize) -> String {
    let start = s.len().saturating_sub(max);
    let start = (start..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    s[start..].to_string()
}

/// TLS without certificate verification (signatures in the handshake are still checked).
fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate: health probes check that an instance answers, not who it
/// is.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
