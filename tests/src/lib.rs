//! Helpers for Baton's end-to-end tests, which run real processes: the built `baton`
//! binary, the real `kubectl`, and the instance processes Baton starts.
//!
//! Every process a test starts is stopped by pid, also when the test fails: a [`Proc`] is
//! killed when dropped, and [`Baton`] and [`Cluster`] then kill any process still running
//! from inside their temporary directory (the agents' sandboxes), so nothing outlives a
//! test.
//! Ports are picked free at run time, on loopback only. Every wait is bounded and fails
//! with what it waited for and the end of Baton's log.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub use baton_agent::process::{live_group_members, start_ticks};

pub mod api;
pub mod chaos;
pub mod cluster;
pub mod kubectl;
pub mod load;
pub mod proc;

pub use api::ApiClient;
pub use cluster::{Cluster, ClusterOptions};
pub use kubectl::Kubectl;
pub use proc::Proc;

/// A port on 127.0.0.1 for a listener a test starts (an API server, a metrics endpoint), no
/// other test holds and nobody listens on right now.
///
/// Not a port the kernel hands out for `:0`: that one is free only until the kernel hands it
/// to another socket, and every outgoing connection of the tests running at once takes one
/// from the same ephemeral range (32768 and up) — Loop run 63: a controller exited at start,
/// its metrics port taken between the test picking it and the controller binding it. These
/// come from blocks below 10000 that this test process holds (see [`PortBlock`]), one port
/// after the other, never twice.
pub fn free_port() -> u16 {
    struct Held {
        blocks: Vec<PortBlock>,
        next: u16,
    }
    static HELD: std::sync::Mutex<Held> = std::sync::Mutex::new(Held { blocks: Vec::new(), next: 0 });
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        // A used-up block stays held until the process ends: its ports may still be in use.
        if held.blocks.last().is_none_or(|block| held.next > block.end()) {
            let block = PortBlock::take_from(&PortBlock::LISTENERS);
            held.next = block.begin;
            held.blocks.push(block);
        }
        let port = held.next;
        held.next += 1;
        // Something outside the tests (a system service) may listen in the range.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Host ports for one test's instances, held until dropped: tests run at once, each with
/// its own cluster on the same machine, and two clusters handing out the same port would have
/// one cluster's instance answer the other's health checks (Loop run 17: a replacement counted
/// healthy 14 ms after it started, before it could listen, by another test's server on its
/// port) or fail to bind. Blocks of [`PortBlock::SIZE`] ports lie between 10000 and the
/// kernel's ephemeral range (32768), [`free_port`]'s blocks of 100 below 10000; a block is
/// held by an exclusive lock on its file in the temporary directory, which the kernel drops
/// when the test's process ends however it ends.
#[derive(Debug)]
pub struct PortBlock {
    /// The first port.
    pub begin: u16,
    size: u16,
    _lock: std::fs::File,
}

/// A range of ports cut into blocks of one size, each locked by its own file.
#[derive(Debug)]
struct Blocks {
    /// The lock files' prefix.
    name: &'static str,
    first: u16,
    size: u16,
    count: u16,
}

impl PortBlock {
    pub const SIZE: u16 = 1000;
    /// Instances' host ports: 10000 up to the ephemeral range.
    const INSTANCES: Blocks =
        Blocks { name: "block", first: 10000, size: Self::SIZE, count: (32768 - 10000) / Self::SIZE };
    /// Listeners' ports ([`free_port`]): 3000–9999, 100 to a block.
    const LISTENERS: Blocks = Blocks { name: "listen", first: 3000, size: 100, count: 70 };

    /// A block of instance ports no other test holds; waits (at most a minute) while all
    /// are held.
    pub fn take() -> Self {
        Self::take_from(&Self::INSTANCES)
    }

    fn take_from(blocks: &Blocks) -> Self {
        let dir = std::env::temp_dir().join("baton-test-ports");
        std::fs::create_dir_all(&dir).expect("a directory for the port blocks' locks");
        // Start at a different block in each process, so tests starting together do not all
        // try the same one first.
        let offset = (std::process::id() % u32::from(blocks.count)) as u16;
        let taken = poll(Duration::from_secs(60), || {
            (0..blocks.count).map(|i| (offset + i) % blocks.count).find_map(|block| {
                let file = std::fs::File::create(dir.join(format!("{}-{block}", blocks.name))).ok()?;
                file.try_lock().ok()?;
                Some(Self { begin: blocks.first + block * blocks.size, size: blocks.size, _lock: file })
            })
        });
        taken.unwrap_or_else(|| {
            panic!("all {} {} port blocks in {} stayed held for a minute", blocks.count, blocks.name, dir.display())
        })
    }

    /// The last port.
    pub fn end(&self) -> u16 {
        self.begin + self.size - 1
    }

    /// The `n`th of `parts` equal slices, as `begin-end` (`--ports`' syntax).
    pub fn slice(&self, n: u16, parts: u16) -> String {
        let size = self.size / parts.max(1);
        let begin = self.begin + n * size;
        format!("{begin}-{}", begin + size - 1)
    }
}

impl std::fmt::Display for PortBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.begin, self.end())
    }
}

