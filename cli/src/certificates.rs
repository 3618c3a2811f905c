//! `baton certificates`: a CA, a server certificate and a client certificate, so that etcd can
//! speak TLS and check who connects. Agents take their work from etcd and run it: an etcd that
//! other machines reach must not take plain, unauthenticated connections.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use baton_apiserver::tls::Pki;

#[derive(clap::Args)]
pub struct CertificatesArgs {
    /// Where to write them (made if missing; a CA already there is kept and signs again).
    #[arg(long, default_value = "baton-pki")]
    dir: PathBuf,
    /// A name or IP address the server certificate covers (repeatable): each address clients
    /// reach etcd on.
    #[arg(long = "san", value_name = "NAME", required = true)]
    sans: Vec<String>,
    /// The client certificate's user (its CN).
    #[arg(long, default_value = "baton")]
    client: String,
}

pub fn run(args: CertificatesArgs) -> Result<()> {
    if args.sans.iter().any(|s| s.trim().is_empty()) {
        bail!("--san: give a host name or an IP address");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("--dir {}: cannot create it", args.dir.display()))?;
    let pki = Pki::in_dir(&args.dir);
    pki.ensure(&args.sans).with_context(|| format!("--dir {}: cannot write the certificates", args.dir.display()))?;
    let (cert, key) = pki.client_certificate(&args.client, None)?;
    let (client_cert, client_key) = (args.dir.join("client.crt"), args.dir.join("client.key"));
    std::fs::write(&client_cert, cert).with_context(|| format!("writing {}", client_cert.display()))?;
    baton_apiserver::setup::write_private(&client_key, &key)
        .with_context(|| format!("writing {}", client_key.display()))?;
    // etcd's superuser, to turn authentication on and give agents their identities.
    let (cert, key) = pki.client_certificate(baton_store::etcd_auth::ROOT, None)?;
    let (root_cert, root_key) = (args.dir.join("root.crt"), args.dir.join("root.key"));
    std::fs::write(&root_cert, cert).with_context(|| format!("writing {}", root_cert.display()))?;
    baton_apiserver::setup::write_private(&root_key, &key)
        .with_context(|| format!("writing {}", root_key.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let d = dir.display();
    println!(
        "In {d}: ca.crt (and ca.key: keep it safe), server.crt/server.key for etcd (covering {}), \
         client.crt/client.key for Baton's processes, root.crt/root.key for administering etcd.\n\n\
         etcd:   --cert-file {d}/server.crt --key-file {d}/server.key --client-cert-auth --trusted-ca-file {d}/ca.crt\n\
         Baton:  --store-ca-file {d}/ca.crt --store-cert-file {d}/client.crt --store-key-file {d}/client.key\n\n\
         Least privilege (each agent only its own keys):\n  \
         baton store enable-auth --store etcd://HOST:2379 --store-ca-file {d}/ca.crt --store-cert-file {d}/root.crt --store-key-file {d}/root.key\n  \
         baton store add-agent NAME --pki {d} (same --store flags), for each agent",
        args.sans.join(", ")
    );
    Ok(())
}

/// DER certificates as PEM text.
pub fn pem_of_certificates(certs: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut pem = String::new();
    for cert in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert);
        for line in text.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}
