//! The agent: one per machine. It offers the machine's resources, runs the instances the
//! controller assigns to it as processes, and reports what happens to them.
//!
//! - Registers `/baton/agents/<name>` under a lease it keeps alive: when the agent dies, the
//!   key expires and the controller knows.
//! - Watches `/baton/instances/<name>/` (its own assignments, nothing else) and starts each
//!   instance in its own sandbox and process group; stops it when its goal becomes
//!   `Stopped` (SIGTERM, SIGKILL after the grace period) or its record is deleted.
//! - Writes `/baton/status/<name>/<id>` when something the controller decides on changes
//!   (phase, a health check passing or failing, steadiness, readiness) and otherwise at most
//!   every `status_refresh`, in batched transactions; only ever under its own name.
//! - After a restart it re-adopts the processes a previous run started that still run
//!   (matched by pid and start time) instead of restarting them; those that ended while
//!   it was away are reported `Lost` (or `Killed`, if they were to be stopped).
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
use baton_store::{EventKind, KeyValue, Keyspace, LeaseId, Op, Store, Txn};

pub mod cgroups;
pub mod checks;
pub mod fetch;
pub mod hollow;
pub mod https;
pub mod join;
pub mod logger;
pub mod logs;
pub mod machine;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod sandbox;
pub mod status;
pub mod usage;

use process::{Adopted, Handle};
use status::StatusWriter;

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
    /// Stop every instance when the agent stops (`baton dev`). Otherwise instances keep
    /// running and the next run of the agent adopts them, so an agent can be restarted or
    /// upgraded without restarting what it runs.
    pub stop_instances_on_exit: bool,
    pub metrics: Arc<metrics::AgentMetrics>,
    /// How instances' output reaches their log files.
    pub logging: process::Logging,
    /// A status is written at once when something the controller decides on changes (see
    /// [`StatusRecord::differs_for_decisions`]); probe counters and times alone at most this
    /// often. Zero: after every probe.
    pub status_refresh: Duration,
    /// Where to serve the sandboxes (instances' output) to the API server, over TLS; `None`:
    /// not served.
    pub sandbox_listen: Option<std::net::SocketAddr>,
    /// Which cgroups hold instances, and how they are limited.
    pub cgroups: cgroups::Settings,
    /// How often an instance's use of cpu, memory and disk is measured (and its sandbox held
    /// to its `disk`).
    pub usage_interval: Duration,
}

/// Agent errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] baton_store::Error),
    #[error("work dir {path}: {source}")]
    WorkDir { path: String, source: std::io::Error },
    #[error("serving sandboxes on {listen}: {source}")]
    Serve { listen: std::net::SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Cgroups(String),
}

/// The PATH instances get: the agent's own, or a standard one.
fn instance_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Runs the agent until `shutdown`.
pub async fn run(store: Arc<dyn Store>, config: AgentConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let sandboxes = config.work_dir.join("sandboxes");
    std::fs::create_dir_all(&sandboxes)
        .map_err(|source| Error::WorkDir { path: sandboxes.display().to_string(), source })?;
    let hierarchy = cgroups::Hierarchy::detect(&config.cgroups, &config.name).map_err(Error::Cgroups)?.map(Arc::new);
    match &hierarchy {
        Some(h) => tracing::info!(
            agent = config.name,
            version = if h.is_v2() { "v2" } else { "v1" },
            cpu = ?config.cgroups.cpu,
            "instances run in their own cgroups"
        ),
        None => tracing::info!(agent = config.name, "instances run without cgroups"),
    }
    let running = sandbox::Running::default();
    let served = CancellationToken::new();
    let endpoint = match config.sandbox_listen {
        Some(listen) => {
            let sandboxes = sandbox::Sandboxes {
                store: store.clone(),
                keys: config.keys.clone(),
                work_dir: config.work_dir.clone(),
                running: running.clone(),
            };
            let endpoint = sandbox::start(listen, &config.host, &config.name, sandboxes, served.clone())
                .await
                .map_err(|source| Error::Serve { listen, source })?;
            tracing::info!(agent = config.name, url = endpoint.url, "serving sandboxes");
            Some(endpoint)
        }
        None => None,
    };
    let record = AgentRecord { sandbox: endpoint, ..agent_record(&config) };
    let lease = register(&store, &config, &record).await?;
    config.metrics.registered.set(1);
    let registration = CancellationToken::new();
    let keep_alive = tokio::spawn(keep_registered(store.clone(), config.clone(), record, lease, registration.clone()));

    let (writer, writer_task) = StatusWriter::start(store.clone());
    let (exits, mut exited) = mpsc::unbounded_channel();
    let mut agent = Agent {
        store: store.clone(),
        config: config.clone(),
        writer,
        supervised: HashMap::new(),
        ended: HashSet::new(),
        exits,
        running,
        hierarchy,
    };
    agent.recover().await?;
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
    if config.stop_instances_on_exit {
        agent.stop_all().await;
    } else {
        agent.leave_running();
    }
    // Every status is written before the agent says it stopped.
    drop(agent);
    let _ = writer_task.await;
    registration.cancel();
    let _ = keep_alive.await;
    served.cancel();
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
        sandbox: None,
    }
}

