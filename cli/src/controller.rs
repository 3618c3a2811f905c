//! `baton controller`: one controller; several run side by side, one leads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use baton_controllers::runtime::ControllerConfig;
use baton_controllers::runtime::metrics::Metrics;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::flags::{RetentionFlags, StoreFlags, duration};

#[derive(clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    store: StoreFlags,
    /// The API server to watch apps on and write their status to (default: as kubectl finds
    /// one — $KUBECONFIG, ~/.kube/config, or the pod's service account in Kubernetes).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Names this controller in the election (default: hostname:pid).
    #[arg(long)]
    id: Option<String>,
    /// What this controller owns: `platform` (every namespace not labelled
    /// `baton.dev/tenant`; the one controller that places instances on agents), or
    /// `tenant/NAME` (the namespaces labelled `baton.dev/tenant=NAME`). Each scope elects
    /// its own leader and never stops, rewrites or counts another's instances.
    #[arg(long, default_value = "platform")]
    scope: baton_api::Scope,
    /// How long leadership outlives a controller that stopped renewing it.
    #[arg(long, default_value = "10s", value_parser = duration)]
    election_ttl: Duration,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    retention: RetentionFlags,
    /// Empty agents kept free for instances that take whole agents (`placement.wholeAgent`):
    /// other instances go on an empty agent only while more are empty. See docs/maintenance.md.
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_free_agents: usize,
    /// The most instances one app runs, scale factors applied: as the API server's
    /// `--max-instances-per-app`. An app stored past it (under older rules) runs this many and
    /// says so in its status.
    #[arg(long, default_value_t = baton_api::limits::DEFAULT_MAX_INSTANCES_PER_APP as usize, value_name = "N")]
    max_instances_per_app: usize,
}

pub async fn run(args: ControllerArgs) -> Result<()> {
    let store = args.store.connect().await?;
    let client = match &args.kubeconfig {
        Some(path) => crate::kube_client(path).await?,
        None => crate::inferred_kube_client().await?,
    };
    let id = args.id.unwrap_or_else(|| format!("{}:{}", crate::hostname(), std::process::id()));
    let mut config = ControllerConfig::new(id, args.store.keys());
    config.election_ttl = args.election_ttl;
    config.scope = args.scope;
    config.retention = args.retention.retention();
    config.keep_free_agents = args.keep_free_agents;
    config.max_instances_per_app = args.max_instances_per_app;
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let watched = metrics.clone();
    let ready: crate::serve::Readiness = Arc::new(move || {
        (watched.ready.get() == 0).then(|| "loading apps, groups, namespaces and instances".to_string())
    });
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;
    let controller = tokio::spawn(baton_controllers::runtime::run(store, client, config, metrics, shutdown.clone()));
    crate::wait_for_signal().await?;
    shutdown.cancel();
    controller.await.context("the controller task")?;
    Ok(())
}
