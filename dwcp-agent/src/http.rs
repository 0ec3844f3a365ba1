//! HTTP endpoint: `/metrics` (Prometheus/OpenMetrics text) and `/healthz`.

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{metrics, metrics::AgentMetrics, telemetry::Telemetry};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// Probe readings; refreshed on each scrape so values are current.
    pub telemetry: Arc<Mutex<Telemetry>>,
    /// The registry encoded on `/metrics`.
    pub metrics: Arc<AgentMetrics>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .with_state(state)
}

async fn serve_metrics(State(state): State<HttpState>) -> impl IntoResponse {
    refresh(&state.telemetry);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn serve_health(State(state): State<HttpState>) -> impl IntoResponse {
    let probes = match state.telemetry.lock() {
        Ok(telemetry) => telemetry.probes().is_some(),
        Err(_) => false,
    };
    let body = format!("{{\"status\":\"ok\",\"probes\":{probes}}}\n");
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// Drains the probe maps into the metrics, logging (not failing) on error.
pub fn refresh(telemetry: &Mutex<Telemetry>) {
    // A poisoned lock means a refresh panicked earlier; the data is counters that
    // stay consistent, so keep serving them.
    let mut guard = telemetry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(err) = guard.refresh() {
        tracing::warn!(error = %crate::error_chain(&err), "Reading the probe maps failed");
    }
}
