//! When compute recomputes what.
//!
//! - **Notices first.** Dates named by landed `results` notices are recomputed (both trends
//!   tables) once the notices have settled for `debounce` — whatever their age, so late data for
//!   an old hour lands in its trends too.
//! - **A periodic cycle** (every `interval` unless zero, after `startup_delay`) catches what
//!   notices missed: it lists `results`, and recomputes `trends_hourly` for dates within
//!   `hourly_lookback` and `trends_daily` for dates within `daily_lookback` whose files changed
//!   since this process last computed them — at most `batch_size` dates per cycle, the rest in the
//!   next. Every task is logged as completed, skipped (unchanged, or another process holds its
//!   lease) or failed, and each cycle logs its totals. Shutdown waits for a running cycle.
//! - **Flaky scores** follow: after a date inside today's scoring window changed, today's
//!   snapshot is refreshed at most once per `flaky_refresh`; when the UTC day turns, the previous
//!   day's snapshot is computed one last time, as of the end of that day.
//! - **Reconciliation** ([`reconcile`], every `reconcile_interval`) finds what lost notices left
//!   stale, at any age: every computed file records in its footer what it was built from (a
//!   fingerprint of the date's committed `results` files), and a date whose committed files now
//!   differ is recomputed — those past the cycle's lookbacks (or all, with the cycle off).
//!   Rewrites are announced like any recompute, so query caches follow.
//! - **Leases** ([`crate::lease`]): every task holds the lease of its partition, so several
//!   compute processes never recompute the same partition at once; a holder that outlived its
//!   lease is fenced ([`fence`]): a file written under a later generation is never replaced.
//! - **Faults** stop nothing: a failed listing, log read or write fails its task or pass, is
//!   logged and counted, and is retried by the next notice, cycle or reconciliation.
//!
//! A date is the unit of recompute: both trends tables' date partitions depend only on the same
//! date of `results` (exact percentiles need the whole day), so landing one hour costs one day's
//! recompute, never the lake's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{Lake, Landed, Table};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::flaky::{FlakyConfig, compute_scores, window_dates};
use crate::lease::Leases;
use crate::metrics::{ComputeMetrics, TaskOutcome};
use crate::trends::{Interval, compute_files};
use crate::{Error, Result};

pub mod fence;
pub mod reconcile;

use fence::{Inputs, Put, Stamp, write_fenced};

#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// Whether the compute stage runs at all in a process that can host it (`testlake all`,
    /// `testlake compute`); the scheduler itself ignores it.
    pub enabled: bool,
    /// How often the periodic cycle runs (`Duration::ZERO`: never; notices and reconciliation
    /// drive recompute either way).
    pub interval: Duration,
    /// Whether `trends_hourly` is computed and written.
    pub persist_hourly: bool,
    /// Whether `trends_daily` is computed and written.
    pub persist_daily: bool,
    /// How far back the cycle checks `trends_hourly` dates.
    pub hourly_lookback: Duration,
    /// How far back the cycle checks `trends_daily` dates.
    pub daily_lookback: Duration,
    /// The shortest time between two refreshes of today's flaky scores.
    pub flaky_refresh: Duration,
    /// At most this many dates recomputed per cycle.
    pub batch_size: usize,
    /// How long after start the first cycle runs.
    pub startup_delay: Duration,
    /// How long notices are gathered before their dates are recomputed together.
    pub debounce: Duration,
    /// How long a partition's lease lasts unless released.
    pub lease_ttl: Duration,
    /// How often every date's committed inputs are compared with what its trends files were
    /// built from, at any age (`Duration::ZERO`: never). Bounds how long a lost notice leaves a
    /// date stale.
    pub reconcile_interval: Duration,
    /// The flaky definitions' thresholds.
    pub flaky: FlakyConfig,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            persist_hourly: true,
            persist_daily: true,
            hourly_lookback: Duration::from_secs(2 * 86_400),
            daily_lookback: Duration::from_secs(7 * 86_400),
            flaky_refresh: Duration::from_secs(30),
            batch_size: 64,
            startup_delay: Duration::ZERO,
            debounce: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(300),
            reconcile_interval: Duration::from_secs(300),
            flaky: FlakyConfig::default(),
        }
    }
}

