//! `baton registrar`: gives each agent that joins (`baton agent --join`) a store identity of
//! its own — a client certificate from etcd's CA and an etcd user that reaches only that
//! agent's keys — as Kubernetes' TLS bootstrapping does for kubelets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use baton_apiserver::registrar::{Registrar, Signer, parse_tokens};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct RegistrarArgs {
    /// The store: etcd://host:port[,host:port…]. The registrar acts there as etcd's `root`,
    /// with a certificate it makes from --pki's CA.
    #[arg(long, value_name = "URL")]
    store: String,
    /// The prefix of every key, so several installations can share one etcd.
    #[arg(long, default_value = baton_store::keys::DEFAULT_ROOT)]
    prefix: String,
    /// etcd's CA: a directory with ca.crt and ca.key (what `baton certificates` makes). It
    /// signs the agents' certificates and the registrar's own; etcd's certificate must chain
    /// to it.
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// The CA (PEM) etcd's own certificate chains to, when not --pki's.
    #[arg(long, value_name = "FILE")]
    store_ca_file: Option<PathBuf>,
    /// The join tokens agents show, one per line (at least 16 characters each; several while
    /// one is rotated).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Where to serve joins (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// A name or IP address agents reach the registrar at (repeatable): its certificate,
    /// signed by etcd's CA, covers each.
    #[arg(long = "san", value_name = "NAME", required = true)]
    sans: Vec<String>,
    /// Turn etcd's authentication on at start, as `baton store enable-auth` does (idempotent):
    /// from then on each part of Baton needs its own identity.
    #[arg(long)]
    enable_store_auth: bool,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

pub async fn run(args: RegistrarArgs) -> Result<()> {
    if args.sans.iter().any(|s| s.trim().is_empty()) {
        bail!("--san: give a host name or an IP address agents reach the registrar at");
    }
    let read = |name: &str| {
        let path = args.pki.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "--pki {}: cannot read {name} (make the CA with `baton certificates --dir DIR`)",
                args.pki.display()
            )
        })
    };
    let ca_pem = read("ca.crt")?;
    let signer =
        Signer::new(&ca_pem, &read("ca.key")?).map_err(|e| anyhow::anyhow!("--pki {}: {e}", args.pki.display()))?;
    let tokens = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}: cannot read it", args.token_file.display()))?;
    let tokens =
        parse_tokens(&tokens).map_err(|e| anyhow::anyhow!("--token-file {}: {e}", args.token_file.display()))?;

    let (root_cert, root_key) = signer.root_certificate().map_err(anyhow::Error::msg)?;
    let tls = baton_store::etcd::EtcdTls {
        ca_pem: match &args.store_ca_file {
            Some(file) => crate::flags::read_pem("--store-ca-file", file)?,
            None => ca_pem.into_bytes(),
        },
        client: Some((root_cert.into_bytes(), root_key.into_bytes())),
    };
    let store = crate::flags::connect_etcd(&args.store, Some(&tls)).await?;
    let keys = baton_store::Keyspace::new(&args.prefix);
    if args.enable_store_auth {
        store
            .enable_auth(&keys)
            .await
            .context("turning etcd's authentication on (does etcd trust --pki's CA for client certificates?)")?;
        tracing::info!("etcd's authentication is on");
    }

    let (cert, key) = signer.server_certificate(&args.sans).map_err(anyhow::Error::msg)?;
    let config = server_config(&cert, &key)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there", args.listen))?;
    let shutdown = CancellationToken::new();
    let ready: crate::serve::Readiness = Arc::new(|| None);
    let registry = prometheus_client::registry::Registry::default();
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;
    let router = baton_apiserver::registrar::router(Arc::new(Registrar::new(store, keys, tokens, signer)));
    tracing::info!(listen = %args.listen, names = ?args.sans, "serving agents' joins");
    let served = tokio::spawn(baton_agent::https::serve(listener, config, router, shutdown.clone()));
    crate::wait_for_signal().await?;
    shutdown.cancel();
    served.await?;
    Ok(())
}

fn server_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(cert.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
