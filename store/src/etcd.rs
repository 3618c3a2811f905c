//! The etcd backend: the [`Store`] on an etcd cluster (v3 API), for production.
//!
//! A thin mapping: etcd already has revisions, transactions with compares, prefix watches
//! from a revision with previous values, and leases. What this adds:
//! - ranges are read in pages at one revision, so a large prefix never exceeds a message
//!   size limit and is still a consistent view;
//! - one keep-alive stream per lease is kept open and reused for renewals;
//! - etcd's errors become the trait's ([`Error::LeaseNotFound`], [`Error::Compacted`]);
//! - small write transactions made at the same time go to etcd together, each with its own
//!   compares and outcome (group commit, in `etcd_group`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp as EtcdCompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Identity, LeaseKeepAliveStream, LeaseKeeper, TlsOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::{
    CompareOp, CompareTarget, Error, EventKind, KeyValue, LeaseId, Op, OpResponse, PageRequest, RangePage,
    RangeResponse, Result, Revision, Store, Txn, TxnResponse, WatchBatch, WatchEvent, WatchStream, prefix_end,
};

/// The endpoints of a store URL: `etcd://host:port[,host:port…]` →
/// `["http://host:port", …]`.
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let usage = "expected etcd://host:port[,host:port…]";
    let Some(hosts) = url.strip_prefix("etcd://") else {
        return Err(format!("{url:?}: {usage}"));
    };
    let endpoints: Vec<String> =
        hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("http://{h}")).collect();
    if endpoints.is_empty() {
        return Err(format!("{url:?}: no host given; {usage}"));
    }
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let port_ok =
            host.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok || host.contains('/') {
            return Err(format!("{url:?}: {host:?} is not host:port; {usage}"));
        }
    }
    Ok(endpoints)
}

/// How long a lease renewal may take before it counts as failed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections made before connecting gives up on an etcd that accepts but does not answer.
const CONNECT_ATTEMPTS: u32 = 3;

/// Keys read per request when ranging over a prefix.
const RANGE_PAGE: i64 = 1000;

/// The largest answer read from etcd (gRPC's default is 4 MiB): a page of 1,000 objects of
/// 5 KiB, or a watch batch of a large transaction, is more. etcd itself sends answers of any
/// size; its own limit is on requests (`--max-request-bytes`, 1.5 MiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// TLS to etcd: the CA that signed etcd's serving certificate, and the client certificate
/// and key (PEM) etcd asks for when it checks clients (`--client-cert-auth`).
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// A store on etcd.
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    keepers: Mutex<HashMap<LeaseId, (LeaseKeeper, LeaseKeepAliveStream)>>,
    /// Small writes sent together (group commit).
    groups: crate::etcd_group::Groups,
}

fn backend(context: &str, e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd {context}: {e}"))
}

