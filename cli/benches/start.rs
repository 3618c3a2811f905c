//! `hack/bench.sh start`: how long from creating an app to its first instance Running, with
//! real processes (`sleep`) on `baton dev` (3 agents): 100 apps created one after another, each
//! timed from the create request to the moment the API shows its instance `Running` (read
//! every 10 ms). Prints p50, p99 and the slowest; the target is p99 ≤ 1 s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_e2e::Baton;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let apps: usize = std::env::var("APPS").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    let baton = Baton::start_dev(&binary, 3);
    let api = baton.api();
    let mut took = Vec::with_capacity(apps);
    for i in 0..apps {
        let name = format!("start-{i:03}");
        let app = serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "App",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"instances": 1, "cmd": "sleep 3600", "resources": {"cpus": 0.001, "mem": 1}},
        });
        let started = Instant::now();
        let (code, body) = api.post_json("/apis/baton.dev/v1alpha1/namespaces/default/apps", &app.to_string());
        assert_eq!(code, 201, "creating {name}: {body}");
        let path = format!("/apis/baton.dev/v1alpha1/namespaces/default/instances?labelSelector=app%3D{name}");
        loop {
            let list = api.get_json(&path);
            let running = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["spec"]["app"].as_str() == Some(name.as_str()) && i["status"]["phase"] == "Running");
            if running {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{name}: no instance Running after 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "start: {apps} apps created one after another on baton dev (3 agents): create → first instance Running \
         p50 {:.0} ms, p99 {:.0} ms, slowest {:.0} ms (target: p99 ≤ 1000 ms)",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
        ms(*took.last().expect("at least one app"))
    );
}
