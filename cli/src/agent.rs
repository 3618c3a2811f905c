//! `baton agent`: runs the instances assigned to this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use baton_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

use crate::flags::{self, StoreFlags, duration};

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    store: StoreFlags,
    /// The agent's name, unique in the cluster; keep it across restarts (default: hostname).
    #[arg(long)]
    name: Option<String>,
    /// Where instances' sandboxes live.
    #[arg(long, required_unless_present = "hollow")]
    work_dir: Option<PathBuf>,
    /// Where instances' ports are reachable from other machines (default: hostname).
    #[arg(long)]
    host: Option<String>,
    /// Resources to offer, e.g. cpus=4,mem=4096,disk=1024 (MiB); what is not given is the machine's.
    #[arg(long, default_value = "")]
    resources: String,
    /// Kept back from what is offered, e.g. cpus=0.5,mem=1024 (MiB): what the machine's own
    /// services (and, on Kubernetes, the kubelet and the node's system) need.
    #[arg(long, default_value = "")]
    reserve: String,
    /// Attributes for constraints, e.g. rack=r1,zone=a.
    #[arg(long, default_value = "")]
    attributes: String,
    /// Host ports to hand out as dynamic ports.
    #[arg(long, default_value = "31000-32000")]
    ports: String,
    /// The agent is considered gone this long after its last renewal.
    #[arg(long, default_value = "10s", value_parser = duration)]
    lease_ttl: Duration,
    /// Stop every instance when the agent stops (by default they keep running and the next
    /// start of the agent adopts them).
    #[arg(long)]
    stop_instances_on_exit: bool,
    /// Join through the registrar at this URL (https://host:port, `baton registrar`): the
    /// agent gets a store identity of its own — a key made here and kept, with the
    /// registrar's certificate for it, in <work-dir>/identity — instead of --store-cert-file.
    /// The registrar's certificate is checked against --store-ca-file.
    #[arg(long, value_name = "URL", requires = "join_token_file", requires = "store_ca_file",
          conflicts_with_all = ["store_cert_file", "hollow"])]
    join: Option<String>,
    /// The cluster's join token (a file holding it), shown to the registrar.
    #[arg(long, value_name = "FILE", requires = "join")]
    join_token_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz (ready while registered) here.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve instances' output to the API server here (HTTPS; only the API server may ask).
    #[arg(long, default_value = "0.0.0.0:5051")]
    sandbox_listen: std::net::SocketAddr,
    #[command(flatten)]
    output: flags::OutputFlags,
    #[command(flatten)]
    isolation: flags::IsolationFlags,
    /// Run N hollow agents instead (for measuring a cluster, as kubemark's hollow nodes):
    /// named `NAME-00001`…, each offering --resources (all given) with `rack=r<i mod
    /// --hollow-racks>`; they report their instances Staging, then Running, healthy and ready,
    /// without starting any process.
    #[arg(long, value_name = "N")]
    hollow: Option<usize>,
    /// Hollow agents: racks they are dealt over.
    #[arg(long, default_value_t = 10, requires = "hollow")]
    hollow_racks: usize,
    /// Hollow agents: from assigned to Running.
    #[arg(long, default_value = "1s", value_parser = duration, requires = "hollow")]
    hollow_start_delay: Duration,
    /// Hollow agents: one instance in N fails (exit 1) after --hollow-fail-after (0: none).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "hollow")]
    hollow_fail_one_in: u64,
    /// Hollow agents: how long a failing instance runs first.
    #[arg(long, default_value = "30s", value_parser = duration, requires = "hollow")]
    hollow_fail_after: Duration,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    if let Some(count) = args.hollow {
        return hollow(args, count).await;
    }
    let work_dir = args.work_dir.clone().expect("clap requires --work-dir without --hollow");
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| anyhow::anyhow!("--work-dir {}: cannot create it: {e}", work_dir.display()))?;
    let offered = flags::resources(&args.resources, baton_agent::machine::resources(&work_dir))?;
    let reserved = flags::resources_of("--reserve", &args.reserve, baton_api::ResourceAmounts::default())?;
    let resources = offered.minus(reserved);
    if resources.millicpus == 0 || resources.mem_mib == 0 {
        anyhow::bail!(
            "--reserve {:?} leaves nothing to offer of {} (offered {})",
            args.reserve,
            offered.display(),
            resources.display()
        );
    }
    let config = AgentConfig {
        name: args.name.unwrap_or_else(crate::hostname),
        host: args.host.unwrap_or_else(crate::hostname),
        resources,
        attributes: flags::attributes(&args.attributes)?,
        ports: flags::port_ranges(&args.ports)?,
        work_dir,
        lease_ttl: args.lease_ttl,
        keys: args.store.keys(),
        stop_instances_on_exit: args.stop_instances_on_exit,
        metrics: Default::default(),
        logging: args.output.logging()?,
        status_refresh: args.output.status_refresh,
        sandbox_listen: Some(args.sandbox_listen),
        cgroups: args.isolation.cgroups(),
        usage_interval: args.isolation.usage_interval,
    };
    if let Some(problem) = baton_api::names::dns_subdomain_problem(&config.name) {
        anyhow::bail!("--name {:?}: {problem}", config.name);
    }
    let name = config.name.clone();
    let shutdown = CancellationToken::new();
    let refused = Refused { name: name.clone(), joined: args.join.is_some().then(|| config.work_dir.join("identity")) };
    let store: std::sync::Arc<dyn baton_store::Store> = match &args.join {
        None => args.store.connect().await.map_err(|e| refused.hint(e))?,
        Some(url) => {
            let token_file = args.join_token_file.as_deref().expect("clap requires --join-token-file with --join");
            let ca = args.store.store_ca_file.as_deref().expect("clap requires --store-ca-file with --join");
            let identity = join(url, token_file, ca, &config, &shutdown).await?;
            let store = args.store.connect_etcd_as(Some((identity.cert_pem, identity.key_pem)));
            std::sync::Arc::new(store.await.map_err(|e| refused.hint(e))?)
        }
    };
    let mut registry = prometheus_client::registry::Registry::default();
    config.metrics.register(&mut registry);
    let metrics = config.metrics.clone();
    let ready: crate::serve::Readiness =
        std::sync::Arc::new(move || (!metrics.is_registered()).then(|| "not registered with the store".to_string()));
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;
    let agent = baton_agent::run(store, config, shutdown.clone());
    until_signal(tokio::spawn(async move { agent.await.map_err(|e| refused.hint(e.into())) }), shutdown).await
}

