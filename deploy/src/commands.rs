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
use testlake_ingest::notices::{self, Publisher};
use testlake_schemas::Landed;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::NoticeArgs;

/// Follows the landed-notice topic, if the flags name one, until `stop`.
async fn follow_notices(flags: &NoticeArgs, stop: CancellationToken) -> Result<Option<broadcast::Receiver<Landed>>> {
    let Some((brokers, topic)) = flags.topic() else { return Ok(None) };
    testlake::kafka::ensure_topic(brokers, topic, 1).await?;
    Ok(Some(notices::subscribe(brokers, topic, stop)?))
}

/// A publisher of landed notices on `topic`, which is created if missing.
async fn notice_publisher(brokers: &str, topic: &str) -> Result<Publisher> {
    testlake::kafka::ensure_topic(brokers, topic, 1).await?;
    Ok(Publisher::new(brokers, topic)?)
}

/// Forwards what is sent on `notices` to Kafka as a task of `stage`: it ends once the stage has
/// stopped and dropped every sender, after its last notices.
fn forward_notices(stages: &mut Stages, stage: &str, notices: broadcast::Receiver<Landed>, publisher: Publisher) {
    stages.spawn(stage, |_| async move {
        notices::publish(notices, publisher).await;
        Ok(())
    });
}
