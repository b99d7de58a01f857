//! What every long-running process reports about itself, the same way in every stage: its
//! metrics in one [`Telemetry`] registry (OpenMetrics text, for `/metrics`), the [`Health`] of
//! each of its components by the stage's own rule (for `/healthz` and
//! `testlake_component_health`), the [`process`] metrics read from `/proc`, and whether its lake
//! answers ([`lake_answers`], for `/readyz`).
//!
//! A stage keeps its metrics in a struct of its own (one method per event) and registers them
//! into the process's registry; the metric names are part of the contract with the dashboards
//! and alert rules in `deploy/monitoring`, so they are constants with a `testlake_` prefix.

pub mod process;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;

use crate::Lake;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus (2.x and later) scrapes.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub const COMPONENT_HEALTH: &str = "testlake_component_health";

/// A component's health, by its stage's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not yet known: the component has not done (or been able to do) its first work.
    Starting,
    Healthy,
    /// Working, but behind or partly failing.
    Degraded,
    /// Not working: `/healthz` answers 503.
    Unhealthy,
}

impl Health {
    pub const ALL: [Health; 4] = [Health::Starting, Health::Healthy, Health::Degraded, Health::Unhealthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// How bad it is, for the process's status: the worst of its components'.
    fn rank(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Starting => 1,
            Self::Degraded => 2,
            Self::Unhealthy => 3,
        }
    }
}

/// Says a component's health when asked (at each probe and scrape).
pub type HealthCheck = Arc<dyn Fn() -> Health + Send + Sync>;

/// The components of a process and their checks; shared by `/healthz` and the registry.
#[derive(Clone, Default)]
struct Components(Arc<RwLock<Vec<(&'static str, HealthCheck)>>>);

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.read().expect("components lock").iter().map(|(name, _)| name)).finish()
    }
}

impl Components {
    fn now(&self) -> Vec<(&'static str, Health)> {
        self.0.read().expect("components lock").iter().map(|(name, check)| (*name, check())).collect()
    }
}

/// `testlake_component_health{component,state}`: 1 for each component's current state, 0 for
/// the other states, so a dashboard can plot any state and an alert fire on `unhealthy == 1`.
impl Collector for Components {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "1 for the current health state of each component of the process (starting, healthy, \
                    degraded, unhealthy), 0 for the others.";
        let mut family = encoder.encode_descriptor(COMPONENT_HEALTH, help, None, MetricType::Gauge)?;
        for (component, now) in self.now() {
            for state in Health::ALL {
                let labels = [("component", component), ("state", state.as_str())];
                ConstGauge::new(i64::from(state == now)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// What `/healthz` answers: the process's status (the worst of its components') and each
/// component's.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub status: Health,
    pub components: Vec<(&'static str, Health)>,
}

impl HealthReport {
    pub fn of(components: Vec<(&'static str, Health)>) -> Self {
        let status = components.iter().map(|(_, h)| *h).max_by_key(|h| h.rank()).unwrap_or(Health::Healthy);
        Self { status, components }
    }

    /// 503 when unhealthy; 200 when healthy, degraded or starting (an orchestrator restarts a
    /// process whose liveness fails, and neither a slow start nor a lag is cured by a restart).
    pub fn http_status(&self) -> u16 {
        if self.status == Health::Unhealthy { 503 } else { 200 }
    }

    /// `{"status": "healthy", "components": {"ingest": "healthy"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let components: serde_json::Map<String, serde_json::Value> =
            self.components.iter().map(|(name, h)| ((*name).to_owned(), h.as_str().into())).collect();
        serde_json::json!({ "status": self.status.as_str(), "components": components })
    }
}

/// A process's metrics and health: built while the process is assembled (each stage registers
/// its metrics and adds its components), then shared read-only by `/metrics` and `/healthz`.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    components: Components,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A registry with the process metrics and the component health gauge, no component yet.
    pub fn new() -> Self {
        let components = Components::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register_collector(Box::new(components.clone()));
        Self { registry, components }
    }

    /// Where a stage registers its metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A component whose health `/healthz` and `testlake_component_health` report.
    pub fn add_component(&mut self, name: &'static str, check: impl Fn() -> Health + Send + Sync + 'static) {
        self.components.0.write().expect("components lock").push((name, Arc::new(check)));
    }

    /// Every metric, as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    pub fn health(&self) -> HealthReport {
        HealthReport::of(self.components.now())
    }
}

/// OpenMetrics text of one registry (for a stage's tests, which look at its metrics alone).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Whether the lake answers a listing of its root within `timeout`: readiness, and the query
/// service's health. `Err` says why not.
pub async fn lake_answers(lake: &Lake, timeout: Duration) -> Result<(), String> {
    use futures::StreamExt;
    let root = lake.path("");
    let mut listing = lake.store().list(Some(&root));
    match tokio::time::timeout(timeout, listing.next()).await {
        Ok(None | Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Err(_) => Err(format!("the lake did not answer within {timeout:?}")),
    }
}

/// How often a [`LakeWatch`] asks, and how long an answer may take.
pub const LAKE_WATCH_EVERY: Duration = Duration::from_secs(5);

/// The health of a component that needs only the lake to answer (the query service, a
/// standalone compactor): `healthy` while its last listing answered, `unhealthy` when it failed
/// or took longer than its timeout ([`LAKE_WATCH_EVERY`]), `starting` before the first.
#[derive(Debug)]
pub struct LakeWatch {
    last: std::sync::Mutex<Option<bool>>,
    timeout: Duration,
}

impl Default for LakeWatch {
    fn default() -> Self {
        Self::with_timeout(LAKE_WATCH_EVERY)
    }
}

impl LakeWatch {
    pub fn with_timeout(timeout: Duration) -> Self {
        Self { last: Default::default(), timeout }
    }

    pub fn health(&self) -> Health {
        match *self.last.lock().expect("lake watch lock") {
            None => Health::Starting,
            Some(true) => Health::Healthy,
            Some(false) => Health::Unhealthy,
        }
    }

    /// Asks the lake once and records the answer (a failure is logged when the state changes).
    pub async fn check(&self, lake: &Lake) {
        let answer = lake_answers(lake, self.timeout).await;
        let was = self.last.lock().expect("lake watch lock").replace(answer.is_ok());
        match (&answer, was) {
            (Err(error), Some(true) | None) => tracing::warn!(%error, lake = %lake.url(), "the lake does not answer"),
            (Ok(()), Some(false)) => tracing::info!(lake = %lake.url(), "the lake answers again"),
            _ => {}
        }
    }

    /// Checks every [`LAKE_WATCH_EVERY`] until `stop` resolves.
    pub async fn watch(&self, lake: &Lake, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            self.check(lake).await;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(LAKE_WATCH_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
