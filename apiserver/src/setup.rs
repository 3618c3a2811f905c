//! What a server needs before it serves: its certificate, the tokens and rules that say who
//! may do what, and the admin kubeconfig it writes. Generated in the data dir on first start
//! and kept, unless given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::{ADMINS, Rules, Tokens};
use crate::kubeconfig::{Credentials, kubeconfig};
use crate::{Security, tls};

/// Where the security material comes from.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve this certificate and key (PEM) instead of generated ones.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept client certificates signed by this CA (default: the generated CA, when the
    /// certificate is generated).
    pub client_ca: Option<PathBuf>,
    /// The tokens file (default: `<data-dir>/tokens`, made with an admin token if missing).
    pub tokens: Option<PathBuf>,
    /// The authorization rules file (default: none; only `baton:admins` may act).
    pub rules: Option<PathBuf>,
    /// More names (DNS names or IP addresses) the generated certificate covers, for clients
    /// on other machines.
    pub tls_names: Vec<String>,
    /// A front proxy (the Kubernetes aggregation layer) whose certificate makes the users it
    /// names in headers count.
    pub front_proxy: Option<tls::FrontProxy>,
}

/// Setup errors: each names what was wrong with which input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::ConfigError),
    #[error("{0}")]
    Other(String),
}

/// A server ready to start.
pub struct Setup {
    pub tls: tls::ServerTls,
    pub security: Security,
    /// The kubeconfig for an admin, to write next to the data.
    pub admin_kubeconfig: String,
}

/// The names the generated server certificate covers: loopback, this host's name, and the
/// listen address when it is a specific one.
fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Ok(host) = host.into_string()
    {
        names.push(host);
    }
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The URL clients on this machine use to reach `address`.
pub fn server_url(address: SocketAddr) -> String {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("https://{address}")
}

/// Writes a file only its owner may read (a kubeconfig holds a token).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

/// Prepares TLS, tokens and rules in `data_dir` for a server on `address`.
pub fn prepare(data_dir: &Path, address: SocketAddr, options: &Options) -> Result<Setup, Error> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Other(format!("{}: cannot create it: {e}", data_dir.display())))?;
    let (cert, key, client_ca, ca_pem) = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            let ca_pem = options
                .client_ca
                .as_ref()
                .map(|ca| {
                    std::fs::read_to_string(ca).map_err(|e| Error::Other(format!("--client-ca {}: {e}", ca.display())))
                })
                .transpose()?;
            (cert.clone(), key.clone(), options.client_ca.clone(), ca_pem)
        }
        (None, None) => {
            let pki = tls::Pki::in_dir(data_dir);
            pki.ensure(&server_names(address, &options.tls_names))?;
            let client_ca = options.client_ca.clone().unwrap_or_else(|| pki.ca_cert.clone());
            (pki.server_cert.clone(), pki.server_key.clone(), Some(client_ca), Some(pki.ca_pem()?))
        }
        _ => {
            return Err(Error::Other(
                "--tls-cert and --tls-key go together: give both, or neither to have them generated".into(),
            ));
        }
    };
    let tls = tls::server_config(&cert, &key, client_ca.as_deref(), options.front_proxy.as_ref())?;

    let tokens_path = options.tokens.clone().unwrap_or_else(|| data_dir.join("tokens"));
    if options.tokens.is_none() && !tokens_path.exists() {
        let token: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
        };
        let contents = format!("# token,user,group1|group2\n{token},admin,{ADMINS}\n");
        write_private(&tokens_path, &contents).map_err(|e| Error::Other(format!("{}: {e}", tokens_path.display())))?;
    }
    let tokens = Tokens::load(&tokens_path)?;
    let rules = match &options.rules {
        Some(path) => Rules::load(path)?,
        None => Rules::default(),
    };
    let admin_token = tokens.first_of_group(ADMINS);
    let credentials = match &admin_token {
        Some(token) => Credentials::Token(token),
        None => Credentials::None,
    };
    let admin_kubeconfig = kubeconfig(&server_url(address), ca_pem.as_deref(), credentials, "default");
    Ok(Setup { tls, security: Security { tokens, rules, delegated: None }, admin_kubeconfig })
}
