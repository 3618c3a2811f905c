//! The install the Helm chart describes, run as processes: `baton apiserver`, `baton
//! controller` and `baton agent`, each started with exactly the command and arguments the
//! chart gives its container (one render by `hack/chart.py`), against a real etcd that
//! speaks only TLS and asks for client certificates (the chart's external-etcd mode).
//!
//! Only what a pod would provide differs: the files the chart mounts (Secrets, the work
//! dir) live under a temporary dir, `$(POD_NAME)`-style variables are expanded as
//! Kubernetes does, listen addresses are on loopback, and the kubeconfig the chart renders
//! for the controller names 127.0.0.1 instead of the Service.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use baton_apiserver::tls::Pki;
use baton_e2e::{
    ApiClient, Cluster, ClusterOptions, Kubectl, PortBlock, Proc, free_port, http, metric_value, wait_for,
};
use baton_store::contract::etcd_server::{ServerTls, TestEtcd};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn baton_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// One render of the chart with `values`: containers' command and args, Secrets' data.
fn render(values: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/chart.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("processes")
        .arg(values.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed (hack/test.sh installs its PyPI packages: pip install -r hack/chart-requirements.txt):\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("hack/chart.py prints JSON")
}

/// A container's arguments as its pod would run them, `root` standing in for `/`, each of
/// `hosts` (a Service's `host:port`) replaced by where it is on loopback.
fn as_in_pod(
    container: &Value,
    root: &Path,
    env: &BTreeMap<&str, String>,
    hosts: &[(String, String)],
) -> (PathBuf, Vec<OsString>) {
    let all: Vec<String> = serde_json::from_value(container.clone()).expect("a list of strings");
    assert_eq!(all[0], "baton", "the chart runs the baton binary");
    let root = root.display().to_string();
    let args = all[1..]
        .iter()
        .map(|arg| {
            let mut arg = arg.clone();
            for (host, on_loopback) in hosts {
                arg = arg.replace(host, on_loopback);
            }
            for (name, value) in env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            arg = arg.replace("=/etc/baton/", &format!("={root}/etc/baton/"));
            arg = arg.replace("=/var/lib/", &format!("={root}/var/lib/"));
            // The node's cgroups, which the chart mounts there.
            arg = arg.replace("=/host/sys/fs/cgroup", "=/sys/fs/cgroup");
            arg.replace("=0.0.0.0:", "=127.0.0.1:").into()
        })
        .collect();
    (baton_binary(), args)
}

fn write(path: PathBuf, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn get(port: u16, path: &str) -> (u16, String) {
    http("127.0.0.1", port, "GET", path, None).unwrap_or((0, String::new()))
}

fn metric(port: u16, name: &str) -> Option<f64> {
    metric_value(&get(port, "/metrics").1, name)
}

#[test]
fn the_charts_processes_run_an_app_with_etcd_over_tls() {
    let dir = tempfile::Builder::new().prefix("baton-install-").tempdir().unwrap();
    let root = dir.path().join("pod");

    // etcd over TLS, with client certificates, as etcd.external.tls expects.
    let pki = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        let pki = Pki::in_dir(&path);
        pki.ensure(&["127.0.0.1".into(), "localhost".into()]).unwrap();
        pki
    };
    let etcd_pki = pki("etcd-pki");
    let etcd = TestEtcd::start_tls(ServerTls {
        ca: etcd_pki.ca_cert.clone(),
        cert: etcd_pki.server_cert.clone(),
        key: etcd_pki.server_key.clone(),
    });
    let (client_cert, client_key) = etcd_pki.client_certificate("baton", None).unwrap();
    write(root.join("etc/baton/etcd/ca.crt"), &etcd_pki.ca_pem().unwrap());
    write(root.join("etc/baton/etcd/tls.crt"), &client_cert);
    write(root.join("etc/baton/etcd/tls.key"), &client_key);

    let (api_port, api_metrics, controller_metrics, agent_metrics) =
        (free_port(), free_port(), free_port(), free_port());
    let port_block = PortBlock::take();
    let dns_port = free_port();
    let values = json!({
        "etcd": {"enabled": false, "external": {"endpoints": [etcd.address()], "tls": {"enabled": true, "secretName": "etcd-client"}}},
        "apiserver": {"enabled": true, "port": api_port, "metricsPort": api_metrics, "dns": {"port": dns_port}},
        "controller": {"metricsPort": controller_metrics},
        "agent": {"metricsPort": agent_metrics, "sandboxPort": free_port(), "ports": port_block.to_string()},
    });
    let rendered = render(&values);
    let secrets = &rendered["secrets"];

    // What the chart's Secrets hold, where its pods mount them.
    let api_pki = pki("apiserver-pki");
    write(root.join("etc/baton/tls/ca.crt"), &api_pki.ca_pem().unwrap());
    write(root.join("etc/baton/tls/tls.crt"), &std::fs::read_to_string(&api_pki.server_cert).unwrap());
    write(root.join("etc/baton/tls/tls.key"), &std::fs::read_to_string(&api_pki.server_key).unwrap());
    let tokens = secrets["baton-apiserver-tokens"]["tokens"].as_str().expect("the tokens file");
    write(root.join("etc/baton/tokens/tokens"), tokens);
    let kubeconfig =
        secrets["baton-controller-kubeconfig"]["kubeconfig"].as_str().expect("the controller's kubeconfig");
    assert!(kubeconfig.contains("https://baton-apiserver.baton-system.svc:"), "{kubeconfig}");
    let kubeconfig = kubeconfig
        .replace("https://baton-apiserver.baton-system.svc:", "https://127.0.0.1:")
        .replace("/etc/baton/", &format!("{}/etc/baton/", root.display()));
    write(root.join("etc/baton/kubeconfig/kubeconfig"), &kubeconfig);

    let env = BTreeMap::from([
        ("POD_NAME", "baton-controller-0".to_string()),
        ("NODE_NAME", "node-1".to_string()),
        ("NODE_IP", "127.0.0.1".to_string()),
    ]);
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let rust_log = vec![("RUST_LOG".to_string(), "info".to_string())];
    let start = |name: &str| {
        let (program, args) = as_in_pod(&rendered["containers"][name], &root, &env, &[]);
        Proc::start(name, &program, args, rust_log.clone(), log(name))
    };
    let _apiserver = start("apiserver");
    let _controller = start("controller");
    let _agent = start("agent");
    let logs = || {
        [("apiserver", api_metrics), ("controller", controller_metrics), ("agent", agent_metrics)]
            .iter()
            .map(|(n, port)| {
                let log = std::fs::read_to_string(log(n)).unwrap_or_default();
                format!("--- {n} (/readyz: {:?}):\n{log}", get(*port, "/readyz"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Every long-running command answers /healthz, /readyz and /metrics.
    for (what, port) in [("apiserver", api_metrics), ("controller", controller_metrics), ("agent", agent_metrics)] {
        wait_for(&format!("{what} /readyz"), WAIT, logs, || (get(port, "/readyz").0 == 200).then_some(()));
        assert_eq!(get(port, "/healthz").0, 200, "{what} /healthz");
    }
    assert_eq!(metric(controller_metrics, "baton_controller_ready"), Some(1.0));
    assert_eq!(metric(agent_metrics, "baton_agent_registered"), Some(1.0));
    assert_eq!(metric(api_metrics, "baton_apiserver_store_up"), Some(1.0));
    // Each shows what its allocator holds: live allocations, within what it keeps resident.
    for (what, port) in [("apiserver", api_metrics), ("controller", controller_metrics), ("agent", agent_metrics)] {
        // Both from one scrape: they are read together.
        let (_, text) = get(port, "/metrics");
        let figure = |name: &str| metric_value(&text, name).unwrap_or(0.0);
        let (allocated, resident) =
            (figure("baton_allocator_allocated_bytes"), figure("baton_allocator_resident_bytes"));
        assert!(allocated > 0.0 && allocated <= resident, "{what}: allocated {allocated}, resident {resident}");
    }
    wait_for("the controller to lead", WAIT, logs, || {
        (metric(controller_metrics, "baton_controller_leader") == Some(1.0)).then_some(())
    });

    // An admin, with the token the chart generated, runs an app.
    let admin_token = secrets["baton-apiserver-tokens"]["admin-token"].as_str().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let admin = dir.path().join("admin.kubeconfig");
    write(
        admin.clone(),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: baton, cluster: {{server: 'https://127.0.0.1:{api_port}', \
             certificate-authority: '{}'}}}}]\nusers: [{{name: admin, user: {{token: '{admin_token}'}}}}]\n\
             contexts: [{{name: baton, context: {{cluster: baton, user: admin}}}}]\ncurrent-context: baton\n",
            root.join("etc/baton/tls/ca.crt").display()
        ),
    );
    let kubectl = Kubectl { kubeconfig: admin, home };
    let app = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: web}\n\
               spec: {instances: 2, cmd: 'exec python3 -m http.server $PORT0 --bind 127.0.0.1', \
               resources: {cpus: 0.1, mem: 32}, ports: [{name: http}]}\n";
    kubectl.ok(&["apply", "-f", "-"], Some(app)).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let ports: Vec<u16> = wait_for("2 instances of web answering", WAIT, logs, || {
        let list = kubectl.json(&["get", "instances", "-l", "app=web"]).ok()?;
        let ports: Vec<u16> = list["items"]
            .as_array()?
            .iter()
            .filter(|i| i["status"]["phase"] == "Running" && i["spec"]["agent"] == "node-1")
            .filter_map(|i| i["spec"]["ports"][0].as_u64().map(|p| p as u16))
            .collect();
        (ports.len() == 2 && ports.iter().all(|p| baton_e2e::http_status(*p) == Some(200))).then_some(ports)
    });
    assert!(
        ports.iter().all(|p| (port_block.begin..=port_block.end()).contains(p)),
        "ports from the chart's range: {ports:?}"
    );
    assert_eq!(metric(agent_metrics, "baton_agent_instances"), Some(2.0));
    // The API server answers the app's name in DNS, with the chart's cluster domain.
    let srv = baton_e2e::dig(dns_port, &["+short", "_http._tcp.web.default.baton.local", "SRV"]);
    for port in &ports {
        assert!(srv.contains(&format!(" {port} ")), "port {port} not in the SRV answer: {srv}\n{}", logs());
    }
    let requests = get(api_metrics, "/metrics").1;
    assert!(requests.contains("baton_apiserver_requests_total{method=\"GET\",code=\"200\"}"), "{requests}");

    kubectl.ok(&["delete", "app", "web"], None).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait_for("web's processes to stop", WAIT, logs, || {
        ports.iter().all(|p| baton_e2e::http_status(*p).is_none()).then_some(())
    });
}

/// The systemd units start baton with flags it has, and every variable they use is set by
/// the env files beside them.
#[test]
fn the_systemd_units_use_only_flags_baton_knows() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut defined: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "env") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some((name, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                    defined.push(name.trim().to_string());
                }
            }
        }
    }
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        units += 1;
        let text = std::fs::read_to_string(&path).unwrap().replace("\\\n", " ");
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart");
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(words[0], "/usr/local/bin/baton", "{}", path.display());
        let help = Command::new(baton_binary()).args([words[1], "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for word in &words[2..] {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap();
                assert!(help.contains(&format!("--{flag} ")), "{}: baton {} has no --{flag}", path.display(), words[1]);
            }
            for variable in word.split('$').skip(1) {
                let name: String = variable
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                assert!(defined.contains(&name), "{}: ${name} is set by no env file", path.display());
            }
        }
    }
    assert_eq!(units, 3, "apiserver, controller and agent units");
}

