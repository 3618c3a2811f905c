//! `crds/` holds what `baton crds` prints. This fails when a change to the resource types
//! was not followed by regenerating it.

#[test]
fn crds_directory_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/baton.dev.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = baton_api::crds::crds_yaml();
    assert!(
        on_disk == generated,
        "crds/baton.dev.yaml is stale: regenerate it with `cargo run -p baton -- crds > crds/baton.dev.yaml`"
    );
}
