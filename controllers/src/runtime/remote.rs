//! The store through the API server: what a tenant's controller uses instead of a store
//! connection (DESIGN.md §10). Every [`Store`] call is a request of [`baton_store::wire`] on
//! the controller's Kubernetes client (the same server, TLS and credential), and the API
//! server answers only with what the tenant's scope may reach.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;

use baton_store::wire::{self, WireError};
use baton_store::{
    Error, KeyValue, LeaseId, PageRequest, RangePage, RangeResponse, Result, Revision, Store, Txn, TxnResponse,
    WatchBatch, WatchStream,
};

/// A [`Store`] reached through the API server's `/baton/store/v1`.
#[derive(Clone)]
pub struct RemoteStore {
    client: kube::Client,
}

impl RemoteStore {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn send<R: Serialize>(&self, operation: &str, request: &R) -> Result<http::Response<Body>> {
        let body = serde_json::to_vec(request).map_err(|e| Error::Backend(format!("encoding {operation}: {e}")))?;
        let request = http::Request::post(format!("{}/{operation}", wire::PATH))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| Error::Backend(format!("{operation}: {e}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| Error::Backend(format!("{operation} via the API server: {e}")))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Err(match serde_json::from_slice::<WireError>(&bytes) {
            Ok(error) => error.into(),
            Err(_) => Error::Backend(format!("{operation}: {status}: {}", String::from_utf8_lossy(&bytes))),
        })
    }

    async fn call<R: Serialize, T: DeserializeOwned>(&self, operation: &str, request: &R) -> Result<T> {
        let response = self.send(operation, request).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Backend(format!("{operation}: reading the answer: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| Error::Backend(format!("{operation}: the answer is not valid: {e}")))
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.call("get", &wire::GetRequest { key: key.to_string() }).await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse> {
        self.call("range", &wire::RangeRequest { prefix: prefix.to_string() }).await
    }

    async fn range_page(&self, request: &PageRequest) -> Result<RangePage> {
        self.call("page", request).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.check_size()?;
        self.call("txn", &txn).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let response = self.send("watch", &wire::WatchRequest { prefix: prefix.to_string(), from }).await?;
        let chunks = response.into_body().into_data_stream();
        // Lines may be split across chunks, and one chunk may hold several.
        let batches =
            futures::stream::unfold((chunks, Vec::<u8>::new(), false), |(mut chunks, mut pending, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        match serde_json::from_slice::<wire::WatchLine>(&line) {
                            Ok(wire::WatchLine { error: Some(error), .. }) => {
                                return Some((Err(Error::from(error)), (chunks, pending, true)));
                            }
                            Ok(wire::WatchLine { events, .. }) if events.is_empty() => continue,
                            Ok(wire::WatchLine { events, .. }) => {
                                return Some((Ok(WatchBatch { events }), (chunks, pending, false)));
                            }
                            Err(e) => {
                                let error = Error::Backend(format!("watch: a line is not valid: {e}"));
                                return Some((Err(error), (chunks, pending, true)));
                            }
                        }
                    }
                    match chunks.next().await {
                        Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            return Some((Err(Error::Backend(format!("watch: {e}"))), (chunks, pending, true)));
                        }
                        None => return None,
                    }
                }
            });
        Ok(batches.boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::InvalidTtl(ttl));
        }
        let granted: wire::Granted =
            self.call("lease/grant", &wire::GrantRequest { ttl_ms: ttl.as_millis() as u64 }).await?;
        Ok(granted.lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let kept: wire::KeptAlive = self.call("lease/keepalive", &wire::LeaseRequest { lease }).await?;
        Ok(Duration::from_millis(kept.ttl_ms))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call("lease/revoke", &wire::LeaseRequest { lease }).await
    }
}
