//! What one Kafka partition has consumed but not yet written: decoded rows split by the hour
//! partition of their `finished_at`, rejected messages, and the offset range they cover.
//!
//! Pure bookkeeping, no I/O: [`PartitionBuffer::take`] hands the flush a [`PendingFlush`] that
//! names every file deterministically from the Kafka coordinates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use testlake_schemas::tables::{Lineage, RejectedBuilder, ResultsBuilder};
use testlake_schemas::{DataFileName, DataFilePath, EventView, HourPartition, Table};

/// Rows of one hour partition, with their event-time range.
#[derive(Default)]
struct HourRows {
    rows: ResultsBuilder,
    min_time: Option<DateTime<Utc>>,
    max_time: Option<DateTime<Utc>>,
    /// Up to `MAX_LISTED_REPOSITORIES + 1` of the rows' repositories (more means "many").
    repositories: std::collections::BTreeSet<String>,
}

/// The buffer of one assigned Kafka partition.
pub struct PartitionBuffer {
    topic: Arc<str>,
    partition: i32,
    offsets: Option<(i64, i64)>,
    hours: BTreeMap<HourPartition, HourRows>,
    rejected: RejectedBuilder,
    rejected_hour: Option<HourPartition>,
    bytes: usize,
    opened_at: Option<Instant>,
}

/// One file a flush must write.
pub struct PendingFile {
    pub path: DataFilePath,
    pub batch: RecordBatch,
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
    /// The rows' repositories; `None` when too many to list.
    pub repositories: Option<Vec<String>>,
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
    Rejected(testlake_schemas::Rejection),
}

impl PartitionBuffer {
    pub fn new(topic: Arc<str>, partition: i32) -> Self {
        Self {
            topic,
            partition,
            offsets: None,
            hours: BTreeMap::new(),
            rejected: RejectedBuilder::default(),
            rejected_hour: None,
            bytes: 0,
            opened_at: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.hours.values().map(|h| h.rows.len()).sum::<usize>() + self.rejected.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn age(&self, now: Instant) -> Duration {
        self.opened_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Decodes one message at `offset` and buffers it as a result row or a rejected row.
    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>, now: DateTime<Utc>) -> Pushed {
        self.offsets = Some(match self.offsets {
            None => (offset, offset),
            Some((first, last)) => (first.min(offset), last.max(offset)),
        });
        self.opened_at.get_or_insert_with(Instant::now);
        let bytes = payload.unwrap_or_default();
        self.bytes += bytes.len() + key.map_or(0, <[u8]>::len);
        let from = Lineage { topic: &self.topic, partition: self.partition, offset, ingested_at: now };
        match EventView::decode(bytes, now) {
            Ok(event) => {
                let hour = self.hours.entry(HourPartition::of(event.finished_at)).or_default();
                hour.min_time = Some(hour.min_time.map_or(event.finished_at, |t| t.min(event.finished_at)));
                hour.max_time = Some(hour.max_time.map_or(event.finished_at, |t| t.max(event.finished_at)));
                if hour.repositories.len() <= testlake_schemas::landed::MAX_LISTED_REPOSITORIES
                    && !hour.repositories.contains(event.repository.as_ref())
                {
                    hour.repositories.insert(event.repository.to_string());
                }
                hour.rows.append_view(&event, from);
                Pushed::Accepted
            }
            Err(why) => {
                self.rejected_hour.get_or_insert(HourPartition::of(now));
                self.rejected.append(key, payload, &why, from);
                Pushed::Rejected(why)
            }
        }
    }

    /// Takes everything buffered as the files of one flush, to be written by commit-log entry
    /// `entry`, leaving the buffer empty.
    pub fn take(&mut self, entry: u64) -> Result<Option<PendingFlush>, ArrowError> {
        let Some((first_offset, last_offset)) = self.offsets.take() else {
            return Ok(None);
        };
        let name =
            DataFileName { topic: self.topic.to_string(), partition: self.partition, first_offset, last_offset, entry };
        let mut files = Vec::new();
        let mut valid = 0;
        for (partition, mut hour) in std::mem::take(&mut self.hours) {
            valid += hour.rows.len();
            files.push(PendingFile {
                path: DataFilePath { table: Table::Results, partition, file: name.clone() },
                batch: hour.rows.finish()?,
                min_time: hour.min_time,
                max_time: hour.max_time,
                repositories: (hour.repositories.len() <= testlake_schemas::landed::MAX_LISTED_REPOSITORIES)
                    .then(|| hour.repositories.into_iter().collect()),
            });
        }
        let rejected = self.rejected.len();
        if let Some(partition) = self.rejected_hour.take() {
            files.push(PendingFile {
                path: DataFilePath { table: Table::Rejected, partition, file: name },
                batch: self.rejected.finish()?,
                min_time: None,
                max_time: None,
                repositories: None,
            });
        }
        self.bytes = 0;
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

#[cfg(test)]
mod tests;
