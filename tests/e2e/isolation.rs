//! What agents enforce of what an app asks for: the user its processes run as, its memory
//! (OOM kills reported), its cpu (a CFS quota), its disk (the sandbox's size), and the
//! artifacts it fetches.

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

/// `baton dev` measuring usage every second and writing it as often.
fn start_measuring() -> Baton {
    Baton::start_dev_with(Path::new(BIN), 1, &["--usage-interval", "1s", "--status-refresh", "1s"])
}

/// Where an instance's cpu time is counted, on this machine's hierarchy (v2 or v1); fails
/// the test when the machine has neither, which this test needs.
fn cpu_counter(agent: &str, id: &str) -> (std::path::PathBuf, bool) {
    let tree = baton_e2e::cgroup_tree("cpuacct");
    assert!(
        tree.join("cgroup.procs").is_file(),
        "this test needs cgroups: neither cgroup v2 nor v1's cpuacct is mounted under /sys/fs/cgroup"
    );
    let v2 = baton_e2e::cgroup_v2();
    let file = if v2 { "cpu.stat" } else { "cpuacct.usage" };
    (tree.join("baton").join(agent).join(id).join(file), v2)
}

/// The cpu time the instance's cgroup counted, nanoseconds.
fn cpu_nanos(agent: &str, id: &str) -> u64 {
    let (file, v2) = cpu_counter(agent, id);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    if v2 {
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .expect("usage_usec in cpu.stat");
        usec * 1000
    } else {
        text.trim().parse().expect("a number in cpuacct.usage")
    }
}

fn ended_with(baton: &mut Baton, app: &str) -> Value {
    baton.wait_for(&format!("an instance of {app} to fail"), WAIT, |b| {
        let i = instance(b, app)?;
        (i["status"]["phase"] == "Failed").then_some(i)
    })
}