/// Writes the agent's key under a fresh lease.
async fn register(store: &Arc<dyn Store>, config: &AgentConfig, record: &AgentRecord) -> Result<LeaseId, Error> {
    let lease = store.grant_lease(config.lease_ttl).await?;
    let value = serde_json::to_vec(record).expect("an agent record serializes");
    store.txn(Txn::new().and_then([Op::put_with_lease(config.keys.agent(&config.name), value, lease)])).await?;
    tracing::info!(agent = config.name, resources = config.resources.display(), "registered");
    Ok(lease)
}

/// Renews the lease at a third of its TTL; registers again if it expired (the agent was
/// paused or cut off from the store longer than the TTL). When `done`: if instances were
/// stopped, revokes the lease so the agent disappears at once; otherwise lets it run out,
/// so a restart within the TTL is not seen as the agent going away.
async fn keep_registered(
    store: Arc<dyn Store>,
    config: AgentConfig,
    record: AgentRecord,
    mut lease: LeaseId,
    done: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.lease_ttl / 3) => {}
            _ = done.cancelled() => {
                if config.stop_instances_on_exit {
                    let _ = store.revoke_lease(lease).await;
                }
                return;
            }
        }
        let registered = match store.keep_alive(lease).await {
            Ok(_) => true,
            Err(baton_store::Error::LeaseNotFound(_)) => {
                tracing::warn!(agent = config.name, "registration expired; registering again");
                match register(&store, &config, &record).await {
                    Ok(new) => {
                        lease = new;
                        true
                    }
                    Err(e) => {
                        tracing::warn!(agent = config.name, error = %e, "could not register again");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(agent = config.name, error = %e, "could not renew the registration");
                false
            }
        };
        config.metrics.registered.set(i64::from(registered));
    }
}

/// An instance under supervision: how to ask it to stop, and its task.
struct Supervised {
    /// Sends the grace period, in seconds.
    stop: Option<oneshot::Sender<u32>>,
    task: JoinHandle<()>,
    /// The record was deleted: once the process is gone, clean up its status and sandbox.
    forget_when_done: bool,
}

struct Agent {
    store: Arc<dyn Store>,
    config: AgentConfig,
    writer: StatusWriter,
    supervised: HashMap<String, Supervised>,
    /// Instances whose end is reported: an instance runs at most once, and its final
    /// status is never overwritten.
    ended: HashSet<String>,
    exits: mpsc::UnboundedSender<String>,
    /// Instances whose process runs, for followed logs.
    running: sandbox::Running,
    /// Where instances' cgroups go; `None`: no cgroups.
    hierarchy: Option<Arc<cgroups::Hierarchy>>,
}

/// How a supervised instance begins.
enum Start {
    /// Start its process.
    New,
    /// Follow the process an earlier run of the agent started; its last status.
    Adopted(Adopted, Box<StatusRecord>),
}

