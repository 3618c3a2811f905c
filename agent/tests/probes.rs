//! The agent's probes against real servers on loopback: HTTP statuses (1xx, 2xx, 3xx, 5xx),
//! a server that never answers, a refused connection, HTTPS with a self-signed certificate,
//! and commands with their exit status and output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use baton_agent::checks::http_verdict;
use baton_agent::probe::{self, Outcome};

/// A server on a free loopback port that answers every request with `response` (raw bytes,
/// status line first), or never answers when `response` is `None`. Returns its port; it
/// runs until the test's runtime ends.
async fn serve(response: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(answer(stream, response));
        }
    });
    port
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, response: Option<&'static str>) {
    // Read the request head.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    assert!(head.starts_with(b"GET /health HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&head));
    match response {
        Some(response) => {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        None => tokio::time::sleep(Duration::from_secs(60)).await,
    }
}

async fn status_of(port: u16) -> Result<u16, String> {
    probe::http_status("127.0.0.1", port, "/health", false, Duration::from_secs(2)).await
}

#[tokio::test]
async fn http_statuses_decide_as_marathon_does() {
    let cases = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, true),
        ("HTTP/1.1 204 No Content\r\n\r\n", 204, true),
        ("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n", 302, true),
        ("HTTP/1.0 399 Odd\r\n\r\n", 399, true),
        ("HTTP/1.1 404 Not Found\r\n\r\n", 404, false),
        ("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 500, false),
        ("HTTP/1.1 503 Service Unavailable\r\n\r\n", 503, false),
    ];
    for (response, code, passes) in cases {
        let port = serve(Some(response)).await;
        assert_eq!(status_of(port).await, Ok(code), "{response:?}");
        assert_eq!(matches!(http_verdict(code, false), Outcome::Pass(_)), passes, "{code}");
    }
}

#[tokio::test]
async fn an_informational_status_is_seen_and_can_be_ignored() {
    // The first status line decides, even when a final response follows.
    let port = serve(Some("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")).await;
    assert_eq!(status_of(port).await, Ok(102));
    assert_eq!(http_verdict(102, false), Outcome::Fail("HTTP 102".into()));
    assert_eq!(http_verdict(102, true), Outcome::Discard("HTTP 102 (ignored)".into()));
}

#[tokio::test]
async fn a_server_that_does_not_answer_times_out() {
    let port = serve(None).await;
    let started = Instant::now();
    let result = probe::http_status("127.0.0.1", port, "/health", false, Duration::from_secs(1)).await;
    assert_eq!(result, Err("timed out after 1 s".to_string()));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn garbage_and_early_close_fail_with_what_was_seen() {
    let port = serve(Some("SSH-2.0-OpenSSH\r\n")).await;
    let err = status_of(port).await.unwrap_err();
    assert!(err.starts_with("not an HTTP response"), "{err}");
    let port = serve(Some("")).await;
    assert_eq!(status_of(port).await, Err("the connection closed without a response".into()));
}

/// A port nothing listens on: bound, then closed.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn tcp_passes_when_a_connection_opens_and_fails_when_refused() {
    let open = serve(None).await;
    assert_eq!(
        probe::tcp("127.0.0.1", open, Duration::from_secs(2)).await,
        Outcome::Pass(format!("connected to 127.0.0.1:{open}"))
    );
    let closed = closed_port().await;
    assert_eq!(
        probe::tcp("127.0.0.1", closed, Duration::from_secs(2)).await,
        Outcome::Fail("connection refused".into())
    );
    assert_eq!(status_of(closed).await, Err("connection refused".into()));
}

#[tokio::test]
async fn https_works_with_a_self_signed_certificate() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    answer(tls, Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
                }
            });
        }
    });
    let result = probe::http_status("127.0.0.1", port, "/health", true, Duration::from_secs(2)).await;
    assert_eq!(result, Ok(200));
    // Plain HTTP to a TLS port is not a response.
    assert!(status_of(port).await.is_err());
}

#[tokio::test]
async fn commands_pass_on_exit_status_0_with_their_output() {
    let dir = tempfile::tempdir().unwrap();
    let env =
        BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string()), ("PORT0".to_string(), "31000".to_string())]);
    let timeout = Duration::from_secs(2);
    assert_eq!(
        probe::command("echo port $PORT0", dir.path(), &env, None, timeout).await,
        Outcome::Pass("exited with status 0: port 31000".into())
    );
    assert_eq!(
        probe::command("echo broken >&2; exit 3", dir.path(), &env, None, timeout).await,
        Outcome::Fail("exited with status 3: broken".into())
    );
    // It runs in the sandbox.
    std::fs::write(dir.path().join("ready"), "").unwrap();
    assert!(matches!(probe::command("test -f ready", dir.path(), &env, None, timeout).await, Outcome::Pass(_)));
    // A command that takes too long is killed with its children.
    let started = Instant::now();
    let outcome = probe::command("sleep 30 & sleep 30", dir.path(), &env, None, Duration::from_secs(1)).await;
    assert_eq!(outcome, Outcome::Fail("timed out after 1 s".into()));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
