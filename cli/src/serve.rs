//! The operational endpoints of a long-running command (`--metrics-listen`): `/metrics`
//! (Prometheus text), `/healthz` and `/livez` (the process serves), `/readyz` (it is ready to
//! do its work: 503 with the reason otherwise).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Whether the command is ready: `None`, or `Some(why not)`.
pub type Readiness = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Listens on `addr` (when given) and serves the endpoints in the background until
/// `shutdown`. A port that cannot be had is an error now, naming the flag. `/metrics` shows
/// `registry` and the allocator's figures (`baton_allocator_…`).
pub async fn spawn_endpoints(
    addr: Option<SocketAddr>,
    mut registry: Registry,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}: cannot listen there"))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    registry.sub_registry_with_prefix("baton").register_collector(Box::new(crate::allocator::Figures));
    let router = router(Arc::new(registry), ready);
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

fn router(registry: Arc<Registry>, ready: Readiness) -> Router {
    let metrics = move || {
        let registry = registry.clone();
        async move {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    text,
                ),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.to_string()),
            }
        }
    };
    let readyz = move || {
        let objection = ready();
        async move {
            match objection {
                None => (StatusCode::OK, "ok".to_string()),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
            }
        }
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}
