//! A whole cluster of separate processes, as across machines but on loopback: a real etcd,
//! `baton apiserver`, N `baton controller`s and M `baton agent`s. Fault tests kill, pause
//! and restart its parts and read what happened from the store's history.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use baton_api::{Goal, InstanceRecord, StatusRecord};
use baton_store::contract::etcd_server::TestEtcd;
use baton_store::{EventKind, Keyspace, Store, StoreExt};

use crate::{Kubectl, Proc, free_port, kill_processes_in, poll};

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub controllers: usize,
    pub agents: usize,
    /// `--election-ttl` of the controllers ("": the default).
    pub election_ttl: &'static str,
    /// `--lease-ttl` of the agents.
    pub agent_lease_ttl: &'static str,
    /// More lines for the API server's tokens file (`token,user,group1|group2`); the
    /// admin token is always there.
    pub tokens: Vec<&'static str>,
    /// The API server's authorization rules (YAML), if any.
    pub rules: Option<&'static str>,
    /// Agent `aI` has the attribute `rack=rK`: with `Some(n)`, K is (I − 1) mod n + 1 (n racks,
    /// agents dealt round-robin); with `None`, K is I.
    pub racks: Option<usize>,
    /// etcd over TLS with client certificates and its authentication on (`baton store
    /// enable-auth`): the API server and controllers as `baton`, each agent with its own
    /// identity (`baton store add-agent`), the test as `root`. The certificates are in
    /// [`Cluster::pki`].
    pub store_auth: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            controllers: 2,
            agents: 2,
            election_ttl: "2s",
            agent_lease_ttl: "2s",
            tokens: Vec::new(),
            rules: None,
            racks: None,
            store_auth: false,
        }
    }
}

/// The admin token of a test cluster's API server.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// One write of an instance record, from the store's history.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub revision: i64,
    /// The record after the write (None for a delete).
    pub after: Option<InstanceRecord>,
    /// The record before the write (None for a creation).
    pub before: Option<InstanceRecord>,
}

impl RecordWrite {
    pub fn is_creation(&self) -> bool {
        self.before.is_none() && self.after.is_some()
    }

    /// The write that set the goal to Stopped.
    pub fn is_stop(&self) -> bool {
        matches!((&self.before, &self.after), (Some(b), Some(a)) if b.goal == Goal::Running && a.goal == Goal::Stopped)
    }
}

/// One change of a key, from the store's history.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: i64,
    pub key: String,
    /// The value after (None for a delete).
    pub value: Option<Vec<u8>>,
    /// The value before (None for a creation).
    pub before: Option<Vec<u8>>,
}

