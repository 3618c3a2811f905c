//! The README's walkthrough, end to end: the built `baton dev` as a real process, the real
//! kubectl, real instance processes answering HTTP on the ports Baton assigned.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::{Baton, ProcessId, group_processes, http_status, processes_in};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One instance of `web` as `kubectl get instances -o json` shows it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    phase: String,
    port: Option<u16>,
    pid: Option<u32>,
}

fn instances(baton: &Baton) -> Vec<Seen> {
    let list = baton.kubectl_json(&["get", "instances", "-l", "app=web"]);
    list["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| Seen {
            id: i["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            phase: i["status"]["phase"].as_str().unwrap_or_default().to_string(),
            port: i["spec"]["ports"][0].as_u64().map(|p| p as u16),
            pid: i["status"]["pid"].as_u64().map(|p| p as u32),
        })
        .collect()
}

/// Waits until exactly `n` instances of web run and every one answers 200 on its port.
fn wait_serving(baton: &mut Baton, n: usize) -> Vec<Seen> {
    baton.wait_for(&format!("{n} instances of web running and answering HTTP"), WAIT, |b| {
        let seen = instances(b);
        let serving =
            seen.len() == n && seen.iter().all(|i| i.phase == "Running" && i.port.and_then(http_status) == Some(200));
        serving.then_some(seen)
    })
}

fn processes_of(seen: &[Seen]) -> Vec<ProcessId> {
    let leaders: Vec<u32> = seen.iter().filter_map(|i| i.pid).collect();
    group_processes(&leaders)
}