impl Agent {
    fn keys(&self) -> &Keyspace {
        &self.config.keys
    }

    fn status_key(&self, id: &str) -> String {
        self.keys().status(&self.config.name, id)
    }

    /// After a (re)start: processes an earlier run started that still run are adopted;
    /// those that ended meanwhile get a final status.
    async fn recover(&mut self) -> Result<(), Error> {
        let statuses = self.store.range(&self.keys().agent_statuses(&self.config.name)).await?;
        for kv in statuses.kvs {
            let Some((_, id)) = self.keys().parse_status_key(&kv.key) else { continue };
            let id = id.to_string();
            let Ok(mut status) = serde_json::from_slice::<StatusRecord>(&kv.value) else { continue };
            if status.phase.is_terminal() {
                continue;
            }
            let record = self
                .store
                .get(&self.keys().instance(&self.config.name, &id))
                .await?
                .and_then(|kv| serde_json::from_slice::<InstanceRecord>(&kv.value).ok());
            let adopted = status.pid.zip(status.pid_start_ticks).and_then(|(pid, ticks)| Adopted::find(pid, ticks));
            match (adopted, record) {
                (Some(process), Some(record)) => {
                    tracing::info!(
                        agent = self.config.name,
                        instance = id,
                        pid = process.pid,
                        "adopted a running instance"
                    );
                    self.supervise(record, Start::Adopted(process, Box::new(status)));
                }
                (Some(process), None) => {
                    // Its record is gone: it must not run.
                    let mut handle = Handle::Adopted(process);
                    handle.stop(Duration::from_secs(3)).await;
                    handle.kill_leftovers();
                    self.forget(&id);
                }
                (None, record) => {
                    // Its pid was never recorded if the earlier run was killed just after
                    // starting it: what still runs of it goes, and it does not start again
                    // (chaos seed 414869: it ran as two processes at once). One whose
                    // recorded process ended needs no search for it.
                    if status.pid.is_none() {
                        let cgroup = self.hierarchy.as_ref().map(|h| h.cgroup(&id));
                        let sandbox = process::sandbox_dir(&self.config.work_dir, &id);
                        process::kill_unrecorded(&id, cgroup.as_ref(), &sandbox).await;
                    }
                    self.ended.insert(id.clone());
                    let stopping = record.is_some_and(|r| r.goal == Goal::Stopped);
                    status.phase = if stopping { Phase::Killed } else { Phase::Lost };
                    status.finished_at = Some(Timestamp::now());
                    status.message = Some("the process ended while the agent was not running".into());
                    tracing::info!(agent = self.config.name, instance = id, phase = %status.phase, "found ended while the agent was away");
                    self.writer.put(self.status_key(&id), &status);
                    self.remove_cgroup(&id);
                }
            }
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
        self.ended.extend(reported.iter().filter(|(_, s)| s.phase.is_terminal()).map(|(id, _)| id.clone()));
        let mut assigned = HashSet::new();
        for kv in &records.kvs {
            if let Some(record) = parse_record(kv) {
                assigned.insert(record.id.clone());
                let status = reported.get(&record.id).cloned();
                self.on_record(record, status.as_ref());
            }
        }
        // Instances whose record went while the agent was not watching go too.
        let gone: Vec<String> =
            reported.into_keys().chain(self.supervised.keys().cloned()).filter(|id| !assigned.contains(id)).collect();
        for id in gone {
            self.on_deleted(&id);
        }
        let mut watch = self.store.watch_current(&prefix, records.revision + 1).await?;
        loop {
            tokio::select! {
                batch = watch.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    for event in batch?.events {
                        match event.kind {
                            EventKind::Put => {
                                if let Some(record) = parse_record(&event.kv) {
                                    self.on_record(record, None);
                                }
                            }
                            EventKind::Delete => {
                                if let Some((_, id)) = self.keys().parse_instance_key(&event.kv.key) {
                                    let id = id.to_string();
                                    self.on_deleted(&id);
                                }
                            }
                        }
                    }
                }
                Some(id) = exited.recv() => {
                    self.running.remove(&id);
                    self.ended.insert(id.clone());
                    self.config.metrics.ended.inc();
                    if let Some(supervised) = self.supervised.remove(&id)
                        && supervised.forget_when_done
                    {
                        self.forget(&id);
                    }
                    self.config.metrics.instances.set(self.supervised.len() as i64);
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Acts on an assignment: start it, stop it, or nothing. `reported` is its last
    /// status, when known.
    fn on_record(&mut self, record: InstanceRecord, reported: Option<&StatusRecord>) {
        let id = record.id.clone();
        if self.ended.contains(&id) {
            return; // Over: an instance id runs at most once.
        }
        match (record.goal, self.supervised.get_mut(&id)) {
            (Goal::Running, Some(_)) => {}
            (Goal::Running, None) => self.supervise(record, Start::New),
            (Goal::Stopped, Some(supervised)) => {
                if let Some(stop) = supervised.stop.take() {
                    let _ = stop.send(record.run.kill_grace_seconds);
                }
            }
            (Goal::Stopped, None) => {
                // Nothing runs here (it was stopped before it started): report it stopped.
                let mut status = reported.cloned().unwrap_or_else(|| StatusRecord::new(Phase::Killed));
                status.phase = Phase::Killed;
                status.finished_at.get_or_insert_with(Timestamp::now);
                status.message.get_or_insert_with(|| "stopped before it started".into());
                self.writer.put(self.status_key(&id), &status);
                self.ended.insert(id);
            }
        }
    }

    /// The record is gone: stop the process if it still runs, then forget the instance.
    fn on_deleted(&mut self, id: &str) {
        match self.supervised.get_mut(id) {
            Some(supervised) => {
                supervised.forget_when_done = true;
                if let Some(stop) = supervised.stop.take() {
                    let _ = stop.send(0);
                }
            }
            None => self.forget(id),
        }
    }

    /// Removes the instance's cgroup, if it has one left (what is in it is killed).
    fn remove_cgroup(&self, id: &str) {
        let Some(hierarchy) = &self.hierarchy else { return };
        let cgroup = hierarchy.cgroup(id);
        if cgroup.exists() {
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = cgroup.remove().await {
                    tracing::warn!(instance = id, error = %e, "could not remove the cgroup");
                }
            });
        }
    }

    /// Deletes the instance's status, sandbox and cgroup.
    fn forget(&mut self, id: &str) {
        self.ended.remove(id);
        self.writer.delete(self.status_key(id));
        self.remove_cgroup(id);
        let sandbox = process::sandbox_dir(&self.config.work_dir, id);
        if let Err(e) = std::fs::remove_dir_all(&sandbox)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(instance = id, sandbox = %sandbox.display(), error = %e, "could not remove the sandbox");
        }
    }

    fn supervise(&mut self, record: InstanceRecord, start: Start) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let id = record.id.clone();
        let instance = Instance {
            writer: self.writer.clone(),
            status_key: self.status_key(&record.id),
            sandbox: process::sandbox_dir(&self.config.work_dir, &record.id),
            record,
            logging: self.config.logging.clone(),
            refresh: self.config.status_refresh,
            hierarchy: self.hierarchy.clone(),
            fetch_cache: fetch::cache_dir(&self.config.work_dir),
            usage_interval: self.config.usage_interval,
        };
        if matches!(start, Start::New) {
            self.config.metrics.started.inc();
        }
        self.running.insert(&id);
        let task = tokio::spawn(instance.run(start, stop_rx, self.exits.clone()));
        self.supervised.insert(id, Supervised { stop: Some(stop_tx), task, forget_when_done: false });
        self.config.metrics.instances.set(self.supervised.len() as i64);
    }

