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

/// The instances of a namespace as `name → (phase, pid)`, optionally of one app.
fn instances(baton: &Baton, namespace: &str, app: Option<&str>) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut args = vec!["get", "instances", "-n", namespace];
    let selector = app.map(|a| format!("app={a}"));
    if let Some(selector) = &selector {
        args.extend(["-l", selector.as_str()]);
    }
    let list = baton.kubectl_json(&args);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let name = i["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let phase = i["status"]["phase"].as_str().unwrap_or_default().to_string();
            (name, (phase, i["status"]["pid"].as_u64().unwrap_or_default()))
        })
        .collect()
}

fn running(instances: &std::collections::BTreeMap<String, (String, u64)>) -> usize {
    instances.values().filter(|(phase, _)| phase == "Running").count()
}

/// `baton dev` with `agents` agents and the tokens of admin, alice and bob (kept while the
/// returned directory is).
fn dev_with_users(agents: u32) -> (tempfile::TempDir, Baton) {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin-token,admin,baton:admins\nalice-token,alice\nbob-token,bob\n").expect("tokens");
    let baton = Baton::start_dev_with(&baton_binary(), agents, &["--tokens", tokens.to_str().expect("a UTF-8 path")]);
    (dir, baton)
}

/// Marathon-on-Marathon on `baton dev` (its embedded store): each Tenant's controller runs as
/// an app of the platform's with a credential limited to the tenant's namespaces, and plans
/// the apps its users apply there; SIGKILLed, it is replaced within 30 s and no instance of
/// the tenant stops; one tenant (its users, its controller) cannot see or touch the other's
/// apps; a deleted Tenant's apps go first, then its controller, then the Tenant.
#[test]
fn each_tenant_runs_its_own_controller_as_an_app() {
    let (_tokens, mut baton) = dev_with_users(2);
    let tenants = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  \
                   namespaces: [team-a]\n  users: [alice]\n  quota: {instances: 10}\n---\n\
                   apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-b}\nspec:\n  \
                   namespaces: [team-b]\n  users: [bob]\n  quota: {instances: 10}\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(tenants));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let controllers = "jsonpath={range .items[*]}{.metadata.name}={.status.controller} {end}";
    baton.wait_for("both tenants' controllers to run and pass their health checks", WAIT, |b| {
        let out = b.kubectl(&["get", "tenants", "-o", controllers]);
        (String::from_utf8_lossy(&out.stdout) == "team-a=1/1 team-b=1/1 ").then_some(())
    });

    // Each tenant's user applies an app in its namespace; the tenant's controller plans it.
    for (token, namespace) in [("alice-token", "team-a"), ("bob-token", "team-b")] {
        let app = format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: web, namespace: {namespace}}}\nspec:\n  \
             instances: 2\n  cmd: sleep 3600\n  resources: {{cpus: 0.01, mem: 8}}\n"
        );
        let out = baton.kubectl_with_input(&["--token", token, "apply", "-f", "-"], Some(&app));
        assert!(out.status.success(), "{token}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for namespace in ["team-a", "team-b"] {
        baton.wait_for("the tenant's controller to report its app running", WAIT, |b| {
            let out = b.kubectl(&["get", "app", "web", "-n", namespace, "-o", "jsonpath={.status.running}"]);
            (String::from_utf8_lossy(&out.stdout) == "2").then_some(())
        });
    }

    // Neither tenant sees or touches the other's apps: not its user, not its controller.
    for args in [["get", "apps", "-n", "team-b"].as_slice(), &["scale", "app/web", "-n", "team-b", "--replicas=0"]] {
        let out = baton.kubectl(&[&["--token", "alice-token"], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("forbidden"), "alice {args:?}: {stderr}");
    }
    let env = "jsonpath={.spec.env.TENANT_CONTROLLER_TOKEN}";
    let token_b = baton.kubectl_ok(&["get", "app", "tenant-team-b", "-n", "baton-system", "-o", env]);
    assert!(token_b.starts_with("baton-tenant-controller.team-b."), "{token_b}");
    let controller_b = baton.api().with_token(Some(&token_b));
    let (code, body) = controller_b.get("/apis/baton.dev/v1alpha1/namespaces/team-a/apps");
    assert_eq!(code, 403, "{body}");
    let a_instances = instances(&baton, "team-a", None);
    let (code, body) = controller_b.post_json("/baton/store/v1/range", r#"{"prefix": "/baton/"}"#);
    assert_eq!(code, 200, "{body}");
    for id in a_instances.keys() {
        assert!(!body.contains(id.as_str()), "team-b's controller read team-a's instance {id}");
    }
    assert!(body.contains("/baton/leader/tenant/team-b"), "{body}");

    // SIGKILL team-a's controller: replaced within 30 s; no instance of the tenant stops.
    let controller = instances(&baton, "baton-system", Some("tenant-team-a"));
    let (old_name, (_, pid)) =
        controller.iter().find(|(_, (phase, _))| phase == "Running").expect("a running controller");
    let (old_name, pid) = (old_name.clone(), *pid);
    assert!(pid > 0, "{controller:?}");
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    baton.wait_for("a replacement controller, healthy", Duration::from_secs(30), |b| {
        let out = b.kubectl(&["get", "tenant", "team-a", "-o", "jsonpath={.status.controller}"]);
        let replaced = instances(b, "baton-system", Some("tenant-team-a"))
            .iter()
            .any(|(name, (phase, _))| *name != old_name && phase == "Running");
        (replaced && String::from_utf8_lossy(&out.stdout) == "1/1").then_some(())
    });
    eprintln!("team-a's controller SIGKILLed: a replacement healthy after {:.1} s", killed.elapsed().as_secs_f64());
    baton.kubectl_ok(&["--token", "alice-token", "scale", "app/web", "-n", "team-a", "--replicas=3"]);
    baton.wait_for("the replacement controller to carry on (3 running)", WAIT, |b| {
        let out = b.kubectl(&["get", "app", "web", "-n", "team-a", "-o", "jsonpath={.status.running}"]);
        (String::from_utf8_lossy(&out.stdout) == "3").then_some(())
    });
    eprintln!("…and planning again (a scale to 3 done) {:.1} s after the SIGKILL", killed.elapsed().as_secs_f64());
    let now = instances(&baton, "team-a", None);
    for (name, (phase, pid)) in &a_instances {
        assert_eq!(now.get(name), Some(&(phase.clone(), *pid)), "{name} of team-a kept running, same process");
    }
    assert_eq!(running(&now), 3, "{now:?}");

    // Deleting team-b: its apps' instances stop first, then its controller, then the Tenant.
    let b_instances = instances(&baton, "team-b", None);
    assert_eq!(running(&b_instances), 2, "{b_instances:?}");
    let out = baton.kubectl(&["delete", "tenant", "team-b", "--timeout=60s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = baton.kubectl(&["get", "namespace", "team-b"]);
    assert!(!out.status.success(), "team-b's namespace is gone with it");
    assert!(instances(&baton, "baton-system", Some("tenant-team-b")).is_empty(), "and its controller");
    for (name, (_, pid)) in &b_instances {
        assert!(!baton_e2e::ProcessId::of(*pid as u32).is_some_and(|p| p.is_alive()), "{name}'s process ended");
    }
    assert_eq!(running(&instances(&baton, "team-a", None)), 3, "team-a is untouched");
}

/// Instances of `name` in `namespace` that the app's status counts running.
fn app_running(baton: &Baton, namespace: &str, name: &str) -> Option<i64> {
    let out = baton.kubectl(&["get", "app", name, "-n", namespace, "-o", "jsonpath={.status.running}"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Events of `reason` in `namespace`.
fn events(baton: &Baton, namespace: &str, reason: &str) -> usize {
    let list = baton.kubectl_json(&["get", "events", "-n", namespace]);
    list["items"].as_array().into_iter().flatten().filter(|e| e["reason"] == reason).count()
}

/// A tenant below its guarantee gets it back: team-b (no guarantee) fills the only agent,
/// then team-a, guaranteed 0.6 cpus, asks for 3 instances of 0.2: the platform stops 3 of
/// team-b's youngest instances (`Preempted`) and places team-a's; team-b's controller asks
/// again, and gets nothing back (no ping-pong).
#[test]
fn a_tenant_under_its_guarantee_gets_it_back() {
    let mut baton = Baton::start_dev(&baton_binary(), 1);
    let tenants = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  \
                   namespaces: [team-a]\n  guarantee: {cpus: 0.6}\n---\n\
                   apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-b}\nspec:\n  \
                   namespaces: [team-b]\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(tenants));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let controllers = "jsonpath={range .items[*]}{.metadata.name}={.status.controller} {end}";
    baton.wait_for("both tenants' controllers to run", WAIT, |b| {
        let out = b.kubectl(&["get", "tenants", "-o", controllers]);
        (String::from_utf8_lossy(&out.stdout) == "team-a=1/1 team-b=1/1 ").then_some(())
    });
    let agents = baton.kubectl_json(&["get", "agents"]);
    let agent = &agents["items"][0]["status"];
    let free =
        agent["capacity"]["cpus"].as_f64().expect("the agent's cpus") - agent["allocated"]["cpus"].as_f64().unwrap();
    let fill = ((free + 1e-9) / 0.2).floor() as i64;
    assert!(fill >= 3, "room for at least 3 instances of 0.2 cpus: {agent}");
    let app = |namespace: &str, instances: i64| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: work, namespace: {namespace}}}\nspec:\n  \
             instances: {instances}\n  cmd: sleep 3600\n  resources: {{cpus: 0.2, mem: 8}}\n  \
             upgradeStrategy: {{minimumHealthCapacity: 0.5}}\n"
        )
    };
    baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app("team-b", fill)));
    baton
        .wait_for("team-b to fill the agent", WAIT, |b| (app_running(b, "team-b", "work") == Some(fill)).then_some(()));

    let asked = std::time::Instant::now();
    baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app("team-a", 3)));
    baton.wait_for("team-a to get its guarantee back", WAIT, |b| {
        (app_running(b, "team-a", "work") == Some(3)).then_some(())
    });
    eprintln!("team-a got its guarantee (3 × 0.2 cpus) {:.1} s after asking", asked.elapsed().as_secs_f64());
    baton.wait_for("team-b to run what is left", WAIT, |b| {
        (app_running(b, "team-b", "work") == Some(fill - 3)).then_some(())
    });
    assert_eq!(events(&baton, "team-b", "Preempted"), 3, "exactly 3 of team-b's instances were preempted");

    // Nothing moves after that: team-b (no guarantee) takes nothing back, team-a nothing more.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(app_running(&baton, "team-a", "work"), Some(3));
    assert_eq!(app_running(&baton, "team-b", "work"), Some(fill - 3));
    assert_eq!(events(&baton, "team-b", "Preempted"), 3, "no instance preempted twice, none more");
    let running: usize = instances(&baton, "team-b", None).values().filter(|(phase, _)| phase == "Running").count();
    assert_eq!(running as i64, fill - 3);
}

