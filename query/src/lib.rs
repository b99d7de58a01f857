//! The query service: an axum router answering dashboards from the lake's materialized tables.
//!
//! [`params`] parses and validates requests; [`api`] turns them into DataFusion plans over the
//! tables registered by [`testlake_compute::catalog`]; [`error`] maps every failure to a status.

pub mod api;
pub mod error;
pub mod params;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use testlake_schemas::Lake;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Appends Prometheus text for one component (the ingest's counters in all-in-one mode).
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// What every handler shares.
pub struct AppState {
    pub lake: Lake,
    /// Extra Prometheus text appended to `/metrics`.
    pub metrics: Vec<MetricsRenderer>,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics))
        .route("/api/v1/trends", get(api::trends))
        .route("/api/v1/dashboard", get(api::dashboard))
        .with_state(state)
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> String {
    let mut out = String::new();
    for render in &state.metrics {
        render(&mut out);
    }
    out
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address through `bound`.
pub async fn serve(
    config: ServeConfig,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    if let Some(bound) = bound {
        let _ = bound.send(addr);
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
