//! The all-in-one process: ingest, compute and the query service in one runtime, connected by
//! in-process landed-partition notices (and, given a publisher, forwarding them to Kafka).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use testlake_compute::ComputeConfig;
use testlake_ingest::notices::{self, Publisher};
use testlake_ingest::{CompactConfig, Compactor, Ingest, IngestConfig, IngestMetrics};
use testlake_query::{AppState, ServeConfig};
use testlake_schemas::{Lake, Landed};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use crate::shutdown::{COMPUTE, DEFAULT_GRACE, INGEST, INPUT, SERVE, Stages};

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub lake: String,
    /// Object-store options over the `AWS_*` environment (`endpoint`, `access_key_id`, …; see
    /// `Lake::open_with`): for processes that hold their own, as tests do.
    pub lake_options: Vec<(String, String)>,
    pub ingest: IngestConfig,
    /// Compaction of closed hours (`every` zero: none).
    pub compact: CompactConfig,
    /// Compute runs unless `compute.enabled` is false.
    pub compute: ComputeConfig,
    pub serve: ServeConfig,
    /// Whether the service caches answers and refreshes them, and pushes updates, on landed
    /// notices (false: every request reads the lake).
    pub refresh_caches: bool,
}

/// The lake root unless configured otherwise.
pub const DEFAULT_LAKE: &str = "./lake";

/// A running stack; stops when the token is cancelled or any stage fails: first its inputs
/// ([`Stack::spawn_input`]), then the ingest (its last flush and commit) and compactor, then
/// compute (its running cycle), then the query service.
pub struct Stack {
    pub addr: SocketAddr,
    pub lake: Lake,
    pub metrics: Arc<IngestMetrics>,
    stages: Stages,
    shutdown: CancellationToken,
}

impl Stack {
    /// Starts every stage; landed notices stay in the process.
    pub async fn start(config: StackConfig, shutdown: CancellationToken) -> Result<Self> {
        Self::start_publishing(config, None, shutdown).await
    }

    /// Starts every stage; given a publisher, the ingest's and compute's landed notices are also
    /// published on Kafka, for processes outside the stack.
    pub async fn start_publishing(
        config: StackConfig,
        publisher: Option<Publisher>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let lake = crate::lake::open_for_writing(&config.lake, &config.lake_options).await?;
        let (landed, _) = broadcast::channel::<Landed>(4096);
        let metrics = Arc::new(IngestMetrics::default());
        let mut stages = Stages::new(&[INPUT, INGEST, COMPUTE, SERVE]);
        if let Some(publisher) = publisher {
            // Subscribed before any stage starts, so no notice is missed; it stops once both
            // stages have stopped and dropped their senders (so compute's stop waits for it).
            let notices = landed.subscribe();
            stages.spawn(COMPUTE, |_| async move {
                notices::publish(notices, publisher).await;
                Ok(())
            });
        }

        let ingest_rule = config.ingest.health;
        let ingest = Ingest::new(config.ingest, lake.clone(), Some(landed.clone()), Arc::clone(&metrics))?;
        stages.spawn(INGEST, |stop| async move { Ok(ingest.run(stop).await?) });
        let compactor = Compactor::new(lake.clone(), config.compact);
        stages.spawn(INGEST, |stop| async move {
            compactor.run(stop).await;
            Ok(())
        });

        let mut serve = config.serve;
        if !config.refresh_caches {
            serve.cache_bytes = 0;
        }
        let mut state = AppState::new(lake.clone(), &serve);
        metrics.register(state.telemetry.registry());
        let (ingest_health, rule) = (Arc::clone(&metrics), ingest_rule);
        state.telemetry.add_component("ingest", move || ingest_health.health(&rule));
        if config.compute.enabled {
            // Compute's own notices go on the same channel: the query service hears both.
            let scheduler = testlake_compute::Scheduler::new(lake.clone(), config.compute, Some(landed.clone()));
            let compute_metrics = scheduler.metrics();
            let rx = landed.subscribe();
            stages.spawn(COMPUTE, |stop| async move { Ok(testlake_compute::run(scheduler, Some(rx), stop).await?) });
            compute_metrics.register(state.telemetry.registry());
            state.telemetry.add_component("compute", move || compute_metrics.health());
        }
        let state = Arc::new(state);
        let (bound_tx, bound_rx) = oneshot::channel();
        let notices = config.refresh_caches.then(|| landed.subscribe());
        stages.spawn(SERVE, |stop| async move {
            Ok(testlake_query::serve(serve, state, notices, stop, Some(bound_tx)).await?)
        });
        let addr = bound_rx.await.context("the query service did not start")?;
        Ok(Self { addr, lake, metrics, stages, shutdown })
    }

    /// Runs a task that feeds the stack (the synthetic fleet): the first to stop.
    pub fn spawn_input<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.stages.spawn(INPUT, task);
    }

    /// Waits until the token is cancelled or a stage fails, then stops the stages in order
    /// within [`DEFAULT_GRACE`].
    pub async fn wait(self) -> Result<()> {
        self.wait_within(DEFAULT_GRACE).await
    }

    /// [`Self::wait`], giving up on stopping in order after `grace` ([`GraceExpired`]).
    ///
    /// [`GraceExpired`]: crate::shutdown::GraceExpired
    pub async fn wait_within(self, grace: Duration) -> Result<()> {
        self.stages.run(self.shutdown, grace).await
    }
}
