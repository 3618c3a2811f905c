//! Running one instance as a process: its sandbox, its environment, its process group, and
//! stopping it (SIGTERM to the group, SIGKILL after the grace period).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use baton_api::InstanceRecord;
use baton_api::records::Command;
use baton_api::validation::env_port_suffix;

/// Where an instance's files live: `<work-dir>/sandboxes/<instance id>/`.
pub fn sandbox_dir(work_dir: &Path, id: &str) -> PathBuf {
    work_dir.join("sandboxes").join(id)
}

/// The environment of an instance: a minimal base (PATH, LANG), the app's env, then the
/// variables the agent sets, which the app may not override (validation forbids it).
pub fn environment(record: &InstanceRecord, sandbox: &Path, path: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), path.to_string());
    if let Ok(lang) = std::env::var("LANG") {
        env.insert("LANG".to_string(), lang);
    }
    env.insert("HOME".to_string(), sandbox.display().to_string());
    env.extend(record.run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (index, port) in record.ports.iter().enumerate() {
        env.insert(format!("PORT{index}"), port.port.to_string());
        if let Some(name) = &port.name {
            env.insert(format!("PORT_{}", env_port_suffix(name)), port.port.to_string());
        }
        if port.requested != 0 {
            env.insert(format!("PORT_{}", port.requested), port.port.to_string());
        }
    }
    if let Some(first) = record.ports.first() {
        env.insert("PORT".to_string(), first.port.to_string());
    }
    let all: Vec<String> = record.ports.iter().map(|p| p.port.to_string()).collect();
    env.insert("PORTS".to_string(), all.join(","));
    env.insert("HOST".to_string(), record.host.clone());
    env.insert("BATON_APP".to_string(), record.run.app.name.clone());
    env.insert("BATON_NAMESPACE".to_string(), record.run.app.namespace.clone());
    env.insert("BATON_APP_VERSION".to_string(), record.run.version.clone());
    env.insert("BATON_INSTANCE".to_string(), record.id.clone());
    env.insert("BATON_AGENT".to_string(), record.agent.clone());
    env.insert("BATON_SANDBOX".to_string(), sandbox.display().to_string());
    env
}

/// A started instance process, leader of its own process group.
pub struct Process {
    child: tokio::process::Child,
    /// The loggers of its output, which end after it (their input ends).
    loggers: Vec<tokio::process::Child>,
    pub pid: u32,
    /// Start time in clock ticks after boot: with the pid, identifies the process.
    pub start_ticks: Option<u64>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Asked to stop, it did not end within this grace period after SIGTERM: SIGKILL followed.
    pub forced_after: Option<Duration>,
}

impl Exit {
    pub(crate) fn of(status: ExitStatus) -> Self {
        Self { code: status.code(), signal: status.signal(), forced_after: None }
    }

    /// Unknown: an adopted process that is gone.
    const UNKNOWN: Exit = Exit { code: None, signal: None, forced_after: None };

    pub fn success(self) -> bool {
        self.code == Some(0)
    }

    /// Whether the exit status is known (it is not for an adopted process).
    pub fn is_known(self) -> bool {
        self.code.is_some() || self.signal.is_some()
    }

    pub fn describe(self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => {
                let name =
                    Signal::try_from(signal).map(|s| s.as_str().to_string()).unwrap_or_else(|_| signal.to_string());
                format!("killed by signal {name}")
            }
            (None, None) => "ended (exit status unknown: the process was adopted after an agent restart)".to_string(),
        }
    }

    /// As [`Exit::describe`], saying when SIGKILL followed the grace period.
    pub fn describe_stop(self) -> String {
        match self.forced_after {
            Some(grace) => format!(
                "{}: it did not stop within its grace period of {} s after SIGTERM, so SIGKILL followed",
                self.describe(),
                grace.as_secs()
            ),
            None => self.describe(),
        }
    }
}

