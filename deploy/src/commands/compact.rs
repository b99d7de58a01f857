//! `testlake compact`: compaction of closed hours, one pass or periodically.

use std::sync::Arc;

use anyhow::Result;
use testlake::lake::open_for_writing;
use testlake::shutdown::{COMPACT, SERVE, Stages};
use testlake_ingest::Compactor;
use testlake_ingest::crash::Crasher;
use testlake_schemas::observe::{LakeWatch, Telemetry};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::CompactCommand;

pub async fn run(command: CompactCommand, shutdown: CancellationToken) -> Result<()> {
    let CompactCommand { lake, compact, once, crash_at, probes, shutdown: grace } = command;
    let lake = open_for_writing(&lake.lake, &[]).await?;
    let mut compactor = Compactor::new(lake.clone(), compact.config());
    if once {
        let crash = crash_at.as_deref().map(Crasher::parse).transpose().map_err(anyhow::Error::msg)?;
        let report = compactor.pass(&crash.unwrap_or_default()).await?;
        info!(?report, "compaction pass done");
        anyhow::ensure!(report.failed == 0, "{} hours failed to compact", report.failed);
        return Ok(());
    }
    anyhow::ensure!(!compact.compact_every.is_zero(), "--compact-every 0s: nothing to do");
    let mut stages = Stages::new(&[COMPACT, SERVE]);
    if let Some(listen) = probes.probe_listen {
        // The compactor needs only the lake: healthy while it answers.
        let (watch, watched) = (Arc::new(LakeWatch::default()), lake.clone());
        let mut telemetry = Telemetry::new();
        let health = Arc::clone(&watch);
        telemetry.add_component("compact", move || health.health());
        stages.spawn(SERVE, |stop| async move {
            watch.watch(&watched, stop.cancelled()).await;
            Ok(())
        });
        let ready = testlake::probes::lake_ready(lake, || Ok(()));
        testlake::probes::serve(listen, telemetry, ready, stages.token(SERVE)).await?;
    }
    stages.spawn(COMPACT, |stop| async move {
        compactor.run(stop).await;
        Ok(())
    });
    stages.run(shutdown, *grace.shutdown_grace).await
}
