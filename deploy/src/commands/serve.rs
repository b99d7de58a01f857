//! `testlake serve`: the HTTP API over the lake.

use std::sync::Arc;

use anyhow::Result;
use testlake::shutdown::{INPUT, SERVE, Stages};
use testlake_query::AppState;
use testlake_schemas::Lake;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeCommand;

pub async fn run(command: ServeCommand, shutdown: CancellationToken) -> Result<()> {
    let mut config = command.serve.config();
    let mut stages = Stages::new(&[INPUT, SERVE]);
    let notices = if command.serve.refresh_caches { command.notices.topic()? } else { None };
    let landed = match notices {
        Some((kafka, topic)) => {
            Some(super::follow_notices(&kafka, topic, &command.notices.topics, stages.token(INPUT)).await?)
        }
        None => None,
    };
    if !command.serve.refresh_caches {
        tracing::info!("--refresh-caches=false: every request reads the lake, and nothing is pushed");
        config.cache_bytes = 0;
    } else if landed.is_none() {
        tracing::warn!(
            "no --brokers (or no --landed-topic): nothing tells the service what landed, so it caches nothing"
        );
        config.cache_bytes = 0;
    }
    let state = Arc::new(AppState::new(Lake::open(&command.lake.lake)?, &config));
    stages.spawn(SERVE, |stop| async move { Ok(testlake_query::serve(config, state, landed, stop, None).await?) });
    stages.run(shutdown, *command.shutdown.shutdown_grace).await
}
