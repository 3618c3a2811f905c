//! `hack/bench.sh api`: the API server under load, on a release build: 200 watchers follow
//! the apps while 1,000 creates and updates are made, then 2,000 with 64 in flight. Prints
//! writes/s, write latency percentiles and how fast every watcher had every event.

use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::load::{Load, run};
use baton_e2e::{Cluster, ClusterOptions};

fn main() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    for load in [
        Load { watchers: 200, creates: 500, updates: 500, concurrency: 16 },
        Load { watchers: 200, creates: 1000, updates: 1000, concurrency: 64 },
    ] {
        let cluster =
            Cluster::start(&binary, ClusterOptions { controllers: 0, agents: 0, ..ClusterOptions::default() });
        let report = run(&cluster, load, Duration::from_secs(300));
        println!("api: {report}");
    }
}
