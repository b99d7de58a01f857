//! `testlake ingest`: Kafka → the lake, compacting closed hours on the side; with
//! --probe-listen, its metrics and health.

use std::sync::Arc;

use anyhow::Result;
use testlake::kafka::prepare_topics;
use testlake::lake::open_for_writing;
use testlake::shutdown::{INGEST, SERVE, Stages};
use testlake_ingest::notices::Publisher;
use testlake_ingest::{Compactor, Ingest, IngestConfig, IngestMetrics};
use testlake_schemas::observe::Telemetry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::IngestCommand;

pub async fn run(command: IngestCommand, shutdown: CancellationToken) -> Result<()> {
    let IngestCommand { kafka, lake, ingest, compact, probes, shutdown: grace } = command;
    let lake = open_for_writing(&lake.lake, &[]).await?;
    let client = kafka.config()?;
    let (landed, notices) = kafka.landed_topic().map(|_| broadcast::channel(4096)).unzip();
    let config =
        IngestConfig { retention_days: compact.compact_retention_days, ..ingest.config(client.clone(), &kafka.topic) };
    let (metrics, rule) = (Arc::new(IngestMetrics::default()), config.health);
    // A bad configuration is reported before the broker is asked anything.
    let ingest = Ingest::new(config, lake.clone(), landed, Arc::clone(&metrics))?;
    prepare_topics(&client, &kafka.ingest_topics(), kafka.topics.creation(false)).await?;
    let mut stages = Stages::new(&[INGEST, SERVE]);
    if let Some(listen) = probes.probe_listen {
        let mut telemetry = Telemetry::new();
        metrics.register(telemetry.registry());
        let health = Arc::clone(&metrics);
        telemetry.add_component("ingest", move || health.health(&rule));
        let ready = testlake::probes::lake_ready(lake.clone(), move || metrics.ready().map_err(str::to_owned));
        testlake::probes::serve(listen, telemetry, ready, stages.token(SERVE)).await?;
    }
    if let (Some(topic), Some(notices)) = (kafka.landed_topic(), notices) {
        super::forward_notices(&mut stages, INGEST, notices, Publisher::new(&client, topic)?);
    }
    let compactor = Compactor::new(lake, compact.config());
    stages.spawn(INGEST, |stop| async move {
        compactor.run(stop).await;
        Ok(())
    });
    // The consume loop on this task, not a spawned one: see `Stages::run_with_foreground`.
    stages
        .run_with_foreground(INGEST, |stop| async move { Ok(ingest.run(stop).await?) }, shutdown, *grace.shutdown_grace)
        .await
}