/// `dig +short NAME TYPE`, one answer per line, sorted.
fn dig(port: u16, name: &str, kind: &str) -> Vec<String> {
    let mut lines: Vec<String> = baton_e2e::dig(port, &["+short", name, kind]).lines().map(String::from).collect();
    lines.sort();
    lines
}

/// dig's status line (NOERROR, NXDOMAIN, REFUSED) for a name.
fn dig_status(port: u16, name: &str) -> String {
    let text = baton_e2e::dig(port, &[name, "A"]);
    text.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or(&text).to_string()
}

/// A tenant's service domain names its apps' ready instances, as Mesos-DNS named each service
/// Marathon's tasks; no two tenants' domains overlap.
#[test]
fn a_tenants_service_domain_names_its_apps_ready_instances() {
    let dns = baton_e2e::free_port();
    let listen = format!("127.0.0.1:{dns}");
    let mut baton = Baton::start_dev_with(&baton_binary(), 2, &["--dns-listen", &listen]);
    let tenant = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  \
                  namespaces: [shop]\n  serviceDomain: team-a.baton.test\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(tenant));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wide = baton.kubectl_ok(&["get", "tenants", "-o", "wide"]);
    assert!(wide.contains("DOMAIN") && wide.contains("team-a.baton.test"), "{wide}");

    // Another tenant cannot take a name within it.
    let overlapping = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-b}\nspec:\n  \
                       namespaces: [other]\n  serviceDomain: shop.team-a.baton.test\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(overlapping));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an overlapping domain was accepted");
    assert!(
        stderr.contains("spec.serviceDomain") && stderr.contains("shop.team-a.baton.test") && stderr.contains("team-a"),
        "{stderr}"
    );

    baton.wait_for("the tenant's namespace", WAIT, |b| {
        b.kubectl(&["get", "namespace", "shop"]).status.success().then_some(())
    });

    // Two instances serving HTTP, ready once their check passes; one app in a namespace that
    // is not the tenant's.
    let web = "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: web, namespace: shop}\nspec:\n  \
               instances: 2\n  cmd: exec python3 -m http.server $PORT0 --bind 127.0.0.1\n  \
               resources: {cpus: 0.1, mem: 64}\n  ports: [{name: http}]\n  healthChecks:\n  \
               - {protocol: HTTP, portIndex: 0, path: /, intervalSeconds: 1, timeoutSeconds: 1, gracePeriodSeconds: 30}\n---\n\
               apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {name: db}\nspec:\n  \
               cmd: exec sleep 100000\n  resources: {cpus: 0.1, mem: 16}\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(web));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let name = "web.shop.team-a.baton.test";
    let ports = baton.wait_for("two ready instances of web behind _http._tcp", WAIT, |_| {
        let srv = dig(dns, &format!("_http._tcp.{name}"), "SRV");
        (srv.len() == 2).then_some(srv)
    });
    // SRV: priority weight port target; the ports are the instances' own.
    let listed = instances(&baton, "shop", Some("web"));
    for line in &ports {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (port, target) = (fields[2], fields[3]);
        let id = target.split('.').next().unwrap();
        assert!(listed.contains_key(id), "{target} is not an instance of web: {listed:?}");
        assert!(target.ends_with(".web.shop.team-a.baton.test."), "{target}");
        assert_eq!(dig(dns, target, "A"), ["127.0.0.1"], "{target}");
        let answered = baton_e2e::http_status(port.parse().unwrap());
        assert_eq!(answered, Some(200), "port {port} of {target} serves");
    }
    assert_eq!(dig(dns, name, "A"), ["127.0.0.1"]);
    assert_eq!(dig(dns, "WEB.Shop.Team-A.baton.test", "A"), ["127.0.0.1"], "names are case-insensitive");
    assert_eq!(baton_e2e::dig(dns, &["+tcp", "+short", name, "A"]).trim(), "127.0.0.1", "over TCP too");
    // The cluster domain names every namespace's apps; the tenant's only its own.
    assert_eq!(dig(dns, "web.shop.baton.local", "A"), ["127.0.0.1"]);
    baton.wait_for("db in the cluster domain", WAIT, |_| {
        (dig(dns, "db.default.baton.local", "A").len() == 1).then_some(())
    });
    assert_eq!(dig_status(dns, "db.default.team-a.baton.test"), "NXDOMAIN");
    assert_eq!(dig_status(dns, "example.com"), "REFUSED", "not a recursive resolver");

    // Scaled to nothing: the name goes.
    baton.kubectl_ok(&["scale", "app", "web", "-n", "shop", "--replicas=0"]);
    baton.wait_for("web's name to go", WAIT, |_| (dig_status(dns, name) == "NXDOMAIN").then_some(()));
}

