//! `baton kubeconfig`: a kubeconfig for a user, with a client certificate signed by the API
//! server's generated CA.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use baton_apiserver::kubeconfig::{Credentials, kubeconfig};
use baton_apiserver::tls::Pki;

#[derive(clap::Args)]
pub struct KubeconfigArgs {
    /// The API server's --data-dir (where its CA is).
    #[arg(long, default_value = ".baton-apiserver")]
    data_dir: PathBuf,
    /// The user's name (the certificate's CN).
    #[arg(long)]
    user: String,
    /// The user's group (the certificate's O), which authorization rules may name.
    #[arg(long)]
    group: Option<String>,
    /// The URL users reach the API server on.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// The namespace of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
}

pub fn run(args: KubeconfigArgs) -> Result<()> {
    if args.user.trim().is_empty() {
        bail!("--user: give the user's name");
    }
    if !args.server.starts_with("https://") {
        bail!("--server {}: the API server speaks only HTTPS; give an https:// URL", args.server);
    }
    let pki = Pki::in_dir(&args.data_dir);
    if !pki.ca_key.exists() {
        bail!(
            "--data-dir {}: no generated CA there ({} is missing); give the API server's --data-dir, \
             or issue certificates with the CA you gave it as --client-ca",
            args.data_dir.display(),
            pki.ca_key.display()
        );
    }
    let (cert, key) = pki
        .client_certificate(&args.user, args.group.as_deref())
        .with_context(|| format!("issuing a certificate with the CA in {}", args.data_dir.display()))?;
    let ca = pki.ca_pem()?;
    let credentials = Credentials::Certificate { cert: &cert, key: &key };
    print!("{}", kubeconfig(&args.server, Some(&ca), credentials, &args.namespace));
    Ok(())
}
