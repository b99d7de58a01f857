//! What every handler shares ([`AppState`]), and how the service is configured ([`ServeConfig`]).

use std::net::SocketAddr;
use std::sync::Arc;

use testlake_schemas::Lake;
use testlake_schemas::log_reader::CommittedFiles;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::http::RequestMetrics;
use crate::live::{AlertConfig, LiveEvent};
use crate::sql::SqlLimits;

/// Appends Prometheus text for one component (the ingest's counters in all-in-one mode).
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// A component's liveness for `/healthz`: its name and `healthy`, `starting`, `degraded` or
/// `unhealthy`. (Process liveness; not the repositories' health score of `/api/v1/health`.)
pub type LivenessCheck = Arc<dyn Fn() -> (&'static str, &'static str) + Send + Sync>;

/// What every handler shares.
pub struct AppState {
    pub lake: Lake,
    /// Extra Prometheus text appended to `/metrics`.
    pub metrics: Vec<MetricsRenderer>,
    /// Components whose liveness `/healthz` reports (compute, in all-in-one mode).
    pub liveness: Vec<LivenessCheck>,
    pub cache: AnswerCache,
    /// Which `results` files are committed (history reads only those).
    pub committed: tokio::sync::Mutex<CommittedFiles>,
    /// Events for connected dashboards.
    pub live: broadcast::Sender<LiveEvent>,
    pub alerts: AlertConfig,
    pub sql_limits: SqlLimits,
    /// With a token, `/api/*` requires it.
    pub auth_token: Option<String>,
    pub requests: Arc<RequestMetrics>,
    /// Cancelled when the service stops: ends the event streams so shutdown need not wait for them.
    pub stopping: CancellationToken,
}

impl AppState {
    pub fn new(lake: Lake, config: &ServeConfig) -> Self {
        Self {
            lake,
            metrics: Vec::new(),
            liveness: Vec::new(),
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
    pub sql_limits: SqlLimits,
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

impl Default for ServeConfig {
    /// Listens on 127.0.0.1:8080.
    fn default() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}
