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
    /// Host ports the agents hand out, split evenly between them. The default lies below the
    /// kernel's ephemeral range (32768-60999 on Linux), which outgoing connections use.
    #[arg(long, default_value = "20000-29999", value_name = "BEGIN-END")]
    ports: PortRange,
    /// Bearer tokens, lines of token,user,group1|group2 (default: <data-dir>/tokens, made
    /// with an admin token); see docs/security.md.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Who may do what beyond baton:admins (YAML; see docs/security.md).
    #[arg(long, value_name = "FILE")]
    authorization_rules: Option<PathBuf>,
    #[command(flatten)]
    retention: crate::flags::RetentionFlags,
    #[command(flatten)]
    output: crate::flags::OutputFlags,
    #[command(flatten)]
    isolation: crate::flags::IsolationFlags,
    #[command(flatten)]
    dns: crate::flags::DnsFlags,
    /// Empty agents kept free for instances that take whole agents (`placement.wholeAgent`).
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_free_agents: usize,
}

/// The most agents one `baton dev` runs (each gets its own slice of ports).
const MAX_AGENTS: u32 = 64;

/// `ports` split into `count` disjoint ranges of equal size, or why it cannot be.
fn port_ranges(ports: PortRange, count: u32) -> Result<Vec<PortRange>> {
    let size = ports.len() / count.max(1) as usize;
    if size == 0 {
        bail!("--ports {ports}: {} ports cannot be split between {count} agents", ports.len());
    }
    Ok((0..count as usize)
        .map(|i| {
            let begin = usize::from(ports.begin) + i * size;
            PortRange { begin: begin as u16, end: (begin + size - 1) as u16 }
        })
        .collect())
}

/// The kernel's ephemeral port range, where outgoing connections take their local ports.
fn ephemeral_ports() -> Option<PortRange> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    Some(PortRange { begin: parts.next()??, end: parts.next()?? })
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.agents > MAX_AGENTS {
        bail!("--agents {}: at most {MAX_AGENTS} agents can share one machine's ports", args.agents);
    }
    let port_ranges = port_ranges(args.ports, args.agents)?;
    if let Some(ephemeral) = ephemeral_ports()
        && args.ports.begin <= ephemeral.end
        && ephemeral.begin <= args.ports.end
    {
        eprintln!(
            "warning: --ports {} overlaps the kernel's ephemeral range {ephemeral} \
             (net.ipv4.ip_local_port_range): an instance may find its port taken by an outgoing connection",
            args.ports
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let store: Arc<dyn Store> = match &args.store {
        Some(url) => crate::flags::connect(url).await?,
        None => {
            // The earlier run's agent registrations and leadership have no holder left;
            // events keep their time to live.
            let keys = Keyspace::default();
            let revoke_leases_under = vec![keys.agents(), keys.leader("")];
            let options = EmbeddedOptions { revoke_leases_under, ..EmbeddedOptions::default() };
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
    let options = setup::Options {
        tokens: args.tokens.clone(),
        rules: args.authorization_rules.clone(),
        ..setup::Options::default()
    };
    let setup = setup::prepare(&data_dir, address, &options)?;
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
    args.dns.start(store.clone(), keys.clone(), shutdown.clone()).await?;
    let api_shutdown = shutdown.clone();
    let api_task =
        tokio::spawn(baton_apiserver::serve(listener, api, setup.tls, async move { api_shutdown.cancelled().await }));

    let kube_config = crate::kube_config(&kubeconfig).await?;
    let client = kube::Client::try_from(kube_config.clone())?;
    let controller_id = format!("{}:{}", crate::hostname(), std::process::id());
    let mut controller_config = ControllerConfig::new(controller_id, keys.clone());
    controller_config.retention = args.retention.retention();
    controller_config.keep_free_agents = args.keep_free_agents;
    // Tenants' controllers: this program, on this machine's API server, with its CA.
    let template = crate::controller::tenant_controllers(store.as_ref(), &keys, &kube_config, None, None, None).await?;
    controller_config.tenant_controllers = Some(Arc::new(template));
    let controller = tokio::spawn(baton_controllers::runtime::run(
        store.clone(),
        client,
        controller_config,
        controller_metrics.clone(),
        shutdown.clone(),
    ));

    let machine = baton_agent::machine::resources(&data_dir);
    let share = machine.divided_by(u64::from(args.agents));
    let mut agents = Vec::new();
    let mut agent_metrics = Vec::new();
    for (i, ports) in port_ranges.into_iter().enumerate() {
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
            logging: args.output.logging()?,
            status_refresh: args.output.status_refresh,
            sandbox_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            cgroups: args.isolation.cgroups(),
            usage_interval: args.isolation.usage_interval,
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
        let ports = PortRange { begin: 20000, end: 29999 };
        let three = port_ranges(ports, 3).unwrap();
        assert_eq!(three[0], PortRange { begin: 20000, end: 23332 });
        assert_eq!(three[2], PortRange { begin: 26666, end: 29998 });
        let many = port_ranges(ports, MAX_AGENTS).unwrap();
        assert!(many.windows(2).all(|w| w[0].end < w[1].begin));
        assert!(many.last().unwrap().end <= ports.end);
        let err = port_ranges(PortRange { begin: 20000, end: 20001 }, 3).unwrap_err().to_string();
        assert!(err.contains("--ports 20000-20001") && err.contains("3 agents"), "{err}");
    }
}