    /// Stops every instance and waits for them (`baton dev` at exit).
    async fn stop_all(&mut self) {
        let mut tasks = Vec::new();
        for (_, mut supervised) in self.supervised.drain() {
            if let Some(stop) = supervised.stop.take() {
                let _ = stop.send(SHUTDOWN_GRACE_SECONDS);
            }
            tasks.push(supervised.task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Leaves every instance running for the next run of the agent to adopt.
    fn leave_running(&mut self) {
        for (_, supervised) in self.supervised.drain() {
            supervised.task.abort();
        }
    }
}

/// The grace period instances get when `baton dev` stops: short, so stopping is quick.
const SHUTDOWN_GRACE_SECONDS: u32 = 5;

fn parse_record(kv: &KeyValue) -> Option<InstanceRecord> {
    match serde_json::from_slice(&kv.value) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(key = kv.key, error = %e, "ignoring an unreadable assignment");
            None
        }
    }
}

/// One instance's supervision: from start (or adoption) to its end, reporting each phase.
struct Instance {
    writer: StatusWriter,
    status_key: String,
    sandbox: PathBuf,
    record: InstanceRecord,
    logging: process::Logging,
    /// Probe results and usage that change no decision are written at most this often.
    refresh: Duration,
    hierarchy: Option<Arc<cgroups::Hierarchy>>,
    /// Where artifacts fetched with `cache` are kept.
    fetch_cache: PathBuf,
    /// How often usage is measured.
    usage_interval: Duration,
}

impl Instance {
    async fn run(self, start: Start, mut stop: oneshot::Receiver<u32>, exits: mpsc::UnboundedSender<String>) {
        let id = self.record.id.clone();
        if let Some((handle, status, cgroup)) = self.begin(start, &mut stop).await {
            self.follow(handle, status, cgroup, stop).await;
        }
        let _ = exits.send(id);
    }

