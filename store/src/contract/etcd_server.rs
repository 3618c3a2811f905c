//! A real etcd for tests: the `etcd` binary (Debian's `etcd-server`) on free loopback ports
//! with a fresh data dir, stopped by pid when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd member of a one-member cluster.
pub struct TestEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and `/metrics`, whatever the client URLs speak.
    metrics_port: u16,
    tls: Option<ServerTls>,
}

/// PEM files for an etcd that serves TLS and asks clients for certificates signed by `ca`.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// The answer to a plain-HTTP GET of `path` from etcd at `port` (what it sent within 2 s).
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    Some(response)
}

/// Whether etcd at `port` says it is healthy.
fn healthy(port: u16) -> bool {
    get(port, "/health").is_some_and(|response| response.contains("\"health\":\"true\""))
}

impl TestEtcd {
    /// Starts etcd and waits until it is healthy (at most 20 s). Ports are picked at run
    /// time; if one was taken meanwhile, it starts again on others.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd serving clients over TLS only, with client certificates required.
    pub fn start_tls(tls: ServerTls) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Self {
        let dir = tempfile::Builder::new().prefix("baton-etcd-").tempdir().expect("a temporary etcd data dir");
        let mut etcd = TestEtcd { child: None, dir, client_port: 0, peer_port: 0, metrics_port: 0, tls };
        for _ in 0..5 {
            etcd.client_port = free_port();
            etcd.peer_port = free_port();
            etcd.metrics_port = free_port();
            if etcd.spawn() {
                return etcd;
            }
        }
        panic!("etcd did not start on free ports after 5 attempts; its log:\n{}", etcd.log())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The end of etcd's log, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Spawns etcd on this data dir and ports; false if it exits before it is healthy.
    fn spawn(&mut self) -> bool {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("etcd's log file");
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command.arg("--client-cert-auth").arg("--trusted-ca-file").arg(&tls.ca);
            command.arg("--cert-file").arg(&tls.cert).arg("--key-file").arg(&tls.key);
        }
        let child = command
            .args(["--name", "t", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}"), "--initial-cluster-state", "new"])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--heartbeat-interval=10", "--election-timeout=100", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): install it with `apt-get install etcd-server` (hack/test.sh does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if healthy(self.metrics_port) {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("etcd did not become healthy within 20 s; its log:\n{}", self.log())
    }

    /// The client URL, e.g. `http://127.0.0.1:23790` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:port`, as `--store etcd://…` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The port of its plain-HTTP `/health` and `/metrics`, with or without TLS.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// The KV requests etcd has answered so far, by method (`Txn`, `Range`, `Put`…), from
    /// its `/metrics`; empty if it does not answer.
    pub fn requests_answered(&self) -> std::collections::BTreeMap<String, u64> {
        let mut requests = std::collections::BTreeMap::new();
        let page = get(self.metrics_port, "/metrics").unwrap_or_default();
        for line in
            page.lines().filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("etcdserverpb.KV"))
        {
            let method = line.split("grpc_method=\"").nth(1).and_then(|rest| rest.split('"').next());
            let count = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok());
            if let (Some(method), Some(count)) = (method, count) {
                *requests.entry(method.to_string()).or_default() += count as u64;
            }
        }
        requests
    }

    /// The version etcd says it runs (`3.4.23`), from its `/metrics`.
    pub fn version(&self) -> Option<String> {
        let page = get(self.metrics_port, "/metrics")?;
        let line = page.lines().find(|l| l.starts_with("etcd_server_version{"))?;
        Some(line.split("server_version=\"").nth(1)?.split('"').next()?.to_string())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops etcd (SIGTERM, then SIGKILL after 10 s); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        assert!(self.spawn(), "etcd did not start again on its ports; its log:\n{}", self.log());
    }

    /// The directory holding etcd's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
