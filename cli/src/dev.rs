//! `baton dev`: a whole cluster in one process — embedded store, API server, controller and
//! agents — for trying Baton on one machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;

use baton_agent::AgentConfig;
use baton_api::PortRange;
use baton_apiserver::{ApiServer, Limits, setup};
use baton_controllers::runtime::ControllerConfig;
use baton_controllers::runtime::metrics::Metrics;
use baton_store::embedded::{EmbeddedOptions, EmbeddedStore};
use baton_store::{Keyspace, Store};

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
    /// Keep the cluster's state in etcd (etcd://host:port[,…]) instead of the embedded
    /// store in the data dir.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Serve /metrics (the API server's, the controller's and each agent's), /healthz and
    /// /readyz (ready once the controller has loaded and every agent is registered) here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// The most agents one `baton dev` runs (each gets its own slice of ports).
const MAX_AGENTS: u32 = 64;
/// Dynamic host ports handed out by dev agents: each agent gets a disjoint slice.
const PORTS_BEGIN: u32 = 31000;
const PORTS_END: u32 = 64999;

/// Disjoint port ranges for `count` agents on one host: up to 1000 ports each.
fn port_ranges(count: u32) -> Vec<PortRange> {
    let size = ((PORTS_END - PORTS_BEGIN + 1) / count.max(1)).min(1000);
    (0..count)
        .map(|i| {
            let begin = PORTS_BEGIN + i * size;
            PortRange { begin: begin as u16, end: (begin + size - 1) as u16 }
        })
        .collect()
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.agents > MAX_AGENTS {
        bail!("--agents {}: at most {MAX_AGENTS} agents can share one machine's ports", args.agents);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let store: Arc<dyn Store> = match &args.store {
        Some(url) => crate::flags::connect(url).await?,
        None => {
            let options = EmbeddedOptions { revoke_leases_on_open: true, ..EmbeddedOptions::default() };
            let store = EmbeddedStore::open(&data_dir.join("store"), options)
                .await
                .with_context(|| format!("--data-dir {}: cannot open the store", data_dir.display()))?;
            Arc::new(store)
        }
    };
    let keys = Keyspace::default();
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("--listen {}: cannot listen there (is another baton dev running? pick another port)", args.listen)
    })?;
    let address = listener.local_addr()?;
    let url = setup::server_url(address);
    let setup = setup::prepare(&data_dir, address, &setup::Options::default())?;
    let kubeconfig = data_dir.join("kubeconfig");
    setup::write_private(&kubeconfig, &setup.admin_kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let api = ApiServer::start(store.clone(), keys.clone(), setup.security, Limits::default())
        .await
        .map_err(|e| anyhow::anyhow!("preparing the store for the API server: {}", e.message))?;
    api.watch_store(Duration::from_secs(5));
    let mut registry = prometheus_client::registry::Registry::default();
    api.metrics().register(&mut registry);
    let controller_metrics = Arc::new(Metrics::default());
    controller_metrics.register(&mut registry);
    let api_shutdown = shutdown.clone();
    let api_task =
        tokio::spawn(baton_apiserver::serve(listener, api, setup.tls, async move { api_shutdown.cancelled().await }));

    let client = crate::kube_client(&kubeconfig).await?;
    let controller_id = format!("{}:{}", crate::hostname(), std::process::id());
    let controller = tokio::spawn(baton_controllers::runtime::run(
        store.clone(),
        client,
        ControllerConfig::new(controller_id, keys.clone()),
        controller_metrics.clone(),
        shutdown.clone(),
    ));

    let machine = baton_agent::machine::resources(&data_dir);
    let share = machine.divided_by(u64::from(args.agents));
    let mut agents = Vec::new();
    let mut agent_metrics = Vec::new();
    for (i, ports) in port_ranges(args.agents).into_iter().enumerate() {
        let n = i + 1;
        let config = AgentConfig {
            name: format!("agent-{n}"),
            host: "127.0.0.1".into(),
            resources: share,
            attributes: BTreeMap::from([("rack".to_string(), format!("r{n}"))]),
            ports: vec![ports],
            work_dir: data_dir.join("agents").join(format!("agent-{n}")),
            lease_ttl: Duration::from_secs(10),
            keys: keys.clone(),
            // Ctrl-C on baton dev stops everything it started.
            stop_instances_on_exit: true,
            metrics: Default::default(),
        };
        config.metrics.register(registry.sub_registry_with_label(("agent".into(), config.name.clone().into())));
        agent_metrics.push(config.metrics.clone());
        agents.push(tokio::spawn(baton_agent::run(store.clone(), config, shutdown.clone())));
    }
    let ready: crate::serve::Readiness = Arc::new(move || {
        if controller_metrics.ready.get() == 0 {
            return Some("the controller is loading".into());
        }
        let unregistered = agent_metrics.iter().filter(|m| !m.is_registered()).count();
        (unregistered > 0).then(|| format!("{unregistered} agent(s) not registered"))
    });
    crate::serve::spawn_endpoints(args.metrics_listen, registry, ready, shutdown.clone()).await?;

    println!(
        "Baton is running: API server {url}, {} agent(s) with {} each, data in {}\n\n  \
         export KUBECONFIG={}\n  kubectl apply -f examples/web.yaml\n  kubectl get apps\n  \
         kubectl get instances -l app=web\n\nCtrl-C stops Baton and every instance it started.",
        args.agents,
        share.display(),
        data_dir.display(),
        kubeconfig.display(),
    );

    crate::wait_for_signal().await?;
    eprintln!("stopping: every instance is being stopped (Ctrl-C again to quit at once)");
    shutdown.cancel();
    tokio::spawn(async {
        if crate::wait_for_signal().await.is_ok() {
            eprintln!("quitting without waiting; instance processes may be left running");
            std::process::exit(130);
        }
    });
    for agent in agents {
        match agent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("agent: {e}"),
            Err(e) => eprintln!("agent task: {e}"),
        }
    }
    let _ = controller.await;
    match api_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("API server: {e}"),
        Err(e) => eprintln!("API server task: {e}"),
    }
    eprintln!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_disjoint_and_in_bounds() {
        let three = port_ranges(3);
        assert_eq!(three[0], PortRange { begin: 31000, end: 31999 });
        assert_eq!(three[2], PortRange { begin: 33000, end: 33999 });
        let many = port_ranges(MAX_AGENTS);
        assert!(many.windows(2).all(|w| w[0].end < w[1].begin));
        assert!(u32::from(many.last().unwrap().end) <= PORTS_END);
    }
}
