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
use baton_e2e::{Kubectl, Proc, free_port, http, wait_for};
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

/// A container's arguments as its pod would run them, `root` standing in for `/`.
fn as_in_pod(container: &Value, root: &Path, env: &BTreeMap<&str, String>) -> (PathBuf, Vec<OsString>) {
    let all: Vec<String> = serde_json::from_value(container.clone()).expect("a list of strings");
    assert_eq!(all[0], "baton", "the chart runs the baton binary");
    let root = root.display().to_string();
    let args = all[1..]
        .iter()
        .map(|arg| {
            let mut arg = arg.clone();
            for (name, value) in env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            arg = arg.replace("=/etc/baton/", &format!("={root}/etc/baton/"));
            arg = arg.replace("=/var/lib/", &format!("={root}/var/lib/"));
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
    let (_, text) = get(port, "/metrics");
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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
    let first_port = 20000 + free_port() % 20000;
    let values = json!({
        "etcd": {"enabled": false, "external": {"endpoints": [etcd.address()], "tls": {"enabled": true, "secretName": "etcd-client"}}},
        "apiserver": {"enabled": true, "port": api_port, "metricsPort": api_metrics},
        "controller": {"metricsPort": controller_metrics},
        "agent": {"metricsPort": agent_metrics, "sandboxPort": free_port(), "ports": format!("{first_port}-{}", first_port + 99)},
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
        let (program, args) = as_in_pod(&rendered["containers"][name], &root, &env);
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
        ports.iter().all(|p| (first_port..first_port + 100).contains(p)),
        "ports from the chart's range: {ports:?}"
    );
    assert_eq!(metric(agent_metrics, "baton_agent_instances"), Some(2.0));
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
    let rendered = render(&json!({}));
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
}
