//! When trends are recomputed: the dates named by landed-partition notices (debounced), plus a
//! periodic cycle that finds dates whose `results` files changed since they were last computed,
//! so a compute process that missed notices (or runs alone) still converges.
//!
//! Flaky scores follow: whenever a date inside today's scoring window was recomputed, today's
//! `flaky_scores` snapshot is refreshed, at most once per `flaky_refresh`. When the UTC day turns,
//! the previous day's snapshot is computed one last time, as of the end of that day.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use testlake_schemas::{Lake, Landed, Table};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use testlake_schemas::commits::CommittedFiles;

use crate::flaky::{FlakyConfig, materialize_scores, window_dates};
use crate::trends::materialize_date;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// How often the periodic cycle scans the lake for changed dates.
    pub interval: Duration,
    /// How long notices are gathered before their dates are recomputed together.
    pub debounce: Duration,
    /// The shortest time between two refreshes of today's flaky scores.
    pub flaky_refresh: Duration,
    /// The definitions' thresholds.
    pub flaky: FlakyConfig,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            debounce: Duration::from_millis(200),
            flaky_refresh: Duration::from_secs(30),
            flaky: FlakyConfig::default(),
        }
    }
}

/// What a date's `results` looked like when it was last computed: file count and newest change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateVersion {
    files: usize,
    newest: Option<DateTime<Utc>>,
}

/// Lists `results` and returns each date's current version.
pub async fn scan_results(lake: &Lake) -> Result<BTreeMap<NaiveDate, DateVersion>> {
    let prefix = lake.path(Table::Results.name());
    let objects: Vec<_> =
        lake.store().list(Some(&prefix)).try_collect().await.map_err(|e| Error::Store(Box::new(e)))?;
    let mut versions: BTreeMap<NaiveDate, DateVersion> = BTreeMap::new();
    for object in objects {
        let Some(relative) = lake.relative(&object.location) else {
            continue;
        };
        let Ok(path) = relative.parse::<testlake_schemas::DataFilePath>() else {
            continue;
        };
        let version = versions.entry(path.partition.date).or_default();
        version.files += 1;
        version.newest = version.newest.max(Some(object.last_modified));
    }
    Ok(versions)
}

/// Recomputes `dates` from their committed files, logging each as completed or failed.
/// Returns the dates that succeeded.
pub async fn recompute(
    lake: &Lake,
    dates: &BTreeSet<NaiveDate>,
    committed: &mut CommittedFiles,
) -> Result<Vec<NaiveDate>> {
    committed.refresh(lake).await?;
    let ctx = crate::catalog::lake_session(lake)?;
    let mut done = Vec::new();
    for &date in dates {
        let started = std::time::Instant::now();
        match materialize_date(&ctx, lake, date, &committed.results_for(date)).await {
            Ok(rows) => {
                info!(%date, ?rows, elapsed_ms = started.elapsed().as_millis() as u64, "trends recomputed");
                done.push(date);
            }
            Err(e) => warn!(%date, error = %e, "trends recompute failed"),
        }
    }
    Ok(done)
}

/// Recomputes the flaky-scores snapshot of `date` from the committed files of its window.
pub async fn recompute_flaky(
    lake: &Lake,
    date: NaiveDate,
    committed: &mut CommittedFiles,
    config: &FlakyConfig,
) -> Result<()> {
    committed.refresh(lake).await?;
    let now = Utc::now();
    let files: Vec<String> = window_dates(crate::flaky::as_of(date, now), config)
        .into_iter()
        .flat_map(|d| committed.results_for(d))
        .collect();
    let ctx = crate::catalog::lake_session(lake)?;
    let started = std::time::Instant::now();
    match materialize_scores(&ctx, lake, &files, date, now, config).await {
        Ok(batch) => {
            info!(%date, tests = batch.num_rows(), elapsed_ms = started.elapsed().as_millis() as u64, "flaky scores recomputed");
            Ok(())
        }
        Err(e) => {
            warn!(%date, error = %e, "flaky scores recompute failed");
            Err(e)
        }
    }
}

/// Recomputes every date that has committed results, and today's flaky scores, once.
pub async fn run_once(lake: &Lake, config: &ComputeConfig) -> Result<Vec<NaiveDate>> {
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await?;
    let dates: BTreeSet<NaiveDate> = committed.dates().into_iter().collect();
    let done = recompute(lake, &dates, &mut committed).await?;
    recompute_flaky(lake, Utc::now().date_naive(), &mut committed, &config.flaky).await?;
    Ok(done)
}

/// When today's flaky scores are due: after dates inside its window changed, at most once per
/// `refresh`, and at the turn of the day.
#[derive(Debug)]
struct FlakyRefresh {
    dirty: bool,
    last: Option<(NaiveDate, tokio::time::Instant)>,
}

