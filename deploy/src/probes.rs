//! `/metrics`, `/healthz` and `/readyz` for the standalone stages (`testlake ingest`, `compact`,
//! `compute` with `--probe-listen`); `testlake serve` and `all` serve them with the API. The
//! answers are the query service's own ([`testlake_query::handlers::probes`]): one format for
//! every process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use testlake_query::handlers::probes::{health_response, metrics_response, readiness_response};
use testlake_schemas::observe::Telemetry;
use tokio_util::sync::CancellationToken;

/// Whether the process is ready: `Err` says why not.
pub type Readiness = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Binds `listen` and serves the probes of `telemetry` in the background until `shutdown`;
/// returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    telemetry: Telemetry,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let telemetry = Arc::new(telemetry);
    let (metrics, health) = (Arc::clone(&telemetry), telemetry);
    let router = Router::new()
        .route("/metrics", get(move || async move { metrics_response(&metrics) }))
        .route("/healthz", get(move || async move { health_response(&health.health()) }))
        .route("/readyz", get(move || async move { readiness_response(ready().await) }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "probes: /metrics, /healthz, /readyz");
    tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await });
    Ok(addr)
}

/// Ready when `lake` answers a listing within five seconds, and `also` says so first.
pub fn lake_ready(
    lake: testlake_schemas::Lake,
    also: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> Readiness {
    let also = Arc::new(also);
    Arc::new(move || {
        let (lake, also) = (lake.clone(), Arc::clone(&also));
        Box::pin(async move {
            also()?;
            testlake_schemas::observe::lake_answers(&lake, std::time::Duration::from_secs(5)).await
        })
    })
}
