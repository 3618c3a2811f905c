//! `kubectl-baton`: the kubectl plugin (`kubectl baton logs INSTANCE …`, `kubectl baton top`). kubectl runs any
//! `kubectl-<name>` on PATH as `kubectl <name>`; `cargo build` makes this one next to `baton`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod logs;
mod top;

#[derive(Parser)]
#[command(name = "kubectl baton", version, about = "Baton's additions to kubectl")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print an instance's output (stdout, or stderr), as `kubectl logs` does for a pod.
    Logs(logs::LogsArgs),
    /// What running instances use (cpu, memory, disk), as `kubectl top pods` shows pods.
    Top(top::TopArgs),
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Logs(args) => runtime.block_on(logs::run(args)),
        Command::Top(args) => runtime.block_on(top::run(args)),
    }
}

/// Errors as kubectl prints them: one line, what went wrong and why.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
