//! What an app team asks of a running cluster, end to end with `baton dev`, the real kubectl
//! and the `kubectl baton` plugin: what did my instance print (both streams, the last lines,
//! following it as it writes, across log rotations), what did the one that crashed print after
//! it ended, who may read it; and what happened before `baton dev` restarted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton_e2e::Baton;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// PATH with the directory of `kubectl-baton` first, as after installing the plugin.
fn plugin_path() -> String {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-baton"));
    let dir = plugin.parent().expect("the plugin's directory").to_path_buf();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// `kubectl <args>` with the plugin on PATH, as the admin or as the user of another token
/// (a kubeconfig of their own: kubectl passes no flags to plugins).
fn kubectl(baton: &Baton, token: Option<&str>, args: &[&str]) -> Command {
    let mut kubeconfig = baton.kubeconfig.clone();
    if let Some(token) = token {
        let admin = std::fs::read_to_string(&baton.kubeconfig).unwrap();
        assert!(admin.contains("admin-token"), "the admin kubeconfig carries the admin token");
        kubeconfig = baton.data_dir().join(format!("{token}.kubeconfig"));
        write(&kubeconfig, &admin.replace("admin-token", token));
    }
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", baton.data_dir().join("kubectl-home"))
        .env("PATH", plugin_path());
    command
}

fn run(baton: &Baton, args: &[&str]) -> Output {
    kubectl(baton, None, args).output().expect("kubectl runs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The numbers of lines `"<prefix> N"`.
fn numbers(text: &str, prefix: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).collect()
}

fn instances(baton: &Baton, app: &str) -> Vec<Value> {
    let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/instances?labelSelector=app%3D{app}");
    baton.api().get_json(&path)["items"].as_array().cloned().unwrap_or_default()
}

fn running_instance(baton: &mut Baton, app: &str) -> String {
    baton.wait_for(&format!("an instance of {app} running"), WAIT, |b| {
        instances(b, app)
            .iter()
            .find(|i| i["status"]["phase"] == "Running")
            .and_then(|i| i["metadata"]["name"].as_str().map(String::from))
    })
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// A kubectl that is killed (by pid) however the test ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

const TALK: &str = r#"
apiVersion: baton.dev/v1alpha1
kind: App
metadata: {name: talk}
spec:
  instances: 1
  resources: {cpus: 0.1, mem: 32}
  cmd: |
    i=0
    while true; do
      echo "out $i"; echo "err $i" >&2
      i=$((i+1)); sleep 0.005
    done
"#;

const CRASH: &str = r#"
apiVersion: baton.dev/v1alpha1
kind: App
metadata: {name: crash}
spec:
  instances: 1
  resources: {cpus: 0.1, mem: 32}
  backoff: {seconds: 5}
  cmd: |
    echo "starting up"; echo "fatal: cannot open /data/db" >&2; exit 3
"#;

#[test]
fn an_instances_output_is_read_through_the_api_by_those_who_may_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, rules) = (dir.path().join("tokens"), dir.path().join("rules.yaml"));
    write(&tokens, "admin-token,admin,baton:admins\nother-token,olga,others\n");
    write(&rules, "rules:\n- groups: [others]\n  namespaces: [elsewhere]\n  access: read\n");
    let mut baton = Baton::start_dev_with(
        &baton_binary(),
        1,
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--authorization-rules",
            rules.to_str().unwrap(),
            // Small files, rotated often: a follower must go on across rotations.
            "--log-max-size",
            "4Ki",
            "--log-files",
            "1000",
        ],
    );
    let applied = kubectl(&baton, None, &["apply", "-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(TALK.as_bytes())?;
        c.wait_with_output()
    });
    assert!(applied.unwrap().status.success());
    let talk = running_instance(&mut baton, "talk");

    // Follow from the start, before anything else: every line once, in order, across the
    // rotations that happen meanwhile.
    let mut follower =
        Background(kubectl(&baton, None, &["baton", "logs", &talk, "-f"]).stdout(Stdio::piped()).spawn().unwrap());
    let followed = lines_of(&mut follower.0);

    // The last lines of each stream.
    let tail = stdout_of(&run(&baton, &["baton", "logs", &talk, "--tail", "3"]));
    let last = numbers(&tail, "out ");
    assert_eq!(last.len(), 3, "{tail}");
    assert!(last.windows(2).all(|w| w[1] == w[0] + 1), "the 3 last lines, in order: {tail}");
    let errors = stdout_of(&run(&baton, &["baton", "logs", &talk, "--stderr", "--tail", "2"]));
    assert_eq!(numbers(&errors, "err ").len(), 2, "stderr: {errors}");
    assert!(!errors.contains("out "), "{errors}");
    let raw_path = format!("/apis/baton.dev/v1alpha1/namespaces/default/instances/{talk}/log?tailLines=1");
    let raw = stdout_of(&run(&baton, &["get", "--raw", &raw_path]));
    assert_eq!(numbers(&raw, "out ").len(), 1, "kubectl get --raw on the log subresource: {raw}");

    // A line printed after the follower started reaches it, and nothing is skipped, across
    // rotations (lines 0 to 2,000 alone are 16.9 KB: four files of 4 KiB). How
    // fast the app prints depends on the machine's load (run 2 of the Loop: 3,000 lines took
    // longer than a minute); what must not happen is the follower going quiet while the app
    // prints, so that is what a bound is put on.
    let started_at = *last.last().unwrap();
    let started = Instant::now();
    let mut seen: Vec<u64> = Vec::new();
    while seen.last().is_none_or(|n| *n < started_at + 2000) {
        let line = followed.recv_timeout(WAIT).unwrap_or_else(|e| {
            let printed = stdout_of(&run(&baton, &["baton", "logs", &talk, "--tail", "1"]));
            panic!(
                "no line from kubectl baton logs -f for {WAIT:?} ({e}): it had {} lines, the last {:?}; the app's last \
                 line now: {printed:?}",
                seen.len(),
                seen.last()
            )
        });
        seen.extend(numbers(&line, "out "));
        assert!(
            started.elapsed() < 5 * WAIT,
            "the follower had {} lines after {:?} (its last: {:?}): too slow to see rotations",
            seen.len(),
            started.elapsed(),
            seen.last()
        );
    }
    let expected: Vec<u64> = (0..=*seen.last().unwrap()).collect();
    assert!(
        seen == expected,
        "every line from 0 once, in order (got {} lines, first gap near {:?})",
        seen.len(),
        seen.iter().zip(&expected).find(|(a, b)| a != b)
    );
    let sandbox = baton.data_dir().join("agents/agent-1/sandboxes").join(&talk);
    assert!(sandbox.join("stdout.3").exists(), "the log was rotated while followed");
    drop(follower);
    // It has run for seconds by now: the last second leaves out the start.
    let since = stdout_of(&run(&baton, &["baton", "logs", &talk, "--since", "1s", "--limit-bytes", "100000"]));
    let from = numbers(&since, "out ");
    assert!(from.first().is_some_and(|n| *n > 100), "--since leaves out what came before: {:?}…", from.first());

    // Reading the output is reading the instance: not for those who may not.
    let refused = kubectl(&baton, Some("other-token"), &["baton", "logs", &talk]).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("Forbidden") && said.contains("olga"), "{said}");
    let refused = kubectl(&baton, Some("other-token"), &["get", "--raw", &raw_path]).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Forbidden"), "{refused:?}");
    let missing = kubectl(&baton, None, &["baton", "logs", "talk-nosuch"]).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"), "{missing:?}");

    // A crashed instance stays listed, and what it printed can be read after it ended.
    let applied = kubectl(&baton, None, &["apply", "-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(CRASH.as_bytes())?;
        c.wait_with_output()
    });
    assert!(applied.unwrap().status.success());
    let crashed = baton.wait_for("a crash instance Failed", WAIT, |b| {
        instances(b, "crash")
            .iter()
            .find(|i| i["status"]["phase"] == "Failed")
            .and_then(|i| i["metadata"]["name"].as_str().map(String::from))
    });
    let listed = stdout_of(&run(&baton, &["get", "instances", "-l", "app=crash"]));
    assert!(listed.contains("Failed") && listed.contains(" 3 "), "phase and exit code: {listed}");
    let printed = stdout_of(&run(&baton, &["baton", "logs", &crashed]));
    assert_eq!(printed, "starting up\n");
    let stderr = stdout_of(&run(&baton, &["baton", "logs", &crashed, "--stderr"]));
    assert_eq!(stderr, "fatal: cannot open /data/db\n");
    let followed_to_the_end = kubectl(&baton, None, &["baton", "logs", &crashed, "-f"]).output().unwrap();
    assert_eq!(stdout_of(&followed_to_the_end), "starting up\n", "following an ended instance ends");
    let apps = stdout_of(&run(&baton, &["get", "app", "crash"]));
    assert!(apps.contains("BackingOff"), "{apps}");
}

