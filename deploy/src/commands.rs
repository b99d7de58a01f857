//! One function per subcommand: each builds its stages from the parsed flags and runs them until
//! `shutdown`, then stops them in order (see [`testlake::shutdown`]).

pub mod all;
pub mod compact;
pub mod compute;
pub mod ingest;
pub mod junit;
pub mod produce;
pub mod serve;
pub mod sql;

use anyhow::Result;
use testlake::shutdown::Stages;
use testlake_ingest::KafkaConfig;
use testlake_ingest::notices::{self, Publisher};
use testlake_schemas::Landed;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::TopicArgs;

/// Follows the landed-notice `topic` until `stop`, once the start-up check found it (created
/// if the flags say so).
async fn follow_notices(
    kafka: &KafkaConfig,
    topic: &str,
    topics: &TopicArgs,
    stop: CancellationToken,
) -> Result<broadcast::Receiver<Landed>> {
    testlake::kafka::prepare_topics(kafka, &[(topic, 1)], topics.creation(false)).await?;
    Ok(notices::subscribe(kafka, topic, stop)?)
}

/// Forwards what is sent on `notices` to Kafka as a task of `stage`: it ends once the stage has
/// stopped and dropped every sender, after its last notices.
fn forward_notices(stages: &mut Stages, stage: &str, notices: broadcast::Receiver<Landed>, publisher: Publisher) {
    stages.spawn(stage, |_| async move {
        notices::publish(notices, publisher).await;
        Ok(())
    });
}
