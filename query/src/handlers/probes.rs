//! The probes, never behind the token: `/healthz` (process liveness), `/readyz` (the lake
//! answers) and `/metrics` (OpenMetrics text). The answers are built by functions that the
//! standalone stages' probes (`testlake::probes`) share.
//!
//! Liveness is the process's components, not the repositories' health score of `/api/v1/health`
//! ([`super::health_score`]); the `/healthz` path keeps its conventional name.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use serde_json::json;
use testlake_schemas::observe::{HealthReport, OPENMETRICS_TEXT, Telemetry, lake_answers};

use crate::endpoint::{Endpoint, Method};
use crate::state::AppState;

pub const LIVENESS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/healthz",
    summary: "Liveness: the process's status and each component's (starting, healthy, degraded, unhealthy); 503 when unhealthy.",
    params: &[],
    formats: false,
    handler: |method| on(method, liveness),
    cache_key: None,
};

pub const READINESS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/readyz",
    summary: "Readiness: 200 when the lake answers, else 503.",
    params: &[],
    formats: false,
    handler: |method| on(method, readiness),
    cache_key: None,
};

pub const METRICS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/metrics",
    summary: "Metrics, as OpenMetrics text (Prometheus scrapes it).",
    params: &[],
    formats: false,
    handler: |method| on(method, metrics),
    cache_key: None,
};

/// `GET /healthz`: the process's status — the worst of its components' (`serve`, and
/// `ingest` and `compute` in all-in-one mode) — and each component's; 503 when unhealthy.
pub async fn liveness(State(state): State<Arc<AppState>>) -> Response {
    health_response(&state.telemetry.health())
}

/// The `/healthz` answer for a report (shared with the standalone stages' probes).
pub fn health_response(report: &HealthReport) -> Response {
    let code = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(report.to_json())).into_response()
}

/// `GET /readyz`: ready when the lake answers a listing.
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    readiness_response(lake_answers(&state.lake, Duration::from_secs(5)).await)
}

/// The `/readyz` answer: 200 `{"status": "ready"}`, or 503 with why not.
pub fn readiness_response(ready: Result<(), String>) -> Response {
    match ready {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "unready", "error": error })))
            .into_response(),
    }
}

/// What `/metrics` is served as (the OpenAPI document says so too): OpenMetrics text.
pub const METRICS_TYPE: &str = OPENMETRICS_TEXT;

/// `GET /metrics`: every metric of the process, as OpenMetrics text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics_response(&state.telemetry)
}

/// The `/metrics` answer for a process's telemetry.
pub fn metrics_response(telemetry: &Telemetry) -> Response {
    ([(axum::http::header::CONTENT_TYPE, METRICS_TYPE)], telemetry.encode()).into_response()
}
