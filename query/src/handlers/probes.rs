//! The probes, never behind the token: `/healthz` (process liveness), `/readyz` (the lake
//! answers) and `/metrics` (Prometheus text).
//!
//! Liveness is the process's components, not the repositories' health score of `/api/v1/health`
//! ([`super::health_score`]); the `/healthz` path keeps its conventional name.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use serde_json::{Map, Value, json};

use crate::endpoint::{Endpoint, Method};
use crate::state::AppState;

pub const LIVENESS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/healthz",
    summary: "Liveness.",
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
    summary: "Prometheus metrics.",
    params: &[],
    formats: false,
    handler: |method| on(method, metrics),
    cache_key: None,
};

/// `GET /healthz`: `ok` unless a component is `degraded` (still 200) or `unhealthy` (503).
pub async fn liveness(State(state): State<Arc<AppState>>) -> Response {
    let components: Map<String, Value> =
        state.liveness.iter().map(|check| check()).map(|(name, status)| (name.to_owned(), status.into())).collect();
    let has = |s: &str| components.values().any(|v| v == s);
    let (status, code) = if has("unhealthy") {
        ("unhealthy", StatusCode::SERVICE_UNAVAILABLE)
    } else if has("degraded") {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    (code, axum::Json(json!({ "status": status, "components": components }))).into_response()
}

/// `GET /readyz`: ready when the lake answers a listing.
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    use futures::StreamExt;
    let root = state.lake.path("");
    let mut listing = state.lake.store().list(Some(&root));
    let unready = |error: String| {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "unready", "error": error }))).into_response()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), listing.next()).await {
        Ok(None | Some(Ok(_))) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Some(Err(e))) => unready(e.to_string()),
        Err(_) => unready("the lake did not answer within 5 s".into()),
    }
}

/// Prometheus' text format, as `/metrics` is served (the OpenAPI document says so too).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: the components' text (the ingest's, in all-in-one mode), then requests, then
/// the answer cache.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    for render in &state.metrics {
        render(&mut out);
    }
    state.requests.render(&mut out);
    state.cache.render_metrics(&mut out);
    ([(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], out)
}