/// The isolation matrix: every verb on every namespaced kind (and its subresources), in each
/// tenant's namespace, by each tenant's user and each tenant's controller — allowed in its
/// own tenant's namespaces and refused (403) in the other's; cluster-scoped kinds refused to
/// all of them but a controller's reading Maintenances. Writes are dry runs: what is
/// checked is who may, not what happens.
#[test]
fn every_verb_on_every_kind_is_allowed_within_a_tenant_and_refused_across() {
    let (_tokens, mut baton) = dev_with_users(1);
    let tenants = "apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  \
                   namespaces: [team-a]\n  users: [alice]\n---\n\
                   apiVersion: baton.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-b}\nspec:\n  \
                   namespaces: [team-b]\n  users: [bob]\n";
    let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(tenants));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = "jsonpath={.spec.env.TENANT_CONTROLLER_TOKEN}";
    let mut controller_tokens = Vec::new();
    for team in ["team-a", "team-b"] {
        let token = baton.wait_for("the tenant's controller app and its credential", WAIT, |b| {
            let out = b.kubectl(&["get", "app", &format!("tenant-{team}"), "-n", "baton-system", "-o", env]);
            let token = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && !token.is_empty()).then_some(token)
        });
        controller_tokens.push(token);
        baton.wait_for("the tenant's namespace", WAIT, |b| {
            b.kubectl(&["get", "namespace", team]).status.success().then_some(())
        });
        let app = format!(
            "apiVersion: baton.dev/v1alpha1\nkind: App\nmetadata: {{name: web, namespace: {team}}}\nspec:\n  \
             instances: 0\n  cmd: sleep 3600\n  resources: {{cpus: 0.01, mem: 8}}\n"
        );
        let out = baton.kubectl_with_input(&["apply", "-f", "-"], Some(&app));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Who, and the tenant each belongs to.
    let identities = [
        ("alice (team-a's user)", "alice-token".to_string(), "team-a", false),
        ("bob (team-b's user)", "bob-token".to_string(), "team-b", false),
        ("team-a's controller", controller_tokens[0].clone(), "team-a", true),
        ("team-b's controller", controller_tokens[1].clone(), "team-b", true),
    ];
    let group = "/apis/baton.dev/v1alpha1";
    let kinds = [
        (group, "apps", "App", "baton.dev/v1alpha1"),
        (group, "appgroups", "AppGroup", "baton.dev/v1alpha1"),
        (group, "instances", "Instance", "baton.dev/v1alpha1"),
        ("/api/v1", "events", "Event", "v1"),
    ];
    let merge = "application/merge-patch+json";
    let json = "application/json";
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut answers = std::collections::BTreeMap::new();
    for (who, token, own, controller) in &identities {
        let api = baton.api().with_token(Some(token));
        let mut expect = |what: String, (code, body): (u16, String), allowed: bool| {
            checked += 1;
            *answers.entry(code).or_insert(0) += 1;
            let refused = code == 403;
            // An allowed request may still be wrong otherwise (404, 405, 422), never a 5xx.
            if refused == allowed || code == 401 || code >= 500 {
                let expected = if allowed { "allowed" } else { "403" };
                wrong.push(format!(
                    "{who}: {what}: {code} (expected {expected}) {}",
                    body.chars().take(160).collect::<String>()
                ));
            }
        };
        for namespace in ["team-a", "team-b"] {
            let allowed = namespace == *own;
            for (prefix, plural, kind, api_version) in kinds {
                let base = format!("{prefix}/namespaces/{namespace}/{plural}");
                let object = |name: &str| {
                    format!(
                        r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{{"name":"{name}","namespace":"{namespace}"}},"spec":{{"cmd":"sleep 1","instances":0}}}}"#
                    )
                };
                let requests: Vec<(&str, String, &str, Option<String>)> = vec![
                    ("GET", format!("{base}/web"), json, None),
                    ("GET", base.clone(), json, None),
                    ("GET", format!("{base}?watch=1&timeoutSeconds=1"), json, None),
                    ("POST", format!("{base}?dryRun=All"), json, Some(object("matrix"))),
                    ("PUT", format!("{base}/web?dryRun=All"), json, Some(object("web"))),
                    (
                        "PATCH",
                        format!("{base}/web?dryRun=All"),
                        merge,
                        Some(r#"{"metadata":{"labels":{"x":"y"}}}"#.into()),
                    ),
                    ("DELETE", format!("{base}/web?dryRun=All"), json, None),
                    ("DELETE", format!("{base}?dryRun=All"), json, None),
                ];
                let subresources: Vec<(&str, String, &str, Option<String>)> = match plural {
                    "apps" => vec![
                        ("GET", format!("{base}/web/scale"), json, None),
                        (
                            "PATCH",
                            format!("{base}/web/scale?dryRun=All"),
                            merge,
                            Some(r#"{"spec":{"replicas":0}}"#.into()),
                        ),
                        ("GET", format!("{base}/web/status"), json, None),
                        ("PATCH", format!("{base}/web/status?dryRun=All"), merge, Some(r#"{"status":{}}"#.into())),
                    ],
                    "instances" => vec![("GET", format!("{base}/web-0000000000/log"), json, None)],
                    _ => Vec::new(),
                };
                for (method, path, content_type, body) in requests.into_iter().chain(subresources) {
                    let answer = api.call(method, &path, content_type, body.as_deref());
                    expect(format!("{method} {path}"), answer, allowed);
                }
            }
            // Reading a namespace object takes a user's access to it; a controller has none.
            let path = format!("/api/v1/namespaces/{namespace}");
            expect(format!("GET {path}"), api.get(&path), allowed && !controller);
        }
        // Cluster-scoped kinds: a controller reads Maintenances; nothing else, for anyone (the
        // named object is no tenant's: a namespace of one's own is read above).
        for (prefix, plural) in
            [(group, "tenants"), (group, "maintenances"), (group, "agents"), ("/api/v1", "namespaces")]
        {
            let base = format!("{prefix}/{plural}");
            let readable = *controller && plural == "maintenances";
            for (method, path, allowed) in [
                ("GET", format!("{base}/kube-system"), readable),
                ("GET", base.clone(), readable),
                ("GET", format!("{base}?watch=1&timeoutSeconds=1"), readable),
                ("POST", format!("{base}?dryRun=All"), false),
                ("DELETE", format!("{base}/kube-system?dryRun=All"), false),
            ] {
                let body = (method == "POST").then_some(r#"{"metadata":{"name":"matrix"}}"#);
                expect(format!("{method} {path}"), api.call(method, &path, json, body), allowed);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} requests answered wrong:\n{}", wrong.len(), wrong.join("\n"));
    eprintln!("isolation matrix: {checked} requests, each allowed within its tenant and refused across: {answers:?}");
    // Nothing was written: the dry runs left the apps as they were.
    for team in ["team-a", "team-b"] {
        let apps = baton.kubectl_ok(&["get", "apps", "-n", team, "-o", "name"]);
        assert_eq!(apps.trim(), "app.baton.dev/web", "{team}: {apps}");
    }
}
