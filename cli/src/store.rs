//! `baton store`: administering the store's access control (etcd's users and roles), so that
//! each part of Baton holds only the keys it needs — above all, each agent only its own.

use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_store::etcd_auth;

use crate::flags::StoreFlags;

#[derive(clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand)]
enum StoreCommand {
    /// Turn etcd's authentication on: `root` (etcd's superuser) and the platform's users
    /// (baton, baton-controller, baton-apiserver) with Baton's keyspace. Give the `root`
    /// certificate (`baton certificates` makes root.crt): the same one adds agents later.
    EnableAuth(EnableAuthArgs),
    /// Give an agent its own store identity: a user that reads only its assignments and
    /// writes only its registration and statuses, and (with --pki) a certificate for it.
    AddAgent(AddAgentArgs),
    /// Take an agent's store identity away: its user and role, and the registrar's record
    /// of the key that joined as it (so a rebuilt machine can join again under that name).
    RemoveAgent(RemoveAgentArgs),
}

#[derive(clap::Args)]
struct RemoveAgentArgs {
    /// The agent's name.
    name: String,
    #[command(flatten)]
    store: StoreFlags,
}

#[derive(clap::Args)]
struct EnableAuthArgs {
    #[command(flatten)]
    store: StoreFlags,
}

#[derive(clap::Args)]
struct AddAgentArgs {
    /// The agent's name (its --name; a host name by default).
    name: String,
    #[command(flatten)]
    store: StoreFlags,
    /// The directory of `baton certificates`: its CA signs the agent's client certificate,
    /// written to <pki>/agents/<name>.crt and .key.
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
}

pub async fn run(args: StoreArgs) -> Result<()> {
    match args.command {
        StoreCommand::EnableAuth(args) => {
            let store = args.store.connect_etcd().await?;
            store.enable_auth(&args.store.keys()).await.context(
                "turning authentication on (connect as etcd's root: --store-cert-file root.crt from `baton certificates`)",
            )?;
            println!(
                "Authentication is on. Users: root (administration), {} (Baton's keyspace, {}).\n\
                 Give each agent its own identity: baton store add-agent NAME --pki DIR (same --store flags).",
                etcd_auth::PLATFORM_USERS.join(", "),
                args.store.keys().root_prefix()
            );
            Ok(())
        }
        StoreCommand::AddAgent(args) => add_agent(args).await,
        StoreCommand::RemoveAgent(args) => remove_agent(args).await,
    }
}

async fn remove_agent(args: RemoveAgentArgs) -> Result<()> {
    use baton_store::{Op, Store, Txn};
    if let Some(problem) = baton_api::names::dns_subdomain_problem(&args.name) {
        anyhow::bail!("agent name {:?}: {problem}", args.name);
    }
    let store = args.store.connect_etcd().await?;
    let keys = args.store.keys();
    store
        .remove_agent(&args.name)
        .await
        .with_context(|| format!("removing agent {}'s identity (connect as etcd's root)", args.name))?;
    store
        .txn(Txn::new().and_then([Op::delete(keys.agent_identity(&args.name))]))
        .await
        .with_context(|| format!("forgetting the key that joined as agent {}", args.name))?;
    println!(
        "Agent {} has no store identity now: its certificates reach nothing, and it may join again (with any key).",
        args.name
    );
    Ok(())
}

async fn add_agent(args: AddAgentArgs) -> Result<()> {
    if let Some(problem) = baton_api::names::dns_subdomain_problem(&args.name) {
        anyhow::bail!("agent name {:?}: {problem}", args.name);
    }
    let store = args.store.connect_etcd().await?;
    let keys = args.store.keys();
    store
        .add_agent(&keys, &args.name)
        .await
        .with_context(|| format!("adding agent {} (connect as etcd's root)", args.name))?;
    let user = etcd_auth::agent_user(&args.name);
    println!(
        "User {user} reads {} and writes {}, {}.",
        keys.agent_instances(&args.name),
        keys.agent(&args.name),
        keys.agent_statuses(&args.name)
    );
    if let Some(dir) = &args.pki {
        let pki = baton_apiserver::tls::Pki::in_dir(dir);
        if !pki.ca_key.exists() {
            anyhow::bail!(
                "--pki {}: no ca.key there (make one with `baton certificates --dir {}`)",
                dir.display(),
                dir.display()
            );
        }
        let (cert, key) = pki.client_certificate(&user, None)?;
        let agents = dir.join("agents");
        std::fs::create_dir_all(&agents).with_context(|| format!("creating {}", agents.display()))?;
        let (cert_file, key_file) =
            (agents.join(format!("{}.crt", args.name)), agents.join(format!("{}.key", args.name)));
        std::fs::write(&cert_file, cert).with_context(|| format!("writing {}", cert_file.display()))?;
        baton_apiserver::setup::write_private(&key_file, &key)
            .with_context(|| format!("writing {}", key_file.display()))?;
        println!(
            "Its certificate: on the agent's machine, baton agent --name {} --store-cert-file {} --store-key-file {} \
             (and --store-ca-file {})",
            args.name,
            cert_file.display(),
            key_file.display(),
            pki.ca_cert.display()
        );
    }
    Ok(())
}
