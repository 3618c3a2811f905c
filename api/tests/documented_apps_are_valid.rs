//! The Apps users copy from the docs and `examples/` are valid as written: each parses
//! strictly (no unknown fields) and passes validation.

use std::path::Path;

use baton_api::App;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Parses `yaml` as an App, refusing unknown fields as the API server does by default.
fn check(source: &str, yaml: &str) {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut unknown = Vec::new();
    let app: App = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    // The type and version are checked by the API server's routing, not by the struct.
    unknown.retain(|path| path != "apiVersion" && path != "kind");
    assert!(unknown.is_empty(), "{source}: unknown fields {unknown:?}");
    let errors = baton_api::validation::validate_app(&app);
    assert!(errors.is_empty(), "{source}: {errors:?}");
}

#[test]
fn every_example_app_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("kind: App\n") {
                check(&path.display().to_string(), &text);
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "examples/ has the web and snowball apps");
}

#[test]
fn the_readme_app_is_valid() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## What an App says").nth(1).expect("the README has the section");
    let block = section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
    check("README.md, What an App says", block);
}
