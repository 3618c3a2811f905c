//! The fleet the planner benchmarks use: 10,000 agents of mixed sizes, 2,000 apps of 50
//! instances each, of mixed shapes and constraints.
//!
//! Agents: 5,000 small (2 cpus, 4 GiB), 4,000 medium (8 cpus, 32 GiB), 1,000 large (32
//! cpus, 128 GiB, half with 4 GPUs), in 50 racks and 3 zones. Apps: sized 0.1/128, 0.5/512,
//! 1/2048 and 2/8192 (cpus/MiB), 1 in 100 with a GPU; 70% without constraints, 10% `hostname
//! UNIQUE`, 10% `rack GROUP_BY`, 5% `zone MAX_PER 20`, 5% `rack LIKE r[0-3].*`. Demand is
//! about 80% of the cpus and 50% of the memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_api::{AgentRecord, App, AppSpec, PortRange, ResourceAmounts};

pub fn agents() -> BTreeMap<String, Arc<AgentRecord>> {
    (0..10_000)
        .map(|i| {
            let (cpus, mem_gib, gpus) = match i % 10 {
                0..=4 => (2, 4, 0),
                5..=8 => (8, 32, 0),
                _ => (32, 128, if i % 20 == 9 { 4 } else { 0 }),
            };
            let name = format!("agent-{i:05}");
            let record = AgentRecord {
                name: name.clone(),
                host: format!("10.0.{}.{}", i / 250, i % 250),
                resources: ResourceAmounts { millicpus: cpus * 1000, mem_mib: mem_gib * 1024, disk_mib: 100_000, gpus },
                attributes: BTreeMap::from([
                    ("rack".to_string(), format!("r{}", i % 50)),
                    ("zone".to_string(), format!("z{}", i % 3)),
                ]),
                ports: vec![PortRange { begin: 31000, end: 32000 }],
                version: "bench".into(),
                started_at: jiff::Timestamp::UNIX_EPOCH,
                sandbox: None,
            };
            (name, Arc::new(record))
        })
        .collect()
}

pub fn apps() -> Vec<Arc<App>> {
    (0..2_000)
        .map(|i| {
            let (cpus, mem) = match i % 10 {
                0..=3 => (0.1, 128.0),
                4..=6 => (0.5, 512.0),
                7..=8 => (1.0, 2048.0),
                _ => (2.0, 8192.0),
            };
            let gpus = if i % 100 == 42 { 1 } else { 0 };
            let constraints: Vec<Vec<&str>> = match i % 20 {
                0..=13 => vec![],
                14 | 15 => vec![vec!["hostname", "UNIQUE"]],
                16 | 17 => vec![vec!["rack", "GROUP_BY"]],
                18 => vec![vec!["zone", "MAX_PER", "20"]],
                _ => vec![vec!["rack", "LIKE", "r[0-3].*"]],
            };
            let spec: AppSpec = serde_json::from_value(serde_json::json!({
                "instances": 50,
                "cmd": "sleep 3600",
                "resources": {"cpus": cpus, "mem": mem, "gpus": gpus},
                "ports": [{"port": 0}],
                "constraints": constraints,
            }))
            .expect("a bench spec");
            let mut app = App::new(&format!("app-{i:04}"), spec);
            app.metadata.namespace = Some("bench".into());
            // As the API server assigns them: UUIDs.
            app.metadata.uid = Some(format!("6ba7b810-9dad-41d1-80b4-{i:012x}"));
            app.metadata.generation = Some(1);
            app.metadata.resource_version = Some("1".into());
            Arc::new(app)
        })
        .collect()
}
