//! Tenants, end to end with `baton dev`: a Tenant's namespaces are created for it, labelled
//! for its scope; its quota holds against 100 concurrent `kubectl scale` requests (exactly as
//! many pass as fit); `kubectl get tenants` shows what its apps ask for.

use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::Baton;

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

#[test]
fn a_tenants_quota_holds_against_100_concurrent_scales() {
    let mut baton = Baton::start_dev(&baton_binary(), 1);
    let tenant = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  \
                  namespaces: [team-a]\n  quota: {instances: 30, cpus: 100}\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(tenant));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let labels = baton.wait_for("the tenant's namespace, labelled", WAIT, |b| {
        let ns = b.kubectl(&["get", "namespace", "team-a", "-o", "jsonpath={.metadata.labels}"]);
        let labels = String::from_utf8_lossy(&ns.stdout).into_owned();
        (ns.status.success() && labels.contains("baton.dev/tenant")).then_some(labels)
    });
    assert!(labels.contains("team-a"), "{labels}");

    // 100 apps of 0 instances, then 100 concurrent scales to 1: 30 fit.
    let apps: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: a{i}, namespace: team-a}}\nspec:\n  \
                 instances: 0\n  cmd: sleep 3600\n  resources: {{cpus: 0.01, mem: 8}}\n"
            )
        })
        .collect();
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&apps.join("---\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<std::process::Output> = std::thread::scope(|s| {
        let baton = &baton;
        let handles: Vec<_> = (0..100)
            .map(|i| {
                s.spawn(move || {
                    let app = format!("app/a{i}");
                    baton.kubectl(&["scale", &app, "--replicas=1", "-n", "team-a"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a kubectl thread")).collect()
    });
    let passed = results.iter().filter(|o| o.status.success()).count();
    let refusals: Vec<String> = results
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    eprintln!("100 concurrent kubectl scale: {passed} passed, {} refused", refusals.len());
    assert_eq!(passed, 30, "exactly what fits the quota passed; refusals: {:?}", &refusals[..refusals.len().min(3)]);
    assert!(
        refusals
            .iter()
            .all(|r| r
                .contains("exceeded quota: team-a, requested: instances=1, used: instances=30, limited: instances=30")),
        "every refusal names the resource, the request, the usage and the limit: {:?}",
        &refusals[..refusals.len().min(3)]
    );
    let table = baton.wait_for("kubectl get tenants to show the usage", WAIT, |b| {
        let out = b.kubectl(&["get", "tenants"]);
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        table.contains("instances=30/30").then_some(table)
    });
    assert!(table.contains("cpus=0.3/100") && table.contains("team-a"), "{table}");
}