#[test]
fn memory_cpu_and_disk_are_enforced_and_reported() {
    let mut baton = start_measuring();
    apply(
        &baton,
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: hog\nspec:\n  \
         cmd: \"head -c 300m /dev/zero | tail\"\n  resources: {cpus: 0.5, mem: 64}\n---\n\
         apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: spin\nspec:\n  \
         cmd: \"while :; do :; done & while :; do :; done\"\n  resources: {cpus: 0.2, mem: 32}\n---\n\
         apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: filler\nspec:\n  \
         cmd: \"head -c 30m /dev/zero > big; exec sleep 100000\"\n  resources: {cpus: 0.1, mem: 32, disk: 10}\n  \
         taskKillGracePeriodSeconds: 1\n",
    );

    // Over its memory: killed by the kernel, and reported so (status, and the app's events).
    let hog = ended_with(&mut baton, "hog");
    assert_eq!(hog["status"]["reason"], "OOMKilled", "{hog}");
    let message = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("over its memory limit of 64 MiB"), "{message}");
    let described = baton.wait_for("the OOM kill in the app's events", WAIT, |b| {
        let out = b.kubectl(&["describe", "app", "hog"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("OOMKilled").then_some(text)
    });
    assert!(described.contains("BackOff"), "{described}");

    // Over its disk: stopped, with the reason and the sizes.
    let filler = ended_with(&mut baton, "filler");
    assert_eq!(filler["status"]["reason"], "DiskLimitExceeded", "{filler}");
    let message = filler["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("over its disk of 10 MiB"), "{message}");

    // Two spinning processes with cpus 0.2 get about a fifth of a core, by their cgroup.
    let spin = baton.wait_for("spin running", WAIT, |b| {
        let i = instance(b, "spin")?;
        (i["status"]["phase"] == "Running").then_some(i)
    });
    let id = spin["metadata"]["name"].as_str().unwrap().to_string();
    let (before, at) = (cpu_nanos("agent-1", &id), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let cores = (cpu_nanos("agent-1", &id) - before) as f64 / at.elapsed().as_nanos() as f64;
    eprintln!("spin (cpus 0.2, two busy processes) used {cores:.3} cores");
    assert!((0.05..=0.3).contains(&cores), "cpus 0.2 held it to about 0.2 cores, not {cores:.3}");

    // What it uses shows in `kubectl get instances -o wide` and `kubectl baton top`.
    let measured = baton.wait_for("spin's usage in its status", WAIT, |b| {
        let i = instance(b, "spin")?;
        i["status"]["usage"]["cpu"].as_str().map(str::to_string)
    });
    let millicpus: u64 = measured.trim_end_matches('m').parse().expect("a cpu quantity in m");
    assert!((1..=300).contains(&millicpus), "held to its quota, and measured: {measured}");
    let wide = baton.kubectl_ok(&["get", "instances", "-o", "wide", "-l", "app=spin"]);
    let header = wide.lines().next().unwrap_or_default();
    assert!(header.contains("CPU TIME") && header.contains("MEMORY") && header.contains("REASON"), "{wide}");
    let top = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-baton"))
        .args(["top", "-l", "app=spin", "--kubeconfig"])
        .arg(&baton.kubeconfig)
        .output()
        .expect("kubectl-baton runs");
    let top_out = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "kubectl baton top: {}", String::from_utf8_lossy(&top.stderr));
    let row = top_out.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} in:\n{top_out}"));
    assert!(row.contains("m ") && (row.contains("Ki") || row.contains("Mi")), "cpu and memory in {row:?}");

    // Deleting the app removes its cgroup.
    baton.kubectl_ok(&["delete", "app", "spin"]);
    let (counter, _) = cpu_counter("agent-1", &id);
    baton.wait_for("spin's cgroup to be removed", WAIT, |_| (!counter.parent().unwrap().exists()).then_some(()));
}

/// Serves `dir`'s files over HTTP on loopback (404 for what is not there), from a thread
/// that ends with the test's process.
fn serve(dir: std::path::PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the request's head.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
            let mut stream = &stream;
            let _ = match std::fs::read(dir.join(path)) {
                Ok(body) => stream
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                Err(_) => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    port
}

/// `tar` (the system's) of `files` (name, content, mode) into `archive`.
fn tarball(archive: &Path, files: &[(&str, &str, u32)], gzip: bool) {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    for (name, content, mode) in files {
        let path = src.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let names: Vec<&str> = files.iter().map(|(n, _, _)| *n).collect();
    let status = std::process::Command::new("tar")
        .arg(if gzip { "czf" } else { "cf" })
        .arg(archive)
        .arg("-C")
        .arg(src.path())
        .args(&names)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar made {}", archive.display());
}

#[test]
fn fetched_archives_are_extracted_and_a_bad_uri_is_named() {
    let artifacts = tempfile::tempdir().unwrap();
    tarball(&artifacts.path().join("app.tgz"), &[("bin/hello", "#!/bin/sh\necho \"hello over $1\"\n", 0o755)], true);
    tarball(&artifacts.path().join("lib.tar"), &[("lib/words", "from a file archive\n", 0o644)], false);
    let port = serve(artifacts.path().to_path_buf());
    let mut baton = Baton::start_dev(Path::new(BIN), 1);
    let lib = artifacts.path().join("lib.tar");
    apply(
        &baton,
        &format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: fetched\nspec:\n  fetch:\n  \
             - uri: http://127.0.0.1:{port}/app.tgz\n  - uri: file://{}\n    cache: true\n  \
             cmd: \"./bin/hello http > said; cat lib/words >> said; exec sleep 100000\"\n  \
             resources: {{cpus: 0.1, mem: 32}}\n",
            lib.display()
        ),
    );
    let id = baton.wait_for("the fetched app running", WAIT, |b| {
        let i = instance(b, "fetched")?;
        (i["status"]["phase"] == "Running").then(|| i["metadata"]["name"].as_str().map(str::to_string))?
    });
    let said = baton.data_dir().join("agents/agent-1/sandboxes").join(&id).join("said");
    let text = baton.wait_for("what the fetched program said", WAIT, |_| {
        std::fs::read_to_string(&said).ok().filter(|t| t.lines().count() == 2)
    });
    assert_eq!(text, "hello over http\nfrom a file archive\n");

    let missing = format!("http://127.0.0.1:{port}/missing.tgz");
    apply(
        &baton,
        &format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: unfetchable\nspec:\n  fetch:\n  \
             - uri: {missing}\n  cmd: \"exec sleep 100000\"\n  resources: {{cpus: 0.1, mem: 32}}\n"
        ),
    );
    let failed = ended_with(&mut baton, "unfetchable");
    assert_eq!(failed["status"]["reason"], "FetchFailed", "{failed}");
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&missing) && message.contains("HTTP 404"), "the URI and why: {message}");

    let refused = baton.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&app("bad-fetch", "nobody").replace("  user: nobody\n", "  fetch: [{uri: \"ftp://host/x.tgz\"}]\n")),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("spec.fetch[0].uri"), "refused, naming the field: {stderr}");
}

/// An instance whose host port another process holds does not start: nothing else may answer
/// its health checks for it (Loop run 17: another test's server, on the port a replacement
/// was given, made it healthy 14 ms after it started). Once the port is free, it runs.
#[test]
fn an_instance_whose_port_another_process_holds_fails_saying_which() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    // The agent has that one port to hand out.
    let ports = format!("{port}-{port}");
    let mut baton = Baton::start_dev_with(Path::new(BIN), 1, &["--ports", &ports]);
    apply(
        &baton,
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\nspec:\n  \
         cmd: \"exec sleep 100000\"\n  resources: {cpus: 0.1, mem: 16}\n  ports: [{name: http}]\n  \
         backoff: {seconds: 1, maxLaunchDelaySeconds: 2}\n",
    );
    let failed = baton.wait_for("the instance to fail with PortInUse", WAIT, |b| {
        let i = instance(b, "web")?;
        (i["status"]["phase"] == "Failed").then_some(i)
    });
    assert_eq!(failed["status"]["reason"], "PortInUse", "{failed}");
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("host port {port} is held by another process")), "{message}");
    let wide = baton.kubectl_ok(&["get", "instances", "-o", "wide"]);
    assert!(wide.contains("PortInUse"), "{wide}");

    drop(squatter);
    baton.wait_for("an instance of web running on the freed port", WAIT, |b| {
        let list = b.kubectl_json(&["get", "instances", "-l", "app=web"]);
        list["items"].as_array()?.iter().find(|i| i["status"]["phase"] == "Running").map(|_| ())
    });
}
