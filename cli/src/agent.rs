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
    #[arg(long)]
    work_dir: PathBuf,
    /// Where instances' ports are reachable from other machines (default: hostname).
    #[arg(long)]
    host: Option<String>,
    /// Resources to offer, e.g. cpus=4,mem=4096,disk=1024 (MiB); what is not given is the machine's.
    #[arg(long, default_value = "")]
    resources: String,
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
    /// Serve /metrics, /healthz and /readyz (ready while registered) here.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve instances' output to the API server here (HTTPS; only the API server may ask).
    #[arg(long, default_value = "0.0.0.0:5051")]
    sandbox_listen: std::net::SocketAddr,
    #[command(flatten)]
    output: flags::OutputFlags,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| anyhow::anyhow!("--work-dir {}: cannot create it: {e}", args.work_dir.display()))?;
    let config = AgentConfig {
        name: args.name.unwrap_or_else(crate::hostname),
        host: args.host.unwrap_or_else(crate::hostname),
        resources: flags::resources(&args.resources, baton_agent::machine::resources(&args.work_dir))?,
        attributes: flags::attributes(&args.attributes)?,
        ports: flags::port_ranges(&args.ports)?,
        work_dir: args.work_dir,
        lease_ttl: args.lease_ttl,
        keys: args.store.keys(),
        stop_instances_on_exit: args.stop_instances_on_exit,
        metrics: Default::default(),
        logging: args.output.logging()?,
        status_refresh: args.output.status_refresh,
        sandbox_listen: Some(args.sandbox_listen),
    };
    if let Some(problem) = baton_api::names::dns_subdomain_problem(&config.name) {
        anyhow::bail!("--name {:?}: {problem}", config.name);
    }
    let store = args.store.connect().await?;
    let shutdown = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    config.metrics.register(&mut registry);
    let metrics = config.metrics.clone();
    let ready: crate::serve::Readiness =
        std::sync::Arc::new(move || (!metrics.is_registered()).then(|| "not registered with the store".to_string()));
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;
    let mut agent = tokio::spawn(baton_agent::run(store, config, shutdown.clone()));
    tokio::select! {
        signal = crate::wait_for_signal() => {
            signal?;
            shutdown.cancel();
            agent.await??;
        }
        // The agent stops on its own only when it cannot work (e.g. its work dir).
        ended = &mut agent => ended??,
    }
    Ok(())
}
