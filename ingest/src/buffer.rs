//! What one Kafka partition has consumed but not yet written: decoded rows, rejected messages,
//! and the offset range they cover. Rows are assigned to the hour partition of their
//! `finished_at` only when taken, and copied into each hour's file only when staged.
//!
//! Pure bookkeeping, no I/O: [`PartitionBuffer::take`] hands the flush a [`PendingFlush`] that
//! names every file deterministically from the Kafka coordinates.
//!
//! All hours share one set of Arrow builders. (Each hour had its own before: ~130 KiB of builder
//! capacity per hour that the memory budget did not see, so valid events spread over 200,000
//! distinct hours — the accepted window goes back to 2000 — ran the ingest out of memory, and
//! again after each restart.) An hour costs only its stats now (~200 bytes), counted in
//! [`PartitionBuffer::bytes`], and a buffer holding [`MAX_HOURS_PER_FLUSH`] hours flushes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use testlake_schemas::landed::MAX_LISTED_REPOSITORIES;
use testlake_schemas::tables::{Lineage, RejectedBuilder, ResultsBuilder};
use testlake_schemas::{DataFileName, DataFilePath, EventView, HourPartition, Rejection, Table};

/// Most hour partitions one flush writes (one file and one landed notice each). A buffer that
/// reaches it is due, so a flush's files, its log entry and its notices stay bounded however
/// widely a partition's events are spread in time.
pub const MAX_HOURS_PER_FLUSH: usize = 256;

/// Arrow bytes one `results` row takes besides its strings' bytes: 14 string offsets, the tags'
/// map offset, three 32-bit and five 64-bit values, validity bits.
const RESULT_ROW_BYTES: usize = 14 * 4 + 4 + 3 * 4 + 5 * 8 + 2;
/// The same for a `rejected` row (3 string and 2 binary offsets, two 64-bit values, one 32-bit).
const REJECTED_ROW_BYTES: usize = 5 * 4 + 2 * 8 + 4 + 1;
/// What an hour's entry costs besides its repositories' bytes: the map node, the stats, and per
/// repository a `String` in a set node.
const HOUR_BYTES: usize = 2 * size_of::<(i64, HourStats)>();
const REPOSITORY_BYTES: usize = 2 * size_of::<String>();

/// What a flush must know of one hour partition's rows, besides the rows themselves.
struct HourStats {
    rows: usize,
    min_time: DateTime<Utc>,
    max_time: DateTime<Utc>,
    /// Up to `MAX_LISTED_REPOSITORIES + 1` of the rows' repositories (more means "many").
    repositories: BTreeSet<String>,
}

/// The buffer of one assigned Kafka partition.
pub struct PartitionBuffer {
    topic: Arc<str>,
    partition: i32,
    offsets: Option<(i64, i64)>,
    /// Every hour's valid rows, in arrival order.
    results: ResultsBuilder,
    /// Each hour's stats, by hours since the epoch (the order of [`HourPartition`]s).
    hours: BTreeMap<i64, HourStats>,
    rejected: RejectedBuilder,
    rejected_hour: Option<HourPartition>,
    /// Message bytes (payloads and keys) pushed.
    input_bytes: usize,
    /// What the rows take in the builders, as appended (see [`Self::bytes`]).
    row_bytes: usize,
    /// What the hours' stats take.
    hour_bytes: usize,
    opened_at: Option<Instant>,
    /// Events of UTC dates more than this many days old are rejected (`past_retention`): the
    /// compactor drops such dates from the lake. 0: no limit.
    retention_days: u32,
}

/// One file a flush must write.
pub struct PendingFile {
    pub path: DataFilePath,
    pub batch: RecordBatch,
    /// The rows of `batch` this file holds, when not all: the hours of a flush share one batch.
    pub rows: Option<UInt32Array>,
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
    /// The rows' repositories; `None` when too many to list.
    pub repositories: Option<Vec<String>>,
}

impl PendingFile {
    /// How many rows the file holds.
    pub fn num_rows(&self) -> usize {
        self.rows.as_ref().map_or(self.batch.num_rows(), UInt32Array::len)
    }

    /// The file's rows alone, unsorted.
    #[cfg(test)]
    fn own_rows(&self) -> RecordBatch {
        self.rows.as_ref().map_or_else(
            || self.batch.clone(),
            |rows| arrow::compute::take_record_batch(&self.batch, rows).expect("rows of the batch"),
        )
    }
}

/// Everything a flush of one Kafka partition must make durable before committing `next_offset`.
pub struct PendingFlush {
    pub topic: Arc<str>,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub files: Vec<PendingFile>,
    pub valid: usize,
    pub rejected: usize,
}

impl PendingFlush {
    /// The Kafka offset to commit once every file is durable.
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// What became of one pushed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    Accepted,
    Rejected(Rejection),
}

