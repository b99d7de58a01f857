//! Retrying object-store work: capped exponential backoff while the error is transient, and not
//! past shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::{Error, Result};
use crate::log_writer::CommitError;
use crate::metrics::IngestMetrics;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The attempts at one operation, e.g. `loop { match op().await { Ok(v) => break v, Err(e) =>
/// retry.failed(e).await? } }`.
pub struct Retry<'a> {
    what: &'a str,
    partition: i32,
    metrics: &'a IngestMetrics,
    shutdown: &'a CancellationToken,
    backoff: Duration,
}

impl<'a> Retry<'a> {
    /// Attempts to `what` (for the log) on `partition`; failures are counted in `metrics`.
    pub fn new(what: &'a str, partition: i32, metrics: &'a IngestMetrics, shutdown: &'a CancellationToken) -> Self {
        Self { what, partition, metrics, shutdown, backoff: FIRST_BACKOFF }
    }

    /// An attempt failed. A transient error is counted, logged and waited out (50 ms, doubling
    /// up to 5 s): `Ok` means try again. Any other error ([`CommitError::is_transient`]: a
    /// corrupt log entry, being fenced) is returned as it is, and [`Error::ShuttingDown`] when
    /// `shutdown` is cancelled during the wait.
    pub async fn failed(&mut self, error: CommitError) -> Result<()> {
        if !error.is_transient() {
            return Err(error.into());
        }
        let (what, partition, backoff) = (self.what, self.partition, self.backoff);
        self.metrics.flush_failed();
        warn!(partition, %error, ?backoff, "failed to {what}; retrying");
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                warn!(partition, "shutting down: no more attempts to {what}");
                return Err(Error::ShuttingDown);
            }
            () = tokio::time::sleep(backoff) => {}
        }
        self.backoff = (backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use testlake_schemas::Lake;
    use testlake_schemas::log::{EntryObject, entry_path};

    use super::*;
    use crate::log_writer::{PartitionLog, create};

    /// Runs `op` until it succeeds or [`Retry::failed`] gives up, as the run loop does.
    async fn retry<T>(
        metrics: &IngestMetrics,
        shutdown: &CancellationToken,
        mut op: impl AsyncFnMut() -> Result<T, CommitError>,
    ) -> Result<T> {
        let mut retry = Retry::new("test", 0, metrics, shutdown);
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) => retry.failed(e).await?,
            }
        }
    }

    fn fault(source: object_store::Error) -> CommitError {
        CommitError::Store { path: "results/x.parquet".into(), source: Box::new(source) }
    }

    fn unavailable() -> CommitError {
        fault(object_store::Error::Generic { store: "test", source: "503 Slow Down".into() })
    }

    #[tokio::test]
    async fn transient_faults_are_retried_until_the_operation_succeeds() {
        let metrics = IngestMetrics::default();
        let mut attempts = 0;
        let result = retry(&metrics, &CancellationToken::new(), async || {
            attempts += 1;
            if attempts < 3 { Err(unavailable()) } else { Ok(attempts) }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(metrics.flush_errors(), 2, "each failed attempt is counted");
    }

    #[tokio::test]
    async fn a_corrupt_log_entry_fails_recovery_at_once() {
        let lake = Lake::in_memory();
        let intent = entry_path("t", 0, 0, EntryObject::Intent);
        assert!(create(&lake, &intent, b"{\"seq\": 0, \"topic\": ".to_vec()).await.unwrap());
        let metrics = IngestMetrics::default();
        let started = Instant::now();
        let error =
            retry(&metrics, &CancellationToken::new(), async || PartitionLog::recover(&lake, "t", 0, "w").await)
                .await
                .unwrap_err();
        assert!(matches!(&error, Error::Commit(CommitError::Corrupt { path, .. }) if *path == intent), "{error}");
        assert!(!error.is_transient());
        assert_eq!(metrics.flush_errors(), 0, "not retried");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn refusals_of_the_store_and_fencing_are_not_retried() {
        let refused = [
            fault(object_store::Error::PermissionDenied { path: "x".into(), source: "denied".into() }),
            fault(object_store::Error::Unauthenticated { path: "x".into(), source: "expired".into() }),
            CommitError::Fenced { partition: 0, seq: 3 },
        ];
        for refusal in refused {
            let metrics = IngestMetrics::default();
            let mut once = Some(refusal);
            let result: Result<()> =
                retry(&metrics, &CancellationToken::new(), async || Err(once.take().expect("tried once only"))).await;
            assert!(result.is_err_and(|e| !e.is_transient()));
        }
        assert!(unavailable().is_transient());
        assert!(
            fault(object_store::Error::NotFound { path: "x".into(), source: "listed, not yet readable".into() })
                .is_transient()
        );
    }

    #[tokio::test]
    async fn a_retry_stops_when_shutdown_is_cancelled() {
        let metrics = IngestMetrics::default();
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(120)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let result: Result<()> = retry(&metrics, &shutdown, async || Err(unavailable())).await;
        assert!(matches!(result, Err(Error::ShuttingDown)), "{result:?}");
        // Attempts at 0, 50 and 150 ms would follow without the cancel: it returns within its wait.
        assert!(started.elapsed() < Duration::from_millis(500), "returned after {:?}", started.elapsed());

        let mut attempts = 0;
        let result: Result<()> = retry(&metrics, &shutdown, async || {
            attempts += 1;
            Err(unavailable())
        })
        .await;
        assert!(matches!(result, Err(Error::ShuttingDown)));
        assert_eq!(attempts, 1, "already shutting down: one attempt, no retry");
    }
}
