//! The real kubectl against a whole cluster (etcd, `baton apiserver`, a controller, agents):
//! every command a Kubernetes user reaches for, with no special flags.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use baton_e2e::{Cluster, ClusterOptions};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn cluster() -> Cluster {
    Cluster::start(&baton_binary(), ClusterOptions { controllers: 1, ..ClusterOptions::default() })
}

fn app(name: &str, instances: u32, extra: &str) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  labels:\n    team: shop\nspec:\n  \
         instances: {instances}\n  cmd: sleep 3600\n  resources: {{cpus: 0.01, mem: 1}}\n{extra}"
    )
}

/// kubectl's stdout, or a panic with its stderr and the cluster's logs.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    ok_in(cluster, args, None)
}

fn ok_in(cluster: &Cluster, args: &[&str], input: Option<&str>) -> String {
    cluster.kubectl.ok(args, input).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

/// kubectl's stderr, which must come with a failure.
fn fails(cluster: &Cluster, args: &[&str]) -> String {
    fails_in(cluster, args, None)
}

fn fails_in(cluster: &Cluster, args: &[&str], input: Option<&str>) -> String {
    let output = cluster.kubectl.run(args, input);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "kubectl {} must fail; it printed {}", args.join(" "), stderr);
    stderr
}

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    cluster.kubectl.json(args).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

