//! `baton`: the one binary. Each subcommand wires the library crates together; the logic
//! lives in those crates.

use std::path::Path;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

mod agent;
mod allocator;
mod apiserver;
mod certificates;
mod controller;
mod dev;
mod flags;
mod kubeconfig;
mod logs;
mod registrar;
mod rollout;
mod serve;
mod store;

/// jemalloc, not glibc's malloc: a controller at 100,000 instances frees and allocates much
/// of its heap at every tick, and glibc's per-thread arenas kept what was freed resident.
/// Measured (`hack/bench.sh cluster`, full size, two runs each): the leader held 358-361 MiB
/// with glibc, 312-318 MiB with jemalloc; a steady tick's plan p99 was <= 41-52 ms, now
/// <= 33 ms. (mimalloc held as little, but 11 MiB more in an idle process; see
/// docs/performance.md.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "baton", version, about = "Marathon's application model as Kubernetes-style controllers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster on this machine: store, API server, controller and agents.
    Dev(dev::DevArgs),
    /// Serve the Kubernetes-compatible API for Baton's kinds over the store.
    Apiserver(apiserver::ApiserverArgs),
    /// Run a controller (several may run; one leads).
    Controller(controller::ControllerArgs),
    /// Run an agent: offer this machine's resources and run the instances assigned to it.
    Agent(agent::AgentArgs),
    /// Print a kubeconfig for a user, with a client certificate from the API server's CA.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Print an instance's output (stdout, or stderr), as `kubectl logs` does for a pod.
    Logs(logs::LogsArgs),
    /// Follow an app's deployment: `baton rollout status app/NAME`, as kubectl's for a Deployment.
    Rollout(rollout::RolloutArgs),
    /// Copy standard input to a log file, rotating it (what the agent runs between an
    /// instance and its log files).
    #[command(hide = true)]
    Logger(LoggerArgs),
    /// Enter an instance's cgroups, become its user, and execute its command (what the agent
    /// runs to start an instance in its cgroup).
    #[command(hide = true)]
    EnterCgroup(EnterCgroupArgs),
    /// Make a CA and certificates for etcd over TLS, with a client certificate for Baton.
    Certificates(certificates::CertificatesArgs),
    /// Administer the store's access control: turn authentication on, give agents their own
    /// identities.
    Store(store::StoreArgs),
    /// Give each agent that joins (`baton agent --join`) a store identity of its own.
    Registrar(registrar::RegistrarArgs),
    /// Print Baton's CustomResourceDefinitions as YAML (what crds/ holds).
    Crds,
}

#[derive(clap::Args)]
struct LoggerArgs {
    #[arg(long)]
    file: std::path::PathBuf,
    #[arg(long)]
    max_bytes: u64,
    #[arg(long)]
    keep: usize,
}

#[derive(clap::Args)]
struct EnterCgroupArgs {
    /// A `cgroup.procs` file to write this process' pid to (one per hierarchy).
    #[arg(long = "procs")]
    procs: Vec<std::path::PathBuf>,
    #[arg(long, requires = "gid")]
    uid: Option<u32>,
    #[arg(long, requires = "uid")]
    gid: Option<u32>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `baton enter-cgroup`: returns only when it could not execute the command; what went
/// wrong goes to stderr (the instance's), and the exit status is 127 as a shell's.
fn enter_cgroup(args: EnterCgroupArgs) -> ! {
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let user = args.uid.zip(args.gid);
    let error = baton_agent::cgroups::enter_and_exec(&args.procs, user, program, rest);
    eprintln!("baton: could not start {program:?}: {error}");
    std::process::exit(127)
}

/// `baton logger`: runs until its input ends (every writer of the pipe is gone).
fn logger(args: LoggerArgs) -> Result<()> {
    let rotation = baton_agent::logger::Rotation { max_bytes: args.max_bytes.max(1), keep: args.keep };
    let now = || jiff::Timestamp::now().as_millisecond();
    baton_agent::logger::run(std::io::stdin().lock(), &args.file, rotation, now)
        .map_err(|e| anyhow::anyhow!("logging to {}: {e}", args.file.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Logger(args) => return logger(args),
        Command::EnterCgroup(args) => enter_cgroup(args),
        other => other,
    };
    init_logging();
    let runtime = || tokio::runtime::Runtime::new();
    match command {
        Command::Crds => {
            print!("{}", baton_api::crds::crds_yaml());
            Ok(())
        }
        Command::Kubeconfig(args) => kubeconfig::run(args),
        Command::Certificates(args) => certificates::run(args),
        Command::Store(args) => runtime()?.block_on(store::run(args)),
        Command::Registrar(args) => runtime()?.block_on(registrar::run(args)),
        Command::Dev(args) => runtime()?.block_on(dev::run(args)),
        Command::Apiserver(args) => runtime()?.block_on(apiserver::run(args)),
        Command::Controller(args) => runtime()?.block_on(controller::run(args)),
        Command::Agent(args) => runtime()?.block_on(agent::run(args)),
        Command::Logs(args) => runtime()?.block_on(logs::run(args)),
        Command::Rollout(args) => runtime()?.block_on(rollout::run(args)),
        Command::Logger(_) | Command::EnterCgroup(_) => unreachable!("handled before logging starts"),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info for Baton, warn otherwise).
/// Colours only on a terminal (not in journald, files or `kubectl logs`), and not with
/// `NO_COLOR` set.
fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,baton=info,baton_store=info,baton_apiserver=info,baton_controllers=info,baton_agent=info")
    });
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn wait_for_signal() -> Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// A client for the API server named by a kubeconfig file.
pub async fn kube_client(kubeconfig: &Path) -> Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(kubeconfig).await?)?)
}

/// The client configuration of a kubeconfig file.
pub async fn kube_config(kubeconfig: &Path) -> Result<kube::Config> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", kubeconfig.display()))?;
    Ok(kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default()).await?)
}

/// A client for the API server kubectl would use: `$KUBECONFIG`, `~/.kube/config`, or the
/// pod's service account.
pub async fn inferred_kube_client() -> Result<kube::Client> {
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no --kubeconfig given, and none found ($KUBECONFIG, ~/.kube/config, in-cluster): {e}")
    })?;
    Ok(kube::Client::try_from(config)?)
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}
