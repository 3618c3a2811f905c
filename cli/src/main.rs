//! `baton`: the one binary. Each subcommand wires the library crates together; the logic
//! lives in those crates.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod dev;

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
    /// Print Baton's CustomResourceDefinitions as YAML (what crds/ holds).
    Crds,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Crds => {
            print!("{}", baton_api::crds::crds_yaml());
            Ok(())
        }
        Command::Dev(args) => tokio::runtime::Runtime::new()?.block_on(dev::run(args)),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info for Baton, warn otherwise).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,baton=info,baton_store=info,baton_apiserver=info,baton_controllers=info,baton_agent=info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