/// `dig @127.0.0.1 -p PORT +tries=1 +time=2 ARGS…` (the real DNS client, as users run it):
/// its output.
pub fn dig(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"])
        .args(args)
        .output()
        .expect("dig runs (hack/prereqs.sh --tests installs bind9-dnsutils)");
    assert!(out.status.success(), "dig {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process identified by pid and start time, so a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

impl ProcessId {
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self { pid, start_ticks: start_ticks(pid)? })
    }

    pub fn is_alive(self) -> bool {
        baton_agent::process::is_alive(self.pid, self.start_ticks)
    }
}

/// Every live process in the process groups led by `leaders` (an instance's reported pid
/// leads its group: the shell and whatever it started).
pub fn group_processes(leaders: &[u32]) -> Vec<ProcessId> {
    leaders.iter().flat_map(|l| live_group_members(*l)).filter_map(ProcessId::of).collect()
}

/// Live processes whose working directory is inside `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
        .filter(|pid| ProcessId::of(*pid).is_some_and(ProcessId::is_alive))
        .collect()
}

/// The HTTP status of `GET /` on 127.0.0.1:`port`, if something answers within 2 s.
pub fn http_status(port: u16) -> Option<u16> {
    let (status, _) = http("127.0.0.1", port, "GET", "/", None).ok()?;
    Some(status)
}

/// The process groups of the live processes whose working directory is inside `dir`: one
/// per instance (its shell and what it started share a group).
pub fn process_groups_in(dir: &Path) -> std::collections::BTreeSet<u32> {
    processes_in(dir)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After ')': state (field 3), ppid (4), pgrp (5).
            stat[stat.rfind(')')? + 1..].split_whitespace().nth(2)?.parse().ok()
        })
        .collect()
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_command = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    // utime and stime are fields 14 and 15: the 12th and 13th after the command.
    let ticks: u64 = after_command.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / per_second.max(1))
}

/// The value of metric `name` (without labels) in a Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A minimal HTTP/1.0 request on loopback: (status, body).
pub fn http(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let body = json_body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Kills every live process whose working directory is inside `dir`.
pub fn kill_processes_in(dir: &Path) {
    for pid in processes_in(dir) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Whether the machine has a cgroup v2 hierarchy at `/sys/fs/cgroup`.
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
}

/// The cgroup tree that has v1 `controller` (`/sys/fs/cgroup/<controller>`), or the one v2
/// tree.
pub fn cgroup_tree(controller: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if cgroup_v2() { root.to_path_buf() } else { root.join(controller) }
}

/// Removes the cgroups agents made for the instances whose sandboxes are under `dir`
/// (`<dir>/<agent>/sandboxes/<id>`, in the default hierarchy `/sys/fs/cgroup`, parent
/// `baton`): an agent killed by a test leaves them, empty once their processes are killed.
pub fn remove_instance_cgroups(dir: &Path) {
    let root = Path::new("/sys/fs/cgroup");
    let trees: Vec<PathBuf> = std::iter::once(root.to_path_buf())
        .chain(baton_agent::cgroups::V1_CONTROLLERS.iter().map(|c| root.join(c)))
        .collect();
    let Ok(agents) = std::fs::read_dir(dir) else { return };
    let mut left = Vec::new();
    for agent in agents.flatten() {
        let Ok(sandboxes) = std::fs::read_dir(agent.path().join("sandboxes")) else { continue };
        for sandbox in sandboxes.flatten() {
            for tree in &trees {
                let cgroup = tree.join("baton").join(agent.file_name()).join(sandbox.file_name());
                if cgroup.is_dir() {
                    left.push(cgroup);
                }
            }
        }
    }
    // Killed processes leave their cgroup when the kernel has reaped them: a moment.
    poll(Duration::from_secs(5), || {
        left.retain(|cgroup| std::fs::remove_dir(cgroup).is_err() && cgroup.is_dir());
        left.is_empty().then_some(())
    });
}

/// Polls `check` until it returns `Some`; panics with `what` and `context()` (logs) on
/// timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, context: impl Fn() -> String, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}\n{}", context()))
}