#[test]
fn walkthrough_apply_scale_replace_delete_stop() {
    let mut baton = Baton::start_dev(&baton_binary(), 3);

    baton.kubectl_ok(&["apply", "-f", &example("web.yaml")]);
    let three = wait_serving(&mut baton, 3);
    let ports: BTreeSet<Option<u16>> = three.iter().map(|i| i.port).collect();
    assert_eq!(ports.len(), 3, "each instance has its own port: {three:?}");

    let table = baton.kubectl_ok(&["get", "apps"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATE", "INSTANCES", "RUNNING", "HEALTHY", "UNHEALTHY", "FAILURES", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "Running", "3", "3"], "{table}");
    let wide = baton.kubectl_ok(&["get", "instances", "-l", "app=web"]);
    assert!(
        wide.starts_with("NAME") && wide.contains("AGENT") && wide.contains("PORTS") && wide.contains("PHASE"),
        "{wide}"
    );

    baton.kubectl_ok(&["scale", "app/web", "--replicas=5"]);
    let five = wait_serving(&mut baton, 5);

    // SIGKILL one instance's process: it is replaced by a new instance.
    let victim = five[0].clone();
    let victim_pid = victim.pid.expect("a running instance has a pid");
    kill(Pid::from_raw(victim_pid as i32), Signal::SIGKILL).expect("killing the instance process");
    // It stays listed as Failed (with its output) while a new one replaces it.
    let replaced = baton.wait_for("the killed instance to be replaced", WAIT, |b| {
        let seen = instances(b);
        let (ended, running): (Vec<Seen>, Vec<Seen>) = seen.into_iter().partition(|i| i.id == victim.id);
        let ok = running.len() == 5
            && ended.iter().all(|i| i.phase == "Failed")
            && running.iter().all(|i| i.phase == "Running" && i.port.and_then(http_status) == Some(200));
        ok.then_some(running)
    });
    assert!(replaced.iter().all(|i| i.pid != Some(victim_pid)));
    let listed = baton.kubectl_ok(&["get", "instance", &victim.id]);
    assert!(listed.contains("Failed") && listed.contains("SIGKILL"), "phase and how it ended: {listed}");

    // Delete: every process of every instance goes.
    let processes = processes_of(&replaced);
    assert!(processes.len() >= 5, "each instance has at least one live process: {processes:?}");
    baton.kubectl_ok(&["delete", "app", "web"]);
    baton.wait_for("every process of web to be gone", WAIT, |_| processes.iter().all(|p| !p.is_alive()).then_some(()));
    baton.wait_for("the instances of web to disappear", WAIT, |b| instances(b).is_empty().then_some(()));

    // Stopping baton stops what it runs.
    baton.kubectl_ok(&["apply", "-f", &example("web.yaml")]);
    let running = processes_of(&wait_serving(&mut baton, 3));
    let status = baton.stop();
    assert!(status.success(), "baton exits cleanly on SIGTERM: {status}\n{}", baton.log_tail());
    let left: Vec<&ProcessId> = running.iter().filter(|p| p.is_alive()).collect();
    assert!(left.is_empty(), "instance processes left after baton stopped: {left:?}");
    assert_eq!(processes_in(&baton.data_dir()), Vec::<u32>::new(), "nothing runs from the data dir");
}

#[test]
fn a_restarted_baton_keeps_its_apps_and_adopts_what_a_crash_left_running() {
    let mut baton = Baton::start_dev(&baton_binary(), 2);
    baton.kubectl_ok(&["apply", "-f", &example("web.yaml")]);
    baton.kubectl_ok(&["scale", "app/web", "--replicas=2"]);
    wait_serving(&mut baton, 2);

    // A clean stop stops every instance; a start brings the app back with new ones.
    assert!(baton.stop().success());
    baton.restart();
    let after_stop = wait_serving(&mut baton, 2);

    // A crash leaves the instance processes running; the next start adopts them (matched
    // by pid and start time): the same instances keep serving, nothing is restarted.
    let processes = processes_of(&after_stop);
    baton.kill();
    assert!(processes.iter().all(|p| p.is_alive()), "instance processes outlive a crashed baton");
    baton.restart();
    let adopted = wait_serving(&mut baton, 2);
    let ids = |seen: &[Seen]| seen.iter().map(|i| (i.id.clone(), i.pid)).collect::<BTreeSet<_>>();
    assert_eq!(ids(&adopted), ids(&after_stop), "the same instances, with the same pids");
    assert!(processes.iter().all(|p| p.is_alive()), "no process was restarted");

    // Adopted instances are stopped like any other.
    baton.kubectl_ok(&["delete", "app", "web"]);
    baton.wait_for("the adopted processes to be stopped", WAIT, |_| {
        processes.iter().all(|p| !p.is_alive()).then_some(())
    });
}

#[test]
fn bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let baton = Baton::start_dev(&baton_binary(), 1);
    let cases = [
        ("instances: -1\n  cmd: sleep 1", "spec.instances", "Invalid value: -1"),
        ("cmd: sleep 1\n  colour: red", "spec.colour", "Unknown field"),
        ("instances: 2", "spec.cmd", "Required value"),
        ("cmd: sleep 1\n  resources: {mem: 0}", "spec.resources.mem", "Invalid value: 0"),
    ];
    for (spec, field, words) in cases {
        let manifest = format!("apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: bad\nspec:\n  {spec}\n");
        let output = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "kubectl apply of {spec:?} must fail");
        assert!(
            stderr.contains("is invalid") && stderr.contains(field) && stderr.contains(words),
            "kubectl's error for {spec:?} names {field} ({words}): {stderr}"
        );

        // The same over the wire: a 422 Status whose cause names the field.
        let json = yaml_to_json(&manifest);
        let (code, body) = baton.api().post_json("/apis/baton.dev/v1alpha1/namespaces/default/apps", &json);
        assert_eq!(code, 422, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("a Status object");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], field, "{body}");
    }
    let apps = baton.kubectl_json(&["get", "apps"]);
    assert_eq!(apps["items"].as_array().map(Vec::len), Some(0), "nothing was stored: {apps}");
    let (code, _) = baton.api().get("/apis/baton.dev/v1alpha1/namespaces/default/apps/bad");
    assert_eq!(code, 404);
}

/// A YAML manifest as JSON, for a raw API request.
fn yaml_to_json(manifest: &str) -> String {
    let value: serde_json::Value = serde_saphyr::from_str(manifest).expect("a YAML manifest");
    value.to_string()
}
