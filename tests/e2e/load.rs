//! Load, bounded and on loopback: 200 watchers follow the apps while 1,000 creates and
//! updates are made 16 at a time. Every watcher must see every change exactly once; the
//! figures are printed (`hack/bench.sh api` measures them on a release build).

use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::load::{Load, run};
use baton_e2e::{Cluster, ClusterOptions};

#[test]
fn two_hundred_watchers_see_every_one_of_a_thousand_writes() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
    let cluster = Cluster::start(&binary, ClusterOptions { controllers: 0, agents: 0, ..ClusterOptions::default() });
    let load = Load { watchers: 200, creates: 500, updates: 500, concurrency: 16 };
    let report = run(&cluster, load, Duration::from_secs(120));
    eprintln!("load (debug build): {report}");
}