#[test]
fn apply_get_and_explain() {
    let cluster = cluster();
    let manifest = app("web", 2, "");
    assert_eq!(ok_in(&cluster, &["apply", "-f", "-"], Some(&manifest)).trim(), "app.baton.dev/web created");
    assert_eq!(ok_in(&cluster, &["apply", "-f", "-"], Some(&manifest)).trim(), "app.baton.dev/web unchanged");
    let changed = app("web", 3, "");
    assert_eq!(ok_in(&cluster, &["apply", "-f", "-"], Some(&changed)).trim(), "app.baton.dev/web configured");
    assert_eq!(json(&cluster, &["get", "app", "web"])["spec"]["instances"], 3);

    // Server-side apply: create, update, remove a field no longer applied, and a conflict.
    let ssa = |env: &str| app("api", 1, &format!("  env:\n{env}"));
    let applied = ok_in(&cluster, &["apply", "--server-side", "-f", "-"], Some(&ssa("    A: \"1\"\n    B: \"2\"\n")));
    assert_eq!(applied.trim(), "app.baton.dev/api serverside-applied");
    ok_in(&cluster, &["apply", "--server-side", "-f", "-"], Some(&ssa("    A: \"1\"\n")));
    let env = ok(&cluster, &["get", "app", "api", "-o", "jsonpath={.spec.env}"]);
    assert_eq!(env, r#"{"A":"1"}"#, "B was removed with the applied configuration");
    let other = app("api", 1, "  env:\n    A: \"other\"\n");
    let stderr = fails_in(&cluster, &["apply", "--server-side", "--field-manager", "ops", "-f", "-"], Some(&other));
    assert!(stderr.contains("conflict with \"kubectl\"") && stderr.contains(".spec.env.A"), "{stderr}");
    ok_in(
        &cluster,
        &["apply", "--server-side", "--field-manager", "ops", "--force-conflicts", "-f", "-"],
        Some(&other),
    );

    // get in every format.
    let table = ok(&cluster, &["get", "apps"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATE", "INSTANCES", "RUNNING", "HEALTHY", "UNHEALTHY", "FAILURES", "AGE"], "{table}");
    let wide = ok(&cluster, &["get", "apps", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("VERSION"), "-o wide shows priority columns: {wide}");
    let yaml = ok(&cluster, &["get", "app", "web", "-o", "yaml"]);
    let parsed: Value = serde_saphyr::from_str(&yaml).expect("-o yaml is YAML");
    assert_eq!(parsed["kind"], "App");
    assert!(parsed["metadata"].get("managedFields").is_none(), "kubectl hides managed fields");
    let names = ok(&cluster, &["get", "apps", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, "api web");
    let everywhere = ok(&cluster, &["get", "apps", "-A"]);
    assert!(everywhere.lines().next().unwrap().starts_with("NAMESPACE"), "{everywhere}");
    ok(&cluster, &["label", "app", "web", "tier=front"]);
    let selected = ok(&cluster, &["get", "apps", "-l", "tier=front", "-o", "name"]);
    assert_eq!(selected.trim(), "app.baton.dev/web");
    let labels = ok(&cluster, &["get", "app", "web", "--show-labels"]);
    assert!(labels.contains("team=shop,tier=front"), "{labels}");
    let by_field = ok(&cluster, &["get", "apps", "--field-selector", "metadata.name=api", "-o", "name"]);
    assert_eq!(by_field.trim(), "app.baton.dev/api");
    let chunked = ok(&cluster, &["get", "apps", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 2, "paged lists come back whole: {chunked}");

    // explain, from the OpenAPI v3 document.
    let explained = ok(&cluster, &["explain", "app.spec.upgradeStrategy"]);
    assert!(explained.contains("minimumHealthCapacity") && explained.contains("KIND:       App"), "{explained}");
    let views = ok(&cluster, &["explain", "agents.status"]);
    assert!(views.contains("allocated"), "{views}");
    let from_v2 = ok(&cluster, &["explain", "app.spec.upgradeStrategy", "--output=plaintext-openapiv2"]);
    assert!(from_v2.contains("minimumHealthCapacity"), "the v2 document (protobuf) explains too: {from_v2}");
}

#[test]
fn scale_patch_edit_diff_replace_label_and_delete() {
    let cluster = cluster();
    ok_in(&cluster, &["apply", "-f", "-"], Some(&app("web", 1, "")));

    assert_eq!(ok(&cluster, &["scale", "app/web", "--replicas=3"]).trim(), "app.baton.dev/web scaled");
    let stderr = fails(&cluster, &["scale", "app/web", "--current-replicas=2", "--replicas=4"]);
    assert!(stderr.contains("Expected replicas to be 2, was 3"), "{stderr}");
    ok(&cluster, &["scale", "app/web", "--current-replicas=3", "--replicas=4"]);
    assert_eq!(json(&cluster, &["get", "app", "web"])["spec"]["instances"], 4);

    ok(&cluster, &["patch", "app", "web", "--type", "merge", "-p", r#"{"spec":{"instances":2}}"#]);
    let ops =
        r#"[{"op":"replace","path":"/spec/instances","value":1},{"op":"add","path":"/spec/env","value":{"X":"1"}}]"#;
    ok(&cluster, &["patch", "app", "web", "--type", "json", "-p", ops]);
    let patched = json(&cluster, &["get", "app", "web"]);
    assert_eq!((patched["spec"]["instances"].clone(), patched["spec"]["env"]["X"].clone()), (1.into(), "1".into()));
    let stderr = fails(&cluster, &["patch", "app", "web", "-p", r#"{"spec":{"instances":5}}"#]);
    assert!(stderr.contains("UnsupportedMediaType") || stderr.contains("unknown format"), "{stderr}");
    let stderr = fails(&cluster, &["patch", "app", "web", "--type", "merge", "-p", r#"{"spec":{"instances":-2}}"#]);
    assert!(stderr.contains("spec.instances") && stderr.contains("Invalid value: -2"), "{stderr}");

    let edited = Command::new("kubectl")
        .args(["edit", "app", "web"])
        .env("KUBECONFIG", &cluster.kubectl.kubeconfig)
        .env("HOME", &cluster.kubectl.home)
        .env("KUBE_EDITOR", "sed -i s/instances:\\ 1/instances:\\ 2/")
        .output()
        .expect("kubectl edit runs");
    assert!(edited.status.success(), "kubectl edit: {}", String::from_utf8_lossy(&edited.stderr));
    assert_eq!(json(&cluster, &["get", "app", "web"])["spec"]["instances"], 2);

    let diff = cluster.kubectl.run(&["diff", "-f", "-"], Some(&app("web", 7, "")));
    let out = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "a difference exits 1: {out}");
    assert!(out.contains("-  instances: 2") && out.contains("+  instances: 7"), "{out}");
    assert_eq!(json(&cluster, &["get", "app", "web"])["spec"]["instances"], 2, "diff is a dry run");

    let mut stale = json(&cluster, &["get", "app", "web"]);
    ok(&cluster, &["annotate", "app", "web", "owner=ops"]);
    stale["spec"]["instances"] = 5.into();
    let stderr = fails_in(&cluster, &["replace", "-f", "-"], Some(&stale.to_string()));
    assert!(stderr.contains("the object has been modified"), "a stale resourceVersion conflicts: {stderr}");
    assert_eq!(json(&cluster, &["get", "app", "web"])["metadata"]["annotations"]["owner"], "ops");

    ok(&cluster, &["label", "app", "web", "tier=front"]);
    ok(&cluster, &["label", "app", "web", "tier-"]);
    assert!(json(&cluster, &["get", "app", "web"])["metadata"]["labels"].get("tier").is_none());

    // kubectl sends a server dry run of a delete in the body's DeleteOptions.
    let dry = ok(&cluster, &["delete", "app", "web", "--dry-run=server"]);
    assert_eq!(dry.trim(), "app.baton.dev \"web\" deleted (server dry run)");
    ok(&cluster, &["get", "app", "web"]);
    assert_eq!(ok(&cluster, &["delete", "app", "web", "--wait"]).trim(), "app.baton.dev \"web\" deleted");
    let stderr = fails(&cluster, &["get", "app", "web"]);
    assert!(stderr.contains("NotFound") && stderr.contains("\"web\" not found"), "{stderr}");
}

/// Runs `kubectl args…` in the background; its stdout lines arrive on the receiver.
fn background(cluster: &Cluster, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &cluster.kubectl.kubeconfig)
        .env("HOME", &cluster.kubectl.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Waits for a line that `matches`, failing after [`WAIT`] with what came instead.
fn expect_line(lines: &mpsc::Receiver<String>, what: &str, matches: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if matches(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {what} within {WAIT:?}; got {seen:#?}");
}

#[test]
fn watch_describe_and_the_views() {
    let cluster = cluster();
    ok_in(&cluster, &["apply", "-f", "-"], Some(&app("web", 1, "")));
    let (mut watcher, lines) = background(&cluster, &["get", "apps", "-w"]);
    expect_line(&lines, "the app listed", |l| l.starts_with("web "));
    ok(&cluster, &["scale", "app/web", "--replicas=2"]);
    expect_line(&lines, "the app with 2 instances running", |l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.first() == Some(&"web") && cells.get(2) == Some(&"2") && cells.get(3) == Some(&"2")
    });
    let _ = watcher.kill();
    let _ = watcher.wait();

    let described = cluster.wait_for("describe to show the scaling event", WAIT, |c| {
        let out = c.kubectl.ok(&["describe", "app", "web"], None).ok()?;
        out.contains("scaled from 1 to 2 instances").then_some(out)
    });
    assert!(described.contains("Events:") && described.contains("Normal  Launched"), "{described}");
    let events = ok(&cluster, &["get", "events"]);
    assert!(events.contains("app/web") && events.contains("Scaled"), "{events}");

    let agents = ok(&cluster, &["get", "agents"]);
    let header: Vec<&str> = agents.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "HOST", "STATE", "MAINTENANCE", "CPUS", "MEM", "INSTANCES", "AGE"], "{agents}");
    assert_eq!(agents.lines().filter(|l| l.contains("Ready")).count(), 2, "{agents}");
    let racked = ok(&cluster, &["get", "agents", "-l", "rack=r1", "-o", "wide"]);
    assert!(racked.contains("rack=r1") && !racked.contains("rack=r2"), "{racked}");
    let instances = cluster.wait_for("both instances running", WAIT, |c| {
        let out = c.kubectl.ok(&["get", "instances", "-l", "app=web"], None).ok()?;
        (out.lines().skip(1).filter(|l| l.contains("Running")).count() == 2).then_some(out)
    });
    assert_eq!(instances.lines().count(), 3, "a header and two instances: {instances}");
    let header: Vec<&str> = instances.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGENT", "HOST", "PORTS", "PHASE", "HEALTH", "EXIT", "ENDED", "AGE"], "{instances}");
    assert!(instances.lines().skip(1).all(|l| l.contains("Running") && l.contains("Healthy")), "{instances}");
    let all = ok(&cluster, &["get", "all"]);
    assert!(all.contains("app.baton.dev/web ") && all.contains("instance.baton.dev/web-"), "{all}");
    let (mut watcher, lines) = background(&cluster, &["get", "instances", "-w", "-l", "app=web"]);
    expect_line(&lines, "an instance listed", |l| l.contains("Running"));
    ok(&cluster, &["scale", "app/web", "--replicas=0"]);
    expect_line(&lines, "an instance stopped", |l| l.contains("Killed") || l.contains("Killing"));
    let _ = watcher.kill();
    let _ = watcher.wait();
}

/// `(name, pid)` of each running instance of `app`.
fn running_instances(cluster: &Cluster, app: &str) -> Vec<(String, u32)> {
    let list = json(cluster, &["get", "instances", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["status"]["phase"] == "Running")
        .filter_map(|i| Some((i["metadata"]["name"].as_str()?.to_string(), i["status"]["pid"].as_u64()? as u32)))
        .collect()
}

/// Whether `pid` is (still) the `sleep` an instance ran.
fn sleeps(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep"))
}

#[test]
fn deleting_an_instance_kills_it_and_a_replacement_starts() {
    let cluster = cluster();
    ok_in(&cluster, &["apply", "-f", "-"], Some(&app("web", 2, "")));
    // Ignores SIGTERM, and the app would give it two minutes before SIGKILL.
    let stubborn = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: stubborn\nspec:\n  cmd: \"trap '' TERM; \
                    sleep 3600\"\n  taskKillGracePeriodSeconds: 120\n  resources: {cpus: 0.01, mem: 1}\n";
    ok_in(&cluster, &["apply", "-f", "-"], Some(stubborn));
    let before = cluster.wait_for("both web instances running", WAIT, |c| {
        let running = running_instances(c, "web");
        (running.len() == 2).then_some(running)
    });
    let (victim, pid) = before[0].clone();
    // Running comes with the pid of the agent's `baton enter-cgroup`, which then execs the
    // shell, which execs sleep: while an exec is under way the process' command line reads
    // empty (Loop run 12 read it then).
    cluster.wait_for(&format!("{victim}'s process {pid} to be the sleep"), WAIT, |_| sleeps(pid).then_some(()));

    // kubectl waits until the instance is gone, which is when its process has ended.
    let out = ok(&cluster, &["delete", "instance", &victim]);
    assert_eq!(out.trim(), format!("instance.baton.dev \"{victim}\" deleted"));
    assert!(!sleeps(pid), "{victim}'s process {pid} ended before kubectl returned");
    let after = cluster.wait_for("a replacement running", WAIT, |c| {
        let running = running_instances(c, "web");
        (running.len() == 2 && running.iter().all(|(name, _)| *name != victim)).then_some(running)
    });
    assert!(after.contains(&before[1]), "the other instance was left alone: {before:?} → {after:?}");
    let events = cluster.wait_for("the kill's event", WAIT, |c| {
        let out = c.kubectl.ok(&["get", "events"], None).ok()?;
        out.contains(&format!("{victim} on")).then_some(out)
    });
    assert!(events.contains("(requested by admin)"), "{events}");

    // A dry run kills nothing. (The replacement may be Running while its process is still
    // between execs, its command line empty: Loop run 69 read it then.)
    let (survivor, survivor_pid) = after[0].clone();
    cluster.wait_for(&format!("{survivor}'s process {survivor_pid} to be the sleep"), WAIT, |_| {
        sleeps(survivor_pid).then_some(())
    });
    let out = ok(&cluster, &["delete", "instance", &survivor, "--dry-run=server"]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    let now = running_instances(&cluster, "web");
    assert!(sleeps(survivor_pid) && now.contains(&after[0]), "{survivor} still runs: {after:?} → {now:?}");

    // --grace-period replaces the app's two minutes: SIGKILL comes after one second.
    let (stubborn, stubborn_pid) = cluster
        .wait_for("the stubborn instance running", WAIT, |c| running_instances(c, "stubborn").into_iter().next());
    ok(&cluster, &["delete", "instance", &stubborn, "--grace-period=1", "--timeout=30s"]);
    assert!(!sleeps(stubborn_pid), "SIGKILL ended {stubborn}");

    // Requests are forgotten once their instances are gone.
    let keys = baton_store::Keyspace::default();
    cluster.wait_for("the kill requests to be forgotten", WAIT, |c| {
        let left = c.block_on(baton_store::Store::range(c.store().as_ref(), &keys.kill_requests())).ok()?;
        left.kvs.is_empty().then_some(())
    });
    let stderr = fails(&cluster, &["delete", "instance", "web-nothing"]);
    assert!(stderr.contains("instances.baton.dev \"web-nothing\" not found"), "{stderr}");
    let stderr = fails(&cluster, &["delete", "agent", "agent-1"]);
    assert!(stderr.contains("does not allow this method on agents"), "{stderr}");
}

#[test]
fn namespaces_hold_apps_and_go_with_them() {
    let cluster = cluster();
    let stderr = fails_in(&cluster, &["apply", "-n", "shop", "-f", "-"], Some(&app("web", 1, "")));
    assert!(stderr.contains("namespaces \"shop\" not found"), "{stderr}");
    assert_eq!(ok(&cluster, &["create", "namespace", "shop"]).trim(), "namespace/shop created");
    ok_in(&cluster, &["apply", "-n", "shop", "-f", "-"], Some(&app("web", 1, "")));
    let namespaces = ok(&cluster, &["get", "namespaces"]);
    assert!(namespaces.contains("default") && namespaces.contains("shop"), "{namespaces}");
    cluster.wait_for("the shop app to run", WAIT, |c| {
        let instances = c.kubectl.ok(&["get", "instances", "-n", "shop"], None).ok()?;
        instances.contains("Running").then_some(())
    });
    let ns_manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    env: prod\n";
    assert_eq!(ok_in(&cluster, &["apply", "-f", "-"], Some(ns_manifest)).trim(), "namespace/shop configured");
    let graph_keys = || {
        let keys = baton_store::Keyspace::default();
        let prefix = keys.dependency_graph("shop");
        let range = cluster.block_on(baton_store::Store::range(cluster.store().as_ref(), &prefix)).expect("reading");
        range.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>()
    };
    // An app with dependencies is checked against the namespace's graph, and bumps its key.
    ok_in(&cluster, &["apply", "-n", "shop", "-f", "-"], Some(&app("worker", 0, "  dependencies: [web]\n")));
    assert!(!graph_keys().is_empty(), "the app's write serialized on the namespace's dependency graph");
    ok(&cluster, &["delete", "namespace", "shop", "--wait", "--timeout=60s"]);
    let stderr = fails(&cluster, &["get", "namespace", "shop"]);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(graph_keys(), Vec::<String>::new(), "the graph keys went with the namespace");
    cluster.wait_for("the app's instances to stop", WAIT, |c| {
        c.records().values().all(|r| r.run.app.namespace != "shop").then_some(())
    });
    let stderr = fails(&cluster, &["delete", "namespace", "default"]);
    assert!(stderr.contains("may not be deleted"), "{stderr}");
}

#[test]
fn who_may_do_what() {
    let options = ClusterOptions {
        controllers: 1,
        agents: 1,
        tokens: vec!["reader-token,rita,readers", "writer-token,walt,writers"],
        rules: Some(
            "rules:\n- groups: [readers]\n  namespaces: [default]\n  access: read\n- groups: [writers, certified]\n  \
             namespaces: [default]\n  access: write\n",
        ),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(&baton_binary(), options);
    ok_in(&cluster, &["apply", "-f", "-"], Some(&app("web", 1, "")));
    let server = ok(&cluster, &["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let as_token = |token: &str, args: &[&str], input: Option<&str>| {
        let mut full = vec!["--token", token];
        full.extend_from_slice(args);
        cluster.kubectl.run(&full, input)
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let nobody = as_token("wrong-token", &["get", "apps"], None);
    assert!(!nobody.status.success() && text(&nobody).contains("Unauthorized"), "{}", text(&nobody));
    let reader = as_token("reader-token", &["get", "apps", "-o", "name"], None);
    assert!(reader.status.success(), "{}", text(&reader));
    let refused = as_token("reader-token", &["scale", "app/web", "--replicas=2"], None);
    assert!(
        text(&refused).contains("User \"rita\" cannot patch resource \"apps\" in API group \"baton.dev\""),
        "{}",
        text(&refused)
    );
    let elsewhere = as_token("reader-token", &["get", "apps", "-A"], None);
    assert!(text(&elsewhere).contains("Forbidden") || text(&elsewhere).contains("forbidden"), "{}", text(&elsewhere));
    let refused = as_token("reader-token", &["delete", "instance", "web-1"], None);
    assert!(text(&refused).contains("User \"rita\" cannot delete resource \"instances\""), "{}", text(&refused));
    let writer = as_token("writer-token", &["scale", "app/web", "--replicas=2"], None);
    assert!(writer.status.success(), "{}", text(&writer));

    // A client certificate from `baton kubeconfig`: the CN is the user, the O the group.
    let kubeconfig = cluster.dir().join("carol.kubeconfig");
    let output = Command::new(baton_binary())
        .args(["kubeconfig", "--data-dir"])
        .arg(cluster.api_dir())
        .args(["--user", "carol", "--group", "certified", "--server", &server])
        .output()
        .expect("baton kubeconfig runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&kubeconfig, &output.stdout).expect("writing carol's kubeconfig");
    let carol = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &cluster.kubectl.home)
            .output()
            .expect("kubectl runs")
    };
    let scaled = carol(&["scale", "app/web", "--replicas=3"]);
    assert!(scaled.status.success(), "{}", text(&scaled));
    let nodes = carol(&["get", "agents"]);
    assert!(text(&nodes).contains("User \"carol\" cannot list resource \"agents\""), "{}", text(&nodes));

    // A certificate from a CA the server does not trust: a 401 Status that says why, not a
    // TLS reset.
    let foreign = tempfile::tempdir().unwrap();
    let other_ca = baton_apiserver::tls::Pki::in_dir(foreign.path());
    other_ca.ensure(&["localhost".to_string()]).unwrap();
    let (cert, key) = other_ca.client_certificate("mallory", Some("certified")).unwrap();
    let server_ca = std::fs::read_to_string(cluster.api_dir().join("ca.crt")).unwrap();
    let config = baton_apiserver::kubeconfig::kubeconfig(
        &server,
        Some(&server_ca),
        baton_apiserver::kubeconfig::Credentials::Certificate { cert: &cert, key: &key },
        "default",
    );
    let mallory = cluster.dir().join("mallory.kubeconfig");
    std::fs::write(&mallory, config).unwrap();
    let refused = Command::new("kubectl")
        .args(["get", "apps"])
        .env("KUBECONFIG", &mallory)
        .env("HOME", &cluster.kubectl.home)
        .output()
        .expect("kubectl runs");
    assert!(
        !refused.status.success()
            && text(&refused).contains("Unauthorized")
            && text(&refused).contains("client certificate is not accepted"),
        "{}",
        text(&refused)
    );
}

#[test]
fn bad_input_gets_a_status_and_nothing_is_half_written() {
    let cluster =
        Cluster::start(&baton_binary(), ClusterOptions { controllers: 0, agents: 0, ..ClusterOptions::default() });
    let api = cluster.api();
    let apps = "/apis/baton.dev/v1alpha1/namespaces/default/apps";
    let revision_before = cluster.block_on(baton_store::StoreExt::current_revision(cluster.store().as_ref())).unwrap();
    let valid = |name: &str| {
        format!(
            r#"{{"apiVersion":"baton.dev/v1alpha1","kind":"App","metadata":{{"name":"{name}"}},"spec":{{"cmd":"sleep 1"}}}}"#
        )
    };
    let long_name = "a".repeat(254);
    let huge = format!(
        r#"{{"apiVersion":"baton.dev/v1alpha1","kind":"App","metadata":{{"name":"big"}},"spec":{{"cmd":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            r#"{"apiVersion": "baton.dev/v1alpha1", "kind": "#.into(),
            400,
            "not valid JSON",
        ),
        (
            "malformed YAML",
            "application/yaml",
            "apiVersion: baton.dev/v1alpha1\nkind: [App\n".into(),
            400,
            "not valid YAML",
        ),
        (
            "a wrong apiVersion",
            "application/json",
            valid("web").replace("baton.dev/v1alpha1", "baton.dev/v9"),
            400,
            "v9",
        ),
        ("a wrong kind", "application/json", valid("web").replace("\"App\"", "\"Pod\""), 400, "Pod"),
        ("an invalid name", "application/json", valid("Web_1"), 422, "metadata.name"),
        ("a too long name", "application/json", valid(&long_name), 422, "metadata.name"),
        (
            "an unknown field",
            "application/json",
            valid("web").replace(r#""cmd""#, r#""colour":"red","cmd""#),
            422,
            "spec.colour",
        ),
        ("a huge body", "application/json", huge, 413, "larger than"),
    ];
    for (what, content_type, body, code, words) in &cases {
        let (status, answer) = api.call("POST", apps, content_type, Some(body));
        assert_eq!(status, *code, "{what}: {answer}");
        let status_object: Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{what}: not a Status: {answer}"));
        assert_eq!(status_object["kind"], "Status", "{what}");
        let message = status_object["message"].as_str().unwrap_or_default();
        let causes = status_object["details"]["causes"].to_string();
        assert!(message.contains(words) || causes.contains(words), "{what}: {answer}");
    }
    let strict = format!("{apps}?fieldValidation=Strict");
    let (status, _) =
        api.call("POST", &strict, "application/json", Some(&valid("web").replace(r#""cmd""#, r#""x":1,"cmd""#)));
    assert_eq!(status, 422);
    let revision_after = cluster.block_on(baton_store::StoreExt::current_revision(cluster.store().as_ref())).unwrap();
    assert_eq!(revision_after, revision_before, "nothing was written");
    // The server keeps serving.
    let (status, _) = api.call("POST", apps, "application/json", Some(&valid("web")));
    assert_eq!(status, 201);
}

/// A request refused before its body is read (no credential: 401) still gets its answer: the
/// server reads the body first, so the connection is not reset with bytes unread (Loop run
/// 23: `io: Peer disconnected` on a PUT refused with 403).
#[test]
fn a_refused_request_with_a_body_gets_its_answer() {
    let cluster = cluster();
    let anonymous = cluster.api().with_token(None);
    let path = "/apis/baton.dev/v1alpha1/namespaces/default/apps/web?dryRun=All";
    for (size, times) in [(64 * 1024, 200), (4 * 1024 * 1024, 5)] {
        let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(size));
        for i in 0..times {
            let (status, answer) = anonymous.call("PUT", path, "application/json", Some(&body));
            assert_eq!(status, 401, "PUT {i} of {size} bytes: {answer}");
        }
    }
}
