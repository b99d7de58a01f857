//! What every handler shares ([`AppState`]), and how the service is configured ([`ServeConfig`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use testlake_schemas::Lake;
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::observe::{LakeWatch, Telemetry};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::http::RequestMetrics;
use crate::live::{AlertConfig, LiveEvent};
use crate::sql::SqlLimits;

/// What every handler shares.
pub struct AppState {
    pub lake: Lake,
    /// The process's metrics and its components' health, for `/metrics` and `/healthz`: the
    /// service's own (requests, cache, `serve`), and in all-in-one mode the ingest's and
    /// compute's, registered before the state is shared.
    pub telemetry: Telemetry,
    /// Whether the lake answers: the `serve` component's health.
    pub lake_watch: Arc<LakeWatch>,
    pub cache: AnswerCache,
    /// Which `results` files are committed (history reads only those).
    pub committed: tokio::sync::Mutex<CommittedFiles>,
    /// Events for connected dashboards.
    pub live: broadcast::Sender<LiveEvent>,
    pub alerts: AlertConfig,
    pub sql_limits: SqlLimits,
    /// Where statements run: their own threads, at most `sql_limits.concurrency` at once.
    pub sql: crate::sql::SqlEngine,
    /// With a token, `/api/*` requires it.
    pub auth_token: Option<String>,
    pub requests: Arc<RequestMetrics>,
    /// The PostgreSQL protocol's metrics (`pg`).
    pub pg: Arc<crate::pg::PgMetrics>,
    /// Names a `Host` may carry besides loopback names and IP addresses (`guard`).
    pub allowed_hosts: Arc<crate::guard::AllowedHosts>,
    pub limits: ServeLimits,
    /// One permit per connected event stream (`ServeLimits::max_subscribers`).
    pub subscribers: Arc<Semaphore>,
    /// Cancelled when the service stops: ends the event streams so shutdown need not wait for them.
    pub stopping: CancellationToken,
}

impl AppState {
    pub fn new(lake: Lake, config: &ServeConfig) -> Self {
        let cache = AnswerCache::new(config.cache_bytes).with_load_timeout(config.limits.answer_timeout);
        let requests = Arc::new(RequestMetrics::default());
        let lake_watch = Arc::new(LakeWatch::default());
        let mut telemetry = Telemetry::new();
        requests.register(telemetry.registry());
        let pg = Arc::new(crate::pg::PgMetrics::default());
        pg.register(telemetry.registry());
        cache.register_metrics(telemetry.registry());
        let watch = Arc::clone(&lake_watch);
        telemetry.add_component("serve", move || watch.health());
        Self {
            lake,
            telemetry,
            lake_watch,
            cache,
            committed: tokio::sync::Mutex::new(CommittedFiles::from_delta()),
            live: broadcast::channel(1024).0,
            alerts: config.alerts.clone(),
            sql_limits: config.sql_limits.clone(),
            sql: crate::sql::SqlEngine::new(&config.sql_limits),
            auth_token: config.auth_token.clone(),
            requests,
            pg,
            allowed_hosts: Arc::new(crate::guard::AllowedHosts::new(&config.allowed_hosts)),
            limits: config.limits.clone(),
            subscribers: Arc::new(Semaphore::new(config.limits.max_subscribers)),
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
    /// Host names a request's `Host` may carry besides loopback names and IP addresses, whatever
    /// address the service listens on (`*`: any; see `guard`).
    pub allowed_hosts: Vec<String>,
    pub limits: ServeLimits,
    /// The PostgreSQL wire protocol's listener (`None`: not served).
    pub pg: Option<crate::pg::PgConfig>,
}

/// What bounds the service's work and memory for any client.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeLimits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (also an idle connection's life).
    pub header_read_timeout: Duration,
    /// Event streams (`/api/v1/events`) connected at once; more are answered 503.
    pub max_subscribers: usize,
    /// Rows one dashboard answer may hold before it is refused (400), bounding its memory.
    pub answer_rows: usize,
    /// How long loading one dashboard answer may take before it is abandoned (503).
    pub answer_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_subscribers: 256,
            answer_rows: 500_000,
            answer_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            cache_bytes: 256 << 20,
            alerts: AlertConfig::default(),
            sql_limits: Default::default(),
            auth_token: None,
            allowed_hosts: Vec::new(),
            limits: ServeLimits::default(),
            pg: None,
        }
    }
}

impl Default for ServeConfig {
    /// Listens on 127.0.0.1:8080.
    fn default() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}
