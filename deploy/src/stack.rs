//! The all-in-one process: ingest, compute and the query service in one runtime, connected by
//! in-process landed-partition notices (and, given a publisher, forwarding them to Kafka).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use testlake_compute::ComputeConfig;
use testlake_ingest::notices::{self, Publisher};
use testlake_ingest::{CompactConfig, Compactor, Ingest, IngestConfig, IngestMetrics};
use testlake_query::{AppState, ServeConfig};
use testlake_schemas::{Lake, Landed};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub lake: String,
    pub ingest: IngestConfig,
    /// Compaction of closed hours (`every` zero: none).
    pub compact: CompactConfig,
    pub compute: ComputeConfig,
    pub serve: ServeConfig,
}

/// A running stack; stops when the token is cancelled or any stage fails.
pub struct Stack {
    pub addr: SocketAddr,
    pub lake: Lake,
    pub metrics: Arc<IngestMetrics>,
    tasks: JoinSet<Result<()>>,
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
        let lake = Lake::open(&config.lake)?;
        let (landed, _) = broadcast::channel::<Landed>(4096);
        let metrics = Arc::new(IngestMetrics::default());
        let mut tasks = JoinSet::new();
        if let Some(publisher) = publisher {
            // Subscribed before any stage starts, so no notice is missed; it stops once both
            // stages have stopped and dropped their senders.
            let notices = landed.subscribe();
            tasks.spawn(async move {
                notices::publish(notices, publisher).await;
                Ok(())
            });
        }

        let ingest = Ingest::new(config.ingest, lake.clone(), Some(landed.clone()), Arc::clone(&metrics))?;
        let token = shutdown.clone();
        tasks.spawn(async move { ingest.run(token).await.context("ingest") });
        let (compactor, token) = (Compactor::new(lake.clone(), config.compact), shutdown.clone());
        tasks.spawn(async move {
            compactor.run(token).await;
            Ok(())
        });

        // Compute's own notices go on the same channel: the query service hears both.
        let scheduler = testlake_compute::Scheduler::new(lake.clone(), config.compute, Some(landed.clone()));
        let compute_metrics = scheduler.metrics();
        let (rx, token) = (landed.subscribe(), shutdown.clone());
        tasks.spawn(async move { testlake_compute::run(scheduler, Some(rx), token).await.context("compute") });

        let render_metrics = Arc::clone(&metrics);
        let mut state = AppState::new(lake.clone(), &config.serve);
        state.metrics.push(Arc::new(move |out: &mut String| render_metrics.render(out)));
        let render_compute = Arc::clone(&compute_metrics);
        state.metrics.push(Arc::new(move |out: &mut String| render_compute.render(out)));
        state.liveness.push(Arc::new(move || ("compute", compute_metrics.health().as_str())));
        let state = Arc::new(state);
        let (bound_tx, bound_rx) = oneshot::channel();
        let (token, notices) = (shutdown.clone(), landed.subscribe());
        tasks.spawn(async move {
            testlake_query::serve(config.serve, state, Some(notices), token, Some(bound_tx)).await.context("serve")
        });
        let addr = bound_rx.await.context("the query service did not start")?;
        Ok(Self { addr, lake, metrics, tasks, shutdown })
    }

    /// Waits for every stage to stop; the first failure cancels the others.
    pub async fn wait(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(done) = self.tasks.join_next().await {
            let result = done.context("a stage panicked").and_then(|r| r);
            if let Err(e) = result {
                self.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
