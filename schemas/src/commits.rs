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
    /// The repositories of the file's rows, when few enough to list (see [`crate::Landed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
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

/// The data files of committed log entries, for readers that must see only committed data
/// (compute). Read incrementally: decided entries never change, so each is read once.
#[derive(Debug, Default)]
pub struct CommittedFiles {
    /// Outcome objects already read.
    read: std::collections::HashSet<String>,
    /// Committed `results` files by date.
    results: std::collections::BTreeMap<NaiveDate, std::collections::BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("object store error at {path}: {source}")]
    Store { path: String, source: Box<object_store::Error> },
    #[error("log entry {path} is not valid JSON: {source}")]
    Corrupt { path: String, source: serde_json::Error },
}

/// Reads one log object (`path` relative to the lake root).
pub async fn read_entry<T: serde::de::DeserializeOwned>(lake: &crate::Lake, path: &str) -> Result<T, LogReadError> {
    let store = |source| LogReadError::Store { path: path.to_owned(), source: Box::new(source) };
    let bytes = lake
        .store()
        .get_opts(&lake.path(path), Default::default())
        .await
        .map_err(store)?
        .bytes()
        .await
        .map_err(store)?;
    serde_json::from_slice(&bytes).map_err(|source| LogReadError::Corrupt { path: path.to_owned(), source })
}

impl CommittedFiles {
    /// Reads the entries decided since the last refresh, across every topic and partition.
    pub async fn refresh(&mut self, lake: &crate::Lake) -> Result<(), LogReadError> {
        use futures::TryStreamExt;
        let listed: Vec<_> = lake
            .store()
            .list(Some(&lake.path("_log")))
            .try_collect()
            .await
            .map_err(|e| LogReadError::Store { path: "_log".into(), source: Box::new(e) })?;
        for object in listed {
            let Some(path) = lake.relative(&object.location) else { continue };
            if !path.ends_with(EntryObject::Outcome.suffix()) || self.read.contains(&path) {
                continue;
            }
            let outcome: OutcomeRecord = read_entry(lake, &path).await?;
            if outcome.outcome == Outcome::Committed {
                let intent_path = format!(
                    "{}{}",
                    &path[..path.len() - EntryObject::Outcome.suffix().len()],
                    EntryObject::Intent.suffix()
                );
                let intent: Intent = read_entry(lake, &intent_path).await?;
                for file in intent.files.into_iter().filter(|f| f.table == crate::Table::Results.name()) {
                    self.results.entry(file.date).or_default().insert(file.path);
                }
            }
            self.read.insert(path);
        }
        Ok(())
    }

    /// Committed `results` files of one date, relative to the lake root.
    pub fn results_for(&self, date: NaiveDate) -> Vec<String> {
        self.results.get(&date).map(|files| files.iter().cloned().collect()).unwrap_or_default()
    }

    /// Dates that have committed `results` files.
    pub fn dates(&self) -> Vec<NaiveDate> {
        self.results.keys().copied().collect()
    }
}
