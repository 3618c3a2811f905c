//! Hollow agents, as Kubernetes' kubemark has hollow nodes: one process registers many agents
//! and plays their part in the store — follows the instances assigned to them and reports
//! phases, health and readiness on a schedule — without starting any process. What the
//! controllers, the API server and the store see is what real agents make them see, so a
//! cluster of 10,000 agents can be measured on one machine.
//!
//! Per instance, as a real agent writes it: `Staging` when it is assigned, `Running` (passing
//! its health checks and ready) after the start delay, `Killed` once its goal is `Stopped`, its
//! status deleted with its record. Optionally one instance in `fail_one_in` fails (exit 1)
//! after running for `fail_after`. Statuses go through [`StatusWriter`]s, as a real agent's
//! do (batched transactions), each agent's always through the same one of [`WRITERS`];
//! registration too is batched, all the agents of one process under one lease (a real agent
//! keeps one each: 10,000 keep-alive streams would measure etcd's lease handling, not
//! Baton).

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use baton_api::{AgentRecord, CheckResult, Goal, InstanceRecord, Phase, PortRange, ResourceAmounts, StatusRecord};
use baton_store::{EventKind, Keyspace, LeaseId, Op, Store, Txn};

use crate::Error;
use crate::status::StatusWriter;

/// How a process of hollow agents behaves.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Agents are named `<prefix>-00001`, `<prefix>-00002`, ….
    pub prefix: String,
    pub count: usize,
    pub host: String,
    pub resources: ResourceAmounts,
    /// Each agent also gets `rack=r<i mod racks>`.
    pub attributes: BTreeMap<String, String>,
    pub racks: usize,
    pub ports: Vec<PortRange>,
    pub lease_ttl: Duration,
    pub keys: Keyspace,
    /// From assigned (Staging) to Running, healthy and ready.
    pub start_delay: Duration,
    /// One instance in this many fails after running `fail_after` (0: none fails).
    pub fail_one_in: u64,
    pub fail_after: Duration,
}

/// What happens next to an instance.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    Run,
    Fail,
}

/// An instance's `(agent, id)`.
type Slot = (String, String);

/// When what falls due for which instance, earliest first.
type Due = BinaryHeap<std::cmp::Reverse<(Instant, Slot, Next)>>;

/// The instances the hollow agents hold, and what each does next.
struct Hollow {
    config: HollowConfig,
    writers: Writers,
    /// `(agent, id)` → the record, for the instances assigned to these agents.
    held: HashMap<Slot, InstanceRecord>,
    due: Due,
    pid: u32,
}

/// Runs `config.count` hollow agents until `shutdown`.
pub async fn run(store: Arc<dyn Store>, config: HollowConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let names: Vec<String> = (1..=config.count).map(|i| format!("{}-{i:05}", config.prefix)).collect();
    let lease = register(&store, &config, &names).await?;
    tracing::info!(agents = config.count, prefix = config.prefix, "hollow agents registered");
    let keep_alive = tokio::spawn(keep_registered(store.clone(), config.clone(), names.clone(), lease));
    let (writers, writer_tasks): (Vec<StatusWriter>, Vec<_>) =
        (0..WRITERS).map(|_| StatusWriter::start(store.clone())).unzip();
    let writers = Writers(writers);
    let mut hollow =
        Hollow { config: config.clone(), writers, held: HashMap::new(), due: BinaryHeap::new(), pid: 1000 };
    let ours: std::collections::HashSet<String> = names.into_iter().collect();
    let result = hollow.follow(&store, &ours, &shutdown).await;
    keep_alive.abort();
    let _ = store.revoke_lease(lease).await;
    drop(hollow);
    for task in writer_tasks {
        let _ = task.await;
    }
    result
}

/// Writes every agent's key, in batches, under one fresh lease.
async fn register(store: &Arc<dyn Store>, config: &HollowConfig, names: &[String]) -> Result<LeaseId, Error> {
    let lease = store.grant_lease(config.lease_ttl).await?;
    for (i, chunk) in names.chunks(baton_store::MAX_TXN_OPS).enumerate() {
        let ops: Vec<Op> = chunk
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let n = i * baton_store::MAX_TXN_OPS + j;
                let mut attributes = config.attributes.clone();
                attributes.insert("rack".into(), format!("r{}", n % config.racks.max(1)));
                let record = AgentRecord {
                    name: name.clone(),
                    host: config.host.clone(),
                    resources: config.resources,
                    attributes,
                    ports: config.ports.clone(),
                    version: format!("{}-hollow", env!("CARGO_PKG_VERSION")),
                    started_at: Timestamp::now(),
                    sandbox: None,
                };
                let value = serde_json::to_vec(&record).expect("an agent record serializes");
                Op::put_with_lease(config.keys.agent(name), value, lease)
            })
            .collect();
        store.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(lease)
}

