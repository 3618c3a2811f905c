//! A chaos run: a real cluster (etcd, API server, two controllers, three agents, real
//! processes) driven by a random sequence of user actions and faults drawn from a seed, a
//! recorder of every store change and every instance process, and a checker that reads the
//! history afterwards (see [`check`]).
//!
//! The sequence of actions and faults is a function of the seed alone, so a failing seed
//! replays the same story (the timing of what the cluster does in between is the machine's).
//! After the last step every fault is healed; the cluster must then converge to the specs
//! within [`CONVERGE_WITHIN`], with no process left of a deleted app or a stopped instance.

pub mod check;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use baton_api::{App, Goal, InstanceRecord, StatusRecord};
use baton_store::Store;

use crate::cluster::{Cluster, ClusterOptions};
use crate::{ProcessId, processes_in};

/// How long the cluster may take to reach every spec once the faults stop.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(120);

/// The names apps are given (a deleted one may come back: a new app of the same name).
const NAMES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub seed: u64,
    /// How many actions and faults.
    pub steps: usize,
    /// Where to write the record of the run (`store.jsonl`: every store change with the
    /// second it was seen; `processes.jsonl`: every instance process, when it was first and
    /// last seen; `steps.txt`).
    pub record_to: Option<&'a Path>,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Each step, as done.
    pub steps: Vec<String>,
    /// Every broken promise, one line each.
    pub violations: Vec<String>,
    /// From the last heal to every spec reached (None: not within the bound).
    pub converged_in: Option<Duration>,
    /// Store changes recorded.
    pub changes: usize,
    /// Instance record writes, and decisions (a leader's launches and stops for one app on
    /// one view), the checker judged.
    pub writes_checked: usize,
    pub decisions_checked: usize,
    pub launches: usize,
    pub stops: usize,
    /// Instance processes seen start and end.
    pub processes_started: usize,
    pub processes_ended: usize,
    pub duration: Duration,
    /// The end of every component's log (for a failure message).
    pub logs: String,
}

/// One app as the user last applied it.
#[derive(Debug, Clone)]
struct Model {
    instances: u32,
    /// `CHANGE` in its env: a new value is a new version.
    change: u32,
    /// Seconds before its process counts as started (its health check passes).
    slow: u32,
    checked: bool,
    min_health: f64,
    max_over: f64,
    max_starts: Option<u32>,
    restarts: u32,
}

impl Model {
    fn manifest(&self, name: &str, fail_dir: &Path) -> String {
        let mut m =
            format!("apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  namespace: default\n");
        if self.restarts > 0 {
            m += &format!("  annotations:\n    baton.dev/restartedAt: \"restart-{}\"\n", self.restarts);
        }
        m += &format!(
            "spec:\n  instances: {}\n  cmd: \"sleep {}; touch started; exec sleep 100000\"\n  resources:\n    cpus: 0.05\n    mem: 8\n  env:\n    CHANGE: \"{}\"\n  taskKillGracePeriodSeconds: 1\n  upgradeStrategy:\n    minimumHealthCapacity: {}\n    maximumOverCapacity: {}\n",
            self.instances, self.slow, self.change, self.min_health, self.max_over
        );
        if let Some(n) = self.max_starts {
            m += &format!("    maxConcurrentStarts: {n}\n");
        }
        if self.checked {
            let fail = fail_dir.join(format!("fail-{name}"));
            m += &format!(
                "  healthChecks:\n  - protocol: COMMAND\n    command:\n      value: \"test -e started && test ! -e {}\"\n    gracePeriodSeconds: {}\n    delaySeconds: 0\n    intervalSeconds: 1\n    timeoutSeconds: 1\n    maxConsecutiveFailures: 2\n  healthPolicy:\n    minHealthyRatio: 0.5\n    maxConcurrentReplacements: 1\n",
                fail.display(),
                self.slow + 5
            );
        }
        m
    }
}

/// Something to undo later.
#[derive(Debug, Clone)]
enum Heal {
    ResumeController(String),
    StartController(String),
    ResumeAgent(String),
    StartAgent(String),
    Recover(String),
    Undrain(String),
}

/// Instance processes as seen from outside: by (pid, start), the instance (its sandbox's
/// name) and whether it has ended.
#[derive(Default)]
struct Processes {
    seen: BTreeMap<ProcessId, Seen>,
    /// Instances seen with two processes at once.
    doubled: BTreeMap<String, Vec<u32>>,
}

