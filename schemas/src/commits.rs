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
    entry_path_in(&log_dir(topic, partition), seq, object)
}

/// Path of one object of entry `seq` in the log folder `dir` (as [`log_dir`] names it).
fn entry_path_in(dir: &str, seq: u64, object: EntryObject) -> String {
    format!("{dir}/{seq:020}{}", object.suffix())
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

    /// Writes entry `seq` of partition `p` of topic `ci`: an intent listing one `results` file of
    /// `date`, and the outcome when given.
    async fn entry(lake: &crate::Lake, p: i32, seq: u64, date: NaiveDate, outcome: Option<Outcome>) {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let file = EntryFile {
            path: format!("results/date={date}/hour=00/p{p}-{seq}.parquet"),
            table: "results".into(),
            date,
            hour: 0,
            rows: 1,
            min_time: None,
            max_time: None,
            repositories: None,
        };
        let intent = Intent {
            seq,
            topic: "ci".into(),
            partition: p,
            from_offset: seq as i64,
            next_offset: seq as i64 + 1,
            writer: "w".into(),
            files: vec![file],
            created_at: at,
        };
        let put = |path: String, json: Vec<u8>| async move {
            crate::files::put_create(lake, &path, json.into()).await.unwrap();
        };
        put(entry_path("ci", p, seq, EntryObject::Intent), serde_json::to_vec(&intent).unwrap()).await;
        if let Some(outcome) = outcome {
            let record = OutcomeRecord { seq, outcome, writer: "w".into(), at };
            put(entry_path("ci", p, seq, EntryObject::Outcome), serde_json::to_vec(&record).unwrap()).await;
        }
    }

    /// Refreshes see exactly the committed entries, pick up entries decided later (also out of
    /// order), and list each folder only from where they left off; on both stores the lake runs on.
    #[tokio::test]
    async fn committed_files_follow_the_log_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::Lake::open(dir.path().to_str().unwrap()).unwrap();
        for lake in [crate::Lake::in_memory(), local] {
            let d1 = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
            let d2 = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
            let mut committed = CommittedFiles::default();
            committed.refresh(&lake).await.unwrap();
            assert!(committed.dates().is_empty(), "an empty lake has no log yet");

            entry(&lake, 0, 0, d1, Some(Outcome::Committed)).await;
            entry(&lake, 0, 1, d1, Some(Outcome::Aborted)).await;
            entry(&lake, 0, 2, d1, None).await;
            entry(&lake, 0, 3, d2, Some(Outcome::Committed)).await;
            entry(&lake, 7, 0, d2, Some(Outcome::Committed)).await;
            committed.refresh(&lake).await.unwrap();
            let names =
                |files: Vec<String>| files.iter().map(|f| f.rsplit('/').next().unwrap().to_owned()).collect::<Vec<_>>();
            assert_eq!(names(committed.results_for(d1)), ["p0-0.parquet"]);
            assert_eq!(names(committed.results_for(d2)), ["p0-3.parquet", "p7-0.parquet"]);
            assert_eq!(committed.next["_log/ci/p00000"], 2, "stops at the undecided entry");
            assert_eq!(committed.next["_log/ci/p00007"], 1);

            // Entry 2 decided late, entry 4 new: both read, nothing read twice.
            let record = OutcomeRecord {
                seq: 2,
                outcome: Outcome::Committed,
                writer: "w".into(),
                at: DateTime::<Utc>::UNIX_EPOCH,
            };
            let path = entry_path("ci", 0, 2, EntryObject::Outcome);
            crate::files::put_create(&lake, &path, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
            entry(&lake, 0, 4, d2, Some(Outcome::Committed)).await;
            committed.refresh(&lake).await.unwrap();
            assert_eq!(names(committed.results_for(d1)), ["p0-0.parquet", "p0-2.parquet"]);
            assert_eq!(names(committed.results_for(d2)), ["p0-3.parquet", "p0-4.parquet", "p7-0.parquet"]);
            assert_eq!(committed.next["_log/ci/p00000"], 5);
            assert!(committed.read.is_empty(), "entries past a gap are forgotten once the gap closes");
        }
    }
}

/// The data files of committed log entries, for readers that must see only committed data
/// (compute, the query service). Read incrementally: decided entries never change, so each is
/// read once, and each partition's folder is listed from just after the entries already read
/// (S3's `start-after`), so a refresh costs what was decided since the last one, not the log's
/// length.
#[derive(Debug, Default)]
pub struct CommittedFiles {
    /// Per log folder, the first entry whose outcome has not been read: every entry before it has.
    next: std::collections::HashMap<String, u64>,
    /// Outcome objects already read past a folder's `next` (an entry decided out of order).
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

/// Every partition's log folder (`_log/<topic>/p<partition>`), relative to the lake root.
async fn log_folders(lake: &crate::Lake) -> Result<Vec<String>, LogReadError> {
    let children = |dir: String| async move {
        match lake.store().list_with_delimiter(Some(&lake.path(&dir))).await {
            Ok(listed) => Ok(listed.common_prefixes.iter().filter_map(|p| lake.relative(p)).collect::<Vec<_>>()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(LogReadError::Store { path: dir, source: Box::new(e) }),
        }
    };
    let mut folders = Vec::new();
    for topic in children("_log".to_owned()).await? {
        folders.extend(children(topic).await?);
    }
    Ok(folders)
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
        for dir in log_folders(lake).await? {
            self.refresh_folder(lake, &dir).await?;
        }
        Ok(())
    }

    async fn refresh_folder(&mut self, lake: &crate::Lake, dir: &str) -> Result<(), LogReadError> {
        use futures::TryStreamExt;
        let next = self.next.get(dir).copied().unwrap_or(0);
        let prefix = lake.path(dir);
        let listing = match next.checked_sub(1) {
            None => lake.store().list(Some(&prefix)),
            Some(last) => lake
                .store()
                .list_with_offset(Some(&prefix), &lake.path(&entry_path_in(dir, last, EntryObject::Outcome))),
        };
        let listed: Vec<_> = listing
            .try_collect()
            .await
            .map_err(|e| LogReadError::Store { path: dir.to_owned(), source: Box::new(e) })?;
        let mut outcomes: Vec<u64> = listed
            .iter()
            .filter_map(|o| o.location.filename().and_then(parse_entry_name))
            .filter(|&(seq, object)| object == EntryObject::Outcome && seq >= next)
            .map(|(seq, _)| seq)
            .collect();
        outcomes.sort_unstable();
        for seq in outcomes {
            let path = entry_path_in(dir, seq, EntryObject::Outcome);
            if self.read.contains(&path) {
                continue;
            }
            let outcome: OutcomeRecord = read_entry(lake, &path).await?;
            if outcome.outcome == Outcome::Committed {
                let intent: Intent = read_entry(lake, &entry_path_in(dir, seq, EntryObject::Intent)).await?;
                for file in intent.files.into_iter().filter(|f| f.table == crate::Table::Results.name()) {
                    self.results.entry(file.date).or_default().insert(file.path);
                }
            }
            self.read.insert(path);
        }
        // Advance past the entries now read without a gap.
        let mut next = next;
        while self.read.remove(&entry_path_in(dir, next, EntryObject::Outcome)) {
            next += 1;
        }
        self.next.insert(dir.to_owned(), next);
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
