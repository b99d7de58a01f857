//! `testlake all`: ingest, compute and serve in one process, optionally fed by the synthetic fleet.

use anyhow::Result;
use testlake::kafka::prepare_topics;
use testlake::produce::{ProduceConfig, Source, produce};
use testlake::stack::Stack;
use testlake_ingest::notices::Publisher;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::AllCommand;

pub async fn run(command: AllCommand, shutdown: CancellationToken) -> Result<()> {
    let config = command.config()?;
    let AllCommand { kafka, shutdown: grace, fleet, .. } = command;
    let fleet_rate = fleet.fleet_rate;
    let client = config.ingest.kafka.clone();
    // Topics are created unless --create-topics=false: this is the one-command local run.
    prepare_topics(&client, &kafka.ingest_topics(), kafka.topics.creation(true)).await?;
    let publisher = kafka.landed_topic().map(|topic| Publisher::new(&client, topic)).transpose()?;
    let mut stack = Stack::start_publishing(config, publisher, shutdown).await?;
    info!(api = %format!("http://{}/api/v1/dashboard", stack.addr), lake = %stack.lake.url(), "testlake is running");
    if fleet_rate > 0 {
        let fleet = ProduceConfig {
            kafka: client,
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
