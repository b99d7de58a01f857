//! `testlake compact`: compaction of closed hours, one pass or periodically.

use anyhow::Result;
use testlake::lake::open_for_writing;
use testlake::shutdown::{COMPACT, Stages};
use testlake_ingest::Compactor;
use testlake_ingest::crash::Crasher;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::CompactCommand;

pub async fn run(command: CompactCommand, shutdown: CancellationToken) -> Result<()> {
    let CompactCommand { lake, compact, once, crash_at, shutdown: grace } = command;
    let mut compactor = Compactor::new(open_for_writing(&lake.lake, &[]).await?, compact.config());
    if once {
        let crash = crash_at.as_deref().map(Crasher::parse).transpose().map_err(anyhow::Error::msg)?;
        let report = compactor.pass(&crash.unwrap_or_default()).await?;
        info!(?report, "compaction pass done");
        anyhow::ensure!(report.failed == 0, "{} hours failed to compact", report.failed);
        return Ok(());
    }
    anyhow::ensure!(!compact.compact_every.is_zero(), "--compact-every 0s: nothing to do");
    let mut stages = Stages::new(&[COMPACT]);
    stages.spawn(COMPACT, |stop| async move {
        compactor.run(stop).await;
        Ok(())
    });
    stages.run(shutdown, *grace.shutdown_grace).await
}