struct Seen {
    instance: String,
    first: f64,
    last: f64,
    ended: bool,
}

struct Run<'c> {
    cluster: &'c mut Cluster,
    rng: StdRng,
    /// Draws for drains, apart from `rng`: a drain took the place of a step that only waited,
    /// and the seeds found before keep the rest of their stories.
    drains: StdRng,
    fail_dir: PathBuf,
    apps: BTreeMap<String, Model>,
    deleted: BTreeSet<String>,
    pending: Vec<(Instant, Heal)>,
    steps: Vec<String>,
    started: Instant,
}

/// The instance processes inside `dir`, with their instance ids: the command a chaos app
/// runs (its shell until it has started, then `sleep 100000`), which leads its process group
/// — not its health checks, nor a child the shell has forked and not yet exec'd.
fn instance_processes(dir: &Path) -> Vec<(u32, String)> {
    processes_in(dir)
        .into_iter()
        .filter(|pid| nix::unistd::getpgid(Some(Pid::from_raw(*pid as i32))).is_ok_and(|g| g.as_raw() == *pid as i32))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("touch started") || cmdline == "sleep\x00100000\x00"
        })
        .filter_map(|pid| Some((pid, sandbox_of(pid)?)))
        .collect()
}

/// The instance id of a process, from its working directory (`…/sandboxes/<id>`).
fn sandbox_of(pid: u32) -> Option<String> {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let mut parts = cwd.components().rev();
    let id = parts.next()?.as_os_str().to_str()?.to_string();
    (parts.next()?.as_os_str() == "sandboxes").then_some(id)
}

