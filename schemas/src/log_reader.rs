//! Reading the commit logs ([`crate::log`]): which data files are committed, for readers that
//! must see only committed data (compute, the query service, `testlake sql`).

use chrono::{DateTime, NaiveDate, Utc};

use crate::log::{
    CompactionIntent, EntryFile, EntryObject, Intent, Outcome, OutcomeRecord, compaction_dir, entry_path_in,
    parse_entry_name,
};

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
    /// Per partition's log folder, the newest committed entry read.
    newest: std::collections::BTreeMap<String, u64>,
    /// Start the first refresh from the Delta table ([`Self::from_delta`]).
    seed_from_delta: bool,
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
pub(crate) async fn log_folders(lake: &crate::Lake) -> Result<Vec<String>, LogReadError> {
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
    /// A reader whose first refresh starts from the Delta table's newest version — its last
    /// checkpoint and the commits after it — instead of every entry of every partition's log:
    /// the files the table shows, then, per partition's log folder, only the entries above the
    /// one the table shows last (committed, not published yet), then the compaction log, whose
    /// committed entries apply again in order (idempotent: the table already shows most). What
    /// a reader sees is the same either way; what it reads to get there is what the table does
    /// not cover. Without a table (or if it cannot be read: logged) the logs are read whole.
    ///
    /// Not for the compactor, which also needs the aborted entries the table never saw
    /// ([`Self::unswept`]), nor for what creates the table from the logs.
    pub fn from_delta() -> Self {
        Self { seed_from_delta: true, ..Self::default() }
    }

    /// Reads the entries decided since the last refresh, across every topic and partition, then
    /// the compactions decided since.
    pub async fn refresh(&mut self, lake: &crate::Lake) -> Result<(), LogReadError> {
        if std::mem::take(&mut self.seed_from_delta) {
            match crate::delta::snapshot(lake).await {
                Ok(Some(snapshot)) => self.seed(snapshot),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the Delta table could not be read: reading the commit logs whole")
                }
            }
        }
        for dir in log_folders(lake).await? {
            let decided = self.newly_decided(lake, &dir).await?;
            for entry in &decided {
                match entry.outcome {
                    Outcome::Committed => {
                        let path = entry_path_in(&dir, entry.seq, EntryObject::Intent);
                        let intent: Intent = read_entry(lake, &path).await?;
                        intent.files.into_iter().for_each(|file| self.add(file));
                        let newest = self.newest.entry(dir.clone()).or_default();
                        *newest = (*newest).max(entry.seq);
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

    /// Starts from a Delta snapshot: its files, and each folder's entries through the one it
    /// shows taken as read.
    fn seed(&mut self, snapshot: crate::delta::Snapshot) {
        tracing::debug!(version = snapshot.version, files = snapshot.files.len(), "reading from the Delta table");
        snapshot.files.into_iter().for_each(|file| self.add(file));
        for (dir, seq) in snapshot.published {
            self.next.insert(dir.clone(), seq + 1);
            self.newest.insert(dir, seq);
        }
    }

    fn add(&mut self, file: EntryFile) {
        if file.table == crate::Table::Results && !self.superseded.contains(&file.path) {
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

    /// Per partition's log folder, the newest committed entry read: `(folder, seq)`.
    pub fn committed_through(&self) -> impl Iterator<Item = (&str, u64)> {
        self.newest.iter().map(|(dir, seq)| (dir.as_str(), *seq))
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

#[cfg(test)]
mod tests;
