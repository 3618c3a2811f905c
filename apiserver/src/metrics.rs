//! The API server's Prometheus metrics: requests by verb and code, open watches, whether
//! the store answers, and how admission's store reads were shared.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method (`GET`, `POST`, …); a watch is a `GET`.
    pub method: String,
    pub code: u16,
}

/// Everything the API server counts.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    pub requests: Family<RequestLabels, Counter>,
    /// Watches open now, over every user.
    pub watches: Gauge,
    /// 1 while the store answered the last check.
    pub store_up: Gauge,
    /// Writes whose admission checks read the store, and the store requests that read for
    /// them (concurrent writes share one).
    pub admission_reads: AdmissionReads,
}

/// How admission's reads were shared ([`crate::admission::SharedReads`]).
#[derive(Debug, Default, Clone)]
pub struct AdmissionReads {
    pub writes: Counter,
    pub requests: Counter,
}

impl ApiMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("baton_apiserver");
        registry.register("requests", "Requests answered, by method and status code", self.requests.clone());
        registry.register("watches", "Watches open now", self.watches.clone());
        registry.register("store_up", "1 while the store answered the last check", self.store_up.clone());
        let admission = &self.admission_reads;
        registry.register(
            "admission_reads_writes",
            "Writes whose admission checks read the store",
            admission.writes.clone(),
        );
        registry.register(
            "admission_reads_requests",
            "Store requests that read for admission checks (concurrent writes share one)",
            admission.requests.clone(),
        );
    }
}
