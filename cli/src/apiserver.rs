//! `baton apiserver`: the Kubernetes-compatible API over the store, over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_apiserver::{ApiServer, Limits, setup};

use crate::flags::StoreFlags;

#[derive(clap::Args)]
pub struct ApiserverArgs {
    #[command(flatten)]
    store: StoreFlags,
    /// Address to serve the API on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where generated certificates and tokens live, and the admin kubeconfig is written
    /// (`<data-dir>/kubeconfig`).
    #[arg(long, default_value = ".baton-apiserver")]
    data_dir: PathBuf,
    /// Serve this certificate (PEM) instead of a generated one; needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Accept client certificates signed by this CA (PEM); the user is the CN, the groups
    /// the Os. Default: the generated CA.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Bearer tokens, lines of token,user,group1|group2 (default: <data-dir>/tokens, made
    /// with an admin token).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Who may do what beyond baton:admins (YAML; see docs/security.md).
    #[arg(long)]
    authorization_rules: Option<PathBuf>,
    /// Another name or IP address the generated certificate covers (repeatable), e.g. the
    /// address other machines reach this server on.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// How often a watch that allows bookmarks gets one (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = crate::flags::duration)]
    bookmark_interval: std::time::Duration,
    /// Watches one user may hold open at once.
    #[arg(long, default_value_t = Limits::default().watches_per_user)]
    max_watches_per_user: usize,
    /// Instances one app may ask for (spec.instances); more is refused with a 422.
    #[arg(long, default_value_t = baton_api::limits::DEFAULT_MAX_INSTANCES_PER_APP, value_parser = clap::value_parser!(i32).range(0..))]
    max_instances_per_app: i32,
    /// Serve /metrics, /healthz and /readyz (ready while the store answers) here, over
    /// plain HTTP (the API port serves /healthz, /livez and /readyz too).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    dns: crate::flags::DnsFlags,
}

pub async fn run(args: ApiserverArgs) -> Result<()> {
    let store = args.store.connect().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there", args.listen))?;
    let address = listener.local_addr()?;
    let options = setup::Options {
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        client_ca: args.client_ca,
        tokens: args.tokens,
        rules: args.authorization_rules,
        tls_names: args.tls_sans,
    };
    let setup = setup::prepare(&args.data_dir, address, &options)?;
    let kubeconfig = args.data_dir.join("kubeconfig");
    setup::write_private(&kubeconfig, &setup.admin_kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    eprintln!("API server listening on {address}; admin kubeconfig in {}", kubeconfig.display());
    if address.ip().is_unspecified() {
        eprintln!(
            "  on this machine: {}; from others: https://<this machine's address>:{} \
             (the generated certificate covers the names given with --tls-san)",
            setup::server_url(address),
            address.port()
        );
    }
    let limits = Limits {
        watches_per_user: args.max_watches_per_user,
        bookmark_interval: args.bookmark_interval,
        input: baton_api::limits::InputLimits { max_instances_per_app: args.max_instances_per_app },
    };
    let server = ApiServer::start(store.clone(), args.store.keys(), setup.security, limits)
        .await
        .map_err(|e| anyhow::anyhow!("preparing the store for the API server: {}", e.message))?;
    server.watch_store(std::time::Duration::from_secs(5));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = server.metrics();
    metrics.register(&mut registry);
    let ready: crate::serve::Readiness =
        std::sync::Arc::new(move || (metrics.store_up.get() == 0).then(|| "the store does not answer".to_string()));
    let endpoints_shutdown = tokio_util::sync::CancellationToken::new();
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, endpoints_shutdown.clone()).await?;
    args.dns.start(store.clone(), args.store.keys(), endpoints_shutdown.clone()).await?;
    let _stop_endpoints = endpoints_shutdown.drop_guard();
    baton_apiserver::serve(listener, server, setup.tls, async {
        let _ = crate::wait_for_signal().await;
    })
    .await?;
    Ok(())
}
