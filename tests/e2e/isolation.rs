//! What agents enforce of what an app asks for: the user its processes run as.

use std::path::Path;
use std::time::Duration;

use baton_e2e::Baton;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_baton");
const WAIT: Duration = Duration::from_secs(60);

fn app(name: &str, user: &str) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  user: {user}\n  \
         cmd: \"id -u > uid; exec sleep 100000\"\n  resources: {{cpus: 0.1, mem: 16}}\n  healthChecks:\n  \
         - protocol: COMMAND\n    command: {{value: \"test $(id -u) = $(cat uid)\"}}\n    delaySeconds: 0\n    \
         intervalSeconds: 1\n    timeoutSeconds: 1\n    gracePeriodSeconds: 10\n"
    )
}

fn apply(baton: &Baton, manifest: &str) {
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "kubectl apply: {}\n{manifest}", String::from_utf8_lossy(&out.stderr));
}

fn instance(baton: &Baton, app: &str) -> Option<Value> {
    let list = baton.kubectl_json(&["get", "instances", "-l", &format!("app={app}")]);
    list["items"].as_array()?.first().cloned()
}

/// The uid a process runs as, from /proc.
fn uid_of(pid: u64) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

#[test]
fn an_app_runs_as_its_user_and_an_unknown_user_fails_saying_so() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a user nobody on this machine");
    let mut baton = Baton::start_dev(Path::new(BIN), 1);
    // With the sandboxes in a private dir, nobody cannot reach its own: the instance fails
    // saying so.
    let top = baton.data_dir().parent().expect("the data dir is in a temporary dir").to_path_buf();
    let mode = |m: u32| std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    mode(0o700);
    apply(&baton, &app("unreachable", "nobody"));
    let message = baton.wait_for("the instance whose user cannot reach its sandbox to fail", WAIT, |b| {
        let i = instance(b, "unreachable")?;
        (i["status"]["phase"] == "Failed").then(|| i["status"]["message"].as_str().unwrap_or_default().to_string())
    });
    assert!(message.contains("user \"nobody\" cannot reach its sandbox"), "{message}");
    baton.kubectl_ok(&["delete", "app", "unreachable"]);
    mode(0o755);

    apply(&baton, &app("as-nobody", "nobody"));
    // Running, and healthy: its command check ran as the same user as the process.
    let pid = baton.wait_for("as-nobody running and healthy", WAIT, |b| {
        let i = instance(b, "as-nobody")?;
        (i["status"]["phase"] == "Running" && i["status"]["health"] == "Healthy")
            .then(|| i["status"]["pid"].as_u64())?
    });
    assert_eq!(uid_of(pid), Some(nobody.uid.as_raw()), "the process runs as nobody");

    apply(&baton, &app("as-nobody-at-all", "no-such-user-here"));
    let message = baton.wait_for("the instance of an unknown user to fail", WAIT, |b| {
        let i = instance(b, "as-nobody-at-all")?;
        (i["status"]["phase"] == "Failed").then(|| i["status"]["message"].as_str().unwrap_or_default().to_string())
    });
    assert!(message.contains("no user \"no-such-user-here\""), "the status names the user: {message}");

    let refused = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app("bad-user", "Root User")));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("spec.user"), "a bad user name is refused: {stderr}");
}
