//! The admin kubeconfig a server writes next to its data, so that `kubectl` and the
//! controller can reach it with `KUBECONFIG=<data-dir>/kubeconfig`.

use kube::config::{Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

/// Name of the cluster, user and context in the kubeconfig.
pub const CONTEXT: &str = "baton";

/// A kubeconfig (YAML) whose current context reaches `server` (e.g. `http://127.0.0.1:6443`)
/// in namespace `default`.
pub fn admin_kubeconfig(server: &str) -> String {
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: CONTEXT.into(),
            cluster: Some(Cluster { server: Some(server.into()), ..Cluster::default() }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: CONTEXT.into(),
            auth_info: Some(Default::default()),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: CONTEXT.into(),
            context: Some(Context {
                cluster: CONTEXT.into(),
                user: Some(CONTEXT.into()),
                namespace: Some("default".into()),
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
        let yaml = super::admin_kubeconfig("http://127.0.0.1:6443");
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("kube parses the kubeconfig");
        assert_eq!(parsed.current_context.as_deref(), Some("baton"));
        assert_eq!(parsed.clusters[0].cluster.as_ref().unwrap().server.as_deref(), Some("http://127.0.0.1:6443"));
    }
}