/// How an instance's output reaches its log files: through a logger process per stream
/// ([`crate::logger`]: rotation, a time index, survives agent restarts), or, without one,
/// straight into the files.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    /// The program run as `<program> logger --file F --max-bytes N --keep K` (the `baton`
    /// binary), and as `<program> enter-cgroup …` to start an instance in its cgroup; `None`:
    /// output goes straight to the files, unrotated.
    pub program: Option<PathBuf>,
    pub rotation: crate::logger::Rotation,
}

/// Where one output stream of an instance goes: a pipe to a started logger, or the file.
fn output(sandbox: &Path, stream: &str, logging: &Logging) -> std::io::Result<(Stdio, Option<tokio::process::Child>)> {
    let file = sandbox.join(stream);
    let Some(program) = &logging.program else {
        return Ok((Stdio::from(std::fs::File::create(&file)?), None));
    };
    let (reader, writer) = std::io::pipe()?;
    let logger = tokio::process::Command::new(program)
        .arg("logger")
        .arg("--file")
        .arg(&file)
        .arg("--max-bytes")
        .arg(logging.rotation.max_bytes.to_string())
        .arg("--keep")
        .arg(logging.rotation.keep.to_string())
        // Not in the sandbox: what runs there is the instance's.
        .current_dir("/")
        .env_clear()
        .stdin(Stdio::from(reader))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: signals to the instance's group (and Ctrl-C on a terminal) do not
        // reach it; it ends when the last writer of its pipe is gone.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    Ok((Stdio::from(writer), Some(logger)))
}

/// The first of the instance's host ports that something else on this host holds, and what
/// binding it said. Checked before the process starts: a port taken by another process (a
/// program outside Baton, another cluster's instance on the same machine) would otherwise
/// answer the instance's health checks for it while it starts — an instance "healthy" before
/// it listens — or make it fail to bind at once. Binding the wildcard address, as instances
/// that listen on every interface do, conflicts with a listener on any address; a port in
/// TIME_WAIT after an earlier instance does not count (the address is reused). Only "address
/// in use" counts: a port the agent itself may not bind (below 1024, not root) may still be
/// the instance's to bind.
pub fn port_in_use(record: &InstanceRecord) -> Option<(u16, std::io::Error)> {
    record.ports.iter().filter(|p| p.port != 0).find_map(|p| {
        match std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, p.port)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some((p.port, e)),
            _ => None,
        }
    })
}

/// The uid and gid to run `user`'s processes as: an error naming the user when it is unknown
/// on this machine, or when the agent (not root) cannot switch to it.
pub fn run_as(user: &str) -> std::io::Result<(nix::unistd::Uid, nix::unistd::Gid)> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| std::io::Error::other(format!("looking up user {user:?}: {e}")))?
        .ok_or_else(|| std::io::Error::other(format!("no user {user:?} on this agent's machine")))?;
    let me = nix::unistd::geteuid();
    if !me.is_root() && me != found.uid {
        return Err(std::io::Error::other(format!(
            "cannot run as user {user:?}: the agent runs as uid {me}, not as root, and cannot switch users"
        )));
    }
    Ok((found.uid, found.gid))
}