impl Run<'_> {
    fn note(&mut self, step: String) {
        eprintln!("chaos {:>6.1}s  {step}", self.started.elapsed().as_secs_f64());
        self.steps.push(step);
    }

    /// kubectl, retried for up to 60 s while the cluster is unavailable (etcd restarting).
    fn kubectl(&self, args: &[&str], input: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.cluster.kubectl.ok(args, input) {
                Ok(_) => return,
                Err(e) if e.contains("NotFound") || e.contains("not found") => return,
                // The run's own mistake, not the cluster's: no use retrying.
                Err(e) if e.contains("is invalid") || e.contains("Forbidden") => panic!("chaos: {e}"),
                Err(e) if Instant::now() >= deadline => {
                    panic!("chaos: {e} (for 60 s)\n{}", self.cluster.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn apply(&self, name: &str) {
        let manifest = self.apps[name].manifest(name, &self.fail_dir);
        self.kubectl(&["apply", "-f", "-"], Some(&manifest));
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.rng.random_range(0..items.len())])
    }

    fn later(&mut self, seconds: std::ops::Range<f64>, heal: Heal) {
        let after = Duration::from_secs_f64(self.rng.random_range(seconds));
        self.pending.push((Instant::now() + after, heal));
    }

    /// SIGKILL (`kill`: started again later) or SIGSTOP (resumed later) a controller or an
    /// agent, for a time drawn from `down` (seconds).
    fn fault(&mut self, name: String, controller: bool, kill: bool, down: std::ops::Range<f64>) {
        let process = if controller { self.cluster.controller(&name) } else { self.cluster.agent(&name) };
        match kill {
            true => process.kill(),
            false => process.pause(),
        }
        let signal = if kill { "SIGKILL" } else { "SIGSTOP" };
        self.note(format!("{signal} {} {name}", if controller { "leader" } else { "agent" }));
        let heal = match (controller, kill) {
            (true, true) => Heal::StartController(name),
            (true, false) => Heal::ResumeController(name),
            (false, true) => Heal::StartAgent(name),
            (false, false) => Heal::ResumeAgent(name),
        };
        self.later(down, heal);
    }

    fn heal(&mut self, heal: Heal) {
        match &heal {
            Heal::ResumeController(id) => self.cluster.controller(id).resume(),
            Heal::StartController(id) => self.cluster.controller(id).restart(),
            Heal::ResumeAgent(name) => self.cluster.agent(name).resume(),
            Heal::StartAgent(name) => self.cluster.agent(name).restart(),
            Heal::Recover(name) => {
                let _ = std::fs::remove_file(self.fail_dir.join(format!("fail-{name}")));
            }
            Heal::Undrain(agent) => {
                self.kubectl(&["delete", "maintenance", &format!("chaos-{agent}"), "--wait=false"], None)
            }
        }
        self.note(format!("heal: {heal:?}"));
    }

    fn heal_due(&mut self, all: bool) {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|(at, _)| all || *at <= now);
        self.pending = rest;
        for (_, heal) in due {
            self.heal(heal);
        }
    }

    /// Whether a process is down or paused (then it is not faulted again until healed).
    fn faulted(&self, name: &str) -> bool {
        self.pending.iter().any(|(_, h)| {
            matches!(h, Heal::ResumeController(n) | Heal::StartController(n) | Heal::ResumeAgent(n) | Heal::StartAgent(n) if n == name)
        })
    }

    fn new_model(&mut self) -> Model {
        let rng = &mut self.rng;
        Model {
            instances: rng.random_range(1..=4),
            change: 0,
            slow: [0, 1, 3][rng.random_range(0..3)],
            checked: rng.random_bool(0.7),
            min_health: [0.0, 0.5, 1.0][rng.random_range(0..3)],
            max_over: [0.0, 0.5, 1.0][rng.random_range(0..3)],
            max_starts: [None, Some(1), Some(2)][rng.random_range(0..3)],
            restarts: 0,
        }
    }

    fn step(&mut self) {
        let live: Vec<String> = self.apps.keys().cloned().collect();
        let roll = self.rng.random_range(0..100);
        match roll {
            // User actions.
            0..=14 if live.len() < 4 => {
                let free: Vec<&str> = NAMES.iter().copied().filter(|n| !self.apps.contains_key(*n)).collect();
                let name = self.pick(&free).expect("a free name").to_string();
                // A name deleted before comes back only once its app is gone.
                let gone = self.cluster.kubectl.run(&["get", "app", &name], None);
                if gone.status.success() {
                    return self.note(format!("skip: {name} is still being deleted"));
                }
                let model = self.new_model();
                self.note(format!("apply {name}: {model:?}"));
                self.apps.insert(name.clone(), model);
                self.deleted.remove(&name);
                self.apply(&name);
            }
            0..=29 if !live.is_empty() => {
                let name = self.pick(&live).unwrap().clone();
                let instances = self.rng.random_range(0..=5);
                self.apps.get_mut(&name).unwrap().instances = instances;
                self.note(format!("scale {name} to {instances}"));
                self.kubectl(&["scale", &format!("app/{name}"), &format!("--replicas={instances}")], None);
            }
            0..=44 if !live.is_empty() => {
                let name = self.pick(&live).unwrap().clone();
                let fresh = self.new_model();
                let model = self.apps.get_mut(&name).unwrap();
                model.change += 1;
                model.slow = fresh.slow;
                model.min_health = fresh.min_health;
                model.max_over = fresh.max_over;
                model.max_starts = fresh.max_starts;
                let text = format!("change {name}: {model:?}");
                self.note(text);
                self.apply(&name);
            }
            0..=49 if !live.is_empty() => {
                let name = self.pick(&live).unwrap().clone();
                self.apps.get_mut(&name).unwrap().restarts += 1;
                self.note(format!("restart {name}"));
                self.apply(&name);
            }
            0..=54 if !live.is_empty() => {
                let name = self.pick(&live).unwrap().clone();
                self.apps.remove(&name);
                self.deleted.insert(name.clone());
                self.note(format!("delete {name}"));
                self.kubectl(&["delete", "app", &name, "--wait=false"], None);
            }
            // Faults.
            55..=67 => {
                let Some(leader) = self.cluster.leader() else { return self.note("skip: no leader".into()) };
                if self.faulted(&leader) {
                    return self.note(format!("skip: {leader} is already faulted"));
                }
                match roll <= 61 {
                    true => self.fault(leader, true, true, 1.0..4.0),
                    false => self.fault(leader, true, false, 1.0..5.0),
                }
            }
            68..=73 => {
                let name = format!("a{}", self.rng.random_range(1..=self.cluster.agents.len()));
                if self.faulted(&name) {
                    return self.note(format!("skip: {name} is already faulted"));
                }
                let kill = self.rng.random_bool(0.5);
                self.fault(name, false, kill, 1.0..4.0);
            }
            74..=77 => {
                let down = Duration::from_secs_f64(self.rng.random_range(0.2..2.0));
                self.note(format!("restart etcd ({:.1} s down)", down.as_secs_f64()));
                self.cluster.etcd.stop();
                std::thread::sleep(down);
                self.cluster.etcd.restart();
            }
            78..=87 => {
                let mut pids = instance_processes(&self.cluster.dir());
                pids.sort();
                let Some((pid, id)) = self.pick(&pids).cloned() else {
                    return self.note("skip: no instance runs".into());
                };
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                self.note(format!("SIGKILL instance {id} (pid {pid})"));
            }
            88..=94 => {
                let checked: Vec<String> =
                    self.apps.iter().filter(|(_, m)| m.checked).map(|(n, _)| n.clone()).collect();
                let Some(name) = self.pick(&checked).cloned() else {
                    return self.note("skip: no app has checks".into());
                };
                let flag = self.fail_dir.join(format!("fail-{name}"));
                if flag.exists() {
                    return self.note(format!("skip: {name}'s pool already fails"));
                }
                std::fs::write(&flag, "").expect("writing a fail flag");
                self.note(format!("fail the health checks of every {name} instance"));
                self.later(2.0..8.0, Heal::Recover(name));
            }
            95..=97 => {
                let agent = format!("a{}", self.drains.random_range(1..=self.cluster.agents.len()));
                if self.pending.iter().any(|(_, h)| matches!(h, Heal::Undrain(a) if *a == agent)) {
                    return self.note(format!("skip: {agent} is already drained"));
                }
                let manifest = format!(
                    "apiVersion: baton.dev/v1alpha1\nkind: Maintenance\nmetadata:\n  name: chaos-{agent}\nspec:\n  agents: [{agent}]\n"
                );
                self.note(format!("drain agent {agent} (a Maintenance now)"));
                self.kubectl(&["apply", "-f", "-"], Some(&manifest));
                let after = Duration::from_secs_f64(self.drains.random_range(3.0..12.0));
                self.pending.push((Instant::now() + after, Heal::Undrain(agent)));
            }
            _ => self.note("wait".into()),
        }
    }

    /// Waits until the store shows every spec reached; `Err` says what is still missing.
    fn converged(&self) -> Result<(), String> {
        let store = self.cluster.store().clone();
        let keys = self.cluster.keys().clone();
        let (apps, records, statuses) = self
            .cluster
            .block_on(async move {
                let apps = store.range(&keys.registry("baton.dev", "apps", Some("default"))).await?;
                let records = store.range(&keys.instances()).await?;
                let statuses = store.range(&keys.statuses()).await?;
                Ok::<_, baton_store::Error>((apps, records, statuses))
            })
            .map_err(|e| format!("reading the store: {e}"))?;
        let apps: BTreeMap<String, App> = apps
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<App>(&kv.value).ok())
            .map(|a| (a.metadata.name.clone().unwrap_or_default(), a))
            .collect();
        let statuses: BTreeMap<String, StatusRecord> = statuses
            .kvs
            .iter()
            .filter_map(|kv| {
                let (_, id) = self.cluster.keys().parse_status_key(&kv.key)?;
                Some((id.to_string(), serde_json::from_slice(&kv.value).ok()?))
            })
            .collect();
        let records: Vec<InstanceRecord> =
            records.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
        let ended = |r: &InstanceRecord| statuses.get(&r.id).is_some_and(|s| s.phase.is_terminal());
        for (name, model) in &self.apps {
            let app = apps.get(name).ok_or_else(|| format!("app {name} is not in the store"))?;
            let uid = app.metadata.uid.clone().unwrap_or_default();
            let version = app.version();
            let mine: Vec<&InstanceRecord> = records.iter().filter(|r| r.run.app.uid == uid).collect();
            let healthy = mine
                .iter()
                .filter(|r| r.goal == Goal::Running && r.run.version == version)
                .filter(|r| {
                    statuses.get(&r.id).is_some_and(|s| {
                        s.phase == baton_api::records::Phase::Running
                            && s.passes_health_checks(r.run.health_checks.len())
                    })
                })
                .count();
            if healthy != model.instances as usize {
                return Err(format!("{name}: {healthy} healthy of the current version, {} wanted", model.instances));
            }
            if let Some(extra) =
                mine.iter().find(|r| !ended(r) && (r.goal != Goal::Running || r.run.version != version))
            {
                return Err(format!(
                    "{name}: {} ({:?}, an older version or stopped) has not ended",
                    extra.id, extra.goal
                ));
            }
        }
        for name in &self.deleted {
            if apps.contains_key(name) {
                return Err(format!("deleted app {name} is still in the store"));
            }
        }
        let live_uids: BTreeSet<String> = apps.values().filter_map(|a| a.metadata.uid.clone()).collect();
        if let Some(orphan) = records.iter().find(|r| !live_uids.contains(&r.run.app.uid) && !ended(r)) {
            return Err(format!("instance {} of deleted app {} has not ended", orphan.id, orphan.run.app.name));
        }
        // No process but those of instances wanted running.
        let wanted: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.goal == Goal::Running && live_uids.contains(&r.run.app.uid))
            .map(|r| r.id.as_str())
            .collect();
        for pid in processes_in(&self.cluster.dir()) {
            if let Some(id) = sandbox_of(pid)
                && !wanted.contains(id.as_str())
            {
                return Err(format!(
                    "process {pid} of instance {id} still runs; its instance is stopped or its app deleted"
                ));
            }
        }
        Ok(())
    }
}