    /// Starts the process (or takes over the adopted one) with its cgroup; `None` if it
    /// never ran.
    async fn begin(
        &self,
        start: Start,
        stop: &mut oneshot::Receiver<u32>,
    ) -> Option<(Handle, StatusRecord, Option<cgroups::Cgroup>)> {
        match start {
            Start::Adopted(process, mut status) => {
                checks::prepare(&mut status, &self.record);
                // Its cgroup is where the earlier run put it, found from its id.
                let cgroup = self.hierarchy.as_ref().map(|h| h.cgroup(&self.record.id)).filter(|c| c.exists());
                Some((Handle::Adopted(process), *status, cgroup))
            }
            Start::New => {
                let mut status = StatusRecord::new(Phase::Staging);
                self.writer.put(self.status_key.clone(), &status);
                if stop.try_recv().is_ok() {
                    self.end(&mut status, Phase::Killed, "stopped before it started".into());
                    return None;
                }
                // An earlier run of the agent may have started it and been killed before it
                // wrote anything of it. Before the port check (what it left may hold the
                // instance's ports) and the fetch (which makes the sandbox: a new instance has
                // none yet, so nothing is searched for it).
                let leftover = self.hierarchy.as_ref().map(|h| h.cgroup(&self.record.id));
                process::kill_unrecorded(&self.record.id, leftover.as_ref(), &self.sandbox).await;
                if let Some((port, e)) = process::port_in_use(&self.record) {
                    tracing::info!(instance = self.record.id, port, error = %e, "a host port is taken");
                    status.reason = Some(baton_api::records::REASON_PORT_IN_USE.into());
                    let message = format!(
                        "host port {port} is held by another process on this agent's host ({e}); \
                         the instance did not start"
                    );
                    self.end(&mut status, Phase::Failed, message);
                    return None;
                }
                if !self.record.run.fetch.is_empty() {
                    tokio::select! {
                        fetched = self.fetch() => if let Err(e) = fetched {
                            tracing::info!(instance = self.record.id, error = %e, "fetching failed");
                            status.reason = Some(baton_api::records::REASON_FETCH_FAILED.into());
                            self.end(&mut status, Phase::Failed, e);
                            return None;
                        },
                        _ = &mut *stop => {
                            self.end(&mut status, Phase::Killed, "stopped while fetching its artifacts".into());
                            return None;
                        }
                    }
                }
                let cgroup = match &self.hierarchy {
                    Some(hierarchy) => match hierarchy.create(&self.record.id, &self.record.run.resources) {
                        Ok(cgroup) => Some(cgroup),
                        Err(e) => {
                            // What was made of it goes.
                            let _ = hierarchy.cgroup(&self.record.id).remove().await;
                            self.end(&mut status, Phase::Failed, format!("could not create its cgroup: {e}"));
                            return None;
                        }
                    },
                    None => None,
                };
                let loggers = self.hierarchy.as_ref().map(|h| h.loggers());
                let cgroups = cgroup
                    .as_ref()
                    .zip(loggers.as_ref())
                    .map(|(instance, loggers)| process::Cgroups { instance, loggers });
                match process::start(&self.record, &self.sandbox, &instance_path(), &self.logging, cgroups) {
                    Ok(process) => {
                        status.phase = Phase::Running;
                        status.pid = Some(process.pid);
                        status.pid_start_ticks = process.start_ticks;
                        status.started_at = Some(Timestamp::now());
                        checks::prepare(&mut status, &self.record);
                        self.writer.put(self.status_key.clone(), &status);
                        tracing::info!(instance = self.record.id, pid = process.pid, "started");
                        Some((Handle::Started(Box::new(process)), status, cgroup))
                    }
                    Err(e) => {
                        if let Some(cgroup) = &cgroup {
                            let _ = cgroup.remove().await;
                        }
                        self.end(&mut status, Phase::Failed, format!("could not start the command: {e}"));
                        None
                    }
                }
            }
        }
    }