/// Whether `user` (`uid`, `gid`) can get to `dir`: every directory above it searchable by it.
/// Else an error naming the first that is not, so the instance's status says what to fix
/// (the agent's `--work-dir` must be reachable by the users apps run as).
fn reachable_by(dir: &Path, user: &str, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)?;
        let mode = meta.mode();
        let searchable = if meta.uid() == uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(std::io::Error::other(format!(
                "user {user:?} cannot reach its sandbox {}: {} (mode {:o}) is not searchable by it; \
                 make the agent's work dir reachable (e.g. chmod o+x)",
                dir.display(),
                ancestor.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// An instance's cgroup, and the one its log writers go to.
#[derive(Debug, Clone, Copy)]
pub struct Cgroups<'a> {
    pub instance: &'a crate::cgroups::Cgroup,
    pub loggers: &'a crate::cgroups::Cgroup,
}

/// Starts the instance's command in `sandbox` (created if missing), with stdout and stderr
/// going to log files there (see [`Logging`]), in a new process group — and in its cgroup
/// when given: through `baton enter-cgroup` (the [`Logging::program`]), which enters it
/// before executing the command, so nothing the command starts is ever outside it.
pub fn start(
    record: &InstanceRecord,
    sandbox: &Path,
    path: &str,
    logging: &Logging,
    cgroups: Option<Cgroups<'_>>,
) -> std::io::Result<Process> {
    let cgroup = cgroups.map(|c| c.instance);
    std::fs::create_dir_all(sandbox)?;
    let (program, args): (String, Vec<String>) = match &record.run.command {
        Command::Shell(script) => ("/bin/sh".into(), vec!["-c".into(), script.clone()]),
        Command::Exec(args) => {
            let (program, rest) = args.split_first().ok_or_else(|| std::io::Error::other("empty args"))?;
            (program.clone(), rest.to_vec())
        }
    };
    let user = match &record.run.user {
        Some(user) => {
            let (uid, gid) = run_as(user)?;
            // The sandbox is the process' own, as Mesos hands it over.
            nix::unistd::chown(sandbox, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
            reachable_by(sandbox, user, uid, gid)?;
            Some((uid, gid))
        }
        None => None,
    };
    let (stdout, stdout_logger) = output(sandbox, "stdout", logging)?;
    let (stderr, stderr_logger) = output(sandbox, "stderr", logging)?;
    let loggers: Vec<tokio::process::Child> = stdout_logger.into_iter().chain(stderr_logger).collect();
    if let Some(cgroups) = cgroups {
        for pid in loggers.iter().filter_map(|l| l.id()) {
            cgroups.loggers.enter(pid)?;
        }
    }
    let entering = cgroup.zip(logging.program.as_ref());
    let mut command = match entering {
        Some((cgroup, baton)) => {
            let mut c = tokio::process::Command::new(baton);
            c.arg("enter-cgroup");
            for file in cgroup.procs_files() {
                c.arg("--procs").arg(file);
            }
            if let Some((uid, gid)) = user {
                c.arg("--uid").arg(uid.to_string()).arg("--gid").arg(gid.to_string());
            }
            c.arg("--").arg(&program).args(&args);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(&program);
            c.args(&args);
            if let Some((uid, gid)) = user {
                // As root, std drops the supplementary groups (setgroups) before setuid.
                c.uid(uid.as_raw()).gid(gid.as_raw());
            }
            c
        }
    };
    command
        .current_dir(sandbox)
        .env_clear()
        .envs(environment(record, sandbox, path))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    let spawned = command.spawn();
    // The pipes' write ends are the child's now: the loggers end when it and its own
    // children are gone.
    drop(command);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            drop(loggers); // They see the end of their input at once and exit.
            return Err(e);
        }
    };
    let pid = child.id().ok_or_else(|| std::io::Error::other("the process exited before its pid was read"))?;
    match (cgroup, entering) {
        // `baton enter-cgroup` moves itself in before it runs the command, but spawn returns
        // as soon as it runs, maybe before it has: the agent moves it too, so that it is in its
        // cgroup before anything is reported of it. Otherwise a container runtime killing the
        // agent's cgroup just after "Running" takes the instance with it (Loop run 37). Writing
        // a member's pid again changes nothing; a process already gone is no error here.
        (Some(cgroup), Some(_)) => match cgroup.enter(pid) {
            Err(e) if e.raw_os_error() != Some(nix::errno::Errno::ESRCH as i32) => return Err(e),
            _ => {}
        },
        // No `baton` to enter it before the command runs (a library use without one): moved
        // in at once, which misses only what it started in its first instants.
        (Some(cgroup), None) => cgroup.enter(pid)?,
        (None, _) => {}
    }
    Ok(Process { child, pid, start_ticks: start_ticks(pid), loggers })
}

impl Process {
    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => Exit::of(status),
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "waiting for an instance process");
                Exit::UNKNOWN
            }
        }
    }

    /// SIGTERM to the group; SIGKILL after `grace` if the leader is still there.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        signal_group(self.pid, Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Exit::of(status),
            _ => {
                signal_group(self.pid, Signal::SIGKILL);
                Exit { forced_after: Some(grace), ..self.wait().await }
            }
        }
    }

    /// Kills whatever is left in the group after the leader exited, so an instance leaves
    /// nothing behind. (The group id cannot be reused while any member lives.)
    pub fn kill_leftovers(&self) {
        signal_group(self.pid, Signal::SIGKILL);
    }

    /// Waits (at most `limit`) for the loggers to write the last output, once the process and
    /// its group are gone.
    pub async fn flush_logs(&mut self, limit: Duration) {
        for logger in &mut self.loggers {
            let _ = tokio::time::timeout(limit, logger.wait()).await;
        }
    }
}

