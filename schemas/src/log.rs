//! The commit logs' format: what their entries hold and where they are. The ingest commit log is
//! the record, kept with the data in object storage, of which Kafka offsets are durable in the
//! lake. It is the truth; Kafka's committed offset is only a hint.
//!
//! Per Kafka partition, a sequence of numbered entries under
//! `_log/<topic>/p<partition:05>/`, every object written create-only:
//!
//! ```text
//! 00000000000000000007.intent.json    what flush 7 will write: offset range and file paths
//! 00000000000000000007.outcome.json   {"outcome": "committed"} or {"outcome": "aborted"}
//! ```
//!
//! The outcome object decides an entry: whoever creates it first wins, so a writer committing
//! and a recovering owner aborting the same entry can never both succeed. The protocol itself
//! (ordering, recovery, fencing) is written by `ingest/src/log_writer.rs` (see
//! `ingest/COMMIT_PROTOCOL.md`); [`crate::log_reader`] reads what it committed.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use crate::paths::EntryObject;
use crate::paths::{EntryName, LogDir};

/// Folder of the commit log of one Kafka partition, relative to the lake root.
pub fn log_dir(topic: &str, partition: i32) -> String {
    LogDir::Partition { topic: topic.to_owned(), partition }.to_string()
}

/// Path of one object of entry `seq`, relative to the lake root.
pub fn entry_path(topic: &str, partition: i32, seq: u64, object: EntryObject) -> String {
    entry_path_in(&log_dir(topic, partition), seq, object)
}

/// Path of one object of entry `seq` in the log folder `dir` ([`log_dir`], [`compaction_dir`]).
pub fn entry_path_in(dir: &str, seq: u64, object: EntryObject) -> String {
    format!("{dir}/{}", EntryName { seq, object })
}

/// Parses a log object's file name into its sequence number and kind.
pub fn parse_entry_name(name: &str) -> Option<(u64, EntryObject)> {
    name.parse::<EntryName>().ok().map(|n| (n.seq, n.object))
}

/// Folder of the compaction log of `table`.
pub fn compaction_dir(table: crate::Table) -> String {
    LogDir::Compaction(table).to_string()
}

/// One file a flush (or a compaction) writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryFile {
    /// Path relative to the lake root.
    pub path: String,
    /// Table the file belongs to (`results`, `rejected`).
    pub table: crate::Table,
    pub date: NaiveDate,
    pub hour: u8,
    pub rows: u64,
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
    /// The repositories of the file's rows, when few enough to list (see [`crate::Landed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    /// The file's size in bytes (entries written before sizes were recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// What a flush is about to make durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub seq: u64,
    pub topic: String,
    pub partition: i32,
    /// First offset covered: the previous committed entry's `next_offset`, or the first offset
    /// consumed when there is none. Consecutive committed entries are contiguous.
    pub from_offset: i64,
    /// One past the last offset covered: where the next owner resumes.
    pub next_offset: i64,
    /// Identity of the writer (one per process and assignment).
    pub writer: String,
    pub files: Vec<EntryFile>,
    pub created_at: DateTime<Utc>,
}

/// What a compaction is about to do: replace `inputs` (committed files of one hour partition)
/// by `outputs` holding the same rows — or, for an expiry, drop every file of a date older than
/// the retention (`outputs` empty). Decided by its outcome object, as a flush is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionIntent {
    pub seq: u64,
    pub table: crate::Table,
    #[serde(default, skip_serializing_if = "CompactionKind::is_merge")]
    pub kind: CompactionKind,
    pub date: NaiveDate,
    /// The hour merged (0 for an expiry, which covers the whole date).
    pub hour: u8,
    /// Identity of the compactor (one per process).
    pub writer: String,
    /// Files merged, each committed by an ingest entry or an earlier compaction.
    pub inputs: Vec<EntryFile>,
    pub outputs: Vec<EntryFile>,
    pub created_at: DateTime<Utc>,
}

/// What a compaction-log entry does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactionKind {
    /// An hour's small files merged into few large ones: the same rows.
    #[default]
    Merge,
    /// Every file of a date older than the retention dropped: its rows leave the table.
    Expire,
}

impl CompactionKind {
    pub fn is_merge(&self) -> bool {
        *self == Self::Merge
    }
}

/// Written once the files a decided compaction made obsolete are deleted: its inputs
/// (committed) or its outputs (aborted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanedRecord {
    pub seq: u64,
    pub deleted: Vec<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Committed,
    Aborted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub seq: u64,
    pub outcome: Outcome,
    /// Who decided: the flushing writer (committed) or a recovering owner (aborted).
    pub writer: String,
    pub at: DateTime<Utc>,
}
