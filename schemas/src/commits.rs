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

/// What a compaction is about to do: replace `inputs` (committed files of one hour partition)
/// by `outputs` holding the same rows. Decided by its outcome object, as a flush is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionIntent {
    pub seq: u64,
    pub table: String,
    pub date: NaiveDate,
    pub hour: u8,
    /// Identity of the compactor (one per process).
    pub writer: String,
    /// Files merged, each committed by an ingest entry or an earlier compaction.
    pub inputs: Vec<EntryFile>,
    pub outputs: Vec<EntryFile>,
    pub created_at: DateTime<Utc>,
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

    /// Writes compaction `seq` of `results` (inputs and outputs named by path), decided or not.
    async fn compaction(lake: &crate::Lake, seq: u64, inputs: &[&str], outputs: &[&str], outcome: Option<Outcome>) {
        let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let file = |name: &&str| EntryFile {
            path: format!("results/date={date}/hour=00/{name}.parquet"),
            table: "results".into(),
            date,
            hour: 0,
            rows: 1,
            min_time: None,
            max_time: None,
            repositories: None,
        };
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let intent = CompactionIntent {
            seq,
            table: "results".into(),
            date,
            hour: 0,
            writer: "c".into(),
            inputs: inputs.iter().map(file).collect(),
            outputs: outputs.iter().map(file).collect(),
            created_at: at,
        };
        let dir = compaction_dir(crate::Table::Results);
        let put = |path: String, json: Vec<u8>| async move {
            crate::files::put_create(lake, &path, json.into()).await.unwrap();
        };
        put(entry_path_in(&dir, seq, EntryObject::Intent), serde_json::to_vec(&intent).unwrap()).await;
        if let Some(outcome) = outcome {
            let record = OutcomeRecord { seq, outcome, writer: "c".into(), at };
            put(entry_path_in(&dir, seq, EntryObject::Outcome), serde_json::to_vec(&record).unwrap()).await;
        }
    }

    /// A committed compaction replaces its inputs by its outputs — also for a reader that meets
    /// the compaction before the ingest entry of one of its inputs; aborted and undecided ones
    /// change nothing; a compaction of a compaction's output chains.
    #[tokio::test]
    async fn compactions_replace_their_inputs_in_any_reading_order() {
        let lake = crate::Lake::in_memory();
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let names =
            |files: Vec<String>| files.iter().map(|f| f.rsplit('/').next().unwrap().to_owned()).collect::<Vec<_>>();
        for seq in 0..3 {
            entry(&lake, 0, seq, d, Some(Outcome::Committed)).await;
        }
        let mut early = CommittedFiles::default();
        early.refresh(&lake).await.unwrap();
        assert_eq!(names(early.results_for(d)), ["p0-0.parquet", "p0-1.parquet", "p0-2.parquet"]);

        compaction(&lake, 0, &["p0-0", "p0-1"], &["c0"], Some(Outcome::Committed)).await;
        compaction(&lake, 1, &["p0-2", "c0"], &["c1-x"], Some(Outcome::Aborted)).await;
        compaction(&lake, 2, &["p0-2"], &["c2-pending"], None).await;
        early.refresh(&lake).await.unwrap();
        assert_eq!(names(early.results_for(d)), ["c0.parquet", "p0-2.parquet"]);
        let mut fresh = CommittedFiles::default();
        fresh.refresh(&lake).await.unwrap();
        assert_eq!(names(fresh.results_for(d)), ["c0.parquet", "p0-2.parquet"], "a fresh reader agrees");

        // The reading order a slow reader can meet: the compaction, then its input's entry.
        let mut reader = CommittedFiles::default();
        let dir = compaction_dir(crate::Table::Results);
        let compaction0: CompactionIntent =
            read_entry(&lake, &entry_path_in(&dir, 0, EntryObject::Intent)).await.unwrap();
        reader.apply(compaction0.clone());
        let input: Intent = read_entry(&lake, &entry_path("ci", 0, 1, EntryObject::Intent)).await.unwrap();
        input.files.into_iter().for_each(|f| reader.add(f));
        assert_eq!(names(reader.results_for(d)), ["c0.parquet"], "a superseded input never comes back");
        reader.apply(compaction0);
        assert_eq!(names(reader.results_for(d)), ["c0.parquet"], "applying twice changes nothing");

        compaction(&lake, 3, &["c0", "p0-2"], &["c3"], Some(Outcome::Committed)).await;
        early.refresh(&lake).await.unwrap();
        assert_eq!(names(early.results_for(d)), ["c3.parquet"]);
        assert_eq!(early.results_files().map(|f| f.rows).sum::<u64>(), 1);
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
/// read once, and each log folder is listed from just after the entries already read (S3's
/// `start-after`), so a refresh costs what was decided since the last one, not the log's length.
///
/// Compactions apply on top: a file is visible when an ingest entry or a compaction committed
/// it and no committed compaction lists it as an input. One refresh reads the ingest logs and
/// then the compaction log, and the result does not depend on the order entries are read in,
/// so a reader never sees a compaction's inputs next to its outputs, or neither.
#[derive(Debug, Default)]
pub struct CommittedFiles {
    /// Per log folder, the first entry whose outcome has not been read: every entry before it has.
    next: std::collections::HashMap<String, u64>,
    /// Outcome objects already read past a folder's `next` (an entry decided out of order).
    read: std::collections::HashSet<String>,
    /// Visible `results` files by date, by path.
    results: std::collections::BTreeMap<NaiveDate, std::collections::BTreeMap<String, EntryFile>>,
    /// Inputs of committed compactions: never visible again.
    superseded: std::collections::HashSet<String>,
    /// Aborted ingest entries (log folder, sequence number) with no `cleaned` marker seen, and
    /// when they were aborted: [`Self::unswept`].
    aborted: std::collections::BTreeMap<(String, u64), DateTime<Utc>>,
}

/// An entry's outcome as a refresh read it.
#[derive(Debug)]
struct Decided {
    seq: u64,
    outcome: Outcome,
    at: DateTime<Utc>,
    cleaned: bool,
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
    /// Reads the entries decided since the last refresh, across every topic and partition, then
    /// the compactions decided since.
    pub async fn refresh(&mut self, lake: &crate::Lake) -> Result<(), LogReadError> {
        for dir in log_folders(lake).await? {
            let decided = self.newly_decided(lake, &dir).await?;
            for entry in &decided {
                match entry.outcome {
                    Outcome::Committed => {
                        let path = entry_path_in(&dir, entry.seq, EntryObject::Intent);
                        let intent: Intent = read_entry(lake, &path).await?;
                        intent.files.into_iter().for_each(|file| self.add(file));
                    }
                    Outcome::Aborted if !entry.cleaned => _ = self.aborted.insert((dir.clone(), entry.seq), entry.at),
                    Outcome::Aborted => {}
                }
            }
            self.mark_read(&dir, &decided);
        }
        let dir = compaction_dir(crate::Table::Results);
        let decided = self.newly_decided(lake, &dir).await?;
        for entry in decided.iter().filter(|e| e.outcome == Outcome::Committed) {
            let compaction: CompactionIntent =
                read_entry(lake, &entry_path_in(&dir, entry.seq, EntryObject::Intent)).await?;
            self.apply(compaction);
        }
        self.mark_read(&dir, &decided);
        Ok(())
    }

    fn add(&mut self, file: EntryFile) {
        if file.table == crate::Table::Results.name() && !self.superseded.contains(&file.path) {
            self.results.entry(file.date).or_default().insert(file.path.clone(), file);
        }
    }

    /// A committed compaction: its inputs leave for good (also those of entries not read yet),
    /// its outputs come in.
    fn apply(&mut self, compaction: CompactionIntent) {
        for input in compaction.inputs {
            if let Some(files) = self.results.get_mut(&input.date) {
                files.remove(&input.path);
                if files.is_empty() {
                    self.results.remove(&input.date);
                }
            }
            self.superseded.insert(input.path);
        }
        compaction.outputs.into_iter().for_each(|file| self.add(file));
    }

    /// The entries of `dir` decided and not read yet, in order. Applying them is idempotent, so
    /// they are marked read ([`Self::mark_read`]) only once applied.
    async fn newly_decided(&self, lake: &crate::Lake, dir: &str) -> Result<Vec<Decided>, LogReadError> {
        use futures::TryStreamExt;
        let next = self.next.get(dir).copied().unwrap_or(0);
        let prefix = lake.path(dir);
        let listing = match next.checked_sub(1) {
            None => lake.store().list(Some(&prefix)),
            Some(last) => lake
                .store()
                .list_with_offset(Some(&prefix), &lake.path(&entry_path_in(dir, last, EntryObject::Outcome))),
        };
        let listed: Vec<_> = match listing.try_collect().await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(LogReadError::Store { path: dir.to_owned(), source: Box::new(e) }),
        };
        let mut outcomes = Vec::new();
        let mut cleaned = std::collections::HashSet::new();
        for (seq, object) in listed.iter().filter_map(|o| o.location.filename().and_then(parse_entry_name)) {
            match object {
                EntryObject::Outcome if seq >= next => outcomes.push(seq),
                EntryObject::Cleaned => _ = cleaned.insert(seq),
                _ => {}
            }
        }
        outcomes.sort_unstable();
        let mut decided = Vec::new();
        for seq in outcomes {
            let path = entry_path_in(dir, seq, EntryObject::Outcome);
            if !self.read.contains(&path) {
                let record: OutcomeRecord = read_entry(lake, &path).await?;
                decided.push(Decided { seq, outcome: record.outcome, at: record.at, cleaned: cleaned.contains(&seq) });
            }
        }
        Ok(decided)
    }

    fn mark_read(&mut self, dir: &str, decided: &[Decided]) {
        for entry in decided {
            self.read.insert(entry_path_in(dir, entry.seq, EntryObject::Outcome));
        }
        // Advance past the entries now read without a gap.
        let mut next = self.next.get(dir).copied().unwrap_or(0);
        while self.read.remove(&entry_path_in(dir, next, EntryObject::Outcome)) {
            next += 1;
        }
        self.next.insert(dir.to_owned(), next);
    }

    /// Aborted ingest entries not yet marked cleaned — (log folder, sequence number, aborted at).
    /// Their files were deleted by whoever aborted them, but a writer that was paused past its
    /// session can still write one later (and crash before it learns it was fenced); the
    /// compactor sweeps them again once they are old ([`Self::swept`] forgets one).
    pub fn unswept(&self) -> impl Iterator<Item = (&str, u64, DateTime<Utc>)> {
        self.aborted.iter().map(|((dir, seq), at)| (dir.as_str(), *seq, *at))
    }

    pub fn swept(&mut self, dir: &str, seq: u64) {
        self.aborted.remove(&(dir.to_owned(), seq));
    }

    /// Committed `results` files of one date, relative to the lake root.
    pub fn results_for(&self, date: NaiveDate) -> Vec<String> {
        self.results.get(&date).map(|files| files.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every visible `results` file, with what its entry recorded, by date and path.
    pub fn results_files(&self) -> impl Iterator<Item = &EntryFile> {
        self.results.values().flat_map(|files| files.values())
    }

    /// Dates that have committed `results` files.
    pub fn dates(&self) -> Vec<NaiveDate> {
        self.results.keys().copied().collect()
    }
}