/// A process a previous run of the agent started, still running: not a child of this
/// process, so its end is noticed by polling and its exit status cannot be known.
pub struct Adopted {
    pub pid: u32,
    pub start_ticks: u64,
}

/// How often an adopted process is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

impl Adopted {
    /// `Some` if `pid` still runs and started at `start_ticks` (so it is the same process).
    pub fn find(pid: u32, start_ticks: u64) -> Option<Self> {
        is_alive(pid, start_ticks).then_some(Self { pid, start_ticks })
    }

    async fn wait(&self) -> Exit {
        while is_alive(self.pid, self.start_ticks) {
            tokio::time::sleep(ADOPTED_POLL).await;
        }
        Exit::UNKNOWN
    }

    async fn stop(&self, grace: Duration) -> Exit {
        signal_group(self.pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            signal_group(self.pid, Signal::SIGKILL);
            self.wait().await;
            return Exit { forced_after: Some(grace), ..Exit::UNKNOWN };
        }
        Exit::UNKNOWN
    }
}

/// An instance's process: one this agent started, or one it adopted after a restart.
pub enum Handle {
    Started(Box<Process>),
    Adopted(Adopted),
}

impl Handle {
    pub fn pid(&self) -> u32 {
        match self {
            Handle::Started(p) => p.pid,
            Handle::Adopted(a) => a.pid,
        }
    }

    /// Waits for the process to end on its own.
    pub async fn wait(&mut self) -> Exit {
        match self {
            Handle::Started(p) => p.wait().await,
            Handle::Adopted(a) => a.wait().await,
        }
    }

    /// SIGTERM to the group; SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        match self {
            Handle::Started(p) => p.stop(grace).await,
            Handle::Adopted(a) => a.stop(grace).await,
        }
    }

    /// Kills what is left of the group after its leader ended.
    pub fn kill_leftovers(&self) {
        signal_group(self.pid(), Signal::SIGKILL);
    }

    /// Waits (at most `limit`) for the last output to be written, for a process this agent
    /// started (an adopted one's loggers are not its children).
    pub async fn flush_logs(&mut self, limit: Duration) {
        if let Handle::Started(p) = self {
            p.flush_logs(limit).await;
        }
    }
}

/// Sends `signal` to process group `pgid`; a group that is already gone is fine.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %e, "could not signal an instance's process group"),
    }
}

/// Kills what an earlier run of the agent started for instance `id` but never recorded (it
/// was killed between starting the process and writing its pid): the processes whose working
/// directory is its sandbox, each with its process group (one still entering its cgroup is not
/// in it yet), then whatever is in its cgroup, which goes with it ([`Cgroup::remove`]). How
/// many processes were found.
///
/// [`Cgroup::remove`]: crate::cgroups::Cgroup::remove
pub async fn kill_unrecorded(id: &str, cgroup: Option<&crate::cgroups::Cgroup>, sandbox: &Path) -> usize {
    let cgroup = cgroup.filter(|c| c.exists());
    let in_sandbox = if sandbox.exists() { processes_in_sandbox(sandbox) } else { Vec::new() };
    let in_cgroup = cgroup.map(|c| c.pids()).unwrap_or_default();
    for &pid in &in_sandbox {
        signal_group(pid, Signal::SIGKILL);
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
    if let Some(cgroup) = cgroup
        && let Err(e) = cgroup.remove().await
    {
        tracing::warn!(instance = id, error = %e, "could not remove a cgroup an earlier run left");
    }
    let live = |pid: &u32| start_ticks(*pid).is_some_and(|ticks| is_alive(*pid, ticks));
    for _ in 0..100 {
        if !in_sandbox.iter().any(live) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut found: Vec<u32> = in_sandbox.into_iter().chain(in_cgroup).collect();
    found.sort_unstable();
    found.dedup();
    if !found.is_empty() {
        tracing::warn!(
            instance = id,
            killed = found.len(),
            "killed processes an earlier run of the agent started for it but never recorded"
        );
    }
    found.len()
}

/// The processes whose working directory is `sandbox` (as the kernel names it: resolved).
fn processes_in_sandbox(sandbox: &Path) -> Vec<u32> {
    let Ok(sandbox) = sandbox.canonicalize() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == *sandbox))
        .collect()
}

