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
    /// Serve only the instances and agents views, in group views.baton.dev: Baton's API
    /// server behind the Kubernetes aggregation layer (an APIService), on a cluster whose API
    /// server holds Apps and AppGroups as CRDs (the Helm chart's default).
    #[arg(long)]
    aggregated_views: bool,
    /// A front proxy's CA (PEM): a client certificate it signed makes the user and groups in
    /// the request's X-Remote-User and X-Remote-Group headers count, as Kubernetes'
    /// --requestheader-client-ca-file.
    #[arg(long, value_name = "FILE")]
    requestheader_client_ca_file: Option<PathBuf>,
    /// The common names the front proxy's certificate may have (comma-separated; none: any).
    #[arg(long, value_delimiter = ',', value_name = "NAMES", requires = "requestheader_client_ca_file")]
    requestheader_allowed_names: Vec<String>,
    /// Take the front proxy's CA, names and headers from Kubernetes — the ConfigMap
    /// kube-system/extension-apiserver-authentication — with the pod's service account (or
    /// $KUBECONFIG).
    #[arg(long, conflicts_with = "requestheader_client_ca_file")]
    requestheader_from_kubernetes: bool,
    /// Ask Kubernetes (a SubjectAccessReview) about each request Baton's own rules do not
    /// allow, so Kubernetes' RBAC decides, as API servers behind the aggregation layer do.
    #[arg(long)]
    authorize_with_kubernetes: bool,
}

/// The front proxy the flags describe, if any.
async fn front_proxy(args: &ApiserverArgs) -> Result<Option<baton_apiserver::tls::FrontProxy>> {
    use baton_apiserver::tls::FrontProxy;
    if let Some(file) = &args.requestheader_client_ca_file {
        let ca = std::fs::read_to_string(file)
            .with_context(|| format!("--requestheader-client-ca-file {}: cannot read it", file.display()))?;
        return Ok(Some(FrontProxy::new(ca, args.requestheader_allowed_names.clone())));
    }
    if !args.requestheader_from_kubernetes {
        return Ok(None);
    }
    let client = kube::Client::try_default()
        .await
        .context("--requestheader-from-kubernetes: no Kubernetes to ask (not in a pod, and no $KUBECONFIG)")?;
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "kube-system");
    let configmap = configmaps.get("extension-apiserver-authentication").await.context(
        "--requestheader-from-kubernetes: reading the ConfigMap kube-system/extension-apiserver-authentication \
         (the service account needs the Role extension-apiserver-authentication-reader there)",
    )?;
    let proxy = FrontProxy::from_configmap(&configmap.data.unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("the ConfigMap kube-system/extension-apiserver-authentication: {e}"))?;
    Ok(Some(proxy))
}

pub async fn run(args: ApiserverArgs) -> Result<()> {
    let front_proxy = front_proxy(&args).await?;
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
        front_proxy,
    };
    let mut setup = setup::prepare(&args.data_dir, address, &options)?;
    if args.authorize_with_kubernetes {
        let client = kube::Client::try_default()
            .await
            .context("--authorize-with-kubernetes: no Kubernetes to ask (not in a pod, and no $KUBECONFIG)")?;
        setup.security.delegated = Some(std::sync::Arc::new(baton_apiserver::delegated::Delegated::new(client)));
    }
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
    let kinds =
        if args.aggregated_views { baton_apiserver::kinds::aggregated_views() } else { baton_apiserver::kinds::all() };
    let server = ApiServer::start_serving(store.clone(), args.store.keys(), setup.security, limits, kinds)
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
