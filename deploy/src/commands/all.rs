//! `testlake all`: ingest, compute and serve in one process, optionally fed by the synthetic fleet.

use anyhow::Result;
use testlake::produce::{ProduceConfig, Source, produce};
use testlake::stack::Stack;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{AllCommand, IngestCommand};

pub async fn run(command: AllCommand, shutdown: CancellationToken) -> Result<()> {
    let config = command.config();
    let AllCommand { ingest: IngestCommand { kafka, shutdown: grace, .. }, fleet_rate, .. } = command;
    if fleet_rate > 0 {
        // The fleet's topic must exist before the consumer subscribes to it.
        testlake::kafka::ensure_topic(&kafka.brokers, &kafka.topic, 4).await?;
    }
    let publisher = match kafka.landed_topic() {
        Some(topic) => Some(super::notice_publisher(&kafka.brokers, topic).await?),
        None => None,
    };
    let mut stack = Stack::start_publishing(config, publisher, shutdown).await?;
    info!(api = %format!("http://{}/api/v1/dashboard", stack.addr), lake = %stack.lake.url(), "testlake is running");
    if fleet_rate > 0 {
        let fleet = ProduceConfig {
            brokers: kafka.brokers,
            topic: kafka.topic,
            source: Source::Synthetic(Default::default()),
            rate: fleet_rate,
            count: None,
        };
        stack.spawn_input(|stop| async move {
            if let Err(e) = produce(fleet, stop).await {
                tracing::error!(error = %e, "synthetic fleet stopped");
            }
            Ok(())
        });
    }
    stack.wait_within(*grace.shutdown_grace).await
}
