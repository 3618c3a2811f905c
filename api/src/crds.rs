//! The CustomResourceDefinitions of Baton's kinds, for a Kubernetes API server (the Helm
//! install) and for `crds/` in the repository. `baton crds` prints [`crds_yaml`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::app::App;
use crate::groups::AppGroup;

/// Every CRD Baton defines.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![App::crd(), AppGroup::crd()]
}

/// All CRDs as one YAML stream (documents separated by `---`).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("a CRD serializes to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