/// etcd reports a missing lease as a gRPC error whose message says so.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`). Fails if none answers within
    /// `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self> {
        Self::connect_with(endpoints, timeout, None).await
    }

    /// A KV client that reads answers of any size etcd sends.
    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// A watch client that reads batches of any size etcd sends.
    fn watcher(&self) -> etcd_client::WatchClient {
        self.client.watch_client().max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// Connects over TLS when `tls` is given (`http://` endpoints become `https://`).
    pub async fn connect_with(endpoints: &[String], timeout: Duration, tls: Option<&EtcdTls>) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(Duration::from_secs(30))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut endpoints = endpoints.to_vec();
        if let Some(tls) = tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
            for endpoint in &mut endpoints {
                if let Some(rest) = endpoint.strip_prefix("http://") {
                    *endpoint = format!("https://{rest}");
                }
            }
        }
        let endpoints = endpoints.as_slice();
        // Connecting is lazy: make sure somebody answers, within `timeout`, on a connection
        // made afresh each time — a first request left unanswered on a new connection is not
        // waited out for the whole request timeout (Loop run 29: a controller said nothing for
        // 30 s after it started, while etcd answered everyone else).
        for _ in 0..CONNECT_ATTEMPTS {
            let mut client = Client::connect(endpoints, Some(options.clone()))
                .await
                .map_err(|e| Error::Backend(format!("cannot connect to etcd at {}: {e}", endpoints.join(","))))?;
            match tokio::time::timeout(timeout, client.status()).await {
                Ok(Ok(_)) => {
                    return Ok(Self {
                        client,
                        endpoints: endpoints.to_vec(),
                        keepers: Mutex::new(HashMap::new()),
                        groups: Default::default(),
                    });
                }
                Ok(Err(e)) => {
                    return Err(Error::Backend(format!("etcd at {} does not answer: {e}", endpoints.join(","))));
                }
                Err(_) => {
                    tracing::warn!(
                        endpoints = endpoints.join(","),
                        "etcd did not answer a new connection in time; connecting again"
                    );
                }
            }
        }
        Err(Error::Backend(format!(
            "etcd at {} does not answer: no answer within {timeout:?}, {CONNECT_ATTEMPTS} times",
            endpoints.join(",")
        )))
    }

    /// A handle on the connection (cheap: it shares the channel), for administration.
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A watch of `prefix` from `from`, with each change's previous value if `previous`.
    async fn watch_with(&self, prefix: &str, from: Revision, previous: bool) -> Result<WatchStream> {
        let mut options = WatchOptions::new();
        if previous {
            options = options.with_prev_key();
        }
        options = match prefix_end(prefix) {
            Some(end) => options.with_range(end.into_bytes()),
            None => options.with_all_keys(),
        };
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let stream = self.watcher().watch(prefix, Some(options)).await.map_err(|e| backend("watch", e))?;
        let requested = from;
        Ok(futures::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(backend("watch", e)), None)),
                };
                if response.canceled() {
                    let error = if response.compact_revision() > 0 {
                        Error::Compacted { requested, compact_revision: response.compact_revision() }
                    } else {
                        Error::Backend(format!("etcd canceled the watch: {}", response.cancel_reason()))
                    };
                    return Some((Err(error), None));
                }
                let events: Vec<WatchEvent> = response
                    .events()
                    .iter()
                    .filter_map(|event| {
                        let kv = key_value(event.kv()?);
                        let kind = match event.event_type() {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => EventKind::Delete,
                        };
                        Some(WatchEvent { kind, kv, prev_kv: event.prev_kv().map(key_value) })
                    })
                    .collect();
                // Creation and progress notices carry no events.
                if !events.is_empty() {
                    return Some((Ok(WatchBatch { events }), Some(stream)));
                }
            }
        })
        .boxed())
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn compare(c: &crate::Compare) -> EtcdCompare {
    let op = match c.op {
        CompareOp::Equal => EtcdCompareOp::Equal,
        CompareOp::NotEqual => EtcdCompareOp::NotEqual,
        CompareOp::Greater => EtcdCompareOp::Greater,
        CompareOp::Less => EtcdCompareOp::Less,
    };
    let key = c.key.as_bytes().to_vec();
    match &c.target {
        CompareTarget::CreateRevision(r) => EtcdCompare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => EtcdCompare::mod_revision(key, op, *r),
        CompareTarget::Version(v) => EtcdCompare::version(key, op, *v),
        CompareTarget::Value(v) => EtcdCompare::value(key, op, v.clone()),
    }
}

/// The end of etcd's range over the keys under `prefix` (`\0`: to the end of the keyspace).
fn range_end(prefix: &str) -> Vec<u8> {
    prefix_end(prefix).map(String::into_bytes).unwrap_or_else(|| vec![0])
}

fn txn_op(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let options = (*lease != 0).then(|| etcd_client::PutOptions::new().with_lease(*lease));
            TxnOp::put(key.as_bytes(), value.clone(), options)
        }
        Op::Delete { key } => TxnOp::delete(key.as_bytes(), None),
        Op::DeletePrefix { prefix } => {
            let options = match prefix_end(prefix) {
                Some(end) => DeleteOptions::new().with_range(end.into_bytes()),
                None => DeleteOptions::new().with_all_keys(),
            };
            TxnOp::delete(prefix.as_bytes(), Some(options))
        }
        Op::Get { key } => TxnOp::get(key.as_bytes(), None),
        Op::Range { prefix, limit } => {
            let end = range_end(prefix);
            TxnOp::get(prefix.as_bytes(), Some(GetOptions::new().with_range(end).with_limit(*limit as i64)))
        }
    }
}

