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
    /// How long leadership outlives a controller that stopped renewing it: a crashed leader
    /// is replaced about this long after (a leader asked to stop hands over at once). Shorter
    /// fails over sooner; a leader stalled longer than two thirds of it (CPU starved, paused,
    /// cut off from the store) loses its leadership. See docs/install.md.
    #[arg(long, default_value = "2s", value_parser = duration)]
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
    /// Threads a plan may use for its passes over every instance, side by side, on a pool of
    /// that many. A pass is split only in parts of 4,096 instances or more, so only large
    /// clusters use more than one; the plan is the same whatever the number. More plan sooner
    /// where cores are free, and keep more memory (an allocator arena per thread): see
    /// docs/performance.md.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    plan_threads: u16,
    /// Run as tenant NAME's controller, the way the platform launches it (scope
    /// `tenant/NAME`): reaching the cluster only through the API server (no --store), with
    /// the credential of $TENANT_CONTROLLER_TOKEN, at $TENANT_CONTROLLER_SERVER trusting $TENANT_CONTROLLER_CA (or
    /// --kubeconfig).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["store", "scope"])]
    tenant: Option<String>,
    /// The namespaces this controller owns (with --tenant: those of the tenant the platform
    /// gave it); it watches apps there only. Default: every namespace labelled with its scope.
    #[arg(long, value_delimiter = ',', value_name = "NS,NS")]
    namespaces: Option<Vec<String>>,
    /// For tenants' controllers, which the platform's controller runs as apps: the `baton`
    /// executable on the agents' machines (default: this one's path).
    #[arg(long, value_name = "PATH")]
    tenant_controller_executable: Option<String>,
    /// For tenants' controllers: the API server's URL as the agents' machines reach it
    /// (default: this controller's own, from its kubeconfig).
    #[arg(long, value_name = "URL")]
    tenant_controller_server: Option<String>,
    /// For tenants' controllers: the CA (PEM) they trust for the API server (default: this
    /// controller's own, from its kubeconfig).
    #[arg(long, value_name = "FILE")]
    tenant_controller_ca_file: Option<PathBuf>,
    /// Run no tenant's controller: each tenant runs its own (`--scope tenant/NAME`).
    #[arg(long)]
    no_tenant_controllers: bool,
    /// The API server's URL, for --tenant.
    #[arg(long, env = "TENANT_CONTROLLER_SERVER", value_name = "URL", hide_env_values = true)]
    api_server: Option<String>,
    /// The API server's CA (PEM text), for --tenant.
    #[arg(long, env = "TENANT_CONTROLLER_CA", value_name = "PEM", hide_env_values = true)]
    api_ca: Option<String>,
    /// The bearer token, for --tenant.
    #[arg(long, env = "TENANT_CONTROLLER_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

pub async fn run(args: ControllerArgs) -> Result<()> {
    let kube_config = match (&args.kubeconfig, &args.tenant, &args.api_server) {
        (Some(path), _, _) => crate::kube_config(path).await?,
        (None, Some(tenant), Some(server)) => api_config(tenant, server, &args)?,
        (None, _, _) => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no --kubeconfig given, and none found ($KUBECONFIG, ~/.kube/config, in-cluster): {e}")
        })?,
    };
    let client = kube::Client::try_from(kube_config.clone())?;
    let (store, scope): (Arc<dyn baton_store::Store>, baton_api::Scope) = match &args.tenant {
        Some(tenant) => {
            let scope: baton_api::Scope =
                format!("tenant/{tenant}").parse().map_err(|e| anyhow::anyhow!("--tenant {tenant}: {e}"))?;
            (Arc::new(baton_controllers::runtime::remote::RemoteStore::new(client.clone())), scope)
        }
        None => {
            let store = args.store.connect().await?;
            tracing::info!(store = args.store.store.as_deref().unwrap_or_default(), "connected to the store");
            (store, args.scope.clone())
        }
    };
    let id = args.id.clone().unwrap_or_else(|| format!("{}:{}", crate::hostname(), std::process::id()));
    let mut config = ControllerConfig::new(id, args.store.keys());
    config.election_ttl = args.election_ttl;
    config.scope = scope;
    config.namespaces = args.namespaces.clone();
    if config.scope.places() && !args.no_tenant_controllers {
        config.tenant_controllers = Some(Arc::new(
            tenant_controllers(
                store.as_ref(),
                &config.keys,
                &kube_config,
                args.tenant_controller_executable.clone(),
                args.tenant_controller_server.clone(),
                args.tenant_controller_ca_file.as_deref(),
            )
            .await?,
        ));
    }
    config.retention = args.retention.retention();
    config.keep_free_agents = args.keep_free_agents;
    config.max_instances_per_app = args.max_instances_per_app;
    config.plan_threads = args.plan_threads.into();
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let watched = metrics.clone();
    let ready: crate::serve::Readiness = Arc::new(move || {
        (watched.ready.get() == 0).then(|| "loading apps, groups, namespaces and instances".to_string())
    });
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;
    tracing::info!(id = config.id, scope = %config.scope, "starting: loading the caches, campaigning for the lead");
    let controller = tokio::spawn(baton_controllers::runtime::run(store, client, config, metrics, shutdown.clone()));
    crate::wait_for_signal().await?;
    shutdown.cancel();
    controller.await.context("the controller task")?;
    Ok(())
}

/// A client configuration for a tenant's controller from what the platform gave it.
fn api_config(tenant: &str, server: &str, args: &ControllerArgs) -> Result<kube::Config> {
    let url: http::Uri = server.parse().map_err(|e| anyhow::anyhow!("--api-server {server}: {e}"))?;
    let mut config = kube::Config::new(url);
    if let Some(pem) = &args.api_ca {
        let certs = rustls_pemfile_certs(pem).context("--api-ca ($TENANT_CONTROLLER_CA)")?;
        config.root_cert = Some(certs);
    }
    let Some(token) = &args.api_token else {
        anyhow::bail!(
            "--tenant {tenant}: give the credential the platform issued (--api-token or $TENANT_CONTROLLER_TOKEN)"
        );
    };
    config.auth_info.token = Some(token.clone().into());
    Ok(config)
}

/// The DER certificates of a PEM text.
fn rustls_pemfile_certs(pem: &str) -> Result<Vec<Vec<u8>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("holds no certificate");
    }
    Ok(certs)
}

/// How the platform's controller runs tenants' controllers: `executable`, `server` and the CA
/// in `ca_file` given, or this program and the API server and CA of `kube_config`; the
/// signing secret from the store (made if missing).
pub async fn tenant_controllers(
    store: &dyn baton_store::Store,
    keys: &baton_store::Keyspace,
    kube_config: &kube::Config,
    executable: Option<String>,
    server: Option<String>,
    ca_file: Option<&std::path::Path>,
) -> Result<baton_controllers::plan::tenants::ControllerTemplate> {
    let executable = match executable {
        Some(path) => path,
        None => std::env::current_exe().context("finding this program")?.display().to_string(),
    };
    let server = server.unwrap_or_else(|| kube_config.cluster_url.to_string());
    let ca_pem = match ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("--tenant-controller-ca-file {}", path.display()))?,
        ),
        None => kube_config.root_cert.as_ref().map(|certs| crate::certificates::pem_of_certificates(certs)),
    };
    let secret = baton_store::secret(store, &keys.tenant_controller_secret())
        .await
        .context("reading the secret for tenants' controllers' credentials from the store")?;
    Ok(baton_controllers::plan::tenants::ControllerTemplate { executable, server, ca_pem, secret })
}
