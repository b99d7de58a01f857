//! The query service: an axum router answering dashboards from the lake's materialized tables.
//!
//! [`params`] and [`render`] parse requests and shape answers; [`api`] turns requests into
//! DataFusion plans over the tables registered by [`testlake_compute::catalog`]; answers are kept
//! in the [`cache`], which [`live`] invalidates from landed notices and pushes to dashboards;
//! [`error`] maps every failure to a status.

pub mod api;
pub mod cache;
pub mod error;
pub mod http;
pub mod insights;
pub mod live;
pub mod openapi;
pub mod page;
pub mod params;
pub mod render;
pub mod sql;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::routing::get;
use testlake_schemas::commits::CommittedFiles;
use testlake_schemas::{Lake, Landed};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::live::{AlertConfig, LiveEvent};

/// Appends Prometheus text for one component (the ingest's counters in all-in-one mode).
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// A component's health for `/healthz`: its name and `healthy`, `starting`, `degraded` or `unhealthy`.
pub type HealthCheck = Arc<dyn Fn() -> (&'static str, &'static str) + Send + Sync>;

/// What every handler shares.
pub struct AppState {
    pub lake: Lake,
    /// Extra Prometheus text appended to `/metrics`.
    pub metrics: Vec<MetricsRenderer>,
    /// Components whose health `/healthz` reports (compute, in all-in-one mode).
    pub health: Vec<HealthCheck>,
    pub cache: AnswerCache,
    /// Which `results` files are committed (history reads only those).
    pub committed: tokio::sync::Mutex<CommittedFiles>,
    /// Events for connected dashboards.
    pub live: broadcast::Sender<LiveEvent>,
    pub alerts: AlertConfig,
    pub sql_limits: sql::SqlLimits,
    /// With a token, `/api/*` requires it.
    pub auth_token: Option<String>,
    pub requests: http::RequestMetrics,
    /// Cancelled when the service stops: ends the event streams so shutdown need not wait for them.
    pub stopping: CancellationToken,
}

impl AppState {
    pub fn new(lake: Lake, config: &ServeConfig) -> Self {
        Self {
            lake,
            metrics: Vec::new(),
            health: Vec::new(),
            cache: AnswerCache::new(config.cache_bytes),
            committed: Default::default(),
            live: broadcast::channel(1024).0,
            alerts: config.alerts.clone(),
            sql_limits: config.sql_limits.clone(),
            auth_token: config.auth_token.clone(),
            requests: Default::default(),
            stopping: CancellationToken::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The memory budget of cached answers, in bytes.
    pub cache_bytes: u64,
    pub alerts: AlertConfig,
    pub sql_limits: sql::SqlLimits,
    /// Bearer token required by `/api/*` (`None`: open).
    pub auth_token: Option<String>,
}

impl ServeConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            cache_bytes: 256 << 20,
            alerts: AlertConfig::default(),
            sql_limits: Default::default(),
            auth_token: None,
        }
    }
}

/// The handler serving `path` — every entry of [`openapi::ENDPOINTS`] has one.
pub fn handler(path: &str) -> Option<axum::routing::MethodRouter<Arc<AppState>>> {
    Some(match path {
        "/" => get(page::index),
        "/healthz" => get(healthz),
        "/readyz" => get(http::readyz),
        "/metrics" => get(metrics),
        "/api/v1/openapi.json" => get(|| async { axum::Json(openapi::document()) }),
        "/api/v1/trends" => get(api::trends),
        "/api/v1/dashboard" => get(api::dashboard),
        "/api/v1/flaky" => get(api::flaky),
        "/api/v1/tests/history" => get(api::history),
        "/api/v1/health" => get(insights::health),
        "/api/v1/compare" => get(insights::compare),
        "/api/v1/events" => get(live::events),
        "/api/v1/sql" => axum::routing::post(sql::endpoint),
        _ => return None,
    })
}

/// The service: exactly the documented endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for endpoint in openapi::ENDPOINTS {
        let handler = handler(endpoint.path).unwrap_or_else(|| panic!("no handler for documented {}", endpoint.path));
        router = router.route(endpoint.path, handler);
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), http::authorize))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), http::measure))
        .with_state(state)
}

/// `GET /healthz`: `ok` unless a component is `degraded` (still 200) or `unhealthy` (503).
async fn healthz(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let components: serde_json::Map<String, serde_json::Value> =
        state.health.iter().map(|check| check()).map(|(name, status)| (name.to_owned(), status.into())).collect();
    let has = |s: &str| components.values().any(|v| v == s);
    let (status, code) = if has("unhealthy") {
        ("unhealthy", axum::http::StatusCode::SERVICE_UNAVAILABLE)
    } else if has("degraded") {
        ("degraded", axum::http::StatusCode::OK)
    } else {
        ("ok", axum::http::StatusCode::OK)
    };
    (code, axum::Json(serde_json::json!({ "status": status, "components": components }))).into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> String {
    let mut out = String::new();
    for render in &state.metrics {
        render(&mut out);
    }
    state.requests.render(&mut out);
    let stats = &state.cache.stats;
    let counters = [
        ("testlake_query_cache_hits_total", "Answers served from the cache.", &stats.hits),
        ("testlake_query_cache_misses_total", "Answers loaded from the lake.", &stats.misses),
        ("testlake_query_cache_evictions_total", "Answers evicted to stay within the memory budget.", &stats.evictions),
        (
            "testlake_query_cache_stale_total",
            "Cached answers found stale at read time (a load raced a notice) and reloaded.",
            &stats.stale,
        ),
        (
            "testlake_query_cache_invalidated_answers_total",
            "Cached answers removed by landed notices.",
            &stats.invalidated_answers,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP testlake_query_cache_invalidations_total Landed notices applied, by table (the reason).\n\
         # TYPE testlake_query_cache_invalidations_total counter"
    );
    for (table, n) in stats.invalidations.lock().expect("stats lock").iter() {
        let _ = writeln!(out, "testlake_query_cache_invalidations_total{{reason=\"{table}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP testlake_query_cache_bytes Bytes of cached answers.\n# TYPE testlake_query_cache_bytes gauge\n\
         testlake_query_cache_bytes {}",
        state.cache.weighted_size()
    );
    out
}

/// Binds `listen` and serves until `shutdown`, applying `notices` to the cache and pushing them
/// to dashboards. Returns the bound address through `bound`.
pub async fn serve(
    config: ServeConfig,
    state: Arc<AppState>,
    notices: Option<broadcast::Receiver<Landed>>,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    if let Some(notices) = notices {
        live::follow(Arc::clone(&state), notices, shutdown.clone());
    }
    let stopping = state.stopping.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopping.cancel();
    });
    if let Some(bound) = bound {
        let _ = bound.send(addr);
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