/// Sends `txn` on its own.
pub(crate) async fn send(kv: &mut etcd_client::KvClient, txn: &Txn) -> Result<TxnResponse> {
    // etcd serves a plain put or delete at about twice the rate of a transaction; one
    // unconditional operation is the same thing either way.
    if txn.compares.is_empty() && txn.success.len() == 1 {
        match &txn.success[0] {
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| etcd_client::PutOptions::new().with_lease(*lease));
                let response = match kv.put(key.as_bytes(), value.clone(), options).await {
                    Ok(response) => response,
                    Err(e) if is_lease_not_found(&e) => return Err(Error::LeaseNotFound(*lease)),
                    Err(e) => return Err(backend("put", e)),
                };
                let revision = response.header().map_or(0, |h| h.revision());
                return Ok(TxnResponse { succeeded: true, revision, responses: vec![OpResponse::Put] });
            }
            Op::Delete { key } => {
                let response = kv.delete(key.as_bytes(), None).await.map_err(|e| backend("delete", e))?;
                let revision = response.header().map_or(0, |h| h.revision());
                return Ok(TxnResponse {
                    succeeded: true,
                    revision,
                    responses: vec![OpResponse::Delete(response.deleted())],
                });
            }
            _ => {}
        }
    }
    let response = kv.txn(request(txn)).await.map_err(|e| txn_error(txn, e))?;
    let revision = response.header().map_or(0, |h| h.revision());
    Ok(answer(txn, response.succeeded(), response.op_responses(), revision))
}

/// `txn` as etcd's request.
pub(crate) fn request(txn: &Txn) -> etcd_client::Txn {
    etcd_client::Txn::new()
        .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
        .and_then(txn.success.iter().map(txn_op).collect::<Vec<_>>())
        .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>())
}

/// `txn`'s error from etcd's: a missing lease names the lease the transaction used.
fn txn_error(txn: &Txn, e: etcd_client::Error) -> Error {
    if !is_lease_not_found(&e) {
        return backend("txn", e);
    }
    let lease = txn
        .success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .unwrap_or(0);
    Error::LeaseNotFound(lease)
}

