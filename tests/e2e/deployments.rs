//! Deployments and placement, end to end with `baton dev`: a rolling upgrade watched while
//! it runs, and a UNIQUE app that cannot fit saying why.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_e2e::{Baton, http_status, process_groups_in};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// The instances of `app` straight from the API (faster than kubectl, for sampling).
fn instances(baton: &Baton, app: &str) -> Vec<Value> {
    let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/instances?labelSelector=app%3D{app}");
    let list = baton.api().get_json(&path);
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_rolling_upgrade_keeps_capacity_and_stays_within_the_maximum() {
    let mut baton = Baton::start_dev(&baton_binary(), 3);
    // 6 instances, at least ceil(6 × 0.5) = 3 healthy, at most floor(6 × 1.5) = 9 in all.
    let manifest = |version: &str| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: roll}}\nspec:\n  instances: 6\n  \
             cmd: python3 -m http.server $PORT0 --bind 127.0.0.1\n  resources: {{cpus: 0.05, mem: 16}}\n  \
             ports: [{{name: http}}]\n  env: {{V: \"{version}\"}}\n  \
             upgradeStrategy: {{minimumHealthCapacity: 0.5, maximumOverCapacity: 0.5}}\n  \
             healthChecks: [{{protocol: HTTP, path: /, delaySeconds: 0, intervalSeconds: 1, timeoutSeconds: 1}}]\n"
        )
    };
    let apply = |b: &Baton, version: &str| {
        let output = b.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest(version)));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    apply(&baton, "1");
    baton.wait_for("6 instances healthy and serving", WAIT, |b| {
        let all = instances(b, "roll");
        (all.len() == 6
            && all.iter().all(|i| {
                i["status"]["health"] == "Healthy"
                    && i["spec"]["ports"][0].as_u64().and_then(|p| http_status(p as u16)) == Some(200)
            }))
        .then_some(())
    });
    let old_version = instances(&baton, "roll")[0]["spec"]["version"].as_str().unwrap().to_string();

    apply(&baton, "2");
    let data_dir = baton.data_dir();
    let started = Instant::now();
    let (mut least_serving, mut most_processes, mut samples) = (usize::MAX, 0, 0);
    loop {
        // Instances the controller counts on (still wanted running after the requests) that
        // answer: old ones stop only once new ones pass their health check, so these never
        // fall below 3. One that did not answer yet is asked again after the second listing
        // (it may have started listening, and been counted on, in between).
        let answers = |i: &Value| i["spec"]["ports"][0].as_u64().and_then(|p| http_status(p as u16)) == Some(200);
        let name = |i: &Value| i["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let answered: std::collections::BTreeSet<String> =
            instances(&baton, "roll").iter().filter(|i| answers(i)).map(name).collect();
        let all = instances(&baton, "roll");
        let serving = all
            .iter()
            .filter(|i| i["status"]["phase"] == "Running" && i["spec"]["goal"] == "Running")
            .filter(|i| answered.contains(&name(i)) || answers(i))
            .count();
        least_serving = least_serving.min(serving);
        most_processes = most_processes.max(process_groups_in(&data_dir).len());
        samples += 1;
        let done = all.len() == 6
            && all.iter().all(|i| i["spec"]["version"] != old_version.as_str() && i["status"]["health"] == "Healthy");
        if done {
            break;
        }
        assert!(started.elapsed() < WAIT, "the rollout did not finish within {WAIT:?}\n{}", baton.log_tail());
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "rolling upgrade of 6: {samples} samples over {:.1} s; fewest serving {least_serving} (minimum 3), most processes {most_processes} (maximum 9)",
        started.elapsed().as_secs_f64()
    );
    assert!(least_serving >= 3, "serving instances fell to {least_serving}, below the minimum of 3");
    assert!(most_processes <= 9, "{most_processes} instance processes ran at once, above the maximum of 9");
    let status = baton.kubectl_json(&["get", "app", "roll"]);
    assert_eq!(status["status"]["updated"], 6);
    let progressing =
        status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").cloned();
    assert_eq!(progressing.map(|c| c["reason"].clone()), Some(Value::from("Complete")));
}

