//! The CustomResourceDefinitions of Baton's kinds, for a Kubernetes API server (the Helm
//! install) and for `crds/` in the repository. `baton crds` prints [`crds_yaml`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::app::App;
use crate::groups::AppGroup;
use crate::maintenance::Maintenance;
use crate::tenant::Tenant;

/// Every CRD Baton defines.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![app(), app_group(), maintenance(), tenant()]
}

/// The App CRD, its descriptions unwrapped (see [`unwrap_descriptions`]).
pub fn app() -> CustomResourceDefinition {
    unwrapped(App::crd())
}

/// The AppGroup CRD, its descriptions unwrapped (see [`unwrap_descriptions`]).
pub fn app_group() -> CustomResourceDefinition {
    unwrapped(AppGroup::crd())
}

/// The Maintenance CRD, its descriptions unwrapped (see [`unwrap_descriptions`]).
pub fn maintenance() -> CustomResourceDefinition {
    unwrapped(Maintenance::crd())
}

/// The Tenant CRD, its descriptions unwrapped (see [`unwrap_descriptions`]).
pub fn tenant() -> CustomResourceDefinition {
    unwrapped(Tenant::crd())
}

fn unwrapped(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    unwrap_descriptions(&mut value);
    serde_json::from_value(value).expect("a CRD with other descriptions reads back")
}

/// Joins the lines of every paragraph of every `description` in `schema` into one line.
/// Descriptions come from doc comments, wrapped at the source's width; `kubectl explain`
/// wraps them again at the terminal's, which left a short line at each source break.
pub fn unwrap_descriptions(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(text) if key == "description" => *text = unwrap_paragraphs(text),
                    other => unwrap_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// `text` with the lines of each paragraph joined by spaces; paragraphs stay apart.
fn unwrap_paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// All CRDs as one YAML stream (documents separated by `---`).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("a CRD serializes to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_unwrapped_within_paragraphs() {
        assert_eq!(unwrap_paragraphs("one\ntwo  \n three\n\nfour\nfive"), "one two three\n\nfour five");
        assert_eq!(unwrap_paragraphs("single line"), "single line");
        let mut schema = serde_json::json!({
            "description": "a\nb",
            "properties": {"x": {"description": "c\nd", "default": "e\nf"}},
            "items": [{"description": "g\n\nh"}],
        });
        unwrap_descriptions(&mut schema);
        assert_eq!(
            schema,
            serde_json::json!({
                "description": "a b",
                "properties": {"x": {"description": "c d", "default": "e\nf"}},
                "items": [{"description": "g\n\nh"}],
            })
        );
        let crd = serde_json::to_string(&app()).unwrap();
        assert!(!crd.contains(r"at once (a\nhealth kill"), "the App CRD's descriptions are unwrapped");
        assert!(crd.contains("at once (a health kill"));
    }
}