/// What `txn` did, from etcd's answer: whether its compares held, the responses of the
/// branch that ran, and the store's revision after it.
pub(crate) fn answer(txn: &Txn, succeeded: bool, responses: Vec<TxnOpResponse>, revision: Revision) -> TxnResponse {
    // A get and a range answer alike: the branch that ran tells them apart.
    let ran = if succeeded { &txn.success } else { &txn.failure };
    let responses = responses
        .into_iter()
        .zip(ran)
        .map(|(r, op)| match (r, op) {
            (TxnOpResponse::Get(g), Op::Range { .. }) => {
                OpResponse::Range { kvs: g.kvs().iter().map(key_value).collect(), more: g.more() }
            }
            (TxnOpResponse::Get(g), _) => OpResponse::Get(g.kvs().first().map(key_value)),
            (TxnOpResponse::Put(_), _) => OpResponse::Put,
            (TxnOpResponse::Delete(d), _) => OpResponse::Delete(d.deleted()),
            // A transaction's own operations are never transactions.
            (TxnOpResponse::Txn(_), _) => OpResponse::Put,
        })
        .collect();
    TxnResponse { succeeded, revision, responses }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self.kv().get(key, None).await.map_err(|e| backend("get", e))?;
        Ok(response.kvs().first().map(key_value))
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse> {
        let end = range_end(prefix);
        let mut kv = self.kv();
        let mut kvs = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision: Revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(RANGE_PAGE);
            if revision > 0 {
                // Later pages read the revision of the first: one consistent view.
                options = options.with_revision(revision);
            }
            let response = kv.get(from.clone(), Some(options)).await.map_err(|e| backend("range", e))?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let page = response.kvs();
            kvs.extend(page.iter().map(key_value));
            if !response.more() || page.is_empty() {
                break;
            }
            // The next page starts just after the last key read.
            from = page.last().expect("a non-empty page").key().to_vec();
            from.push(0);
        }
        Ok(RangeResponse { kvs, revision })
    }

    async fn range_page(&self, request: &PageRequest) -> Result<RangePage> {
        let end = range_end(&request.prefix);
        let from = match &request.after {
            Some(after) if after.as_str() >= request.prefix.as_str() => {
                let mut from = after.as_bytes().to_vec();
                from.push(0);
                from
            }
            _ => request.prefix.as_bytes().to_vec(),
        };
        let mut options = GetOptions::new().with_range(end);
        if request.limit > 0 {
            options = options.with_limit(request.limit as i64);
        }
        if let Some(revision) = request.revision.filter(|r| *r > 0) {
            options = options.with_revision(revision);
        }
        let response = match self.kv().get(from, Some(options)).await {
            Ok(response) => response,
            Err(e) if e.to_string().contains("required revision has been compacted") => {
                return Err(Error::Compacted { requested: request.revision.unwrap_or(0), compact_revision: 0 });
            }
            Err(e) => return Err(backend("range", e)),
        };
        let revision = match request.revision.filter(|r| *r > 0) {
            Some(revision) => revision,
            None => response.header().map_or(0, |h| h.revision()),
        };
        Ok(RangePage { kvs: response.kvs().iter().map(key_value).collect(), revision, more: response.more() })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.check_size()?;
        if crate::etcd_group::joins(&txn) {
            self.groups.send(txn, self.kv()).await
        } else {
            send(&mut self.kv(), &txn).await
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.watch_with(prefix, from, true).await
    }

    async fn watch_current(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.watch_with(prefix, from, false).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::InvalidTtl(ttl));
        }
        let seconds = ttl.as_secs() as i64 + i64::from(ttl.subsec_nanos() > 0);
        let response = self.client.lease_client().grant(seconds, None).await.map_err(|e| backend("lease grant", e))?;
        Ok(response.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let mut keepers = self.keepers.lock().await;
        let (keeper, stream) = match keepers.entry(lease) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => match self.client.lease_client().keep_alive(lease).await {
                // Opening the stream renewed the lease once already.
                Ok(keeper) => entry.insert(keeper),
                Err(e) if is_lease_not_found(&e) => return Err(Error::LeaseNotFound(lease)),
                Err(e) => return Err(backend("lease keep-alive", e)),
            },
        };
        let renewal = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        // A stalled connection must not hold every renewal of this process.
        let Ok(renewed) = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, renewal).await else {
            keepers.remove(&lease);
            return Err(Error::Backend(format!("etcd did not answer a lease renewal within {KEEP_ALIVE_TIMEOUT:?}")));
        };
        match renewed {
            Ok(Some(response)) if response.ttl() > 0 => Ok(Duration::from_secs(response.ttl() as u64)),
            Ok(Some(_)) => {
                keepers.remove(&lease);
                Err(Error::LeaseNotFound(lease))
            }
            Ok(None) => {
                keepers.remove(&lease);
                Err(Error::Backend("etcd closed the lease keep-alive stream".into()))
            }
            Err(e) => {
                // The stream is broken (e.g. etcd restarted): open a new one next time.
                keepers.remove(&lease);
                Err(backend("lease keep-alive", e))
            }
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.keepers.lock().await.remove(&lease);
        match self.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(Error::LeaseNotFound(lease)),
            Err(e) => Err(backend("lease revoke", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CONNECT_ATTEMPTS, EtcdStore, parse_url};
    use std::time::{Duration, Instant};

    /// A server that accepts connections and never answers: connecting tries afresh, each
    /// time for the connect timeout, and then says so.
    #[tokio::test]
    async fn an_endpoint_that_accepts_but_never_answers_is_given_up_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.push(socket);
            }
        });
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let Err(e) = EtcdStore::connect(&[format!("http://{address}")], timeout).await else {
            panic!("connected to a server that never answers")
        };
        held.abort();
        let message = e.to_string();
        assert!(message.contains("does not answer") && message.contains("3 times"), "{message}");
        assert!(started.elapsed() >= timeout * CONNECT_ATTEMPTS, "gave up after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    }

    #[test]
    fn store_urls() {
        assert_eq!(parse_url("etcd://127.0.0.1:2379").unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(parse_url("etcd://a:1,b:2").unwrap(), ["http://a:1", "http://b:2"]);
        for bad in ["127.0.0.1:2379", "etcd://", "etcd://host", "etcd://host:0", "etcd://h:1/x", "http://h:1"] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains("etcd://host:port"), "{bad}: {err}");
        }
    }
}