#[test]
fn events_from_before_a_restart_of_baton_dev_are_still_there() {
    let mut baton = Baton::start_dev(&baton_binary(), 1);
    let applied = kubectl(&baton, None, &["apply", "-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(CRASH.replace("seconds: 5", "seconds: 1").as_bytes())?;
        c.wait_with_output()
    });
    assert!(applied.unwrap().status.success());
    // A crash loop: its failures aggregate into one BackOff event whose count grows.
    let back_off = baton.wait_for("a BackOff event seen twice", WAIT, |b| {
        let events = b.api().get_json("/api/v1/namespaces/default/events");
        events["items"].as_array()?.iter().find(|e| e["reason"] == "BackOff" && e["count"].as_i64() >= Some(2)).cloned()
    });
    let name = back_off["metadata"]["name"].as_str().unwrap().to_string();
    let described = stdout_of(&run(&baton, &["describe", "app", "crash"]));
    assert!(described.contains("fatal: cannot open /data/db"), "the last failure with its output: {described}");
    let names_before: BTreeSet<String> = baton.api().get_json("/api/v1/namespaces/default/events")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["metadata"]["name"].as_str().map(String::from))
        .collect();

    let stopped = baton.stop();
    assert!(stopped.success(), "baton dev stops cleanly: {stopped}");
    baton.restart();
    let events = baton.api().get_json("/api/v1/namespaces/default/events");
    let names_after: BTreeSet<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["metadata"]["name"].as_str().map(String::from))
        .collect();
    assert!(names_before.is_subset(&names_after), "events from before the restart: {names_before:?} {names_after:?}");
    // The loop goes on after the restart: the same event counts on.
    baton.wait_for("the BackOff event counting on after the restart", WAIT, |b| {
        let event = b.api().get_json(&format!("/api/v1/namespaces/default/events/{name}"));
        (event["count"].as_i64() > back_off["count"].as_i64()).then_some(())
    });
    let described = stdout_of(&run(&baton, &["describe", "app", "crash"]));
    assert!(described.contains("BackOff"), "{described}");
}
