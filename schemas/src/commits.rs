//! The ingest commit log: the record, kept with the data in object storage, of which Kafka
//! offsets are durable in the lake. It is the truth; Kafka's committed offset is only a hint.
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
//! (ordering, recovery, fencing) is in `ingest/src/commit.rs` and `ingest/COMMIT_PROTOCOL.md`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Folder of the commit log of one Kafka partition, relative to the lake root.
pub fn log_dir(topic: &str, partition: i32) -> String {
    format!("_log/{topic}/p{partition:05}")
}

/// Which object of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryObject {
    Intent,
    Outcome,
}

impl EntryObject {
    fn suffix(self) -> &'static str {
        match self {
            Self::Intent => ".intent.json",
            Self::Outcome => ".outcome.json",
        }
    }
}

/// Path of one object of entry `seq`, relative to the lake root.
pub fn entry_path(topic: &str, partition: i32, seq: u64, object: EntryObject) -> String {
    format!("{}/{seq:020}{}", log_dir(topic, partition), object.suffix())
}

/// Parses a log object's file name into its sequence number and kind.
pub fn parse_entry_name(name: &str) -> Option<(u64, EntryObject)> {
    [EntryObject::Intent, EntryObject::Outcome].into_iter().find_map(|object| {
        let seq = name.strip_suffix(object.suffix())?;
        (seq.len() == 20).then(|| seq.parse().ok()).flatten().map(|seq| (seq, object))
    })
}

/// One file a flush writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryFile {
    /// Path relative to the lake root.
    pub path: String,
    /// Table the file belongs to (`results`, `rejected`).
    pub table: String,
    pub date: NaiveDate,
    pub hour: u8,
    pub rows: u64,
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_round_trip() {
        let p = entry_path("ci", 3, 7, EntryObject::Outcome);
        assert_eq!(p, "_log/ci/p00003/00000000000000000007.outcome.json");
        let name = p.rsplit('/').next().unwrap();
        assert_eq!(parse_entry_name(name), Some((7, EntryObject::Outcome)));
        assert_eq!(parse_entry_name("00000000000000000007.intent.json"), Some((7, EntryObject::Intent)));
        assert_eq!(parse_entry_name("7.intent.json"), None);
        assert_eq!(parse_entry_name("00000000000000000007.json"), None);
    }
}