pub struct Cluster {
    pub etcd: TestEtcd,
    pub apiserver: Proc,
    /// Controllers `c1`…`cN`.
    pub controllers: Vec<Proc>,
    /// Agents `a1`…`aM`.
    pub agents: Vec<Proc>,
    pub kubectl: Kubectl,
    /// The port of each controller's /metrics.
    pub metrics_ports: Vec<u16>,
    store: Arc<dyn Store>,
    keys: Keyspace,
    runtime: tokio::runtime::Runtime,
    /// How processes are started: the binary, the store's URL, the options.
    binary: PathBuf,
    url: String,
    options: ClusterOptions,
    /// The host ports its agents hand out, a slice each.
    ports: crate::PortBlock,
    // Last, so every process is stopped before the directory goes.
    dir: tempfile::TempDir,
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

impl Cluster {
    /// Starts every part and waits until the API answers, the agents are registered and a
    /// controller leads.
    pub fn start(binary: &Path, options: ClusterOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("baton-cluster-").tempdir().expect("a temporary dir");
        let pki = dir.path().join("pki");
        let etcd = if options.store_auth {
            run_ok(binary, &os(&["certificates", "--dir", &pki.display().to_string(), "--san", "127.0.0.1"]));
            TestEtcd::start_tls(baton_store::contract::etcd_server::ServerTls {
                ca: pki.join("ca.crt"),
                cert: pki.join("server.crt"),
                key: pki.join("server.key"),
            })
        } else {
            TestEtcd::start()
        };
        let url = format!("etcd://{}", etcd.address());
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let endpoint = etcd.endpoint();
        let tls = options.store_auth.then(|| baton_store::etcd::EtcdTls {
            ca_pem: std::fs::read(pki.join("ca.crt")).expect("the CA"),
            client: Some((
                std::fs::read(pki.join("root.crt")).expect("root's certificate"),
                std::fs::read(pki.join("root.key")).expect("root's key"),
            )),
        });
        let store: Arc<dyn Store> = Arc::new(
            runtime
                .block_on(baton_store::etcd::EtcdStore::connect_with(
                    &[endpoint],
                    Duration::from_secs(10),
                    tls.as_ref(),
                ))
                .expect("the test connects to etcd"),
        );
        let store_flags = |cert: &str| store_flags(&pki, options.store_auth, cert);
        if options.store_auth {
            let mut enable = os(&["store", "enable-auth", "--store", &url]);
            enable.extend(store_flags("root"));
            run_ok(binary, &enable);
            for i in 1..=options.agents {
                let pki = pki.display().to_string();
                let mut add = os(&["store", "add-agent", &format!("a{i}"), "--store", &url, "--pki", &pki]);
                add.extend(store_flags("root"));
                run_ok(binary, &add);
            }
        }
        let env = vec![("RUST_LOG".to_string(), "info,baton_controllers=debug".to_string())];
        let root = dir.path().to_path_buf();
        let log = move |name: &str| root.join(format!("{name}.log"));
        let api_dir = dir.path().join("apiserver");
        let tokens = dir.path().join("tokens");
        let mut lines = vec![format!("{ADMIN_TOKEN},admin,baton:admins")];
        lines.extend(options.tokens.iter().map(|l| l.to_string()));
        std::fs::write(&tokens, lines.join("\n") + "\n").expect("writing the tokens file");
        // A fixed port, so that a restarted API server is where its clients expect it.
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = os(&["apiserver", "--store", &url, "--listen", &listen, "--bookmark-interval", "2s"]);
        args.extend(store_flags("client"));
        args.extend([
            "--data-dir".into(),
            api_dir.clone().into_os_string(),
            "--tokens".into(),
            tokens.into_os_string(),
        ]);
        if let Some(rules) = options.rules {
            let path = dir.path().join("rules.yaml");
            std::fs::write(&path, rules).expect("writing the rules file");
            args.extend(["--authorization-rules".into(), path.into_os_string()]);
        }
        let apiserver = Proc::start("apiserver", binary, args, env.clone(), log("apiserver"));
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("a HOME for kubectl");
        let kubeconfig = api_dir.join("kubeconfig");
        let kubectl = Kubectl { kubeconfig: kubeconfig.clone(), home };
        let mut cluster = Cluster {
            etcd,
            apiserver,
            controllers: Vec::new(),
            agents: Vec::new(),
            kubectl,
            metrics_ports: Vec::new(),
            store,
            keys: Keyspace::default(),
            runtime,
            binary: binary.to_path_buf(),
            url: url.clone(),
            options: options.clone(),
            ports: crate::PortBlock::take(),
            dir,
        };
        cluster.wait_for("the API server to answer kubectl", Duration::from_secs(30), |c| {
            (kubeconfig.exists() && c.kubectl.run(&["get", "apps"], None).status.success()).then_some(())
        });
        for i in 1..=options.controllers {
            cluster.add_controller(&format!("c{i}"), &[]);
        }
        for i in 1..=options.agents {
            let name = format!("a{i}");
            let work_dir = cluster.dir.path().join(&name);
            let ports = cluster.ports.slice(i as u16 - 1, options.agents as u16);
            let rack = options.racks.map_or(i, |n| (i - 1) % n.max(1) + 1);
            let mut args = os(&[
                "agent",
                "--store",
                &url,
                "--name",
                &name,
                "--work-dir",
                &work_dir.display().to_string(),
                "--host",
                "127.0.0.1",
                "--resources",
                "cpus=4,mem=4096,disk=1024",
                "--attributes",
                &format!("rack=r{rack}"),
                "--ports",
                &ports,
                "--lease-ttl",
                options.agent_lease_ttl,
                // Several agents share the machine: each serves its sandboxes on a free port
                // (the one it binds is in its record).
                "--sandbox-listen",
                "127.0.0.1:0",
            ]);
            args.extend(store_flags(&format!("agents/{name}")));
            cluster.agents.push(Proc::start(&name, binary, args, env.clone(), log(&name)));
        }
        let agents = options.agents;
        cluster.wait_for("every agent to register", Duration::from_secs(30), |c| {
            (c.block_on(c.store.range(&c.keys.agents())).map(|r| r.kvs.len()).ok() == Some(agents)).then_some(())
        });
        if options.controllers > 0 {
            cluster.wait_for("a controller to lead", Duration::from_secs(30), |c| c.leader());
        }
        cluster
    }