/// Runs one chaos seed on a fresh cluster of `binary` and checks what happened.
pub fn run(binary: &Path, options: Options<'_>) -> Outcome {
    let started = Instant::now();
    let mut cluster = Cluster::start(
        binary,
        ClusterOptions { controllers: 2, agents: 3, racks: Some(3), ..ClusterOptions::default() },
    );
    let fail_dir = cluster.dir().join("chaos");
    std::fs::create_dir_all(&fail_dir).expect("a directory for fail flags");

    // The recorders: when each revision is seen, and every instance process.
    let recording = Arc::new(AtomicBool::new(true));
    let times: Arc<Mutex<BTreeMap<i64, f64>>> = Arc::default();
    let watcher = {
        let (store, root, times, recording) =
            (cluster.store().clone(), cluster.keys().root_prefix(), times.clone(), recording.clone());
        cluster.spawn(async move { record_times(store, root, times, recording, started).await })
    };
    let processes: Arc<Mutex<Processes>> = Arc::default();
    let sampler = {
        let (dir, processes, recording) = (cluster.dir(), processes.clone(), recording.clone());
        std::thread::spawn(move || {
            while recording.load(Ordering::SeqCst) {
                let now: BTreeMap<ProcessId, String> = instance_processes(&dir)
                    .into_iter()
                    .filter_map(|(pid, id)| Some((ProcessId::of(pid)?, id)))
                    .collect();
                let at = started.elapsed().as_secs_f64();
                let mut seen = processes.lock().unwrap();
                for (id, process) in seen.seen.iter_mut() {
                    match now.contains_key(id) {
                        true => process.last = at,
                        false => process.ended = true,
                    }
                }
                let mut per_instance: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
                for (id, instance) in &now {
                    per_instance.entry(instance).or_default().push(id.pid);
                }
                for (instance, pids) in per_instance.into_iter().filter(|(_, pids)| pids.len() > 1) {
                    seen.doubled.entry(instance.to_string()).or_insert(pids);
                }
                for (id, instance) in now {
                    seen.seen.entry(id).or_insert(Seen { instance, first: at, last: at, ended: false });
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut run = Run {
        rng: StdRng::seed_from_u64(options.seed),
        drains: StdRng::seed_from_u64(options.seed ^ 0x6472_6169_6e73),
        fail_dir,
        apps: BTreeMap::new(),
        deleted: BTreeSet::new(),
        pending: Vec::new(),
        steps: Vec::new(),
        started,
        cluster: &mut cluster,
    };
    for _ in 0..options.steps {
        let pause = Duration::from_secs_f64(run.rng.random_range(0.3..2.0));
        let until = Instant::now() + pause;
        while Instant::now() < until {
            run.heal_due(false);
            std::thread::sleep(Duration::from_millis(50));
        }
        run.step();
    }
    run.heal_due(true);
    let healed = Instant::now();
    let mut last = String::new();
    let mut said = Instant::now();
    let converged_in = crate::poll(CONVERGE_WITHIN, || match run.converged() {
        Ok(()) => Some(healed.elapsed()),
        Err(why) => {
            if said.elapsed() >= Duration::from_secs(10) {
                eprintln!("chaos {:>6.1}s  converging: {why}", started.elapsed().as_secs_f64());
                said = Instant::now();
            }
            last = why;
            None
        }
    });
    let mut violations = Vec::new();
    if converged_in.is_none() {
        violations
            .push(format!("the cluster did not reach every spec within {CONVERGE_WITHIN:?} of the last heal: {last}"));
    }
    // No spec lost: the API serves every app as last applied, and no other.
    match run.cluster.kubectl.json(&["get", "apps", "-n", "default"]) {
        Ok(list) => {
            let served: BTreeMap<String, (i64, String)> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let name = a["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    let change = a["spec"]["env"]["CHANGE"].as_str().unwrap_or_default().to_string();
                    (name, (a["spec"]["instances"].as_i64().unwrap_or(-1), change))
                })
                .collect();
            let expected: BTreeMap<String, (i64, String)> =
                run.apps.iter().map(|(n, m)| (n.clone(), (i64::from(m.instances), m.change.to_string()))).collect();
            if served != expected {
                violations.push(format!("specs lost: applied {expected:?}, served {served:?}"));
            }
        }
        Err(e) => violations.push(format!("listing apps at the end: {e}")),
    }
    let steps = std::mem::take(&mut run.steps);
    drop(run);

    recording.store(false, Ordering::SeqCst);
    sampler.join().expect("the process sampler");
    let _ = cluster.block_on(watcher);
    let changes = cluster.changes();
    let times = times.lock().unwrap().clone();
    let keys = cluster.keys().clone();
    let report = check::check(&check::History { changes: &changes, times: &times, keys: &keys });
    violations.extend(report.violations);
    let history = cluster.history();
    let processes = processes.lock().unwrap();
    for (instance, pids) in &processes.doubled {
        violations.push(format!("instance {instance} ran as two processes at once: pids {pids:?}"));
    }
    if let Some(dir) = options.record_to {
        write_record(dir, &changes, &times, &processes, &steps);
    }
    Outcome {
        seed: options.seed,
        steps,
        violations,
        converged_in,
        changes: changes.len(),
        writes_checked: report.writes,
        decisions_checked: report.decisions,
        launches: history.iter().filter(|w| w.is_creation()).count(),
        stops: history.iter().filter(|w| w.is_stop()).count(),
        processes_started: processes.seen.len(),
        processes_ended: processes.seen.values().filter(|p| p.ended).count(),
        duration: started.elapsed(),
        logs: cluster.logs(),
    }
}

/// Writes what the recorders saw, for reading a failed run afterwards.
fn write_record(
    dir: &Path,
    changes: &[crate::cluster::Change],
    times: &BTreeMap<i64, f64>,
    processes: &Processes,
    steps: &[String],
) {
    use std::io::Write;
    let open = |name: &str| {
        std::fs::create_dir_all(dir).and_then(|()| std::fs::File::create(dir.join(name))).map(std::io::BufWriter::new)
    };
    let text = |bytes: &Option<Vec<u8>>| bytes.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let written = (|| -> std::io::Result<()> {
        let mut store = open("store.jsonl")?;
        for c in changes {
            let seen = times.range(..=c.revision).next_back().map(|(_, t)| *t);
            let line = serde_json::json!({"revision": c.revision, "seen": seen, "key": c.key, "value": text(&c.value)});
            writeln!(store, "{line}")?;
        }
        let mut out = open("processes.jsonl")?;
        for (id, p) in &processes.seen {
            let line = serde_json::json!({"pid": id.pid, "startTicks": id.start_ticks, "instance": p.instance,
                "firstSeen": p.first, "lastSeen": p.last, "ended": p.ended});
            writeln!(out, "{line}")?;
        }
        std::fs::write(dir.join("steps.txt"), steps.join("\n") + "\n")
    })();
    match written {
        Ok(()) => eprintln!("chaos: the record of this run is in {}", dir.display()),
        Err(e) => eprintln!("chaos: could not write the record to {}: {e}", dir.display()),
    }
}

/// Notes when each revision is first seen, following the store through etcd's restarts.
async fn record_times(
    store: Arc<dyn Store>,
    root: String,
    times: Arc<Mutex<BTreeMap<i64, f64>>>,
    recording: Arc<AtomicBool>,
    started: Instant,
) {
    let mut from = 1;
    while recording.load(Ordering::SeqCst) {
        let Ok(mut watch) = store.watch(&root, from).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
            if !recording.load(Ordering::SeqCst) {
                return;
            }
            match next {
                Err(_) => continue,
                Ok(Some(Ok(batch))) => {
                    let at = started.elapsed().as_secs_f64();
                    let mut times = times.lock().unwrap();
                    for event in &batch.events {
                        times.entry(event.revision()).or_insert(at);
                        from = from.max(event.revision() + 1);
                    }
                }
                Ok(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