/// `hack/prereqs.sh` (run by `hack/test.sh` and `hack/dev.sh`) on a machine where what it
/// needs is missing and cannot be installed: it stops at once, naming each package, why it is
/// needed, and what to do — not a build error minutes later.
#[test]
fn prerequisites_that_cannot_be_installed_are_named() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A PATH with only what the script runs besides bash's builtins, and an apt-get that fails
    // as it does without network: no protoc, cc, python3, etcd or kubectl on it.
    for tool in ["id", "bash"] {
        let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{tool} not found")), bin.join(tool)).unwrap();
    }
    let apt = bin.join("apt-get");
    std::fs::write(&apt, "#!/bin/bash\necho 'E: Unable to locate package' >&2\nexit 100\n").unwrap();
    std::fs::set_permissions(&apt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/prereqs.sh");
    let output = Command::new(bin.join("bash"))
        .arg(&script)
        .arg("--tests")
        .env_clear()
        .env("PATH", &bin)
        .output()
        .expect("runs hack/prereqs.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "it must fail\n{stdout}\n{stderr}");
    for package in ["protobuf-compiler", "etcd-server", "python3"] {
        assert!(stdout.contains(package) && stderr.contains(package), "{package} is named\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("etcd-client's build runs protoc"), "why each is needed\n{stdout}");
    assert!(stderr.contains("apt-get install failed"), "what went wrong\n{stderr}");
    assert!(stderr.contains("Install them by hand"), "what to do next\n{stderr}");
}

/// `baton certificates` makes what the README's across-machines etcd needs: etcd serves TLS with
/// its server certificate and checks client certificates; Baton connects with the client one,
/// and nothing without it does.
#[test]
fn the_generated_certificates_secure_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let output = Command::new(baton_binary())
        .args(["certificates", "--dir"])
        .arg(&pki)
        .args(["--san", "127.0.0.1", "--san", "localhost"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("--store-cert-file") && stdout.contains("--client-cert-auth"), "{stdout}");
    let etcd = TestEtcd::start_tls(ServerTls {
        ca: pki.join("ca.crt"),
        cert: pki.join("server.crt"),
        key: pki.join("server.key"),
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let with_client =
        baton_store::etcd::EtcdTls { ca_pem: read("ca.crt"), client: Some((read("client.crt"), read("client.key"))) };
    let endpoints = baton_store::etcd::parse_url(&format!("etcd://{}", etcd.address())).unwrap();
    runtime.block_on(async {
        let store = baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(10), Some(&with_client))
            .await
            .unwrap_or_else(|e| panic!("connecting with the client certificate: {e}\n{}", etcd.log()));
        baton_store::StoreExt::put(&store, "/certs-test", b"ok".to_vec()).await.unwrap();
        let anonymous = baton_store::etcd::EtcdTls { ca_pem: read("ca.crt"), client: None };
        let refused =
            baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(3), Some(&anonymous)).await;
        let refused = match refused {
            Err(_) => true,
            Ok(store) => baton_store::StoreExt::put(&store, "/certs-test", b"no".to_vec()).await.is_err(),
        };
        assert!(refused, "a client without a certificate gets nowhere");
    });
}

/// The chart's own etcd (the default): three members speaking TLS to clients and to each other,
/// run with exactly the arguments and the certificates the chart renders (one render: a CA
/// and certificates made by the chart), on loopback. The members form a cluster (their peer
/// certificates are good for each other), Baton connects with the chart's client certificate,
/// and a client without one — or without TLS — gets nowhere.
#[test]
fn the_charts_etcd_speaks_tls_to_peers_and_lets_in_only_its_clients() {
    // The default values, but for ports that must not collide with other tests'.
    let (registrar_port, registrar_metrics, agent_metrics) = (free_port(), free_port(), free_port());
    let agent_ports = PortBlock::take();
    let rendered = render(&json!({
        "registrar": {"port": registrar_port, "metricsPort": registrar_metrics, "extraSANs": ["127.0.0.1"]},
        "agent": {"metricsPort": agent_metrics, "sandboxPort": free_port(), "ports": agent_ports.to_string(),
                  "cgroups": {"mode": "off"}},
    }));
    let command: Vec<String> =
        serde_json::from_value(rendered["containers"]["etcd"].clone()).expect("the chart runs etcd");
    assert_eq!(command[0], "etcd");
    for flag in ["--client-cert-auth=true", "--peer-client-cert-auth=true"] {
        assert!(command.contains(&flag.to_string()), "the chart's etcd runs with {flag}: {command:?}");
    }
    let secret = |name: &str, key: &str| {
        rendered["secrets"][name][key]
            .as_str()
            .unwrap_or_else(|| panic!("the chart's Secret {name} has {key}"))
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        write(root.join("etc/etcd/tls").join(key), &secret("baton-etcd-tls", key));
    }
    // Each member's client, peer and metrics ports on loopback stand in for its pod's.
    let ports: Vec<[u16; 3]> = (0..3).map(|_| [free_port(), free_port(), free_port()]).collect();
    let mut members = Vec::new();
    for (i, _) in ports.iter().enumerate() {
        let args: Vec<OsString> = command[1..]
            .iter()
            .map(|arg| {
                let mut arg = arg.replace("$(POD_NAME)", &format!("baton-etcd-{i}"));
                for (j, [client, peer, _]) in ports.iter().enumerate() {
                    let host = format!("baton-etcd-{j}.baton-etcd-headless.baton-system.svc");
                    arg = arg.replace(&format!("{host}:2379"), &format!("127.0.0.1:{client}"));
                    arg = arg.replace(&format!("{host}:2380"), &format!("127.0.0.1:{peer}"));
                }
                let [client, peer, metrics] = ports[i];
                arg = arg.replace("0.0.0.0:2379", &format!("127.0.0.1:{client}"));
                arg = arg.replace("0.0.0.0:2380", &format!("127.0.0.1:{peer}"));
                arg = arg.replace("0.0.0.0:2381", &format!("127.0.0.1:{metrics}"));
                arg = arg.replace("=/var/lib/etcd/", &format!("={}/member-{i}/", root.display()));
                arg.replace("=/etc/etcd/", &format!("={}/etc/etcd/", root.display())).into()
            })
            .collect();
        let log = root.join(format!("etcd-{i}.log"));
        members.push(Proc::start(&format!("etcd-{i}"), Path::new("etcd"), args, Vec::new(), log));
    }
    let logs = || members.iter().map(|m| m.log_tail(15)).collect::<Vec<_>>().join("\n");
    wait_for("the three members to form a healthy cluster", WAIT, logs, || {
        ports.iter().all(|[_, _, metrics]| get(*metrics, "/health").1.contains("\"health\":\"true\"")).then_some(())
    });

    let endpoints: Vec<String> = ports.iter().map(|[client, _, _]| format!("127.0.0.1:{client}")).collect();
    let endpoints = baton_store::etcd::parse_url(&format!("etcd://{}", endpoints.join(","))).unwrap();
    let ca = secret("baton-etcd-client", "ca.crt").into_bytes();
    let with_client = baton_store::etcd::EtcdTls {
        ca_pem: ca.clone(),
        client: Some((
            secret("baton-etcd-client", "tls.crt").into_bytes(),
            secret("baton-etcd-client", "tls.key").into_bytes(),
        )),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(10), Some(&with_client))
            .await
            .unwrap_or_else(|e| panic!("connecting with the chart's client certificate: {e}\n{}", logs()));
        baton_store::StoreExt::put(&store, "/chart-tls", b"ok".to_vec()).await.unwrap();
        let refused = |store: Result<baton_store::etcd::EtcdStore, _>| async move {
            match store {
                Err(_) => true,
                Ok(store) => baton_store::StoreExt::put(&store, "/chart-tls", b"no".to_vec()).await.is_err(),
            }
        };
        let anonymous = baton_store::etcd::EtcdTls { ca_pem: ca, client: None };
        let without_certificate =
            baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(3), Some(&anonymous)).await;
        assert!(refused(without_certificate).await, "a client without a certificate gets nowhere");
        let plain = baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(3), None).await;
        assert!(refused(plain).await, "a client without TLS gets nowhere");
    });

    // The chart's registrar, with the CA the chart made (Helm's genCA: an RSA key in PKCS #1),
    // turns etcd's authentication on, and the chart's agent joins through it for a store
    // identity of its own: its node's keys, nothing else.
    for key in ["ca.crt", "ca.key"] {
        write(root.join("etc/baton/etcd-ca").join(key), &secret("baton-etcd-ca", key));
    }
    write(root.join("etc/baton/etcd/ca.crt"), &secret("baton-etcd-client", "ca.crt"));
    write(root.join("etc/baton/join/token"), &secret("baton-agent-join", "token"));
    let mut hosts: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(j, [client, _, _])| {
            (format!("baton-etcd-{j}.baton-etcd-headless.baton-system.svc:2379"), format!("127.0.0.1:{client}"))
        })
        .collect();
    hosts.push(("https://baton-registrar.baton-system.svc:".into(), "https://127.0.0.1:".into()));
    let env = BTreeMap::from([("NODE_NAME", "node-1".to_string()), ("NODE_IP", "127.0.0.1".to_string())]);
    let start = |name: &str| {
        let (program, args) = as_in_pod(&rendered["containers"][name], root, &env, &hosts);
        let rust_log = vec![("RUST_LOG".to_string(), "info".to_string())];
        Proc::start(name, &program, args, rust_log, root.join(format!("{name}.log")))
    };
    let registrar = start("registrar");
    let agent = start("agent");
    let logs = || format!("{}\n{}\n{}", registrar.log_tail(20), agent.log_tail(20), logs());
    wait_for("the agent to join and register", WAIT, logs, || {
        (metric(agent_metrics, "baton_agent_registered") == Some(1.0)).then_some(())
    });
    assert_eq!(get(registrar_metrics, "/readyz").0, 200, "the registrar's /readyz");
    let identity = root.join("var/lib/baton/identity");
    let as_agent = baton_store::etcd::EtcdTls {
        ca_pem: secret("baton-etcd-client", "ca.crt").into_bytes(),
        client: Some((
            std::fs::read(identity.join("store.crt")).unwrap(),
            std::fs::read(identity.join("store.key")).unwrap(),
        )),
    };
    let keys = baton_store::Keyspace::new("/baton");
    let secret_of = &secret;
    runtime.block_on(async {
        use baton_store::{Op, Store, Txn};
        let platform = baton_store::etcd::EtcdStore::connect_with(&endpoints, WAIT, Some(&with_client)).await.unwrap();
        let registered = platform.get(&keys.agent("node-1")).await.expect("Baton's certificate reads the keyspace");
        assert!(registered.is_some(), "node-1 is registered");
        let agent = baton_store::etcd::EtcdStore::connect_with(&endpoints, WAIT, Some(&as_agent))
            .await
            .expect("the agent's own identity connects");
        agent.range(&keys.agent_instances("node-1")).await.expect("node-1 reads its assignments");
        denied("reading node-2's assignments", agent.range(&keys.agent_instances("node-2")).await);
        denied(
            "assigning itself work",
            agent.txn(Txn::new().and_then([Op::put(keys.instance("node-1", "evil"), b"{}".to_vec())])).await,
        );
        denied("reading the keyspace", agent.range(&keys.root_prefix()).await);
        denied("reading outside it", agent.get("/chart-tls").await);
        // The controllers and API servers each show their own certificate, which reaches
        // Baton's keyspace (and nothing else) now that etcd checks who asks.
        for component in ["controller", "apiserver"] {
            let secret = format!("baton-etcd-{component}");
            let tls = baton_store::etcd::EtcdTls {
                ca_pem: secret_of(&secret, "ca.crt").into_bytes(),
                client: Some((secret_of(&secret, "tls.crt").into_bytes(), secret_of(&secret, "tls.key").into_bytes())),
            };
            let store = baton_store::etcd::EtcdStore::connect_with(&endpoints, WAIT, Some(&tls)).await.unwrap();
            store
                .txn(Txn::new().and_then([Op::put(format!("/baton/test/{component}"), b"ok".to_vec())]))
                .await
                .unwrap_or_else(|e| panic!("the {component}'s certificate writes Baton's keyspace: {e}"));
            denied(&format!("the {component} reading outside it"), store.get("/chart-tls").await);
        }
    });

    // An operator frees node-1's name as docs/install.md says: a root certificate from the
    // chart's CA (`baton certificates` signs with the CA it finds), then remove-agent.
    let pki = root.join("etcd-pki");
    for key in ["ca.crt", "ca.key"] {
        write(pki.join(key), &secret("baton-etcd-ca", key));
    }
    let baton = |args: &[&str]| {
        let output = Command::new(baton_binary()).args(args).output().unwrap();
        assert!(output.status.success(), "baton {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let pki_file = |name: &str| pki.join(name).display().to_string();
    baton(&["certificates", "--dir", &pki_file(""), "--san", "localhost"]);
    let store = format!("etcd://127.0.0.1:{}", ports[0][0]);
    baton(
        &["store", "remove-agent", "node-1", "--store", &store, "--store-ca-file", &pki_file("ca.crt")]
            .into_iter()
            .chain(["--store-cert-file", &pki_file("root.crt"), "--store-key-file", &pki_file("root.key")])
            .collect::<Vec<_>>(),
    );
    runtime.block_on(async {
        let agent =
            baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(5), Some(&as_agent)).await;
        let cut_off = match agent {
            Err(_) => true,
            Ok(agent) => baton_store::Store::range(&agent, &keys.agent_instances("node-1")).await.is_err(),
        };
        assert!(cut_off, "node-1's identity reaches nothing once removed");
    });
}

