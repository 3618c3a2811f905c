//! `baton dev`: a whole cluster in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use baton_apiserver::ApiServer;
use baton_store::Keyspace;
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the store, the kubeconfig and the agents' sandboxes live.
    #[arg(long, default_value = ".baton")]
    data_dir: PathBuf,
    /// Address of the API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// How many agents to run; the machine's resources are split between them.
    #[arg(long, default_value_t = 3)]
    agents: u32,
}

pub async fn run(args: DevArgs) -> Result<()> {
    let store = EmbeddedStore::open(&args.data_dir.join("store"), EmbeddedOptions::default())
        .await
        .context("opening the embedded store")?;
    let store: Arc<dyn baton_store::Store> = Arc::new(store);
    let api = ApiServer::new(store.clone(), Keyspace::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there (is another baton dev running?)", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let kubeconfig = args.data_dir.join("kubeconfig");
    std::fs::write(&kubeconfig, baton_apiserver::kubeconfig::admin_kubeconfig(&url))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    eprintln!("API server on {url}; export KUBECONFIG={}", kubeconfig.display());
    baton_apiserver::serve(listener, api, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
