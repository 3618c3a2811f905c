//! Kubeconfigs: the admin one a server writes next to its data, so that `kubectl` and the
//! controller can reach it with `KUBECONFIG=<data-dir>/kubeconfig`, and the ones
//! `baton kubeconfig` makes for users with client certificates.

use base64::Engine;
use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

/// Name of the cluster, user and context in the kubeconfig.
pub const CONTEXT: &str = "baton";

/// How a kubeconfig's user proves who it is.
pub enum Credentials<'a> {
    None,
    Token(&'a str),
    /// A client certificate and its key (PEM).
    Certificate {
        cert: &'a str,
        key: &'a str,
    },
}

/// A kubeconfig (YAML) whose current context reaches `server` (e.g.
/// `https://127.0.0.1:6443`) in `namespace`, trusting `ca` (PEM) and presenting
/// `credentials`.
pub fn kubeconfig(server: &str, ca: Option<&str>, credentials: Credentials<'_>, namespace: &str) -> String {
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let auth_info = match credentials {
        Credentials::None => AuthInfo::default(),
        Credentials::Token(token) => AuthInfo { token: Some(token.to_string().into()), ..AuthInfo::default() },
        Credentials::Certificate { cert, key } => AuthInfo {
            client_certificate_data: Some(encode(cert)),
            client_key_data: Some(encode(key).into()),
            ..AuthInfo::default()
        },
    };
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: CONTEXT.into(),
            cluster: Some(Cluster {
                server: Some(server.into()),
                certificate_authority_data: ca.map(encode),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo { name: CONTEXT.into(), auth_info: Some(auth_info), other: Default::default() }],
        contexts: vec![NamedContext {
            name: CONTEXT.into(),
            context: Some(Context {
                cluster: CONTEXT.into(),
                user: Some(CONTEXT.into()),
                namespace: Some(namespace.into()),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(CONTEXT.into()),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Kubeconfig::default()
    };
    serde_saphyr::to_string(&config).expect("a kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn kube_reads_what_it_writes() {
        let ca = Some("-----BEGIN CERTIFICATE-----\n");
        let yaml = super::kubeconfig("https://127.0.0.1:6443", ca, super::Credentials::Token("t0ken"), "default");
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("kube parses the kubeconfig");
        assert_eq!(parsed.current_context.as_deref(), Some("baton"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert!(cluster.certificate_authority_data.is_some());
        assert!(yaml.contains("t0ken"), "{yaml}");

        let credentials = super::Credentials::Certificate { cert: "CERT", key: "KEY" };
        let yaml = super::kubeconfig("https://127.0.0.1:6443", ca, credentials, "shop");
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("kube parses the kubeconfig");
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some(), "{yaml}");
        assert_eq!(parsed.contexts[0].context.as_ref().unwrap().namespace.as_deref(), Some("shop"));
    }
}
