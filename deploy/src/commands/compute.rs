//! `testlake compute`: the trend tables, by backfill, once, or periodically and on notices.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use testlake::lake::open_for_writing;
use testlake::shutdown::{COMPUTE, INPUT, SERVE, Stages};
use testlake_compute::{ComputeConfig, Scheduler};
use testlake_ingest::notices::Publisher;
use testlake_schemas::observe::Telemetry;
use testlake_schemas::{Lake, Landed};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{ComputeAction, ComputeCommand};

pub async fn run(command: ComputeCommand, shutdown: CancellationToken) -> Result<()> {
    if !command.compute.compute_enabled {
        info!("compute is disabled (--compute-enabled=false, [compute] enabled = false): nothing to run");
        return Ok(());
    }
    let lake = open_for_writing(&command.lake.lake, &[]).await?;
    let config = command.compute.config();
    match command.action {
        Some(ComputeAction::Backfill { from, to }) => backfill(lake, config, from, to).await,
        None if command.once => {
            let tally = testlake_compute::run_once(&lake, &config).await?;
            info!(completed = tally.completed, skipped = tally.skipped, failed = tally.failed, "computed");
            anyhow::ensure!(tally.failed == 0, "{} compute tasks failed", tally.failed);
            Ok(())
        }
        None => periodic(command, lake, config, shutdown).await,
    }
}

/// Follows landed notices (input), recomputes what they name and what the periodic cycle finds
/// changed (compute), and serves the probes (serve); what compute rewrites is announced on the
/// same topic, for query services.
async fn periodic(
    command: ComputeCommand,
    lake: Lake,
    config: ComputeConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut stages = Stages::new(&[INPUT, COMPUTE, SERVE]);
    let (landed, computed) = match command.notices.topic()? {
        Some((kafka, topic)) => {
            let landed = super::follow_notices(&kafka, topic, &command.notices.topics, stages.token(INPUT)).await?;
            let (tx, rx) = broadcast::channel::<Landed>(1024);
            super::forward_notices(&mut stages, COMPUTE, rx, Publisher::new(&kafka, topic)?);
            (Some(landed), Some(tx))
        }
        None => (None, None),
    };
    let scheduler = Scheduler::new(lake.clone(), config, computed);
    if let Some(listen) = probe_listen(command.probes.probe_listen)? {
        let mut telemetry = Telemetry::new();
        let metrics = scheduler.metrics();
        metrics.register(telemetry.registry());
        telemetry.add_component("compute", move || metrics.health());
        let ready = testlake::probes::lake_ready(lake, || Ok(()));
        testlake::probes::serve(listen, telemetry, ready, stages.token(SERVE)).await?;
    }
    stages.spawn(COMPUTE, |stop| async move { Ok(testlake_compute::run(scheduler, landed, stop).await?) });
    stages.run(shutdown, *command.shutdown.shutdown_grace).await
}

/// Where the probes listen: --probe-listen, else `TESTLAKE_COMPUTE_LISTEN`, the variable of
/// its old name --compute-listen (still an alias of the flag).
fn probe_listen(flag: Option<SocketAddr>) -> Result<Option<SocketAddr>> {
    const OLD: &str = "TESTLAKE_COMPUTE_LISTEN";
    match (flag, std::env::var(OLD)) {
        (Some(listen), _) => Ok(Some(listen)),
        (None, Ok(value)) => Ok(Some(value.parse().with_context(|| format!("{OLD}={value:?}: not an address"))?)),
        (None, Err(_)) => Ok(None),
    }
}

/// Recomputes every date in `from..=to`, drawing a progress bar on stderr.
async fn backfill(lake: Lake, config: ComputeConfig, from: NaiveDate, to: NaiveDate) -> Result<()> {
    anyhow::ensure!(from <= to, "--from ({from}) must not be after --to ({to})");
    let mut scheduler = Scheduler::new(lake, config, None);
    let tally = scheduler
        .backfill(from, to, |done, total, date, tally| {
            let width = 30;
            let filled = width * done / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} {date}  completed {} skipped {} failed {}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                tally.completed,
                tally.skipped,
                tally.failed
            );
        })
        .await?;
    eprintln!();
    info!(completed = tally.completed, skipped = tally.skipped, failed = tally.failed, "backfill finished");
    anyhow::ensure!(tally.failed == 0, "{} backfill tasks failed", tally.failed);
    Ok(())
}