/// An agent's store credential, used directly on etcd (as someone who stole it would).
fn agent_store(cluster: &Cluster, agent: &str) -> baton_store::etcd::EtcdStore {
    let pki = cluster.pki();
    let tls = baton_store::etcd::EtcdTls {
        ca_pem: std::fs::read(pki.join("ca.crt")).unwrap(),
        client: Some((
            std::fs::read(pki.join(format!("agents/{agent}.crt"))).unwrap(),
            std::fs::read(pki.join(format!("agents/{agent}.key"))).unwrap(),
        )),
    };
    let endpoint = format!("https://{}", cluster_address(cluster));
    cluster
        .block_on(baton_store::etcd::EtcdStore::connect_with(&[endpoint], WAIT, Some(&tls)))
        .expect("an agent's credential connects")
}

fn cluster_address(cluster: &Cluster) -> String {
    cluster.url().trim_start_matches("etcd://").to_string()
}

fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, baton_store::Error>) {
    match result {
        Err(e) if e.to_string().contains("permission denied") => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

/// etcd with authentication on: each agent holds an identity of its own (`baton store
/// add-agent`) that reaches its own keys only. The cluster works with them end to end — the
/// agents register, run their instances, report, and serve their output (each with its own
/// sandbox token) — and a stolen agent credential writes nothing of another agent's and reads
/// none of its work.
#[test]
fn each_agent_holds_only_its_own_keys() {
    use baton_store::{Op, Store, Txn};
    let options = ClusterOptions { controllers: 1, store_auth: true, ..ClusterOptions::default() };
    let cluster = Cluster::start(&baton_binary(), options);
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: spread\nspec:\n  instances: 2\n  \
         cmd: \"echo started; exec sleep 100000\"\n  resources: {cpus: 0.05, mem: 32}\n  \
         constraints: [[hostname, UNIQUE]]\n",
    );
    let records = cluster.wait_for("an instance running on each agent", WAIT, |c| {
        let statuses = c.statuses();
        let records: Vec<_> = c.records().into_values().collect();
        let running = records
            .iter()
            .filter(|r| statuses.get(&r.id).is_some_and(|s| s.phase == baton_api::Phase::Running))
            .count();
        (running == 2).then_some(records)
    });
    // Its output, through the API server, from the agent with that agent's own token.
    // (Running says the process started, not that its shell has echoed yet: Loop run 7 read
    // the log in between, empty.)
    let on_a1 = records.iter().find(|r| r.agent == "a1").expect("an instance on a1");
    let log = cluster.wait_for("a1's instance's output", WAIT, |c| {
        let out = c.kubectl_output(&[
            "get",
            "--raw",
            &format!("/apis/baton.dev/v1alpha1/namespaces/default/instances/{}/log", on_a1.id),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.trim().is_empty()).then_some(text)
    });
    assert_eq!(log.trim(), "started");

    let keys = cluster.keys().clone();
    let a1 = agent_store(&cluster, "a1");
    let on_a2 = records.iter().find(|r| r.agent == "a2").expect("an instance on a2");
    cluster.block_on(async {
        // Its own: its assignments (read), its statuses (written).
        let mine = a1.range(&keys.agent_instances("a1")).await.expect("a1 reads its assignments");
        assert_eq!(mine.kvs.len(), 1);
        a1.txn(Txn::new().and_then([Op::put(keys.status("a1", "made-up"), b"{}".to_vec())]))
            .await
            .expect("a1 writes its statuses");
        a1.txn(Txn::new().and_then([Op::delete(keys.status("a1", "made-up"))])).await.unwrap();
        // Another agent's: neither its assignments, nor its statuses, nor its registration.
        denied("reading a2's assignments", a1.range(&keys.agent_instances("a2")).await);
        denied("reading a2's assignment", a1.get(&keys.instance("a2", &on_a2.id)).await);
        denied("watching every assignment", a1.range(&keys.instances()).await);
        denied(
            "writing a2's status",
            a1.txn(Txn::new().and_then([Op::put(keys.status("a2", &on_a2.id), b"{}".to_vec())])).await,
        );
        denied(
            "writing a2's registration",
            a1.txn(Txn::new().and_then([Op::put(keys.agent("a2"), b"{}".to_vec())])).await,
        );
        denied("reading a2's sandbox token", a1.get(&keys.agent_sandbox_token("a2")).await);
        // Nor assign itself work, nor read apps, secrets or the sandbox secret.
        denied(
            "writing its own assignments",
            a1.txn(Txn::new().and_then([Op::put(keys.instance("a1", "evil"), b"{}".to_vec())])).await,
        );
        denied("reading the sandbox secret", a1.get(&keys.sandbox_token()).await);
        denied("reading everything", a1.range(&keys.root_prefix()).await);
    });

    // An agent started as a2 with a1's certificate is refused, and says what to do.
    let pki = cluster.pki();
    let file = |name: &str| pki.join(name).display().to_string();
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(baton_binary())
        .args(["agent", "--name", "a2", "--store", cluster.url(), "--store-ca-file", &file("ca.crt")])
        .args(["--store-cert-file", &file("agents/a1.crt"), "--store-key-file", &file("agents/a1.key")])
        .args(["--sandbox-listen", "127.0.0.1:0", "--cgroups", "off", "--work-dir"])
        .arg(work.path())
        .output()
        .expect("baton agent runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an agent with another agent's identity is refused");
    assert!(stderr.contains("is not agent a2's") && stderr.contains("baton store add-agent a2"), "{stderr}");
}

/// `baton registrar` and `baton agent --join`: the first key to join under a name keeps it; an
/// agent restarts on the identity it kept (the registrar need not be up); a wrong token or
/// another key is refused saying what to do; `baton store remove-agent` takes the identity
/// away and frees the name.
#[test]
fn a_joined_agent_keeps_its_name_and_its_key() {
    use baton_store::{Op, Store, Txn};
    let dir = tempfile::Builder::new().prefix("baton-join-").tempdir().unwrap();
    let pki = dir.path().join("pki");
    let output =
        Command::new(baton_binary()).args(["certificates", "--san", "127.0.0.1", "--dir"]).arg(&pki).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let etcd = TestEtcd::start_tls(ServerTls {
        ca: pki.join("ca.crt"),
        cert: pki.join("server.crt"),
        key: pki.join("server.key"),
    });
    let url = format!("etcd://{}", etcd.address());
    let file = |name: &str| pki.join(name).display().to_string();
    let token = dir.path().join("token");
    write(token.clone(), "# the cluster's\nthe-join-token-of-this-test\n");
    let (port, metrics) = (free_port(), free_port());
    let registrar_args = |listen: u16| -> Vec<OsString> {
        ["registrar", "--store", &url, "--pki", &file(""), "--san", "127.0.0.1", "--enable-store-auth"]
            .iter()
            .map(OsString::from)
            .chain(["--token-file".into(), token.clone().into_os_string()])
            .chain(["--listen".into(), format!("127.0.0.1:{listen}").into()])
            .chain(["--metrics-listen".into(), format!("127.0.0.1:{metrics}").into()])
            .collect()
    };
    let rust_log = vec![("RUST_LOG".to_string(), "info".to_string())];
    let mut registrar = Proc::start(
        "registrar",
        &baton_binary(),
        registrar_args(port),
        rust_log.clone(),
        dir.path().join("registrar.log"),
    );
    let agent_args = |name: &str, work: &Path, token: &Path| -> Vec<OsString> {
        let mut args: Vec<OsString> = ["agent", "--name", name, "--store", &url, "--store-ca-file", &file("ca.crt")]
            .iter()
            .map(OsString::from)
            .collect();
        args.extend(["--join".into(), format!("https://127.0.0.1:{port}").into(), "--join-token-file".into()]);
        args.push(token.into());
        args.extend(["--work-dir".into(), work.into()]);
        args.extend(["--cgroups", "off", "--sandbox-listen", "127.0.0.1:0", "--lease-ttl", "2s"].map(OsString::from));
        args
    };
    let (work1, work2) = (dir.path().join("n1"), dir.path().join("n1-rebuilt"));
    let mut n1 = Proc::start(
        "n1",
        &baton_binary(),
        agent_args("n1", &work1, &token),
        rust_log.clone(),
        dir.path().join("n1.log"),
    );
    let logs = || {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!("--- {name}:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
        };
        format!("{}\n{}", tail("registrar.log"), tail("n1.log"))
    };

    // Root, as the test: what `baton certificates` made.
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let root_tls =
        baton_store::etcd::EtcdTls { ca_pem: read("ca.crt"), client: Some((read("root.crt"), read("root.key"))) };
    let endpoints = baton_store::etcd::parse_url(&url).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = runtime.block_on(baton_store::etcd::EtcdStore::connect_with(&endpoints, WAIT, Some(&root_tls))).unwrap();
    let keys = baton_store::Keyspace::new("/baton");
    let registered = |agent: &str| runtime.block_on(root.get(&keys.agent(agent))).ok().flatten().is_some();
    wait_for("n1 to join and register", WAIT, logs, || registered("n1").then_some(()));
    let identity = work1.join("identity");
    let mode = |path: PathBuf| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(identity.join("store.key")), 0o600, "the key is the agent's alone");
    assert_eq!(mode(identity.clone()), 0o700);
    let as_n1 = baton_store::etcd::EtcdTls {
        ca_pem: read("ca.crt"),
        client: Some((
            std::fs::read(identity.join("store.crt")).unwrap(),
            std::fs::read(identity.join("store.key")).unwrap(),
        )),
    };
    runtime.block_on(async {
        let n1 = baton_store::etcd::EtcdStore::connect_with(&endpoints, WAIT, Some(&as_n1)).await.unwrap();
        n1.range(&keys.agent_instances("n1")).await.expect("n1 reads its assignments");
        denied("reading n2's assignments", n1.range(&keys.agent_instances("n2")).await);
        denied(
            "assigning itself work",
            n1.txn(Txn::new().and_then([Op::put(keys.instance("n1", "evil"), b"{}".to_vec())])).await,
        );
    });

    // Another machine (another key) joining as n1, and a wrong token, are refused.
    let refused = |name: &str, work: &Path, token: &Path| {
        let output = Command::new(baton_binary()).args(agent_args(name, work, token)).output().unwrap();
        assert!(!output.status.success(), "the agent {name} must not start");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let stderr = refused("n1", &work2, &token);
    assert!(stderr.contains("refused agent n1 (409)") && stderr.contains("baton store remove-agent n1"), "{stderr}");
    let wrong = dir.path().join("wrong-token");
    write(wrong.clone(), "not-the-join-token-at-all\n");
    let stderr = refused("n2", &dir.path().join("n2"), &wrong);
    assert!(stderr.contains("refused agent n2 (401)") && stderr.contains("--join-token-file"), "{stderr}");
    assert!(!registered("n2"));

    // n1 restarts on what it kept, with the registrar down.
    registrar.stop();
    n1.kill();
    wait_for("n1's registration to lapse", WAIT, logs, || (!registered("n1")).then_some(()));
    n1.restart();
    wait_for("n1 to register again without the registrar", WAIT, logs, || registered("n1").then_some(()));
    n1.stop();

    // remove-agent takes n1's identity away and frees its name: the rebuilt machine joins.
    let output = Command::new(baton_binary())
        .args(["store", "remove-agent", "n1", "--store", &url, "--store-ca-file", &file("ca.crt")])
        .args(["--store-cert-file", &file("root.crt"), "--store-key-file", &file("root.key")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    runtime.block_on(async {
        let old = baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(5), Some(&as_n1)).await;
        let cut_off = match old {
            Err(_) => true,
            Ok(old) => old.range(&keys.agent_instances("n1")).await.is_err(),
        };
        assert!(cut_off, "n1's old identity reaches nothing");
        assert_eq!(root.get(&keys.agent_identity("n1")).await.unwrap(), None, "the claim is gone");
    });
    // The agent started again on the identity taken away says so, and how to join again.
    let stderr = refused("n1", &work1, &token);
    assert!(
        stderr.contains("was taken away") && stderr.contains(&work1.join("identity").display().to_string()),
        "{stderr}"
    );
    registrar.restart();
    let mut rebuilt = Proc::start(
        "n1-rebuilt",
        &baton_binary(),
        agent_args("n1", &work2, &token),
        rust_log,
        dir.path().join("n1-rebuilt.log"),
    );
    wait_for("the rebuilt n1 to join", WAIT, || rebuilt.log_tail(20), || registered("n1").then_some(()));
    rebuilt.stop();
}

/// Baton's API server behind the Kubernetes aggregation layer (`--aggregated-views`, what the
/// Helm chart's APIService points at): it serves the instances and agents views in
/// `views.baton.dev` and nothing else, kubectl finds them by their names, and it takes the
/// users a front proxy names in its headers only from a certificate of the front proxy's CA
/// with an allowed name — as kube-apiserver's proxy presents them.
#[test]
fn the_views_are_served_behind_the_aggregation_layer() {
    let options = ClusterOptions { controllers: 1, agents: 1, ..ClusterOptions::default() };
    let cluster = Cluster::start(&baton_binary(), options);
    cluster.apply(
        "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\nspec:\n  instances: 2\n  \
         cmd: \"exec sleep 100000\"\n  resources: {cpus: 0.05, mem: 16}\n",
    );
    cluster.wait_for("2 instances running", WAIT, |c| {
        let running = c.statuses().values().filter(|s| s.phase == baton_api::Phase::Running).count();
        (running == 2).then_some(())
    });

    // The front proxy's CA and certificates: kube-apiserver's, and one with a name not allowed.
    let dir = tempfile::Builder::new().prefix("baton-views-").tempdir().unwrap();
    let proxy_pki = Pki::in_dir(dir.path());
    proxy_pki.ensure(&["127.0.0.1".into()]).unwrap();
    let (proxy_cert, proxy_key) = proxy_pki.client_certificate("front-proxy-client", None).unwrap();
    let (stranger_cert, stranger_key) = proxy_pki.client_certificate("someone-else", None).unwrap();
    let rules = dir.path().join("rules.yaml");
    write(rules.clone(), "rules:\n- users: [alice]\n  namespaces: [default]\n  access: read\n");
    let data_dir = dir.path().join("views");
    let port = free_port();
    let args: Vec<OsString> = [
        "apiserver",
        "--aggregated-views",
        "--store",
        cluster.url(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--requestheader-allowed-names",
        "front-proxy-client",
    ]
    .iter()
    .map(OsString::from)
    .chain(["--data-dir".into(), data_dir.clone().into_os_string()])
    .chain(["--requestheader-client-ca-file".into(), proxy_pki.ca_cert.clone().into_os_string()])
    .chain(["--authorization-rules".into(), rules.into_os_string()])
    .collect();
    let views = Proc::start("views", &baton_binary(), args, Vec::new(), dir.path().join("views.log"));
    let kubeconfig = data_dir.join("kubeconfig");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let kubectl = Kubectl { kubeconfig: kubeconfig.clone(), home };
    let logs = || views.log_tail(30);
    wait_for("the views server's /readyz", WAIT, logs, || {
        (kubeconfig.exists() && kubectl.run(&["get", "--raw", "/readyz"], None).status.success()).then_some(())
    });

    // kubectl finds the views by name in their own group, and nothing else is served.
    let resources = kubectl.ok(&["api-resources", "--api-group", "views.baton.dev", "-o", "name"], None).unwrap();
    assert_eq!(resources.lines().collect::<Vec<_>>(), ["agents.views.baton.dev", "instances.views.baton.dev"]);
    let table = kubectl.ok(&["get", "instances"], None).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(table.lines().filter(|l| l.starts_with("web-")).count(), 2, "{table}");
    let list = kubectl.json(&["get", "instances.views.baton.dev", "-l", "app=web"]).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["apiVersion"] == "views.baton.dev/v1alpha1"), "{list}");
    assert!(kubectl.ok(&["get", "agents"], None).unwrap().contains("a1"));
    let api = ApiClient::from_kubeconfig(&kubeconfig);
    assert_eq!(api.get("/apis/baton.dev/v1alpha1/namespaces/default/apps").0, 404, "Apps are Kubernetes' here");

    // As kube-apiserver's proxy presents a user: its certificate, the user in its headers.
    let proxy = api.with_token(None).with_client_certificate(&proxy_cert, &proxy_key);
    let instances = "/apis/views.baton.dev/v1alpha1/namespaces/default/instances";
    let alice = [("X-Remote-User", "alice"), ("X-Remote-Group", "system:authenticated")];
    let (status, body) = proxy.get_with_headers(instances, &alice);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["items"].as_array().map(Vec::len), Some(2));
    let (status, body) = proxy.get_with_headers("/apis/views.baton.dev/v1alpha1/agents", &alice);
    assert_eq!(status, 403, "alice reads the default namespace only: {body}");
    assert!(body.contains("alice"), "{body}");
    let admin = [("X-Remote-User", "root-of-all"), ("X-Remote-Group", "baton:admins")];
    assert_eq!(proxy.get_with_headers("/apis/views.baton.dev/v1alpha1/agents", &admin).0, 200);
    // The headers count only from the proxy's certificate with an allowed name.
    let (status, body) = proxy.get_with_headers(instances, &[]);
    assert_eq!(status, 401, "the proxy named no user: {body}");
    let anonymous = api.with_token(None);
    assert_eq!(anonymous.get_with_headers(instances, &admin).0, 401, "headers without the proxy's certificate");
    let stranger = api.with_token(None).with_client_certificate(&stranger_cert, &stranger_key);
    let (status, body) = stranger.get_with_headers(instances, &admin);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--requestheader-allowed-names"), "{body}");
}

/// The chart's views server runs `baton apiserver` with flags baton has; away from Kubernetes
/// (no service account, no $KUBECONFIG) it stops at once and says what it needs.
#[test]
fn the_charts_views_server_asks_kubernetes_and_says_so_without_it() {
    let rendered = render(&json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (program, args) = as_in_pod(&rendered["containers"]["views"], dir.path(), &BTreeMap::new(), &[]);
    let output = Command::new(program)
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--requestheader-from-kubernetes: no Kubernetes to ask"), "{stderr}");
}
