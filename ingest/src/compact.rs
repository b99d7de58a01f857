//! Compaction of closed hours: an hour partition's many small ingest files merged into few large
//! ones, switched atomically for every reader that follows the lake's logs.
//!
//! A compaction is an entry of the table's compaction log (`_compaction/results/`), decided like
//! a flush (see `ingest/COMMIT_PROTOCOL.md`):
//! 1. create `n.intent.json` (create-only) naming the inputs — committed files of one hour — and
//!    the outputs, one per group of inputs; if `n` is taken, another compactor got there first;
//! 2. create every output (create-only): the group's rows, sorted like an ingest file — a
//!    streaming merge of the inputs, which are sorted already (`merge.rs`);
//! 3. create `n.outcome.json` = committed — if a compactor aborted the entry meanwhile (it found
//!    it stale), this one deletes its outputs;
//! 4. after a grace period, delete the inputs, then write `n.cleaned.json`.
//!
//! [`CommittedFiles`] shows the outputs instead of the inputs from the moment step 3 succeeds;
//! the Delta table ([`testlake_schemas::delta`]) once the compaction is published to it, right
//! after step 3 and again, if that failed, before step 4 (inputs still in the table are never
//! deleted). Only files the Delta table shows are compacted, so a compaction's inputs are
//! either all in the table or, once it is published, none.
//! A compactor that finds an entry with an intent older than [`CompactConfig::stale_after`] and
//! no outcome aborts it and deletes its outputs; a younger one belongs to a live compactor, and
//! its hour is left alone this pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use testlake_schemas::delta::{self, DeltaError, Publication};
use testlake_schemas::files::{
    Created, RESULTS_SORT, WriteError, encode_parquet, put_create, sort_batch, writer_properties,
};
use testlake_schemas::log::{
    CleanedRecord, CompactionIntent, CompactionKind, EntryFile, EntryObject, Intent, Outcome, OutcomeRecord,
    compaction_dir, entry_path_in,
};
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::paths::{CompactedFileName, HourFilePath};
use testlake_schemas::{HourPartition, Lake, Table};
use tracing::{info, warn};

use crate::crash::{CrashPoint, Crasher};
use crate::log_writer::{CommitError, create, decide_at, delete_files, list_entries, read_json};

mod merge;

/// When and how hours are compacted.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    /// Time between passes; zero turns compaction off.
    pub every: Duration,
    /// An hour is closed, and may be compacted, this long after it ends.
    pub closed_after: Duration,
    /// Rows per output file at most; files this large already are left as they are.
    pub target_rows: u64,
    /// Inputs are deleted this long after the compaction commits, so that statements planned on
    /// them finish. Readers that list folders instead of following the log see a compacted
    /// hour's rows twice for this long.
    pub grace: Duration,
    /// An entry left without an outcome this long is taken for a crashed compactor's.
    pub stale_after: Duration,
    /// `results` of a UTC date are dropped once the whole date is more than this many days old
    /// (and `closed_after` more has passed); 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(300),
            closed_after: Duration::from_secs(600),
            target_rows: 1_000_000,
            grace: Duration::from_secs(10),
            stale_after: Duration::from_secs(600),
            retention_days: 0,
        }
    }
}