/// A running `baton dev` on a fresh data dir and a free port.
pub struct Baton {
    proc: Proc,
    pub port: u16,
    pub kubeconfig: PathBuf,
    kubectl: Kubectl,
    /// The host ports its agents hand out (unless the test gave `--ports`).
    _ports: PortBlock,
    // Last, so the processes above are stopped before the directory goes.
    data_dir: tempfile::TempDir,
}

impl Baton {
    /// Starts `binary dev` with `agents` agents and waits until the API answers kubectl.
    pub fn start_dev(binary: &Path, agents: u32) -> Self {
        Self::start_dev_with(binary, agents, &[])
    }

    /// As [`Baton::start_dev`], with more arguments for `baton dev`.
    pub fn start_dev_with(binary: &Path, agents: u32, extra: &[&str]) -> Self {
        let data_dir = tempfile::Builder::new().prefix("baton-e2e-").tempdir().expect("a temporary data dir");
        let port = free_port();
        let home = data_dir.path().join("home");
        std::fs::create_dir_all(&home).expect("a HOME for kubectl's cache");
        let kubeconfig = data_dir.path().join("data").join("kubeconfig");
        let args = vec![
            "dev".into(),
            "--data-dir".into(),
            data_dir.path().join("data").into_os_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--agents".into(),
            agents.to_string().into(),
        ];
        let ports = PortBlock::take();
        let mut args: Vec<std::ffi::OsString> = args.into_iter().chain(extra.iter().map(Into::into)).collect();
        if !extra.contains(&"--ports") {
            args.extend(["--ports".into(), ports.to_string().into()]);
        }
        let env = vec![("RUST_LOG".to_string(), "info,baton_controllers=debug".to_string())];
        let proc = Proc::start("baton dev", binary, args, env, data_dir.path().join("baton.log"));
        let kubectl = Kubectl { kubeconfig: kubeconfig.clone(), home };
        let mut baton = Baton { proc, port, kubeconfig, kubectl, _ports: ports, data_dir };
        baton.wait_until_serving();
        baton
    }

    fn wait_until_serving(&mut self) {
        self.wait_for("the API server to answer `kubectl get apps`", Duration::from_secs(60), |b| {
            (b.kubeconfig.exists() && b.kubectl(&["get", "apps"]).status.success()).then_some(())
        });
    }

    /// A raw HTTPS client for the API, as the kubeconfig describes it.
    pub fn api(&self) -> ApiClient {
        ApiClient::from_kubeconfig(&self.kubeconfig)
    }

    /// The pid of the current run.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// The data directory (the store, the kubeconfig, the agents' sandboxes).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// Runs kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl.run(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        self.kubectl.run(args, input)
    }

    /// Runs kubectl and returns its stdout; fails the test with stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(args, None).unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// `kubectl … -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        self.kubectl.json(args).unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// Polls `check` until it returns `Some`; fails with `what` and the log's end, or at
    /// once if baton exits meanwhile.
    pub fn wait_for<T>(&mut self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        let mut exited = None;
        let found = poll(timeout, || {
            if let Some(status) = self.proc.exited() {
                exited = Some(status);
                return Some(None);
            }
            check(self).map(Some)
        });
        match (found, exited) {
            (_, Some(status)) => panic!("baton exited ({status}) while waiting for {what}\n{}", self.log_tail()),
            (Some(Some(value)), _) => value,
            _ => panic!("timed out after {timeout:?} waiting for {what}\n{}", self.log_tail()),
        }
    }

    /// The last 60 lines of Baton's log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail(60)
    }

    /// Stops baton with SIGTERM and waits (at most 30 s) for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.stop()
    }

    /// SIGKILLs baton, as a crash would: what it started keeps running.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts baton again on the same data dir and port and waits until it serves.
    pub fn restart(&mut self) {
        self.proc.restart();
        self.wait_until_serving();
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if self.proc.is_running() {
            // A clean stop first, so baton stops its instances itself.
            let _ = kill(Pid::from_raw(self.proc.pid as i32), Signal::SIGTERM);
            let _ = poll(Duration::from_secs(15), || self.proc.exited());
        }
        self.proc.kill();
        kill_processes_in(self.data_dir.path());
    }
}