#[test]
fn a_unique_app_with_more_instances_than_agents_says_why_one_is_pending() {
    let mut baton = Baton::start_dev(&baton_binary(), 3);
    let manifest = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: one-per-agent}\nspec:\n  instances: 4\n  \
                    cmd: sleep 3600\n  resources: {cpus: 0.05, mem: 16}\n  constraints: [[hostname, UNIQUE]]\n";
    let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let yaml = baton.wait_for("3 running and 1 pending with the reason", WAIT, |b| {
        let yaml =
            String::from_utf8_lossy(&b.kubectl(&["get", "app", "one-per-agent", "-o", "yaml"]).stdout).into_owned();
        (yaml.contains("running: 3") && yaml.contains("1 of 4 instances cannot be placed")).then_some(yaml)
    });
    assert!(yaml.contains("3 agents: constraint hostname UNIQUE"), "the status says why:\n{yaml}");
    let app = baton.kubectl_json(&["get", "app", "one-per-agent"]);
    assert_eq!(app["status"]["pending"]["instances"], 1);
    assert_eq!(app["status"]["pending"]["rejections"][0]["reason"], "constraint hostname UNIQUE");
    assert_eq!(app["status"]["pending"]["rejections"][0]["agents"], 3);
    let agents: std::collections::BTreeSet<String> =
        instances(&baton, "one-per-agent").iter().map(|i| i["spec"]["agent"].as_str().unwrap().to_string()).collect();
    assert_eq!(agents.len(), 3, "one instance on each agent");
    // An event says the same.
    let selector = "involvedObject.name=one-per-agent,reason=FailedScheduling";
    let warning = baton.wait_for("a FailedScheduling event", WAIT, |b| {
        let events = b.kubectl_json(&["get", "events", "--field-selector", selector]);
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains("1 of 4")))
            .cloned()
    });
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["message"], "1 of 4 instances cannot be placed: 3 agents: constraint hostname UNIQUE");
}

#[test]
fn the_restart_annotation_replaces_every_instance() {
    let mut baton = Baton::start_dev(&baton_binary(), 2);
    let manifest = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: bounce}\nspec:\n  instances: 2\n  \
                    cmd: sleep 3600\n  resources: {cpus: 0.05, mem: 16}\n";
    let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ids = |b: &Baton| -> std::collections::BTreeSet<String> {
        instances(b, "bounce")
            .iter()
            .filter(|i| i["status"]["phase"] == "Running" && i["spec"]["goal"] == "Running")
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let before = baton.wait_for("2 instances running", WAIT, |b| Some(ids(b)).filter(|ids| ids.len() == 2));
    baton.kubectl_ok(&["annotate", "app", "bounce", "baton.dev/restartedAt=2026-11-21T12:00:00Z", "--overwrite"]);
    let after = baton.wait_for("2 new instances running and the old ones gone", WAIT, |b| {
        let now = ids(b);
        (now.len() == 2 && now.is_disjoint(&before) && instances(b, "bounce").len() == 2).then_some(now)
    });
    assert!(after.is_disjoint(&before));
}

/// Runs `baton rollout status ARGS` against the cluster; `(exit code, stdout, stderr)`.
fn rollout_status(baton: &Baton, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(baton_binary())
        .args(["rollout", "status"])
        .args(args)
        .arg("--kubeconfig")
        .arg(&baton.kubeconfig)
        .arg("--timeout")
        .arg("60s")
        .output()
        .expect("baton rollout status runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

/// `baton rollout status` waits for a deployment as `kubectl rollout status` does: exit 0 once
/// every instance runs the current version, healthy; 1, saying why, once it can make no
/// progress for `--progress-deadline`.
#[test]
fn rollout_status_waits_for_a_deployment_and_fails_one_that_cannot_progress() {
    let baton = Baton::start_dev(&baton_binary(), 1);
    let app = |name: &str, cpus: f64, version: &str| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  instances: 2\n  \
             cmd: sleep 3600\n  resources: {{cpus: {cpus}, mem: 8}}\n  env: {{V: \"{version}\"}}\n"
        )
    };
    for version in ["1", "2"] {
        let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app("web", 0.01, version)));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (code, stdout, stderr) = rollout_status(&baton, &["app/web"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("app \"web\" successfully rolled out: 2 instances run version"), "{stdout}");
    }
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app("huge", 1000.0, "1")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, stdout, stderr) = rollout_status(&baton, &["huge", "--progress-deadline", "2s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("app \"huge\" made no progress for 2s: Stuck: 2 of 2 instances cannot be placed"),
        "{stderr}"
    );
    let (code, _, stderr) = rollout_status(&baton, &["app/missing"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("app \"missing\" not found in namespace \"default\""), "{stderr}");
}