/// The start time of `pid` in clock ticks after boot (`/proc/<pid>/stat`, field 22), or
/// `None` if there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the last ')'.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards: field 22 is the 20th.
    after_command.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `ticks` still runs (and is not a zombie).
pub fn is_alive(pid: u32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    parse_start_ticks(&stat) == Some(ticks) && state != Some("Z")
}

/// Live (not zombie) processes in process group `pgid`, from `/proc`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some(close) = stat.rfind(')') else { return false };
            // After ')': state (field 3), ppid (4), pgrp (5).
            let mut fields = stat[close + 1..].split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

/// The last `max` bytes of a file, as text, trimmed (for failure messages).
pub fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_api::records::AssignedPort;
    use baton_api::{AppRef, Goal, ResourceAmounts, RunSpec};
    use std::sync::Arc;

    #[tokio::test]
    async fn what_an_earlier_run_started_in_a_sandbox_is_found_and_killed() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandboxes").join("web-001");
        std::fs::create_dir_all(&sandbox).unwrap();
        // Named through a `..`: the kernel names a working directory resolved.
        let sandbox = dir.path().join("sandboxes").join("..").join("sandboxes").join("web-001");
        assert_eq!(kill_unrecorded("web-001", None, &sandbox).await, 0, "nothing runs there yet");
        let mut leftover =
            std::process::Command::new("sleep").arg("100").current_dir(&sandbox).process_group(0).spawn().unwrap();
        let mut elsewhere =
            std::process::Command::new("sleep").arg("100").current_dir(dir.path()).process_group(0).spawn().unwrap();
        assert_eq!(kill_unrecorded("web-001", None, &sandbox).await, 1);
        let status = leftover.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the leftover is killed");
        assert!(elsewhere.try_wait().unwrap().is_none(), "a process elsewhere is left alone");
        elsewhere.kill().unwrap();
        elsewhere.wait().unwrap();
        assert_eq!(
            kill_unrecorded("gone", None, &dir.path().join("sandboxes").join("gone")).await,
            0,
            "no sandbox, nothing"
        );
    }

    fn record() -> InstanceRecord {
        InstanceRecord {
            id: "web-abc".into(),
            agent: "a1".into(),
            host: "127.0.0.1".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            goal: Goal::Running,
            stop_reason: None,
            replaces: None,
            holds_slot: false,
            end_noted: false,
            ports: vec![
                AssignedPort { name: Some("http".into()), port: 31000, requested: 0 },
                AssignedPort { name: Some("metrics-http".into()), port: 31001, requested: 8080 },
            ],
            term: 0,
            planned_at: 0,
            run: Arc::new(RunSpec {
                app: AppRef { namespace: "default".into(), name: "web".into(), uid: "u".into() },
                scope: Default::default(),
                version: "v1".into(),
                whole_agent: false,
                command: Command::Shell("echo hi".into()),
                user: None,
                fetch: Vec::new(),
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                labels: Default::default(),
                resources: ResourceAmounts::default(),
                kill_grace_seconds: 3,
                health_checks: Vec::new(),
                readiness_checks: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_port_counts_as_taken_only_when_something_listens_on_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut record = record();
        record.ports = vec![AssignedPort { name: None, port, requested: 0 }];
        let (taken, e) = port_in_use(&record).expect("a listener on 127.0.0.1 holds the port");
        assert_eq!((taken, e.kind()), (port, std::io::ErrorKind::AddrInUse));
        drop(held);
        assert!(port_in_use(&record).is_none(), "freed");
    }

    #[test]
    fn environment_has_ports_names_and_identity() {
        let env = environment(&record(), Path::new("/sb/web-abc"), "/usr/bin:/bin");
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT1"), Some("31001"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001"));
        assert_eq!(get("PORT_HTTP"), Some("31000"));
        assert_eq!(get("PORT_METRICS_HTTP"), Some("31001"));
        assert_eq!(get("PORT_8080"), Some("31001"), "a service port names its host port too");
        assert_eq!(get("HOST"), Some("127.0.0.1"));
        assert_eq!(get("BATON_APP"), Some("web"));
        assert_eq!(get("BATON_INSTANCE"), Some("web-abc"));
        assert_eq!(get("GREETING"), Some("hello"));
        assert_eq!(get("PATH"), Some("/usr/bin:/bin"));
    }

    #[test]
    fn start_ticks_are_read_after_the_command() {
        let stat = "1234 (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 100";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert!(start_ticks(std::process::id()).is_some(), "this process has a start time");
        assert!(is_alive(std::process::id(), start_ticks(std::process::id()).unwrap()));
        assert!(!is_alive(std::process::id(), 1), "a different start time is a different process");
    }

    #[tokio::test]
    async fn a_process_runs_in_its_sandbox_and_its_group_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record();
        // A shell that starts a child and ignores SIGTERM: only SIGKILL ends the group.
        Arc::make_mut(&mut r.run).command = Command::Shell("trap '' TERM; sleep 60 & echo $PORT_HTTP; wait".into());
        Arc::make_mut(&mut r.run).kill_grace_seconds = 1;
        let sandbox = dir.path().join("web-abc");
        let mut process = start(&r, &sandbox, "/usr/bin:/bin", &Logging::default(), None).unwrap();
        assert!(process.start_ticks.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = process.stop(Duration::from_millis(300)).await;
        assert_eq!(exit.signal, Some(libc_sigkill()), "{}", exit.describe());
        process.kill_leftovers();
        assert_eq!(std::fs::read_to_string(sandbox.join("stdout")).unwrap().trim(), "31000");
        // Nothing of the group is left running.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(live_group_members(process.pid), Vec::<u32>::new());
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
    }

    #[tokio::test]
    async fn an_adopted_process_is_followed_and_stopped_by_pid_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record();
        Arc::make_mut(&mut r.run).command = Command::Shell("sleep 60".into());
        let process = start(&r, &dir.path().join("a"), "/usr/bin:/bin", &Logging::default(), None).unwrap();
        let (pid, ticks) = (process.pid, process.start_ticks.unwrap());
        assert!(Adopted::find(pid, ticks + 1).is_none(), "another start time is another process");
        let mut adopted = Handle::Adopted(Adopted::find(pid, ticks).expect("it runs"));
        assert!(tokio::time::timeout(Duration::from_millis(300), adopted.wait()).await.is_err(), "still running");
        let exit = adopted.stop(Duration::from_secs(2)).await;
        assert!(!exit.is_known());
        // The child of this test is a zombie until reaped; the adopted view sees it gone.
        drop(process);
        assert!(!is_alive(pid, ticks));
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record();
        Arc::make_mut(&mut r.run).command =
            Command::Exec(vec!["/bin/sh".into(), "-c".into(), "echo boom >&2; exit 3".into()]);
        let sandbox = dir.path().join("x");
        let mut process = start(&r, &sandbox, "/usr/bin:/bin", &Logging::default(), None).unwrap();
        let exit = process.wait().await;
        assert_eq!(exit.code, Some(3));
        assert_eq!(exit.describe(), "exited with status 3");
        assert_eq!(tail(&sandbox.join("stderr"), 100), "boom");
    }
}
