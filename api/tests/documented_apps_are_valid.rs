//! The Apps and AppGroups users copy from the docs and `examples/` are valid as written:
//! each parses strictly (no unknown fields) and passes validation, and the objects of one
//! file form no dependency cycle.

use std::path::Path;

use baton_api::{App, AppGroup};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Parses `yaml` as a `T`, refusing unknown fields as the API server does by default.
fn parse<T: serde::de::DeserializeOwned>(source: &str, yaml: &str) -> T {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut unknown = Vec::new();
    let typed: T = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    // The type and version are checked by the API server's routing, not by the struct.
    unknown.retain(|path| path != "apiVersion" && path != "kind");
    assert!(unknown.is_empty(), "{source}: unknown fields {unknown:?}");
    typed
}

fn check(source: &str, yaml: &str) -> App {
    let app: App = parse(source, yaml);
    let errors = baton_api::validation::validate_app(&app);
    assert!(errors.is_empty(), "{source}: {errors:?}");
    app
}

#[test]
fn every_example_app_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let source = path.display().to_string();
            let (mut apps, mut groups) = (Vec::new(), Vec::new());
            for document in text.split("\n---\n") {
                if document.contains("\nkind: App\n") || document.starts_with("kind: App\n") {
                    apps.push(check(&source, document));
                } else if document.contains("\nkind: AppGroup\n") {
                    let group: AppGroup = parse(&source, document);
                    let errors = baton_api::groups::validate_app_group(&group);
                    assert!(errors.is_empty(), "{source}: {errors:?}");
                    groups.push(group);
                }
            }
            let cycle = baton_api::groups::Graph::new(&apps, &groups).find_cycle();
            assert!(cycle.is_none(), "{source}: {}", cycle.unwrap());
            checked += apps.len();
        }
    }
    assert!(checked >= 5, "examples/ has the web, snowball and shop apps");
}

#[test]
fn the_readme_app_is_valid() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## What an App says").nth(1).expect("the README has the section");
    let block = section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
    check("README.md, What an App says", block);
}