    /// Starts a process of `count` hollow agents (`baton agent --hollow`), named
    /// `<name>-00001`…, each offering `resources`, with `extra` arguments; waits until they
    /// are registered.
    pub fn add_hollow_agents(&mut self, name: &str, count: usize, resources: &str, extra: &[&str]) {
        let before = self.block_on(self.store.range(&self.keys.agents())).map(|r| r.kvs.len()).unwrap_or(0);
        let mut args = os(&[
            "agent",
            "--store",
            &self.url,
            "--name",
            name,
            "--hollow",
            &count.to_string(),
            "--resources",
            resources,
            "--lease-ttl",
            self.options.agent_lease_ttl,
        ]);
        args.extend(os(extra));
        let env = vec![("RUST_LOG".to_string(), "info".to_string())];
        let log = self.dir.path().join(format!("{name}.log"));
        self.agents.push(Proc::start(name, &self.binary, args, env, log));
        self.wait_for("the hollow agents to register", Duration::from_secs(60), |c| {
            let now = c.block_on(c.store.range(&c.keys.agents())).map(|r| r.kvs.len()).unwrap_or(0);
            (now >= before + count).then_some(())
        });
    }

    /// Starts one more controller, `id`, with `extra` arguments (e.g. `--scope tenant/a`).
    pub fn add_controller(&mut self, id: &str, extra: &[&str]) {
        let metrics = free_port();
        let kubeconfig = self.kubectl.kubeconfig.display().to_string();
        let mut args = os(&[
            "controller",
            "--store",
            &self.url,
            "--kubeconfig",
            &kubeconfig,
            "--id",
            id,
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ]);
        if !self.options.election_ttl.is_empty() {
            args.extend(os(&["--election-ttl", self.options.election_ttl]));
        }
        args.extend(store_flags(&self.pki(), self.options.store_auth, "client"));
        args.extend(os(extra));
        let env = vec![("RUST_LOG".to_string(), "info,baton_controllers=debug".to_string())];
        let log = self.dir.path().join(format!("{id}.log"));
        self.controllers.push(Proc::start(id, &self.binary, args, env, log));
        self.metrics_ports.push(metrics);
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `future` on the cluster's runtime in the background.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The certificates of a cluster with [`ClusterOptions::store_auth`]: `ca.crt`,
    /// `client.crt` (the platform's), `root.crt`, `agents/<name>.crt` (and their keys).
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// The id of the platform's leading controller.
    pub fn leader(&self) -> Option<String> {
        self.leader_of("platform")
    }

    /// The id of `scope`'s leading controller.
    pub fn leader_of(&self, scope: &str) -> Option<String> {
        let kv = self.block_on(self.store.get(&self.keys.leader(scope))).ok()??;
        Some(String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// The controller process with this id (`c1`…).
    pub fn controller(&mut self, id: &str) -> &mut Proc {
        self.controllers.iter_mut().find(|c| c.name() == id).unwrap_or_else(|| panic!("no controller {id}"))
    }

    pub fn agent(&mut self, name: &str) -> &mut Proc {
        self.agents.iter_mut().find(|a| a.name() == name).unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// Every instance record now, by id.
    pub fn records(&self) -> BTreeMap<String, InstanceRecord> {
        let range = self.block_on(self.store.range(&self.keys.instances())).expect("reading instance records");
        range
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<InstanceRecord>(&kv.value).ok())
            .map(|r| (r.id.clone(), r))
            .collect()
    }

    /// Every instance status now, by id.
    pub fn statuses(&self) -> BTreeMap<String, StatusRecord> {
        let range = self.block_on(self.store.range(&self.keys.statuses())).expect("reading statuses");
        range
            .kvs
            .iter()
            .filter_map(|kv| {
                let (_, id) = self.keys.parse_status_key(&kv.key)?;
                Some((id.to_string(), serde_json::from_slice(&kv.value).ok()?))
            })
            .collect()
    }

    /// Every write of an instance record since the cluster started, in order.
    pub fn history(&self) -> Vec<RecordWrite> {
        let parse = |bytes: &[u8]| serde_json::from_slice::<InstanceRecord>(bytes).ok();
        self.changes()
            .into_iter()
            .filter(|c| self.keys.parse_instance_key(&c.key).is_some())
            .map(|c| RecordWrite {
                revision: c.revision,
                after: c.value.as_deref().and_then(parse),
                before: c.before.as_deref().and_then(parse),
            })
            .collect()
    }

    /// Every change of the installation's keys since the cluster started, in order.
    pub fn changes(&self) -> Vec<Change> {
        let store = self.store.clone();
        let keys = self.keys.clone();
        self.block_on(async move {
            let current = store.current_revision().await.expect("the current revision");
            // Every change of the installation is under its root, so the watch reaches the
            // current revision exactly.
            let mut watch = store.watch(&keys.root_prefix(), 1).await.expect("watching the history");
            let mut changes = Vec::new();
            let mut seen = 0;
            while seen < current {
                let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
                    .await
                    .expect("the history replays within 10 s")
                    .expect("the history stream continues")
                    .expect("the history replays");
                for event in batch.events {
                    seen = seen.max(event.revision());
                    changes.push(Change {
                        revision: event.revision(),
                        value: (event.kind == EventKind::Put).then(|| event.kv.value.clone()),
                        before: event.prev_kv.as_ref().map(|kv| kv.value.clone()),
                        key: event.kv.key,
                    });
                }
            }
            changes
        })
    }

    /// The store's keyspace.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// `kubectl … -o json` of an app.
    pub fn app(&self, name: &str) -> Value {
        self.kubectl.json(&["get", "app", name]).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// `kubectl args…`, its output whatever its exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        self.kubectl.run(args, None)
    }

    /// The store's URL, as `--store` takes it (`etcd://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(args, None).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    pub fn apply(&self, manifest: &str) {
        self.kubectl.ok(&["apply", "-f", "-"], Some(manifest)).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// A value from a controller's /metrics.
    pub fn metric(&self, controller: usize, name: &str) -> Option<f64> {
        let (_, body) = crate::http("127.0.0.1", self.metrics_ports[controller], "GET", "/metrics", None).ok()?;
        crate::metric_value(&body, name)
    }

    /// The ends of every component's log.
    pub fn logs(&self) -> String {
        let mut out = vec![self.apiserver.log_tail(20)];
        out.extend(self.controllers.iter().map(|c| c.log_tail(30)));
        out.extend(self.agents.iter().map(|a| a.log_tail(15)));
        out.push(format!("--- end of etcd's log ---\n{}", self.etcd.log()));
        out.join("\n")
    }

    /// Polls `check` until it returns `Some`; fails with `what` and the logs on timeout.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        poll(timeout, || check(self))
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs()))
    }

