//! `/healthz` and `/metrics` for a standalone `testlake compute` (the query service reports
//! compute's health itself in `testlake all`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use testlake_compute::metrics::{ComputeMetrics, Health};
use tokio_util::sync::CancellationToken;

/// Binds `listen` and serves the probes in the background until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<ComputeMetrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let health = Arc::clone(&metrics);
    let router = Router::new()
        .route(
            "/healthz",
            get(move || async move {
                let status = health.health();
                let code = if status == Health::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                (
                    code,
                    axum::Json(
                        serde_json::json!({ "status": status.as_str(), "components": { "compute": status.as_str() } }),
                    ),
                )
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let mut out = String::new();
                metrics.render(&mut out);
                out
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "compute probes");
    tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await });
    Ok(())
}