impl PartitionBuffer {
    pub fn new(topic: Arc<str>, partition: i32) -> Self {
        // Builders start as a flush leaves them: empty, without the room for 1,024 rows that
        // `Default` gives them (~130 KiB for `results`), which an idle partition would hold for
        // nothing and the budget would not see.
        let (mut results, mut rejected) = (ResultsBuilder::default(), RejectedBuilder::default());
        let _ = (results.finish(), rejected.finish());
        Self {
            topic,
            partition,
            offsets: None,
            results,
            hours: BTreeMap::new(),
            rejected,
            rejected_hour: None,
            input_bytes: 0,
            row_bytes: 0,
            hour_bytes: 0,
            opened_at: None,
            retention_days: 0,
        }
    }

    /// Rejects events of dates past a retention of `days` (0: none).
    pub fn with_retention(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    pub fn rows(&self) -> usize {
        self.results.len() + self.rejected.len()
    }

    /// How many hour partitions the buffered rows fall in (a file each when flushed).
    pub fn hours(&self) -> usize {
        self.hours.len()
    }

    /// What the buffer counts against the flush thresholds and the memory budget: its input
    /// bytes, or the memory it takes if that is more — its rows as appended plus half again for
    /// the room the builders have grown to (they double: between none and as much again), and
    /// its hours' stats. Input bytes are the larger for ordinary events (JSON spends bytes on
    /// keys); memory is, for small events, long topic names, or events spread over many hours.
    pub fn bytes(&self) -> usize {
        self.input_bytes.max(self.row_bytes + self.row_bytes / 2 + self.hour_bytes)
    }

    pub fn age(&self, now: Instant) -> Duration {
        self.opened_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Decodes one message at `offset` and buffers it as a result row or a rejected row.
    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>, now: DateTime<Utc>) -> Pushed {
        let decoded = EventView::decode(payload.unwrap_or_default(), now);
        self.push_decoded(offset, key, payload, decoded, now)
    }

    /// Buffers one message at `offset` already decoded (by [`decode_all`]).
    pub fn push_decoded(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        decoded: Result<EventView<'_>, Rejection>,
        now: DateTime<Utc>,
    ) -> Pushed {
        self.offsets = Some(match self.offsets {
            None => (offset, offset),
            Some((first, last)) => (first.min(offset), last.max(offset)),
        });
        self.opened_at.get_or_insert_with(Instant::now);
        let bytes = payload.unwrap_or_default();
        self.input_bytes += bytes.len() + key.map_or(0, <[u8]>::len);
        let from = Lineage { topic: &self.topic, partition: self.partition, offset, ingested_at: now };
        match decoded.and_then(|event| self.retained(event, now)) {
            Ok(event) => {
                self.results.append_view(&event, from);
                self.row_bytes += RESULT_ROW_BYTES + self.topic.len() + strings_bytes(&event);
                self.hour_bytes += self.note_hour(&event);
                Pushed::Accepted
            }
            Err(why) => {
                self.rejected_hour.get_or_insert(HourPartition::of(now));
                self.row_bytes += REJECTED_ROW_BYTES + self.topic.len() + bytes.len() + key.map_or(0, <[u8]>::len);
                self.row_bytes += why.code().len() + why.to_string().len();
                self.rejected.append(key, payload, &why, from);
                Pushed::Rejected(why)
            }
        }
    }

    /// The event, unless it falls on a UTC date wholly older than the retention.
    fn retained<'a>(&self, event: EventView<'a>, now: DateTime<Utc>) -> Result<EventView<'a>, Rejection> {
        if self.retention_days == 0 {
            return Ok(event);
        }
        let earliest = (now - chrono::Duration::days(i64::from(self.retention_days))).date_naive();
        if event.finished_at.date_naive() < earliest {
            return Err(Rejection::PastRetention { value: event.finished_at, days: self.retention_days, earliest });
        }
        Ok(event)
    }

    /// Adds a row to its hour's stats; returns the bytes this took.
    fn note_hour(&mut self, event: &EventView<'_>) -> usize {
        let t = event.finished_at;
        let mut added = 0;
        let hour = self.hours.entry(hour_number(t)).or_insert_with(|| {
            added += HOUR_BYTES;
            HourStats { rows: 0, min_time: t, max_time: t, repositories: BTreeSet::new() }
        });
        hour.rows += 1;
        hour.min_time = hour.min_time.min(t);
        hour.max_time = hour.max_time.max(t);
        if hour.repositories.len() <= MAX_LISTED_REPOSITORIES && !hour.repositories.contains(event.repository.as_ref())
        {
            hour.repositories.insert(event.repository.to_string());
            added += REPOSITORY_BYTES + event.repository.len();
        }
        added
    }

    /// Takes everything buffered as the files of one flush, to be written by commit-log entry
    /// `entry`, leaving the buffer empty.
    pub fn take(&mut self, entry: u64) -> Result<Option<PendingFlush>, ArrowError> {
        let Some((first_offset, last_offset)) = self.offsets.take() else {
            return Ok(None);
        };
        let name =
            DataFileName { topic: self.topic.to_string(), partition: self.partition, first_offset, last_offset, entry };
        let hours = std::mem::take(&mut self.hours);
        let valid = self.results.len();
        let batch = self.results.finish()?;
        let rows = rows_by_hour(&batch, &hours)?;
        let mut files = Vec::with_capacity(hours.len() + 1);
        for ((&hour, stats), rows) in hours.iter().zip(rows) {
            let partition = HourPartition::of(stats.min_time);
            debug_assert_eq!(hour, hour_number(stats.max_time));
            files.push(PendingFile {
                path: DataFilePath { table: Table::Results, partition, file: name.clone() },
                batch: batch.clone(),
                rows,
                min_time: Some(stats.min_time),
                max_time: Some(stats.max_time),
                repositories: (stats.repositories.len() <= MAX_LISTED_REPOSITORIES)
                    .then(|| stats.repositories.iter().cloned().collect()),
            });
        }
        let rejected = self.rejected.len();
        if let Some(partition) = self.rejected_hour.take() {
            files.push(PendingFile {
                path: DataFilePath { table: Table::Rejected, partition, file: name },
                batch: self.rejected.finish()?,
                rows: None,
                min_time: None,
                max_time: None,
                repositories: None,
            });
        }
        self.input_bytes = 0;
        self.row_bytes = 0;
        self.hour_bytes = 0;
        self.opened_at = None;
        Ok(Some(PendingFlush {
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            first_offset,
            last_offset,
            files,
            valid,
            rejected,
        }))
    }
}

