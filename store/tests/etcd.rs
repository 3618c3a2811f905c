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

/// A CA, etcd's serving certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test etcd CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(vec!["127.0.0.1".into(), "localhost".into()], "etcd");
    let client = leaf(vec!["baton".into()], "baton");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server.0).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), &server.1).unwrap();
    Pki { dir, ca_pem: ca.pem(), client }
}

#[tokio::test]
async fn tls_with_client_certificates() {
    use baton_store::StoreExt;
    use baton_store::contract::etcd_server::ServerTls;
    use baton_store::etcd::EtcdTls;
    let pki = pki();
    let files = ServerTls {
        ca: pki.dir.path().join("ca.pem"),
        cert: pki.dir.path().join("server.pem"),
        key: pki.dir.path().join("server-key.pem"),
    };
    let server = TestEtcd::start_tls(files);
    let plain = format!("http://{}", server.address());
    let tls = EtcdTls {
        ca_pem: pki.ca_pem.clone().into_bytes(),
        client: Some((pki.client.0.clone().into_bytes(), pki.client.1.clone().into_bytes())),
    };
    let store = EtcdStore::connect_with(std::slice::from_ref(&plain), Duration::from_secs(10), Some(&tls))
        .await
        .unwrap_or_else(|e| panic!("TLS with a client certificate: {e}\n{}", server.log()));
    store.put("/t/k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("/t/k").await.unwrap().map(|kv| kv.value), Some(b"v".to_vec()));

    let without_certificate = EtcdTls { client: None, ..tls.clone() };
    let refused =
        EtcdStore::connect_with(std::slice::from_ref(&plain), Duration::from_secs(2), Some(&without_certificate)).await;
    assert!(refused.is_err(), "etcd asks for a client certificate");
    let plaintext = EtcdStore::connect(std::slice::from_ref(&plain), Duration::from_secs(2)).await;
    assert!(plaintext.is_err(), "etcd speaks only TLS to clients");
}

/// Small writes made at once go to etcd in fewer requests than there are writes (group
/// commit), and each still gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_made_at_once_share_requests() {
    use baton_store::{Compare, Op, Txn};
    let server = TestEtcd::start();
    let store = EtcdStore::connect(&[server.endpoint()], Duration::from_secs(10)).await.expect("etcd answers");
    let n = 300;
    let txns = || server.requests_answered().get("Txn").copied().unwrap_or(0);
    let before = txns();
    let creates = (0..n).map(|i| {
        let key = format!("/g/{i:03}");
        store.txn(Txn::new().when([Compare::absent(&key)]).and_then([Op::put(&key, vec![b'v'; 2048])]))
    });
    let answers = futures::future::join_all(creates).await;
    let requests = txns() - before;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap_or_else(|e| panic!("create {i}: {e}"));
        let kv = store.get(&format!("/g/{i:03}")).await.unwrap().expect("created");
        assert!(answer.succeeded && answer.revision == kv.mod_revision, "create {i}: {answer:?}, stored at {kv:?}");
    }
    assert!(requests < n as u64 / 4, "{n} creates made at once took {requests} requests");
    println!("{n} creates made at once: {requests} requests");
}
