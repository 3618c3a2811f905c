//! `baton apiserver`: the Kubernetes-compatible API over the store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_apiserver::ApiServer;
use tokio_util::sync::CancellationToken;

use crate::flags::StoreFlags;

#[derive(clap::Args)]
pub struct ApiserverArgs {
    #[command(flatten)]
    store: StoreFlags,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where the admin kubeconfig is written (`<data-dir>/kubeconfig`).
    #[arg(long, default_value = ".baton-apiserver")]
    data_dir: PathBuf,
}

pub async fn run(args: ApiserverArgs) -> Result<()> {
    let store = args.store.connect().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there", args.listen))?;
    let mut address = listener.local_addr()?;
    if address.ip().is_unspecified() {
        // Listening on every address: the kubeconfig (for this machine) uses loopback.
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{address}");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let kubeconfig = args.data_dir.join("kubeconfig");
    std::fs::write(&kubeconfig, baton_apiserver::kubeconfig::admin_kubeconfig(&url))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    eprintln!("API server on {url}; kubeconfig in {}", kubeconfig.display());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = crate::wait_for_signal().await;
        stop.cancel();
    });
    baton_apiserver::serve(
        listener,
        ApiServer::new(store, args.store.keys()),
        async move { shutdown.cancelled().await },
    )
    .await?;
    Ok(())
}