/// `--join URL`: the identity kept in the work dir, or a new one from the registrar.
async fn join(
    url: &str,
    token_file: &std::path::Path,
    ca: &std::path::Path,
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<baton_agent::join::Identity> {
    if !url.starts_with("https://") {
        anyhow::bail!("--join {url:?}: give the registrar's https:// URL");
    }
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| anyhow::anyhow!("--join-token-file {}: cannot read it: {e}", token_file.display()))?;
    // One token; blank lines and `#` comments aside, as in the registrar's tokens file.
    let tokens: Vec<&str> = baton_apiserver::registrar::token_lines(&token).collect();
    let [token] = tokens[..] else {
        anyhow::bail!("--join-token-file {}: give one token, on a line of its own", token_file.display());
    };
    if token.contains(char::is_whitespace) {
        anyhow::bail!("--join-token-file {}: the token has spaces in it", token_file.display());
    }
    let token = token.to_string();
    let join = baton_agent::join::JoinConfig {
        url: url.to_string(),
        token,
        ca_pem: flags::read_pem("--store-ca-file", ca)?,
        dir: config.work_dir.join("identity"),
        name: config.name.clone(),
    };
    tokio::select! {
        identity = baton_agent::join::identity(&join, shutdown) => identity.map_err(|e| anyhow::anyhow!("--join {url}: {e}")),
        signal = crate::wait_for_signal() => {
            signal?;
            anyhow::bail!("stopped while joining through {url}")
        }
    }
}

/// What to say when the store refuses agent `name`: its credential is not that agent's, or
/// (`joined`: the identity kept there) was taken away.
struct Refused {
    name: String,
    joined: Option<std::path::PathBuf>,
}

impl Refused {
    fn hint(&self, error: anyhow::Error) -> anyhow::Error {
        let message = format!("{error:#}");
        if !message.contains("permission denied") && !message.contains("user name not found") {
            return error;
        }
        let name = &self.name;
        error.context(match &self.joined {
            None => format!(
                "the store refused agent {name}: its credential (--store-cert-file) is not agent {name}'s; \
                 issue it one with `baton store add-agent {name} --pki DIR`, or join with --join"
            ),
            Some(identity) => format!(
                "the store refused the identity agent {name} joined for (kept in {}): it was taken away \
                 (`baton store remove-agent {name}`); to join again, remove that directory and start the agent",
                identity.display()
            ),
        })
    }
}

/// Waits for `agent` to end — on its own only when it cannot work (e.g. its work dir) — or for
/// SIGINT/SIGTERM, which stops it through `shutdown`.
async fn until_signal(mut agent: tokio::task::JoinHandle<Result<()>>, shutdown: CancellationToken) -> Result<()> {
    tokio::select! {
        signal = crate::wait_for_signal() => {
            signal?;
            shutdown.cancel();
            agent.await??;
        }
        ended = &mut agent => ended??,
    }
    Ok(())
}

/// `--hollow N`: N hollow agents in this process.
async fn hollow(args: AgentArgs, count: usize) -> Result<()> {
    if count == 0 || count > 100_000 {
        anyhow::bail!("--hollow {count}: give between 1 and 100000 agents");
    }
    let resources = flags::resources(&args.resources, baton_api::ResourceAmounts::default())?;
    if resources.millicpus == 0 || resources.mem_mib == 0 {
        anyhow::bail!(
            "--resources {:?}: hollow agents need cpus and mem given (e.g. cpus=16,mem=65536,disk=100000)",
            args.resources
        );
    }
    let config = baton_agent::hollow::HollowConfig {
        prefix: args.name.unwrap_or_else(|| "hollow".into()),
        count,
        host: args.host.unwrap_or_else(|| "127.0.0.1".into()),
        resources,
        attributes: flags::attributes(&args.attributes)?,
        racks: args.hollow_racks.max(1),
        ports: flags::port_ranges(&args.ports)?,
        lease_ttl: args.lease_ttl,
        keys: args.store.keys(),
        start_delay: args.hollow_start_delay,
        fail_one_in: args.hollow_fail_one_in,
        fail_after: args.hollow_fail_after,
    };
    let store = args.store.connect().await?;
    let shutdown = CancellationToken::new();
    let hollow = baton_agent::hollow::run(store, config, shutdown.clone());
    until_signal(tokio::spawn(async move { hollow.await.map_err(anyhow::Error::from) }), shutdown).await
}