    /// The cluster's temporary directory (agents' work dirs are inside).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The API server's data dir (its CA, certificates and kubeconfig).
    pub fn api_dir(&self) -> PathBuf {
        self.dir.path().join("apiserver")
    }

    /// Raw HTTPS requests as the admin.
    pub fn api(&self) -> crate::ApiClient {
        crate::ApiClient::from_kubeconfig(&self.kubectl.kubeconfig)
    }

    /// A kube-rs client as the admin (use it inside [`Cluster::block_on`]).
    pub async fn kube_client(&self) -> kube::Client {
        let config = kube::config::Kubeconfig::read_from(&self.kubectl.kubeconfig).expect("the admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .expect("a kube config");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// Kills the API server and starts it again on the same port and data.
    pub fn restart_apiserver(&mut self) {
        self.apiserver.kill();
        self.apiserver.restart();
        self.wait_for("the restarted API server to answer kubectl", Duration::from_secs(30), |c| {
            c.kubectl.run(&["get", "apps"], None).status.success().then_some(())
        });
    }

    /// Compacts etcd's history up to its current revision: watches from before it get 410.
    pub fn compact_etcd(&self) -> i64 {
        let endpoint = self.etcd.endpoint();
        self.block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connecting to etcd");
            let revision = client.get("/", None).await.expect("reading etcd").header().expect("a header").revision();
            let options = etcd_client::CompactionOptions::new().with_physical();
            client.compact(revision, Some(options)).await.expect("compacting etcd");
            revision
        })
    }
}

/// With `enabled`, the flags that reach the store with certificate `<pki>/<cert>.crt`.
fn store_flags(pki: &Path, enabled: bool, cert: &str) -> Vec<OsString> {
    if !enabled {
        return Vec::new();
    }
    let file = |name: String| pki.join(name).into_os_string();
    vec![
        "--store-ca-file".into(),
        file("ca.crt".into()),
        "--store-cert-file".into(),
        file(format!("{cert}.crt")),
        "--store-key-file".into(),
        file(format!("{cert}.key")),
    ]
}

/// Runs `binary args…` to completion; fails the test with its output unless it succeeds.
fn run_ok(binary: &Path, args: &[OsString]) {
    let output = std::process::Command::new(binary).args(args).output().expect("baton runs");
    assert!(
        output.status.success(),
        "baton {}: {}\n{}",
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.controllers.iter_mut().chain(self.agents.iter_mut()) {
            proc.kill();
        }
        self.apiserver.kill();
        // Agents leave their instances running when they stop: kill those too, and remove
        // their cgroups.
        kill_processes_in(self.dir.path());
        crate::remove_instance_cgroups(self.dir.path());
    }
}