/// Hours since the epoch: the order, and the identity, of an instant's [`HourPartition`].
/// Below this many messages [`decode_all`] decodes on the calling thread alone: a thread costs
/// tens of microseconds to start, a message about one to decode.
const DECODE_SPLIT_AT: usize = 128;

/// Decodes messages' payloads, in order, at `now`: a batch of at least [`DECODE_SPLIT_AT`] on two
/// threads (half each). The consume loop decodes what librdkafka had fetched this way and then
/// appends each to its buffer in order: decoding was a third of the loop thread, which one
/// ingest member keeps busy, while the other core had room.
pub fn decode_all<'a>(payloads: &[&'a [u8]], now: DateTime<Utc>) -> Vec<Result<EventView<'a>, Rejection>> {
    let decode = |payloads: &[&'a [u8]]| payloads.iter().map(|p| EventView::decode(p, now)).collect::<Vec<_>>();
    if payloads.len() < DECODE_SPLIT_AT {
        return decode(payloads);
    }
    let (first, second) = payloads.split_at(payloads.len() / 2);
    std::thread::scope(|scope| {
        let helper = scope.spawn(|| decode(second));
        let mut decoded = decode(first);
        decoded.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        decoded
    })
}

fn hour_number(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// The bytes of an event's strings, as the builders store them.
fn strings_bytes(e: &EventView<'_>) -> usize {
    let optional = |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().map_or(0, |s| s.len());
    let tags: usize = e.tags.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    36 + e.repository.len()
        + e.branch.len()
        + e.commit_sha.len()
        + e.run_id.len()
        + optional(&e.job_id)
        + e.suite.len()
        + e.test_id.len()
        + e.name.len()
        + e.status.as_str().len()
        + optional(&e.ci_provider)
        + optional(&e.host)
        + optional(&e.failure_message)
        + tags
}

/// Which of the buffered rows each hour holds, in the order of `hours`: a counting sort of row
/// numbers on `finished_at`'s hour, the rows themselves not copied (staging copies each hour's
/// rows once, into its file's order: [`testlake_schemas::files::sort_rows`]). One hour, the
/// usual case, holds every row (`None`).
fn rows_by_hour(batch: &RecordBatch, hours: &BTreeMap<i64, HourStats>) -> Result<Vec<Option<UInt32Array>>, ArrowError> {
    if hours.len() <= 1 {
        return Ok(hours.values().map(|_| None).collect());
    }
    let keys: Vec<i64> = hours.keys().copied().collect();
    let mut next: Vec<usize> = hours
        .values()
        .scan(0, |start, h| {
            let this = *start;
            *start += h.rows;
            Some(this)
        })
        .collect();
    let starts = next.clone();
    let finished_at = batch
        .column_by_name("finished_at")
        .ok_or_else(|| ArrowError::SchemaError("results rows without finished_at".into()))?
        .as_primitive::<TimestampMicrosecondType>();
    let mut indices = vec![0u32; batch.num_rows()];
    for (row, micros) in finished_at.values().iter().enumerate() {
        let hour = micros.div_euclid(3_600_000_000);
        let slot = keys.binary_search(&hour).map_err(|_| ArrowError::ComputeError(format!("row {row}: no hour")))?;
        indices[next[slot]] = row as u32;
        next[slot] += 1;
    }
    let indices = UInt32Array::from(indices);
    Ok(starts.iter().zip(hours.values()).map(|(&start, h)| Some(indices.slice(start, h.rows))).collect())
}

#[cfg(test)]
mod tests;
