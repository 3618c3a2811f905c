//! `crds/` and the Helm chart's `charts/baton/crds/` hold what `baton crds` prints. This
//! fails when a change to the resource types was not followed by regenerating them.

#[test]
fn crds_directories_match_the_types() {
    let generated = baton_api::crds::crds_yaml();
    for path in ["crds/baton.dev.yaml", "charts/baton/crds/baton.dev.yaml"] {
        let on_disk = std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{path} is stale: regenerate it with `cargo run -p baton -- crds | tee crds/baton.dev.yaml > charts/baton/crds/baton.dev.yaml`"
        );
    }
}
