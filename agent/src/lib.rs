//! The agent: one per machine. It offers the machine's resources, runs the instances the
//! controller assigns to it as processes, and reports what happens to them.
//!
//! - Registers `/baton/agents/<name>` under a lease it keeps alive: when the agent dies, the
//!   key expires and the controller knows.
//! - Watches `/baton/instances/<name>/` (its own assignments, nothing else) and starts each
//!   instance in its own sandbox and process group; stops it when its goal becomes
//!   `Stopped` (SIGTERM, SIGKILL after the grace period) or its record is deleted.
//! - Writes `/baton/status/<name>/<id>` at every change of phase; only ever under its name.
//! - After a restart it finds the processes a previous run left behind (by pid and start
//!   time), stops them and reports them `Lost`, so the controller replaces them.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use baton_api::{AgentRecord, Goal, InstanceRecord, Phase, PortRange, ResourceAmounts, StatusRecord};
use baton_store::{EventKind, KeyValue, Keyspace, LeaseId, Op, Store, StoreExt, Txn};

pub mod machine;
pub mod process;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unique among agents; a restarted agent must keep its name.
    pub name: String,
    /// Where its instances' ports are reachable.
    pub host: String,
    pub resources: ResourceAmounts,
    pub attributes: BTreeMap<String, String>,
    pub ports: Vec<PortRange>,
    /// Sandboxes live in `<work_dir>/sandboxes/<instance>/`.
    pub work_dir: PathBuf,
    /// The agent's key expires this long after its last renewal.
    pub lease_ttl: Duration,
    pub keys: Keyspace,
}

/// Agent errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] baton_store::Error),
    #[error("work dir {path}: {source}")]
    WorkDir { path: String, source: std::io::Error },
}

/// The PATH instances get: the agent's own, or a standard one.
fn instance_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Runs the agent until `shutdown`; then stops every instance and deregisters.
pub async fn run(store: Arc<dyn Store>, config: AgentConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let sandboxes = config.work_dir.join("sandboxes");
    std::fs::create_dir_all(&sandboxes)
        .map_err(|source| Error::WorkDir { path: sandboxes.display().to_string(), source })?;
    let registration = register(&store, &config).await?;
    let keep_alive = tokio::spawn(keep_registered(store.clone(), config.clone(), registration, shutdown.clone()));

    let (exits, mut exited) = mpsc::unbounded_channel();
    let mut agent =
        Agent { store: store.clone(), config: config.clone(), running: HashMap::new(), ended: HashSet::new(), exits };
    agent.recover_leftovers().await?;
    while !shutdown.is_cancelled() {
        match agent.follow(&mut exited, &shutdown).await {
            Ok(()) if shutdown.is_cancelled() => break,
            Ok(()) => tracing::warn!(agent = config.name, "the watch of assignments ended; resyncing"),
            Err(e) => tracing::warn!(agent = config.name, error = %e, "following assignments failed; resyncing"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    agent.stop_all().await;
    // On shutdown the keep-alive task revokes the lease, which deletes the agent's key at
    // once rather than when the TTL runs out.
    let _ = keep_alive.await;
    tracing::info!(agent = config.name, "stopped");
    Ok(())
}

fn agent_record(config: &AgentConfig) -> AgentRecord {
    AgentRecord {
        name: config.name.clone(),
        host: config.host.clone(),
        resources: config.resources,
        attributes: config.attributes.clone(),
        ports: config.ports.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: Timestamp::now(),
    }
}

/// Writes the agent's key under a fresh lease.
async fn register(store: &Arc<dyn Store>, config: &AgentConfig) -> Result<LeaseId, Error> {
    let lease = store.grant_lease(config.lease_ttl).await?;
    let value = serde_json::to_vec(&agent_record(config)).expect("an agent record serializes");
    store.txn(Txn::new().and_then([Op::put_with_lease(config.keys.agent(&config.name), value, lease)])).await?;
    tracing::info!(agent = config.name, resources = config.resources.display(), "registered");
    Ok(lease)
}

/// Renews the lease at a third of its TTL; registers again if it expired (e.g. the agent
/// was paused longer than the TTL).
async fn keep_registered(store: Arc<dyn Store>, config: AgentConfig, mut lease: LeaseId, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.lease_ttl / 3) => {}
            _ = shutdown.cancelled() => {
                let _ = store.revoke_lease(lease).await;
                return;
            }
        }
        match store.keep_alive(lease).await {
            Ok(_) => {}
            Err(baton_store::Error::LeaseNotFound(_)) => {
                tracing::warn!(agent = config.name, "registration expired; registering again");
                match register(&store, &config).await {
                    Ok(new) => lease = new,
                    Err(e) => tracing::warn!(agent = config.name, error = %e, "could not register again"),
                }
            }
            Err(e) => tracing::warn!(agent = config.name, error = %e, "could not renew the registration"),
        }
    }
}

/// A running instance: how to ask it to stop, and its supervising task.
struct Running {
    stop: Option<oneshot::Sender<u32>>,
    task: JoinHandle<()>,
    /// The record was deleted: once the process is gone, clean up its status and sandbox.
    forget_when_done: bool,
}

