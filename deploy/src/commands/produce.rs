//! `testlake produce`: a JSON-lines file or the synthetic fleet → the topic.

use anyhow::Result;
use testlake::kafka::prepare_topics;
use testlake::produce::{ProduceConfig, Source, produce};
use testlake::shutdown::{INPUT, Stages};
use tokio_util::sync::CancellationToken;

use crate::cli::ProduceCommand;

pub async fn run(command: ProduceCommand, shutdown: CancellationToken) -> Result<()> {
    let fleet = command.fleet();
    let source = match (command.file, command.synthetic) {
        (Some(path), _) => Source::File(path),
        (None, true) => Source::Synthetic(fleet),
        (None, false) => anyhow::bail!("say where events come from: --file FILE or --synthetic"),
    };
    let ProduceCommand { kafka, rate, count, .. } = command;
    let client = kafka.config()?;
    prepare_topics(&client, &[kafka.events_topic()], kafka.topics.creation(false)).await?;
    let config = ProduceConfig { kafka: client, topic: kafka.topic, source, rate, count };
    let mut stages = Stages::new(&[INPUT]);
    stages.spawn(INPUT, |stop| async move { produce(config, stop).await.map(drop) });
    stages.run(shutdown, *command.shutdown.shutdown_grace).await
}