impl CompactConfig {
    /// No compaction in this process.
    pub fn off() -> Self {
        Self { every: Duration::ZERO, ..Self::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Log(#[from] testlake_schemas::log_reader::LogReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("compaction {seq}: {message}")]
    Mismatch { seq: u64, message: String },
    #[error(transparent)]
    Delta(#[from] DeltaError),
}

type Result<T, E = CompactError> = std::result::Result<T, E>;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Compactions committed.
    pub committed: usize,
    /// Input files replaced, output files written, rows moved.
    pub inputs: usize,
    pub outputs: usize,
    pub rows: u64,
    /// Entries left by others: aborted as stale, or skipped as another compactor's.
    pub aborted: usize,
    pub busy_hours: usize,
    /// Superseded or aborted files deleted.
    pub deleted: usize,
    /// Aborted ingest entries swept again (their files deleted, marked cleaned).
    pub swept: usize,
    /// Dates dropped for being older than the retention, and their files.
    pub expired_dates: usize,
    pub expired_files: usize,
    /// Hours that failed (logged); the next pass tries them again.
    pub failed: usize,
}

/// The compactor of one process. Any number may run against one lake: the log decides.
pub struct Compactor {
    lake: Lake,
    config: CompactConfig,
    writer: String,
    committed: CommittedFiles,
    /// Set by [`Self::run`]: a pass stops between hours, and leaves the grace wait, on shutdown.
    shutdown: tokio_util::sync::CancellationToken,
}

impl Compactor {
    pub fn new(lake: Lake, config: CompactConfig) -> Self {
        let writer = format!("compactor-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let shutdown = tokio_util::sync::CancellationToken::new();
        Self { lake, config, writer, committed: CommittedFiles::default(), shutdown }
    }

    /// Runs a pass every [`CompactConfig::every`] until `shutdown` (a pass under way finishes).
    pub async fn run(mut self, shutdown: tokio_util::sync::CancellationToken) {
        if self.config.every.is_zero() {
            return;
        }
        info!(every = ?self.config.every, closed_after = ?self.config.closed_after,
            target_rows = self.config.target_rows, grace = ?self.config.grace, "compaction started");
        self.shutdown = shutdown.clone();
        let mut tick = tokio::time::interval(self.config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.pass(&Crasher::default()).await {
                        warn!(error = %e, "compaction pass failed; the next one retries");
                    }
                }
            }
        }
    }

    /// One pass: finishes what earlier compactions left (stale entries aborted, superseded files
    /// deleted), compacts every closed hour that has at least two small files, then waits out the
    /// grace period and deletes the inputs it replaced.
    pub async fn pass(&mut self, crash: &Crasher) -> Result<PassReport> {
        let mut report = PassReport::default();
        let dir = compaction_dir(Table::Results);
        let listed = list_entries(&self.lake, &dir).await?;
        let now = Utc::now();
        let mut next_seq = listed.keys().next_back().map_or(0, |s| s + 1);
        let mut busy = BTreeSet::new();
        let mut to_clean = Vec::new();
        for (&seq, entry) in &listed {
            if !entry.intent || entry.cleaned {
                continue;
            }
            let intent: CompactionIntent =
                read_json(&self.lake, &entry_path_in(&dir, seq, EntryObject::Intent)).await?;
            let outcome_path = entry_path_in(&dir, seq, EntryObject::Outcome);
            let decided = if entry.outcome {
                let record: OutcomeRecord = read_json(&self.lake, &outcome_path).await?;
                Some((record.outcome, record.at))
            } else if age(now, intent.created_at) >= self.config.stale_after {
                let outcome = decide_at(&self.lake, &outcome_path, seq, Outcome::Aborted, &self.writer).await?;
                report.aborted += usize::from(outcome == Outcome::Aborted);
                Some((outcome, now))
            } else {
                match intent.kind {
                    CompactionKind::Merge => _ = busy.insert(HourPartition { date: intent.date, hour: intent.hour }),
                    CompactionKind::Expire => {
                        busy.extend((0..24).map(|hour| HourPartition { date: intent.date, hour }))
                    }
                }
                None
            };
            if let Some((outcome, at)) = decided {
                to_clean.push((intent, outcome, at));
            }
        }
        report.busy_hours = busy.len();
        for (intent, outcome, at) in to_clean {
            if outcome == Outcome::Aborted || age(now, at) >= self.config.grace {
                report.deleted += self.clean(&dir, &intent, outcome).await?;
            }
        }

        self.committed.refresh(&self.lake).await?;
        report.swept = self.sweep(now).await?;
        let published = delta::results_files(&self.lake).await?.unwrap_or_default();
        let mut done = Vec::new();
        let expired = self.expired(now, &published);
        // Dates being dropped first, and none of their hours merged.
        let merges: Vec<_> = (self.plan(now, &published).into_iter())
            .filter(|(hour, _)| !expired.contains_key(&hour.date))
            .map(|(hour, groups)| (hour, CompactionKind::Merge, groups))
            .collect();
        let expiries = (expired.into_iter())
            .map(|(date, files)| (HourPartition { date, hour: 0 }, CompactionKind::Expire, vec![files]));
        for (hour, kind, groups) in expiries.chain(merges) {
            if self.shutdown.is_cancelled() {
                break;
            }
            let touched = |h: &HourPartition| h.date == hour.date && (kind == CompactionKind::Expire || *h == hour);
            if busy.iter().any(touched) {
                continue;
            }
            // Entries are numbered from the listing above. Any result but a commit ends the
            // loop: another compactor may have taken this number, or entries after it, for an
            // hour this pass would then compact without seeing its pending entry.
            match self.compact(&dir, next_seq, hour, kind, groups, crash).await {
                Ok(Some(intent)) => {
                    if let Err(e) = self.publish(&intent).await {
                        warn!(%hour, seq = next_seq, error = %e, "compaction not published to the Delta table yet; tried again before its inputs are deleted");
                    }
                    match kind {
                        CompactionKind::Merge => {
                            report.committed += 1;
                            report.inputs += intent.inputs.len();
                            report.outputs += intent.outputs.len();
                            report.rows += intent.outputs.iter().map(|f| f.rows).sum::<u64>();
                        }
                        CompactionKind::Expire => {
                            report.expired_dates += 1;
                            report.expired_files += intent.inputs.len();
                        }
                    }
                    done.push(intent);
                    next_seq += 1;
                }
                Ok(None) => {
                    report.busy_hours += 1;
                    break;
                }
                Err(e) => {
                    warn!(%hour, seq = next_seq, error = %e, "compaction failed; the next pass retries");
                    report.failed += 1;
                    break;
                }
            }
        }
        if !done.is_empty() {
            // On shutdown the replaced files stay: the next pass, in any process, deletes them.
            tokio::select! {
                () = tokio::time::sleep(self.config.grace) => {
                    for intent in &done {
                        report.deleted += self.clean(&dir, intent, Outcome::Committed).await?;
                    }
                }
                () = self.shutdown.cancelled() => info!("stopping: the next pass deletes the replaced files"),
            }
        }
        if report != PassReport::default() {
            info!(?report, "compaction pass");
        }
        Ok(report)
    }

    /// Deletes what a decided entry made obsolete and records it; returns how many files.
    async fn clean(&self, dir: &str, intent: &CompactionIntent, outcome: Outcome) -> Result<usize> {
        let obsolete = match outcome {
            Outcome::Committed => {
                self.publish(intent).await?;
                &intent.inputs
            }
            Outcome::Aborted => &intent.outputs,
        };
        self.delete_and_mark(dir, intent.seq, obsolete).await?;
        Ok(obsolete.len())
    }

    /// Shows a committed compaction in the Delta table (if it does not already).
    async fn publish(&self, intent: &CompactionIntent) -> Result<()> {
        let publication = Publication::Compaction {
            seq: intent.seq,
            kind: intent.kind,
            inputs: &intent.inputs,
            outputs: &intent.outputs,
        };
        let published = self.lake.delta().publish(&self.lake, publication).await?;
        info!(seq = intent.seq, ?published, "compaction published to the Delta table");
        Ok(())
    }

    /// Deletes `files` (idempotent) and writes entry `seq`'s `cleaned` marker in `dir`.
    async fn delete_and_mark(&self, dir: &str, seq: u64, files: &[EntryFile]) -> Result<()> {
        delete_files(&self.lake, files).await?;
        let record = CleanedRecord { seq, deleted: files.iter().map(|f| f.path.clone()).collect(), at: Utc::now() };
        create(&self.lake, &entry_path_in(dir, seq, EntryObject::Cleaned), serde_json::to_vec(&record).expect("json"))
            .await?;
        Ok(())
    }

    /// Deletes again the files of ingest entries aborted more than `stale_after` ago: a writer
    /// fenced while paused may have written one after the abort and crashed before learning it
    /// was fenced. Each entry is swept once (then marked cleaned). Returns how many.
    async fn sweep(&mut self, now: DateTime<Utc>) -> Result<usize> {
        let old: Vec<(String, u64)> = self
            .committed
            .unswept()
            .filter(|(_, _, at)| age(now, *at) >= self.config.stale_after)
            .map(|(dir, seq, _)| (dir.to_owned(), seq))
            .collect();
        for (dir, seq) in &old {
            let intent: Intent = read_json(&self.lake, &entry_path_in(dir, *seq, EntryObject::Intent)).await?;
            self.delete_and_mark(dir, *seq, &intent.files).await?;
            info!(log = %dir, seq, files = intent.files.len(), "swept an aborted ingest entry");
            self.committed.swept(dir, *seq);
        }
        Ok(old.len())
    }

    /// The closed hours worth compacting, each with its groups of inputs (see [`plan_groups`]):
    /// of the files the Delta table shows (`published`), none that are not yet there.
    fn plan(
        &self,
        now: DateTime<Utc>,
        published: &std::collections::HashSet<String>,
    ) -> BTreeMap<HourPartition, Vec<Vec<EntryFile>>> {
        let mut by_hour: BTreeMap<HourPartition, Vec<EntryFile>> = BTreeMap::new();
        for file in self.committed.results_files().filter(|f| published.contains(&f.path)) {
            by_hour.entry(HourPartition { date: file.date, hour: file.hour }).or_default().push(file.clone());
        }
        let closed = |hour: &HourPartition| {
            let end = hour.start() + chrono::Duration::hours(1);
            age(now, end) >= self.config.closed_after
        };
        by_hour
            .into_iter()
            .filter(|(hour, _)| closed(hour))
            .map(|(hour, files)| (hour, plan_groups(files, self.config.target_rows)))
            .filter(|(_, groups)| !groups.is_empty())
            .collect()
    }

    /// The dates past the retention that still have `results` files, with those files (of the
    /// files the Delta table shows: one published later is dropped by the next pass).
    fn expired(
        &self,
        now: DateTime<Utc>,
        published: &std::collections::HashSet<String>,
    ) -> BTreeMap<chrono::NaiveDate, Vec<EntryFile>> {
        if self.config.retention_days == 0 {
            return BTreeMap::new();
        }
        let keep = chrono::Duration::days(i64::from(self.config.retention_days));
        let expired = |date: chrono::NaiveDate| {
            let end = date.and_time(chrono::NaiveTime::MIN).and_utc() + chrono::Duration::days(1);
            now - keep >= end && age(now - keep, end) >= self.config.closed_after
        };
        let mut files: BTreeMap<chrono::NaiveDate, Vec<EntryFile>> = BTreeMap::new();
        for file in self.committed.results_files().filter(|f| expired(f.date) && published.contains(&f.path)) {
            files.entry(file.date).or_default().push(file.clone());
        }
        files
    }

    /// Compacts one hour (a merge of its `groups`) or drops a date (an expiry of the one group
    /// of its files) as entry `seq`. `None`: another compactor took `seq` (or decided it).
    async fn compact(
        &self,
        dir: &str,
        seq: u64,
        hour: HourPartition,
        kind: CompactionKind,
        groups: Vec<Vec<EntryFile>>,
        crash: &Crasher,
    ) -> Result<Option<CompactionIntent>> {
        let outputs: Vec<EntryFile> = match kind {
            CompactionKind::Merge => {
                groups.iter().enumerate().map(|(n, group)| merged_entry(hour, seq, n, group)).collect()
            }
            CompactionKind::Expire => Vec::new(),
        };
        let intent = CompactionIntent {
            seq,
            table: Table::Results,
            kind,
            date: hour.date,
            hour: hour.hour,
            writer: self.writer.clone(),
            inputs: groups.iter().flatten().cloned().collect(),
            outputs,
            created_at: Utc::now(),
        };
        let intent_path = entry_path_in(dir, seq, EntryObject::Intent);
        if !create(&self.lake, &intent_path, serde_json::to_vec(&intent).expect("json")).await? {
            info!(%hour, seq, "another compactor took this entry");
            return Ok(None);
        }
        crash.reached(CrashPoint::CompactAfterIntent);
        let outcome_path = entry_path_in(dir, seq, EntryObject::Outcome);
        if let Err(e) = self.write_outputs(&intent, &groups, crash).await {
            // Give the entry up now rather than leave it to go stale.
            if decide_at(&self.lake, &outcome_path, seq, Outcome::Aborted, &self.writer).await? == Outcome::Aborted {
                delete_files(&self.lake, &intent.outputs).await?;
            }
            return Err(e);
        }
        match decide_at(&self.lake, &outcome_path, seq, Outcome::Committed, &self.writer).await? {
            Outcome::Committed => {
                match kind {
                    CompactionKind::Merge => {
                        info!(%hour, seq, inputs = intent.inputs.len(), outputs = intent.outputs.len(), "compacted");
                    }
                    CompactionKind::Expire => {
                        info!(date = %hour.date, seq, files = intent.inputs.len(), "expired: past the retention");
                    }
                }
                crash.reached(CrashPoint::CompactAfterOutcome);
                Ok(Some(intent))
            }
            Outcome::Aborted => {
                warn!(%hour, seq, "fenced: another compactor aborted this entry as stale");
                delete_files(&self.lake, &intent.outputs).await?;
                Ok(None)
            }
        }
    }

    async fn write_outputs(&self, intent: &CompactionIntent, groups: &[Vec<EntryFile>], crash: &Crasher) -> Result<()> {
        for (output, group) in intent.outputs.iter().zip(groups) {
            let inputs = self.fetch(group).await?;
            // CPU-bound for seconds on a busy hour: off the runtime that also runs the ingest.
            let path = output.path.clone();
            let (bytes, rows) = tokio::task::spawn_blocking(move || merge_group(&inputs, &path))
                .await
                .map_err(|e| CompactError::Mismatch { seq: intent.seq, message: format!("merge panicked: {e}") })??;
            if rows != output.rows {
                return Err(CompactError::Mismatch {
                    seq: intent.seq,
                    message: format!("inputs hold {rows} rows, their log entries say {}", output.rows),
                });
            }
            if put_create(&self.lake, &output.path, bytes).await? == Created::AlreadyExisted {
                return Err(CompactError::Mismatch { seq: intent.seq, message: format!("{} exists", output.path) });
            }
            crash.reached(CrashPoint::CompactMidOutput);
        }
        Ok(())
    }

    /// The bytes of a group's files.
    async fn fetch(&self, group: &[EntryFile]) -> Result<Vec<Bytes>> {
        use futures::StreamExt;
        // Each read owns what it needs: the stream is polled from a task that must be `Send`.
        let reads: Vec<_> = group
            .iter()
            .map(|file| {
                let (store, location, path) =
                    (Arc::clone(self.lake.store()), self.lake.path(&file.path), file.path.clone());
                async move {
                    let read =
                        |e: object_store::Error| CompactError::Read { path: path.clone(), message: e.to_string() };
                    store.get(&location).await.map_err(read)?.bytes().await.map_err(read)
                }
            })
            .collect();
        futures::stream::iter(reads).buffered(FETCHES).try_collect().await
    }
}

/// Inputs a merge reads at once (more are merged in rounds): bounds the memory of an hour of
/// many tiny files.
const MERGE_FAN_IN: usize = 64;

/// Input files fetched at once.
const FETCHES: usize = 8;

/// One output file from a group's files: merged when each is sorted (every file testlake
/// writes is), else concatenated and sorted. Returns the file and its row count.
fn merge_group(inputs: &[Bytes], path: &str) -> Result<(Bytes, u64)> {
    let read = |message: String| CompactError::Read { path: path.to_owned(), message };
    match merge::merge_sorted_bounded(inputs, RESULTS_SORT, writer_properties(), MERGE_FAN_IN)
        .map_err(|e| read(e.to_string()))?
    {
        merge::Merged::Written { bytes, rows } => return Ok((bytes, rows)),
        merge::Merged::Unsorted { input } => warn!(path, input, "an input is not sorted: sorting the group instead"),
    }
    let mut batches = Vec::new();
    for bytes in inputs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .and_then(|b| b.build())
            .map_err(|e| read(e.to_string()))?;
        for batch in reader {
            batches.push(batch.map_err(|e| read(e.to_string()))?);
        }
    }
    let schema = batches.first().map_or_else(testlake_schemas::tables::results_schema, |b| b.schema());
    let all = arrow::compute::concat_batches(&schema, &batches).map_err(|e| read(e.to_string()))?;
    let arrow = |source| WriteError::Arrow { path: path.to_owned(), source };
    let sorted = sort_batch(&all, RESULTS_SORT).map_err(arrow)?;
    Ok((encode_parquet(&sorted, path)?, sorted.num_rows() as u64))
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or(Duration::ZERO)
}

/// Groups an hour's files into outputs of at most `target_rows` rows: the files smaller than
/// the target, in path order, packed greedily; only groups of two or more files are worth
/// writing, so an hour already compacted yields none.
pub fn plan_groups(mut files: Vec<EntryFile>, target_rows: u64) -> Vec<Vec<EntryFile>> {
    files.retain(|f| f.rows < target_rows);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut groups: Vec<Vec<EntryFile>> = Vec::new();
    let mut rows = 0;
    for file in files {
        match groups.last_mut() {
            Some(group) if rows + file.rows <= target_rows => {
                rows += file.rows;
                group.push(file);
            }
            _ => {
                rows = file.rows;
                groups.push(vec![file]);
            }
        }
    }
    groups.retain(|g| g.len() > 1);
    groups
}

/// What the log records about the output of `group`: its rows, time range and repositories
/// follow from the inputs' entries.
fn merged_entry(hour: HourPartition, seq: u64, n: usize, group: &[EntryFile]) -> EntryFile {
    let repositories = group.iter().try_fold(BTreeSet::new(), |mut all, f| {
        all.extend(f.repositories.as_ref()?.iter().cloned());
        Some(all)
    });
    EntryFile {
        path: HourFilePath::Compacted {
            table: Table::Results,
            partition: hour,
            file: CompactedFileName { seq, n: u32::try_from(n).unwrap_or(u32::MAX) },
        }
        .to_string(),
        table: Table::Results,
        date: hour.date,
        hour: hour.hour,
        rows: group.iter().map(|f| f.rows).sum(),
        min_time: group.iter().filter_map(|f| f.min_time).min(),
        max_time: group.iter().filter_map(|f| f.max_time).max(),
        repositories: repositories.map(|r| r.into_iter().collect()),
        bytes: None,
    }
}

#[cfg(test)]
mod tests;