impl ComputeConfig {
    /// Whether the periodic cycle runs.
    pub fn cycles(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Whether `interval`'s trends table is computed and written.
    pub fn persists(&self, interval: Interval) -> bool {
        match interval {
            Interval::Hourly => self.persist_hourly,
            Interval::Daily => self.persist_daily,
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
    scan(lake, Table::Results.name()).await
}

/// The versions of just these dates: lists only their folders, so a notice costs what landed,
/// not the lake.
pub async fn scan_dates(lake: &Lake, dates: &BTreeSet<NaiveDate>) -> Result<BTreeMap<NaiveDate, DateVersion>> {
    let mut versions = BTreeMap::new();
    for &date in dates {
        let folder = format!("{}/{}", Table::Results.name(), testlake_schemas::DatePartition(date));
        versions.extend(scan(lake, &folder).await?);
    }
    Ok(versions)
}

async fn scan(lake: &Lake, folder: &str) -> Result<BTreeMap<NaiveDate, DateVersion>> {
    let prefix = lake.path(folder);
    let objects: Vec<_> =
        lake.store().list(Some(&prefix)).try_collect().await.map_err(|e| Error::Store(Box::new(e)))?;
    let mut versions: BTreeMap<NaiveDate, DateVersion> = BTreeMap::new();
    for object in objects {
        let Some(relative) = lake.relative(&object.location) else {
            continue;
        };
        let Ok(path) = relative.parse::<testlake_schemas::paths::HourFilePath>() else {
            continue;
        };
        let version = versions.entry(path.partition().date).or_default();
        version.files += 1;
        version.newest = version.newest.max(Some(object.last_modified));
    }
    Ok(versions)
}

/// Counts of a batch of tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub completed: usize,
    pub skipped: usize,
    pub failed: usize,
}

impl Tally {
    /// Logs the totals of `what` (and how many dates were found stale, when it looks for them).
    fn log(&self, what: &str, stale: Option<usize>, started: Instant) {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let Self { completed, skipped, failed } = *self;
        info!(completed, skipped, failed, stale, elapsed_ms, "{what} finished");
    }

    fn add(&mut self, outcome: TaskOutcome) {
        match outcome {
            TaskOutcome::Completed => self.completed += 1,
            TaskOutcome::Skipped => self.skipped += 1,
            TaskOutcome::Failed => self.failed += 1,
        }
    }
}

/// One compute process's state: what it computed, its leases, its metrics.
pub struct Scheduler {
    lake: Lake,
    config: ComputeConfig,
    committed: CommittedFiles,
    computed: BTreeMap<(Interval, NaiveDate), DateVersion>,
    /// What each trends file was built from, as reconciliation last read it.
    stamps: reconcile::Stamps,
    /// Per lease key, the highest generation that fenced a write of this process: the floor of
    /// its next generation there (see [`Leases::try_acquire_from`]).
    floors: BTreeMap<String, u64>,
    leases: Leases,
    metrics: Arc<ComputeMetrics>,
    announce: Option<broadcast::Sender<Landed>>,
    flaky_dirty: bool,
    flaky_last: Option<(NaiveDate, tokio::time::Instant)>,
}

impl Scheduler {
    /// `announce` receives a notice for every partition this process rewrites.
    pub fn new(lake: Lake, config: ComputeConfig, announce: Option<broadcast::Sender<Landed>>) -> Self {
        let owner = format!("compute-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let leases = Leases::new(lake.clone(), owner, config.lease_ttl);
        let metrics = Arc::new(ComputeMetrics::new(config.interval));
        Self {
            lake,
            config,
            committed: CommittedFiles::from_delta(),
            computed: BTreeMap::new(),
            stamps: reconcile::Stamps::default(),
            floors: BTreeMap::new(),
            leases,
            metrics,
            announce,
            flaky_dirty: true,
            flaky_last: None,
        }
    }

    pub fn metrics(&self) -> Arc<ComputeMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Recomputes `intervals` of `date` under the date's lease. `version`: the listing the
    /// periodic cycle saw, remembered once computed. `repositories`: whose rows changed, when
    /// known (passed on in the notices it sends).
    async fn trends_task(
        &mut self,
        date: NaiveDate,
        intervals: &[Interval],
        version: Option<DateVersion>,
        repositories: Option<Vec<String>>,
    ) -> TaskOutcome {
        let intervals: Vec<Interval> = intervals.iter().copied().filter(|i| self.config.persists(*i)).collect();
        if intervals.is_empty() {
            return TaskOutcome::Skipped;
        }
        let intervals = intervals.as_slice();
        let started = Instant::now();
        let key = format!("trends/{date}");
        let floor = self.floors.get(&key).copied().unwrap_or(0);
        let outcome = match self.leases.try_acquire_from(&key, floor).await {
            Ok(None) => {
                info!(task = "trends", %date, outcome = "skipped", reason = "another process holds the lease");
                TaskOutcome::Skipped
            }
            Err(e) => {
                warn!(task = "trends", %date, outcome = "failed", error = %e, "could not take the lease");
                TaskOutcome::Failed
            }
            Ok(Some(lease)) => {
                info!(task = "trends", %date, owner = self.leases.owner(), generation = lease.generation, "started");
                let outcome = match self.build_trends(date, intervals, lease.generation).await {
                    Ok(puts) => {
                        let mut rows = Vec::new();
                        for (interval, n, put) in puts {
                            match put {
                                Put::Written => {
                                    info!(table = interval.table().name(), %date, rows = n, "trends persisted");
                                    rows.push((interval, n));
                                    self.metrics.persisted(interval, n);
                                    if let Some(version) = version {
                                        self.computed.insert((interval, date), version);
                                    }
                                    self.announce(interval.table(), date, repositories.clone());
                                }
                                Put::Fenced { by } => self.fenced(&key, interval.table(), date, lease.generation, by),
                            }
                        }
                        self.touched(date);
                        if rows.is_empty() {
                            info!(task = "trends", %date, outcome = "skipped", owner = self.leases.owner(),
                                reason = "fenced by a later lease generation");
                            TaskOutcome::Skipped
                        } else {
                            info!(task = "trends", %date, outcome = "completed", owner = self.leases.owner(), ?rows,
                                elapsed_ms = started.elapsed().as_millis() as u64);
                            TaskOutcome::Completed
                        }
                    }
                    Err(e) => {
                        warn!(task = "trends", %date, outcome = "failed", owner = self.leases.owner(), error = %e);
                        TaskOutcome::Failed
                    }
                };
                // Released after the outcome is logged: logs never show two holders at once.
                if let Err(e) = self.leases.release(&lease).await {
                    warn!(%date, error = %e, "could not release a lease; it expires by itself");
                }
                outcome
            }
        };
        self.metrics.trends_task(intervals, outcome, started.elapsed());
        outcome
    }

    /// Computes `intervals` of `date` from its committed files and writes each, stamped with
    /// those files and `generation`, through the fence.
    async fn build_trends(
        &mut self,
        date: NaiveDate,
        intervals: &[Interval],
        generation: u64,
    ) -> Result<Vec<(Interval, usize, Put)>> {
        self.committed.refresh(&self.lake).await?;
        let files = self.committed.results_for(date);
        let stamp = Stamp { generation, inputs: Inputs::of(&files) };
        let ctx = crate::catalog::compute_session(&self.lake);
        let mut puts = Vec::new();
        for (&interval, batch) in intervals.iter().zip(compute_files(&ctx, &self.lake, &files, intervals).await?) {
            let put = write_fenced(&self.lake, interval.table(), date, &batch, &stamp).await?;
            puts.push((interval, batch.num_rows(), put));
        }
        Ok(puts)
    }

    /// A write refused by the fence: `by`, a later generation, wrote the file. Its next lease on
    /// `key` starts from there.
    fn fenced(&mut self, key: &str, table: Table, date: NaiveDate, generation: u64, by: u64) {
        info!(table = table.name(), %date, generation, by, "write fenced: a later lease holder wrote the file");
        self.metrics.fenced(table);
        let floor = self.floors.entry(key.to_owned()).or_default();
        *floor = (*floor).max(by);
    }

    fn announce(&self, table: Table, date: NaiveDate, repositories: Option<Vec<String>>) {
        if let Some(tx) = &self.announce {
            // The date's folder: the file is whichever the table's Delta log shows.
            let folder = format!("{table}/{}/", testlake_schemas::DatePartition(date));
            let mut notice = Landed::new(table, testlake_schemas::HourPartition { date, hour: 0 }, vec![folder], 0);
            notice.repositories = repositories;
            let _ = tx.send(notice);
        }
    }

    fn touched(&mut self, date: NaiveDate) {
        if window_dates(Utc::now(), &self.config.flaky).contains(&date) {
            self.flaky_dirty = true;
        }
    }

    /// Recomputes both trends tables of `dates` (named by notices), whatever their age.
    pub async fn on_notices(&mut self, dates: &BTreeSet<NaiveDate>) -> Result<Tally> {
        self.on_changes(&dates.iter().map(|d| (*d, None)).collect()).await
    }

    /// Like [`Self::on_notices`], with the repositories whose rows changed on each date (`None`: any).
    pub async fn on_changes(&mut self, changes: &BTreeMap<NaiveDate, Option<BTreeSet<String>>>) -> Result<Tally> {
        // Versions read before computing: a file landing meanwhile makes the date dirty again.
        let versions = scan_dates(&self.lake, &changes.keys().copied().collect()).await?;
        let mut tally = Tally::default();
        for (&date, repositories) in changes {
            let version = versions.get(&date).copied().unwrap_or_default();
            let repositories = repositories.as_ref().map(|r| r.iter().cloned().collect());
            tally.add(self.trends_task(date, &Interval::ALL, Some(version), repositories).await);
        }
        self.metrics.round(tally.completed + tally.skipped, tally.failed);
        Ok(tally)
    }

    /// One periodic cycle: the changed dates within the lookbacks, at most `batch_size` of them,
    /// then the flaky snapshot if due.
    pub async fn cycle(&mut self) -> Result<Tally> {
        let started = Instant::now();
        info!("compute cycle started");
        let versions = scan_results(&self.lake).await?;
        let (hourly_from, daily_from) = self.lookback_starts();
        let mut tally = Tally::default();
        let mut due: Vec<(NaiveDate, Vec<Interval>, DateVersion)> = Vec::new();
        for (&date, &version) in &versions {
            let mut intervals = Vec::new();
            for (interval, from) in [(Interval::Hourly, hourly_from), (Interval::Daily, daily_from)] {
                if date < from || !self.config.persists(interval) {
                    continue;
                }
                if self.computed.get(&(interval, date)) == Some(&version) {
                    info!(task = interval.table().name(), %date, outcome = "skipped", reason = "unchanged");
                    self.metrics.trends_unchanged(interval);
                    tally.skipped += 1;
                } else {
                    intervals.push(interval);
                }
            }
            if !intervals.is_empty() {
                due.push((date, intervals, version));
            }
        }
        // Newest first: today's numbers matter most.
        due.reverse();
        if due.len() > self.config.batch_size {
            info!(deferred = due.len() - self.config.batch_size, "dates left for the next cycle (batch size)");
            due.truncate(self.config.batch_size);
        }
        for (date, intervals, version) in due {
            tally.add(self.trends_task(date, &intervals, Some(version), None).await);
        }
        if let Some(outcome) = self.flaky_if_due().await {
            tally.add(outcome);
        }
        self.metrics.cycle(tally.failed, tally.completed + tally.skipped, started.elapsed());
        tally.log("compute cycle", None, started);
        Ok(tally)
    }

    /// The first dates of `trends_hourly` and `trends_daily` the periodic cycle checks.
    fn lookback_starts(&self) -> (NaiveDate, NaiveDate) {
        let now = Utc::now();
        let since = |lookback: Duration| (now - chrono::Duration::from_std(lookback).unwrap_or_default()).date_naive();
        (since(self.config.hourly_lookback), since(self.config.daily_lookback))
    }

    /// One reconciliation: every date whose committed inputs differ from what its trends files
    /// were built from ([`reconcile`]), whatever its age, newest first, at most `batch_size`.
    /// While the periodic cycle runs, the dates inside its lookbacks are its own (it checks them
    /// every `interval`), so each table's date is recomputed by one of the two, never both.
    /// What it rewrites is announced like any recompute, so query caches follow.
    pub async fn reconcile(&mut self) -> Result<Tally> {
        let started = Instant::now();
        self.committed.refresh(&self.lake).await?;
        self.stamps.refresh(&self.lake, &Interval::ALL.map(Interval::table)).await?;
        let inputs: BTreeMap<NaiveDate, Inputs> =
            self.committed.dates().into_iter().map(|d| (d, Inputs::of(&self.committed.results_for(d)))).collect();
        let (hourly_from, daily_from) = self.lookback_starts();
        let (cycle, config) = (self.config.cycles(), &self.config);
        let mut stale = reconcile::stale(&inputs, &self.stamps, |interval, date| {
            let from = if interval == Interval::Hourly { hourly_from } else { daily_from };
            config.persists(interval) && !(cycle && date >= from)
        });
        let found = stale.len();
        if stale.len() > self.config.batch_size {
            info!(deferred = stale.len() - self.config.batch_size, "stale dates left for the next reconciliation");
            stale.truncate(self.config.batch_size);
        }
        let mut tally = Tally::default();
        for (date, intervals) in stale {
            info!(%date, ?intervals, "inputs differ from what the trends were built from");
            tally.add(self.trends_task(date, &intervals, None, None).await);
        }
        self.metrics.reconciled(found);
        tally.log("reconciliation", Some(found), started);
        Ok(tally)
    }

    /// Recomputes the flaky snapshot of `date` under its lease.
    pub async fn flaky_task(&mut self, date: NaiveDate) -> TaskOutcome {
        let started = Instant::now();
        let key = format!("flaky/{date}");
        let floor = self.floors.get(&key).copied().unwrap_or(0);
        let outcome = match self.leases.try_acquire_from(&key, floor).await {
            Ok(None) => {
                info!(task = "flaky_scores", %date, outcome = "skipped", reason = "another process holds the lease");
                TaskOutcome::Skipped
            }
            Err(e) => {
                warn!(task = "flaky_scores", %date, outcome = "failed", error = %e, "could not take the lease");
                TaskOutcome::Failed
            }
            Ok(Some(lease)) => {
                let now = Utc::now();
                let result = async {
                    self.committed.refresh(&self.lake).await?;
                    let files: Vec<String> = window_dates(crate::flaky::as_of(date, now), &self.config.flaky)
                        .into_iter()
                        .flat_map(|d| self.committed.results_for(d))
                        .collect();
                    let ctx = crate::catalog::compute_session(&self.lake);
                    let batch =
                        compute_scores(&ctx, &self.lake, &files, crate::flaky::as_of(date, now), &self.config.flaky)
                            .await?;
                    let stamp = Stamp { generation: lease.generation, inputs: Inputs::of(&files) };
                    let put = write_fenced(&self.lake, Table::FlakyScores, date, &batch, &stamp).await?;
                    Ok::<_, Error>((batch, put))
                }
                .await;
                let outcome = match result {
                    Ok((_, Put::Fenced { by })) => {
                        self.fenced(&key, Table::FlakyScores, date, lease.generation, by);
                        info!(task = "flaky_scores", %date, outcome = "skipped", reason = "fenced by a later lease generation");
                        TaskOutcome::Skipped
                    }
                    Ok((batch, Put::Written)) => {
                        let flaky = flaky_tests(&batch);
                        let count = flaky.len();
                        let newly_flaky = (date == Utc::now().date_naive()).then(|| self.metrics.flaky_snapshot(flaky));
                        info!(task = "flaky_scores", %date, outcome = "completed", tests = batch.num_rows(),
                            flaky = count, newly_flaky, elapsed_ms = started.elapsed().as_millis() as u64,
                            "flaky analysis");
                        self.announce(Table::FlakyScores, date, None);
                        TaskOutcome::Completed
                    }
                    Err(e) => {
                        warn!(task = "flaky_scores", %date, outcome = "failed", error = %e);
                        TaskOutcome::Failed
                    }
                };
                if let Err(e) = self.leases.release(&lease).await {
                    warn!(%date, error = %e, "could not release a lease; it expires by itself");
                }
                outcome
            }
        };
        self.metrics.flaky_task(outcome, started.elapsed());
        outcome
    }

    /// Today's flaky snapshot when due (and yesterday's final one when the day turned).
    async fn flaky_if_due(&mut self) -> Option<TaskOutcome> {
        let today = Utc::now().date_naive();
        if let Some((date, _)) = self.flaky_last.filter(|(date, _)| *date < today) {
            self.flaky_task(date).await; // the day is over: its snapshot becomes final
            self.flaky_dirty = true;
        }
        let due = self.flaky_last.is_none_or(|(_, at)| at.elapsed() >= self.config.flaky_refresh);
        if !(self.flaky_dirty && due) {
            return None;
        }
        self.flaky_dirty = false;
        self.flaky_last = Some((today, tokio::time::Instant::now()));
        let outcome = self.flaky_task(today).await;
        if outcome != TaskOutcome::Completed {
            self.flaky_dirty = true;
        }
        Some(outcome)
    }

    /// Recomputes both trends tables and the flaky snapshot of every date in `[from, to]`,
    /// reporting progress after each date.
    pub async fn backfill(
        &mut self,
        from: NaiveDate,
        to: NaiveDate,
        mut progress: impl FnMut(usize, usize, NaiveDate, &Tally),
    ) -> Result<Tally> {
        let versions = scan_results(&self.lake).await?;
        let dates: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        let mut tally = Tally::default();
        for (i, &date) in dates.iter().enumerate() {
            let version = versions.get(&date).copied().unwrap_or_default();
            tally.add(self.trends_task(date, &Interval::ALL, Some(version), None).await);
            tally.add(self.flaky_task(date).await);
            progress(i + 1, dates.len(), date, &tally);
        }
        Ok(tally)
    }
}

/// The (repository, test_id) of the tests a snapshot says are flaky.
fn flaky_tests(batch: &arrow::array::RecordBatch) -> BTreeSet<(String, String)> {
    use arrow::array::{Array, AsArray};
    let column = |name| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
    let (Some(state), Some(repository), Some(test)) = (column("state"), column("repository"), column("test_id")) else {
        return BTreeSet::new();
    };
    (0..batch.num_rows())
        .filter(|&i| state.is_valid(i) && state.value(i) == "flaky")
        .map(|i| (repository.value(i).to_owned(), test.value(i).to_owned()))
        .collect()
}

/// Recomputes every date that has committed results, and today's flaky scores, once.
pub async fn run_once(lake: &Lake, config: &ComputeConfig) -> Result<Tally> {
    let mut scheduler = Scheduler::new(lake.clone(), config.clone(), None);
    scheduler.committed.refresh(lake).await?;
    let dates: BTreeSet<NaiveDate> = scheduler.committed.dates().into_iter().collect();
    let mut tally = scheduler.on_notices(&dates).await?;
    tally.add(scheduler.flaky_task(Utc::now().date_naive()).await);
    Ok(tally)
}

/// Runs until `shutdown`: recomputes dates named by `landed` notices, runs the periodic cycle,
/// refreshes flaky scores. A cycle that has started finishes before shutdown returns.
pub async fn run(
    mut scheduler: Scheduler,
    mut landed: Option<broadcast::Receiver<Landed>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = scheduler.config.clone();
    info!(cycle = config.cycles(), interval = ?config.interval, persist_hourly = config.persist_hourly,
        persist_daily = config.persist_daily, hourly_lookback = ?config.hourly_lookback,
        daily_lookback = ?config.daily_lookback, batch_size = config.batch_size, startup_delay = ?config.startup_delay,
        flaky_refresh = ?config.flaky_refresh, "compute started");
    // Dates to recompute, with the repositories that changed on each (`None`: any).
    let mut dirty: BTreeMap<NaiveDate, Option<BTreeSet<String>>> = BTreeMap::new();
    let start = tokio::time::Instant::now() + config.startup_delay;
    let mut periodic = tokio::time::interval_at(start, config.interval.max(Duration::from_millis(1)));
    let mut debounce = tokio::time::interval(config.debounce);
    let mut flaky_tick = tokio::time::interval_at(start, config.flaky_refresh);
    let reconciling = !config.reconcile_interval.is_zero();
    let mut reconcile = tokio::time::interval_at(start, config.reconcile_interval.max(Duration::from_millis(1)));
    // Dates of a notice-driven recompute that failed: retried with the next notice or cycle.
    let mut failed: BTreeMap<NaiveDate, Option<BTreeSet<String>>> = BTreeMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            notice = recv(&mut landed) => match notice {
                Ok(notice) if notice.table == Table::Results => {
                    let repositories = notice.repositories.map(|r| r.into_iter().collect());
                    merge(&mut dirty, BTreeMap::from([(notice.date, repositories)]));
                    merge(&mut dirty, std::mem::take(&mut failed));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "missed landed notices; the periodic cycle and a reconciliation will catch up");
                    periodic.reset_immediately();
                    reconcile.reset_immediately();
                }
                Err(broadcast::error::RecvError::Closed) => landed = None,
            },
            _ = debounce.tick(), if !dirty.is_empty() => {
                let changes = std::mem::take(&mut dirty);
                if let Err(e) = scheduler.on_changes(&changes).await {
                    warn!(error = %e, dates = changes.len(), "recompute on notices failed; retried with the next notice or cycle");
                    scheduler.metrics.notice_failed();
                    merge(&mut failed, changes);
                }
                scheduler.flaky_if_due().await;
            }
            _ = periodic.tick(), if config.cycles() => {
                merge(&mut dirty, std::mem::take(&mut failed));
                if let Err(e) = scheduler.cycle().await {
                    warn!(error = %e, "compute cycle failed");
                    scheduler.metrics.cycle(1, 0, Duration::ZERO);
                }
            }
            _ = reconcile.tick(), if reconciling => {
                merge(&mut dirty, std::mem::take(&mut failed));
                if let Err(e) = scheduler.reconcile().await {
                    warn!(error = %e, "reconciliation failed; tried again next interval");
                    scheduler.metrics.reconcile_failed();
                }
            }
            _ = flaky_tick.tick() => { scheduler.flaky_if_due().await; }
        }
    }
    info!("compute stopped");
    Ok(())
}

/// Adds `changes` (dates, with the repositories that changed on each, `None`: any) to `into`.
fn merge(
    into: &mut BTreeMap<NaiveDate, Option<BTreeSet<String>>>,
    changes: BTreeMap<NaiveDate, Option<BTreeSet<String>>>,
) {
    for (date, repositories) in changes {
        let entry = into.entry(date).or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), repositories) {
            (Some(known), Some(repositories)) => known.extend(repositories),
            _ => *entry = None,
        }
    }
}

async fn recv(landed: &mut Option<broadcast::Receiver<Landed>>) -> Result<Landed, broadcast::error::RecvError> {
    match landed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