struct Agent {
    store: Arc<dyn Store>,
    config: AgentConfig,
    running: HashMap<String, Running>,
    /// Instances whose end is reported: an instance runs at most once, and its final
    /// status is never overwritten.
    ended: HashSet<String>,
    exits: mpsc::UnboundedSender<String>,
}

impl Agent {
    fn keys(&self) -> &Keyspace {
        &self.config.keys
    }

    async fn write_status(&self, id: &str, status: &StatusRecord) {
        write_status(&self.store, &self.keys().status(&self.config.name, id), status).await;
    }

    /// Processes a previous run of this agent left running are stopped and reported `Lost`,
    /// so the controller replaces them.
    async fn recover_leftovers(&mut self) -> Result<(), Error> {
        let statuses = self.store.range(&self.keys().agent_statuses(&self.config.name)).await?;
        for kv in statuses.kvs {
            let Some((_, id)) = self.keys().parse_status_key(&kv.key) else { continue };
            let Ok(mut status) = serde_json::from_slice::<StatusRecord>(&kv.value) else { continue };
            if status.phase.is_terminal() {
                continue;
            }
            let message = match (status.pid, status.pid_start_ticks) {
                (Some(pid), Some(ticks)) if process::is_alive(pid, ticks) => {
                    process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    format!("the agent restarted; its process {pid} was stopped")
                }
                _ => "the agent restarted and the process was gone".to_string(),
            };
            tracing::info!(agent = self.config.name, instance = id, message, "recovered");
            status.phase = Phase::Lost;
            status.finished_at = Some(Timestamp::now());
            status.message = Some(message);
            self.write_status(id, &status).await;
        }
        Ok(())
    }