    /// Fetches the instance's artifacts into its sandbox; an error names the URI and why.
    async fn fetch(&self) -> Result<(), String> {
        let owner = match &self.record.run.user {
            Some(user) => {
                let (uid, gid) = process::run_as(user).map_err(|e| format!("could not start the command: {e}"))?;
                Some((uid.as_raw(), gid.as_raw()))
            }
            None => None,
        };
        let disk = self.record.run.resources.disk_mib;
        let limit = (disk > 0).then_some(disk << 20);
        let (items, sandbox, cache) = (self.record.run.fetch.clone(), self.sandbox.clone(), self.fetch_cache.clone());
        let started = tokio::time::Instant::now();
        let fetched = tokio::task::spawn_blocking(move || fetch::fetch_all(&items, &sandbox, &cache, limit, owner))
            .await
            .map_err(|e| format!("fetching stopped: {e}"))?;
        match fetched {
            Ok(()) => {
                tracing::info!(instance = self.record.id, seconds = started.elapsed().as_secs_f64(), "fetched");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Probes the process' health and measures its use while it runs; waits for it to end on
    /// its own, to be stopped, or to outgrow its disk, then reports the end.
    async fn follow(
        &self,
        mut handle: Handle,
        mut status: StatusRecord,
        cgroup: Option<cgroups::Cgroup>,
        mut stop: oneshot::Receiver<u32>,
    ) {
        let mut checks = checks::Checks::start(
            &self.record,
            &self.sandbox,
            process::environment(&self.record, &self.sandbox, &instance_path()),
        );
        let mut meter = usage::Meter::new(cgroup.clone(), self.sandbox.clone(), self.record.run.resources.disk_mib);
        let mut measure = tokio::time::interval(self.usage_interval.max(Duration::from_millis(100)));
        measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What the store has: a probe's result is written when it changes what the controller
        // decides on, or when the last write is `refresh` old.
        let mut written = status.clone();
        let mut written_at = tokio::time::Instant::now();
        let mut over_disk = None;
        let (exit, stopped) = loop {
            tokio::select! {
                exit = handle.wait() => break (exit, false),
                requested = &mut stop => {
                    // No sender: the agent is gone without asking; stop at once.
                    let grace = Duration::from_secs(u64::from(requested.unwrap_or(0)));
                    status.phase = Phase::Killing;
                    self.writer.put(self.status_key.clone(), &status);
                    break (handle.stop(grace).await, true);
                }
                report = checks.next() => {
                    let was = status.health.iter().map(|r| r.passing).collect::<Vec<_>>();
                    checks::apply(&mut status, &self.record, report);
                    let now: Vec<Option<bool>> = status.health.iter().map(|r| r.passing).collect();
                    if was != now {
                        let output = status.health.iter().filter_map(|r| r.last_output.as_deref()).collect::<Vec<_>>();
                        tracing::info!(instance = self.record.id, passing = ?now, ?output, "health changed");
                    }
                }
                _ = measure.tick() => {
                    let measured = meter.measure().await;
                    status.usage = measured.usage.map(Box::new);
                    if let Some(over) = measured.over_disk {
                        tracing::info!(instance = self.record.id, used = over.used, limit = over.limit, "over its disk");
                        status.phase = Phase::Killing;
                        self.writer.put(self.status_key.clone(), &status);
                        over_disk = Some(over);
                        break (handle.stop(Duration::from_secs(u64::from(self.record.run.kill_grace_seconds))).await, false);
                    }
                }
            }
            let decisive = written.differs_for_decisions(&status, &self.record.run.health_checks);
            if decisive || (status != written && written_at.elapsed() >= self.refresh) {
                self.writer.put(self.status_key.clone(), &status);
                written = status.clone();
                written_at = tokio::time::Instant::now();
            }
        };
        drop(checks);
        handle.kill_leftovers();
        // What the cgroup says at the end: the last usage, and whether the kernel killed
        // anything in it for its memory.
        let last = meter.measure_cpu_and_memory();
        if last.is_some() {
            status.usage = last.map(Box::new);
        }
        let oom_kills = cgroup.as_ref().map_or(0, |c| c.counters().oom_kills);
        let memory_limit = cgroup.as_ref().and_then(|c| c.memory_limit());
        if let Some(cgroup) = &cgroup
            && let Err(e) = cgroup.remove().await
        {
            tracing::warn!(instance = self.record.id, error = %e, "could not remove the cgroup");
        }
        handle.flush_logs(Duration::from_secs(2)).await;
        status.exit_code = exit.code;
        status.signal = exit.signal;
        status.forced_after_seconds = exit.forced_after.map(|grace| grace.as_secs().min(u64::from(u32::MAX)) as u32);
        let stderr = || {
            let tail = process::tail(&self.sandbox.join("stderr"), 512);
            if tail.is_empty() { String::new() } else { format!("; stderr ends with: {tail}") }
        };
        let (phase, message) = if stopped {
            (Phase::Killed, format!("stopped: {}", exit.describe_stop()))
        } else if let Some(over) = over_disk {
            status.reason = Some(baton_api::records::REASON_DISK_LIMIT_EXCEEDED.into());
            (
                Phase::Failed,
                format!(
                    "{}: its sandbox took {} MiB, over its disk of {} MiB, so it was stopped: {}",
                    baton_api::records::REASON_DISK_LIMIT_EXCEEDED,
                    over.used >> 20,
                    over.limit >> 20,
                    exit.describe_stop()
                ),
            )
        } else if oom_kills > 0 && !exit.success() {
            status.reason = Some(baton_api::records::REASON_OOM_KILLED.into());
            let limit = memory_limit.map_or_else(String::new, |bytes| format!(" of {} MiB", bytes >> 20));
            let what = if oom_kills == 1 { "a process".to_string() } else { format!("{oom_kills} processes") };
            (
                Phase::Failed,
                format!(
                    "{}: it went over its memory limit{limit} and the kernel killed {what} of it; {}{}",
                    baton_api::records::REASON_OOM_KILLED,
                    exit.describe(),
                    stderr()
                ),
            )
        } else if !exit.is_known() {
            (Phase::Lost, exit.describe())
        } else if exit.success() {
            (Phase::Finished, exit.describe())
        } else {
            (Phase::Failed, format!("{}{}", exit.describe(), stderr()))
        };
        tracing::info!(instance = self.record.id, phase = %phase, exit = exit.describe(), reason = ?status.reason, "ended");
        self.end(&mut status, phase, message);
    }

    fn end(&self, status: &mut StatusRecord, phase: Phase, message: String) {
        status.phase = phase;
        status.finished_at = Some(Timestamp::now());
        status.message = Some(message);
        self.writer.put(self.status_key.clone(), status);
    }
}