/// Renews the lease at a third of its TTL; registers every agent again if it expired.
async fn keep_registered(store: Arc<dyn Store>, config: HollowConfig, names: Vec<String>, mut lease: LeaseId) {
    loop {
        tokio::time::sleep(config.lease_ttl / 3).await;
        match store.keep_alive(lease).await {
            Ok(_) => {}
            Err(baton_store::Error::LeaseNotFound(_)) => {
                tracing::warn!("hollow agents' registration expired; registering again");
                if let Ok(new) = register(&store, &config, &names).await {
                    lease = new;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the hollow agents' registration"),
        }
    }
}

impl Hollow {
    /// Loads the instances assigned to these agents, then follows every change.
    async fn follow(
        &mut self,
        store: &Arc<dyn Store>,
        ours: &std::collections::HashSet<String>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let keys = self.config.keys.clone();
        loop {
            let listed = store.range(&keys.instances()).await?;
            for kv in &listed.kvs {
                if let Some((agent, _)) = keys.parse_instance_key(&kv.key)
                    && ours.contains(agent)
                    && let Ok(record) = serde_json::from_slice::<InstanceRecord>(&kv.value)
                {
                    self.assigned(record);
                }
            }
            let mut watch = store.watch_current(&keys.instances(), listed.revision + 1).await?;
            loop {
                let next_due = self.due.peek().map(|std::cmp::Reverse((at, _, _))| *at);
                let batch = tokio::select! {
                    batch = watch.next() => batch,
                    _ = sleep_until(next_due) => {
                        self.fall_due();
                        continue;
                    }
                    _ = shutdown.cancelled() => return Ok(()),
                };
                let Some(Ok(batch)) = batch else {
                    tracing::warn!("the hollow agents' watch ended; reloading");
                    break;
                };
                for event in batch.events {
                    let Some((agent, id)) = keys.parse_instance_key(&event.kv.key) else { continue };
                    if !ours.contains(agent) {
                        continue;
                    }
                    let slot = (agent.to_string(), id.to_string());
                    match event.kind {
                        EventKind::Delete => {
                            self.held.remove(&slot);
                            self.writers.of(agent).delete(keys.status(agent, id));
                        }
                        EventKind::Put => {
                            if let Ok(record) = serde_json::from_slice::<InstanceRecord>(&event.kv.value) {
                                self.assigned(record);
                            }
                        }
                    }
                }
                self.fall_due();
            }
        }
    }

    /// A record written for one of these agents: a new instance starts staging; one asked
    /// to stop is killed at once.
    fn assigned(&mut self, record: InstanceRecord) {
        let slot = (record.agent.clone(), record.id.clone());
        let key = self.config.keys.status(&record.agent, &record.id);
        match (record.goal, self.held.contains_key(&slot)) {
            (Goal::Running, false) => {
                let mut status = StatusRecord::new(Phase::Staging);
                status.started_at = Some(Timestamp::now());
                self.writers.of(&record.agent).put(key, &status);
                self.due.push(std::cmp::Reverse((Instant::now() + self.config.start_delay, slot.clone(), Next::Run)));
            }
            (Goal::Stopped, true) => {
                let mut status = StatusRecord::new(Phase::Killed);
                status.finished_at = Some(Timestamp::now());
                status.signal = Some(15);
                self.writers.of(&record.agent).put(key, &status);
            }
            _ => {}
        }
        self.held.insert(slot, record);
    }

    /// Runs what has fallen due.
    fn fall_due(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, _, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(std::cmp::Reverse((_, slot, next))) = self.due.pop() else { break };
            let Some(record) = self.held.get(&slot) else { continue };
            if record.goal != Goal::Running {
                continue;
            }
            let key = self.config.keys.status(&slot.0, &slot.1);
            match next {
                Next::Run => {
                    self.pid = self.pid.wrapping_add(1).max(1000);
                    self.writers.of(&slot.0).put(key, &running(record, self.pid));
                    let fails =
                        self.config.fail_one_in > 0 && fingerprint(&record.id).is_multiple_of(self.config.fail_one_in);
                    if fails {
                        self.due.push(std::cmp::Reverse((now + self.config.fail_after, slot, Next::Fail)));
                    }
                }
                Next::Fail => {
                    let mut status = StatusRecord::new(Phase::Failed);
                    status.finished_at = Some(Timestamp::now());
                    status.exit_code = Some(1);
                    status.message = Some("a hollow instance failing on schedule".into());
                    self.writers.of(&slot.0).put(key, &status);
                }
            }
        }
    }
}

/// Status writers of one process of hollow agents. Real agents each write their own, all at
/// once; through one writer (one transaction at a time) the statuses of 10,000 fell behind
/// the controller: with its launches written three transactions at a time, every record was
/// written 8.3 s after the first create and every instance Running only 4.7 s later, with a
/// start delay of 1 s. Through four, 1.0–1.2 s later (`hack/bench.sh cluster`).
const WRITERS: usize = 4;

/// The status writers of the hollow agents, each agent's statuses always through the same
/// one (in the order they were made).
struct Writers(Vec<StatusWriter>);

impl Writers {
    fn of(&self, agent: &str) -> &StatusWriter {
        &self.0[fingerprint(agent) as usize % self.0.len()]
    }
}

/// A running instance's status: every health check passing, ready.
fn running(record: &InstanceRecord, pid: u32) -> StatusRecord {
    let now = Timestamp::now();
    let passing = || CheckResult {
        passing: Some(true),
        consecutive_successes: 1,
        last_success: Some(now),
        ..CheckResult::default()
    };
    let mut status = StatusRecord::new(Phase::Running);
    status.pid = Some(pid);
    status.started_at = Some(now);
    status.health = record.run.health_checks.iter().map(|_| passing()).collect();
    status.healthy_at = Some(now);
    status.readiness = (!record.run.readiness_checks.is_empty()).then(|| Box::new(passing()));
    status
}

/// A stable number of an instance id (FNV-1a), to pick which instances fail.
fn fingerprint(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