    /// Reads the agent's assignments, acts on them, then follows changes until the watch
    /// fails or `shutdown`.
    async fn follow(
        &mut self,
        exited: &mut mpsc::UnboundedReceiver<String>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let prefix = self.keys().agent_instances(&self.config.name);
        let records = self.store.range(&prefix).await?;
        let statuses = self.store.range(&self.keys().agent_statuses(&self.config.name)).await?;
        let mut reported: HashMap<String, StatusRecord> = HashMap::new();
        for kv in &statuses.kvs {
            if let (Some((_, id)), Ok(status)) =
                (self.keys().parse_status_key(&kv.key), serde_json::from_slice(&kv.value))
            {
                reported.insert(id.to_string(), status);
            }
        }
        self.ended = reported.iter().filter(|(_, s)| s.phase.is_terminal()).map(|(id, _)| id.clone()).collect();
        let mut assigned = HashSet::new();
        for kv in &records.kvs {
            if let Some(record) = parse_record(kv) {
                assigned.insert(record.id.clone());
                let status = reported.get(&record.id);
                self.on_record(record, status).await;
            }
        }
        // Statuses whose record is gone (deleted while the agent was away) go too.
        let orphaned: Vec<String> =
            reported.into_keys().filter(|id| !assigned.contains(id) && !self.running.contains_key(id)).collect();
        for id in orphaned {
            self.forget(&id).await;
        }
        let mut watch = self.store.watch(&prefix, records.revision + 1).await?;
        loop {
            tokio::select! {
                batch = watch.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    for event in batch?.events {
                        match event.kind {
                            EventKind::Put => {
                                if let Some(record) = parse_record(&event.kv) {
                                    self.on_record(record, None).await;
                                }
                            }
                            EventKind::Delete => {
                                if let Some((_, id)) = self.keys().parse_instance_key(&event.kv.key) {
                                    let id = id.to_string();
                                    self.on_deleted(&id).await;
                                }
                            }
                        }
                    }
                }
                Some(id) = exited.recv() => {
                    self.ended.insert(id.clone());
                    if let Some(running) = self.running.remove(&id)
                        && running.forget_when_done
                    {
                        self.forget(&id).await;
                    }
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Acts on an assignment: start it, stop it, or nothing. `reported` is its last
    /// status, when known.
    async fn on_record(&mut self, record: InstanceRecord, reported: Option<&StatusRecord>) {
        let id = record.id.clone();
        if self.ended.contains(&id) {
            return; // Over: an instance id runs at most once.
        }
        match (record.goal, self.running.get_mut(&id)) {
            (Goal::Running, Some(_)) => {}
            (Goal::Running, None) => self.start(record),
            (Goal::Stopped, Some(running)) => {
                if let Some(stop) = running.stop.take() {
                    let _ = stop.send(record.kill_grace_seconds);
                }
            }
            (Goal::Stopped, None) => {
                // Nothing runs here (it was stopped before it started): report it stopped.
                let mut status = reported.cloned().unwrap_or_else(|| StatusRecord::new(Phase::Killed));
                status.phase = Phase::Killed;
                status.finished_at.get_or_insert_with(Timestamp::now);
                status.message.get_or_insert_with(|| "stopped before it started".into());
                self.write_status(&id, &status).await;
                self.ended.insert(id);
            }
        }
    }

    /// The record is gone: stop the process if it still runs, then forget the instance.
    async fn on_deleted(&mut self, id: &str) {
        match self.running.get_mut(id) {
            Some(running) => {
                running.forget_when_done = true;
                if let Some(stop) = running.stop.take() {
                    let _ = stop.send(0);
                }
            }
            None => self.forget(id).await,
        }
    }

    /// Deletes the instance's status and sandbox.
    async fn forget(&mut self, id: &str) {
        self.ended.remove(id);
        if let Err(e) = self.store.delete(&self.keys().status(&self.config.name, id)).await {
            tracing::warn!(instance = id, error = %e, "could not delete the status");
        }
        let sandbox = process::sandbox_dir(&self.config.work_dir, id);
        if let Err(e) = std::fs::remove_dir_all(&sandbox)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(instance = id, sandbox = %sandbox.display(), error = %e, "could not remove the sandbox");
        }
    }

    fn start(&mut self, record: InstanceRecord) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let id = record.id.clone();
        let task = tokio::spawn(supervise(
            self.store.clone(),
            self.keys().status(&self.config.name, &record.id),
            process::sandbox_dir(&self.config.work_dir, &record.id),
            record,
            stop_rx,
            self.exits.clone(),
        ));
        self.running.insert(id, Running { stop: Some(stop_tx), task, forget_when_done: false });
    }

    /// Stops every instance (at shutdown) and waits for them.
    async fn stop_all(&mut self) {
        let mut tasks = Vec::new();
        for (_, mut running) in self.running.drain() {
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(u32::MAX);
            }
            tasks.push(running.task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn parse_record(kv: &KeyValue) -> Option<InstanceRecord> {
    match serde_json::from_slice(&kv.value) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(key = kv.key, error = %e, "ignoring an unreadable assignment");
            None
        }
    }
}

async fn write_status(store: &Arc<dyn Store>, key: &str, status: &StatusRecord) {
    let value = serde_json::to_vec(status).expect("a status serializes");
    if let Err(e) = store.put(key, value).await {
        tracing::warn!(key, error = %e, "could not write an instance status");
    }
}

/// The grace period a stop request asks for: the record's, except at agent shutdown
/// (`u32::MAX`), where it is capped so shutdown stays quick.
fn grace_of(requested: u32, record: &InstanceRecord) -> Duration {
    const SHUTDOWN_GRACE_CAP: u32 = 5;
    let seconds = if requested == u32::MAX { record.kill_grace_seconds.min(SHUTDOWN_GRACE_CAP) } else { requested };
    Duration::from_secs(u64::from(seconds))
}

/// Runs one instance from start to end, reporting each phase.
async fn supervise(
    store: Arc<dyn Store>,
    status_key: String,
    sandbox: PathBuf,
    record: InstanceRecord,
    mut stop: oneshot::Receiver<u32>,
    exits: mpsc::UnboundedSender<String>,
) {
    let mut status = StatusRecord::new(Phase::Staging);
    write_status(&store, &status_key, &status).await;
    let ended = |status: &mut StatusRecord, phase: Phase, message: Option<String>| {
        status.phase = phase;
        status.finished_at = Some(Timestamp::now());
        status.message = message;
    };
    if stop.try_recv().is_ok() {
        ended(&mut status, Phase::Killed, Some("stopped before it started".into()));
        write_status(&store, &status_key, &status).await;
        let _ = exits.send(record.id.clone());
        return;
    }
    let mut child = match process::start(&record, &sandbox, &instance_path()) {
        Ok(child) => child,
        Err(e) => {
            ended(&mut status, Phase::Failed, Some(format!("could not start the command: {e}")));
            write_status(&store, &status_key, &status).await;
            let _ = exits.send(record.id.clone());
            return;
        }
    };
    status.phase = Phase::Running;
    status.pid = Some(child.pid);
    status.pid_start_ticks = child.start_ticks;
    status.started_at = Some(Timestamp::now());
    write_status(&store, &status_key, &status).await;
    tracing::info!(instance = record.id, pid = child.pid, "started");

    let (exit, stopped) = tokio::select! {
        exit = child.wait() => (exit, false),
        requested = &mut stop => {
            let grace = match requested {
                Ok(seconds) => grace_of(seconds, &record),
                Err(_) => Duration::ZERO, // The agent is gone: stop at once.
            };
            status.phase = Phase::Killing;
            write_status(&store, &status_key, &status).await;
            (child.stop(grace).await, true)
        }
    };
    child.kill_leftovers();
    status.exit_code = exit.code;
    status.signal = exit.signal;
    let (phase, message) = if stopped {
        (Phase::Killed, Some(format!("stopped: {}", exit.describe())))
    } else if exit.success() {
        (Phase::Finished, Some(exit.describe()))
    } else {
        let stderr = process::tail(&sandbox.join("stderr"), 512);
        let message = if stderr.is_empty() {
            exit.describe()
        } else {
            format!("{}; stderr ends with: {stderr}", exit.describe())
        };
        (Phase::Failed, Some(message))
    };
    ended(&mut status, phase, message);
    tracing::info!(instance = record.id, phase = %phase, exit = exit.describe(), "ended");
    write_status(&store, &status_key, &status).await;
    let _ = exits.send(record.id.clone());
}