impl FlakyRefresh {
    fn touched(&mut self, dates: &[NaiveDate], config: &FlakyConfig) {
        let window = window_dates(Utc::now(), config);
        if dates.iter().any(|d| window.contains(d)) {
            self.dirty = true;
        }
    }

    async fn run_if_due(
        &mut self,
        lake: &Lake,
        committed: &mut CommittedFiles,
        config: &ComputeConfig,
        computed: &Option<broadcast::Sender<Landed>>,
    ) {
        let today = Utc::now().date_naive();
        if let Some((date, _)) = self.last.filter(|(date, _)| *date < today) {
            // The day is over: its snapshot becomes final, as of the end of that day.
            if recompute_flaky(lake, date, committed, &config.flaky).await.is_ok() {
                notify(computed, &[Table::FlakyScores], date);
            }
            self.dirty = true;
        }
        let due = self.last.is_none_or(|(_, at)| at.elapsed() >= config.flaky_refresh);
        if self.dirty && due {
            self.dirty = false;
            self.last = Some((today, tokio::time::Instant::now()));
            match recompute_flaky(lake, today, committed, &config.flaky).await {
                Ok(()) => notify(computed, &[Table::FlakyScores], today),
                Err(_) => self.dirty = true,
            }
        }
    }
}

/// Runs until `shutdown`: recomputes dates named by `landed` notices, and every `interval` the
/// dates whose results changed since they were computed. Sends a notice for each date it rewrote.
pub async fn run(
    lake: Lake,
    config: ComputeConfig,
    mut landed: Option<broadcast::Receiver<Landed>>,
    computed: Option<broadcast::Sender<Landed>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut computed_versions: BTreeMap<NaiveDate, DateVersion> = BTreeMap::new();
    let mut committed = CommittedFiles::default();
    let mut dirty: BTreeSet<NaiveDate> = BTreeSet::new();
    let mut periodic = tokio::time::interval(config.interval);
    let mut debounce = tokio::time::interval(config.debounce);
    let mut flaky_tick = tokio::time::interval(config.flaky_refresh);
    let mut flaky = FlakyRefresh { dirty: true, last: None };
    info!(interval = ?config.interval, "compute started");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            notice = recv(&mut landed) => match notice {
                Ok(notice) if notice.table == Table::Results.name() => { dirty.insert(notice.date); }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "missed landed notices; the periodic scan will catch up");
                    periodic.reset_immediately();
                }
                Err(broadcast::error::RecvError::Closed) => landed = None,
            },
            _ = debounce.tick(), if !dirty.is_empty() => {
                let dates = std::mem::take(&mut dirty);
                // Version read before computing: a file landing meanwhile makes the date dirty again.
                let versions = scan_results(&lake).await?;
                let done = recompute(&lake, &dates, &mut committed).await?;
                for &date in &done {
                    computed_versions.insert(date, versions.get(&date).copied().unwrap_or_default());
                    notify(&computed, &[Table::TrendsHourly, Table::TrendsDaily], date);
                }
                flaky.touched(&done, &config.flaky);
                flaky.run_if_due(&lake, &mut committed, &config, &computed).await;
            }
            _ = flaky_tick.tick() => flaky.run_if_due(&lake, &mut committed, &config, &computed).await,
            _ = periodic.tick() => {
                let versions = scan_results(&lake).await?;
                let changed: BTreeSet<NaiveDate> = versions
                    .iter()
                    .filter(|(date, v)| computed_versions.get(date) != Some(v))
                    .map(|(date, _)| *date)
                    .collect();
                if !changed.is_empty() {
                    info!(dates = changed.len(), "periodic cycle found changed dates");
                }
                let done = recompute(&lake, &changed, &mut committed).await?;
                for &date in &done {
                    computed_versions.insert(date, versions[&date]);
                    notify(&computed, &[Table::TrendsHourly, Table::TrendsDaily], date);
                }
                flaky.touched(&done, &config.flaky);
            }
        }
    }
    info!("compute stopped");
    Ok(())
}

async fn recv(landed: &mut Option<broadcast::Receiver<Landed>>) -> Result<Landed, broadcast::error::RecvError> {
    match landed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn notify(computed: &Option<broadcast::Sender<Landed>>, tables: &[Table], date: NaiveDate) {
    if let Some(tx) = computed {
        let partition = testlake_schemas::HourPartition { date, hour: 0 };
        for &table in tables {
            let path = testlake_schemas::paths::computed_file_path(table, date);
            let _ = tx.send(Landed::new(table, partition, vec![path], 0));
        }
    }
}
