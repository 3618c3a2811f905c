//! The etcd backend against the store contract, on a real etcd each test starts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_store::Store;
use baton_store::contract::Backend;
use baton_store::contract::etcd_server::TestEtcd;
use baton_store::etcd::EtcdStore;

struct Etcd {
    server: TestEtcd,
}

impl Etcd {
    fn new() -> Self {
        Self { server: TestEtcd::start() }
    }
}

#[async_trait]
impl Backend for Etcd {
    async fn open(&mut self) -> Arc<dyn Store> {
        let store = EtcdStore::connect(&[self.server.endpoint()], Duration::from_secs(10)).await.expect("etcd answers");
        Arc::new(store)
    }

    async fn close(&mut self) {
        // Restarting etcd on its data dir is the test of persistence.
        self.server.stop();
        self.server.restart();
    }
}

baton_store::contract_suite!(Etcd::new());

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), Duration::from_millis(500))
        .await
        .err()
        .expect("no etcd there");
    assert!(err.to_string().contains(&endpoint), "the error names the endpoint: {err}");
}
