//! The commit protocol of one Kafka partition (see `ingest/COMMIT_PROTOCOL.md`).
//!
//! A flush of entry `n`:
//! 1. create `n.intent.json` (create-only) — if it exists, another writer owns the partition:
//!    this one is **fenced** and writes nothing;
//! 2. create every data file (create-only, named by Kafka offsets);
//! 3. create `n.outcome.json` = committed — if it exists, a recovering owner aborted entry `n`:
//!    this writer is fenced and deletes the files it wrote;
//! 4. only then is the Kafka offset committed (a hint) and the landing announced.
//!
//! Recovery on assignment walks the log back from its newest entry: an entry with an intent but
//! no outcome is aborted (creating its outcome first, so a late writer cannot commit it) and its
//! files deleted; the newest committed entry's `next_offset` is where consumption resumes.
//!
//! A committed entry is then published to the Delta table ([`testlake_schemas::delta`]): handed
//! to the process's background publisher right after step 3, and, when a partition is recovered,
//! every committed entry through its newest (an earlier owner may have died before publishing).
//! The commit log stays the truth meanwhile.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use testlake_schemas::Lake;
use testlake_schemas::files::{Created, WriteError, put_create};
use testlake_schemas::log::{
    EntryFile, EntryObject, Intent, Outcome, OutcomeRecord, entry_path, log_dir, parse_entry_name,
};
use testlake_schemas::log_reader::{LogReadError, read_entry};
use tracing::{info, warn};

use crate::crash::{CrashPoint, Crasher};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer owns the partition's log: drop the buffer and recover again.
    #[error("partition {partition}: fenced at log entry {seq} by another writer")]
    Fenced { partition: i32, seq: u64 },
    #[error("object store error at {path}: {source}")]
    Store { path: String, source: Box<object_store::Error> },
    #[error("log entry {path} is not valid JSON: {source}")]
    Corrupt { path: String, source: serde_json::Error },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl CommitError {
    fn store(path: &str, source: object_store::Error) -> Self {
        Self::Store { path: path.to_owned(), source: Box::new(source) }
    }
}

pub type Result<T, E = CommitError> = std::result::Result<T, E>;

/// A data file ready to upload, with what its log entry records about it.
#[derive(Clone)]
pub struct StagedFile {
    pub entry: EntryFile,
    pub bytes: Bytes,
}

/// The log of one partition as its current owner sees it.
#[derive(Debug)]
pub struct PartitionLog {
    lake: Lake,
    topic: String,
    partition: i32,
    writer: String,
    next_seq: u64,
    resume: Option<i64>,
}

pub(crate) async fn create(lake: &Lake, path: &str, body: Vec<u8>) -> Result<bool> {
    let options = PutOptions { mode: PutMode::Create, ..Default::default() };
    match lake.store().put_opts(&lake.path(path), PutPayload::from(body), options).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(CommitError::store(path, e)),
    }
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(lake: &Lake, path: &str) -> Result<T> {
    read_entry(lake, path).await.map_err(|e| match e {
        LogReadError::Store { path, source } => CommitError::Store { path, source },
        LogReadError::Corrupt { path, source } => CommitError::Corrupt { path, source },
    })
}

pub(crate) async fn delete_files(lake: &Lake, files: &[EntryFile]) -> Result<()> {
    for file in files {
        match lake.store().delete(&lake.path(&file.path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(CommitError::store(&file.path, e)),
        }
    }
    Ok(())
}

/// Creates the outcome object at `path` (of entry `seq`), or reads the one that won the race.
pub(crate) async fn decide_at(lake: &Lake, path: &str, seq: u64, want: Outcome, writer: &str) -> Result<Outcome> {
    let record = OutcomeRecord { seq, outcome: want, writer: writer.to_owned(), at: Utc::now() };
    if create(lake, path, serde_json::to_vec(&record).expect("json")).await? {
        Ok(want)
    } else {
        Ok(read_json::<OutcomeRecord>(lake, path).await?.outcome)
    }
}

/// Which objects of one entry a listing found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Listed {
    pub intent: bool,
    pub outcome: bool,
    /// Compaction logs only.
    pub cleaned: bool,
}

/// Lists a log folder (a partition's commit log, a compaction log): its entries by sequence number.
pub(crate) async fn list_entries(lake: &Lake, dir: &str) -> Result<BTreeMap<u64, Listed>> {
    let listed: Vec<_> =
        lake.store().list(Some(&lake.path(dir))).try_collect().await.map_err(|e| CommitError::store(dir, e))?;
    let mut entries: BTreeMap<u64, Listed> = BTreeMap::new();
    for (seq, object) in listed.iter().filter_map(|o| o.location.filename().and_then(parse_entry_name)) {
        let entry = entries.entry(seq).or_default();
        match object {
            EntryObject::Intent => entry.intent = true,
            EntryObject::Outcome => entry.outcome = true,
            EntryObject::Cleaned => entry.cleaned = true,
        }
    }
    Ok(entries)
}

impl PartitionLog {
    /// Reads the partition's log, aborts and cleans up entries left pending by a crashed or
    /// fenced writer, and returns the log positioned after its newest entry.
    pub async fn recover(lake: &Lake, topic: &str, partition: i32, writer: &str) -> Result<Self> {
        let entries = list_entries(lake, &log_dir(topic, partition)).await?;
        let next_seq = entries.keys().next_back().map_or(0, |s| s + 1);
        let (mut resume, mut newest) = (None, None);
        for (&seq, entry) in entries.iter().rev() {
            if !entry.intent {
                continue;
            }
            let outcome = if entry.outcome {
                read_json::<OutcomeRecord>(lake, &entry_path(topic, partition, seq, EntryObject::Outcome))
                    .await?
                    .outcome
            } else {
                Self::decide(lake, topic, partition, seq, Outcome::Aborted, writer).await?
            };
            let intent: Intent = read_json(lake, &entry_path(topic, partition, seq, EntryObject::Intent)).await?;
            match outcome {
                Outcome::Committed => {
                    (resume, newest) = (Some(intent.next_offset), Some(seq));
                    break;
                }
                Outcome::Aborted => {
                    delete_files(lake, &intent.files).await?;
                    info!(partition, seq, files = intent.files.len(), "cleaned up an aborted flush");
                }
            }
        }
        info!(partition, next_seq, resume, "commit log recovered");
        if let Some(newest) = newest {
            lake.delta().committed_through(lake, &log_dir(topic, partition), newest);
        }
        Ok(Self { lake: lake.clone(), topic: topic.to_owned(), partition, writer: writer.to_owned(), next_seq, resume })
    }

    /// The first offset not yet durable according to the log, read without changing anything
    /// (pending entries are passed over, not aborted). For monitoring and tests.
    pub async fn durable_offset(lake: &Lake, topic: &str, partition: i32) -> Result<Option<i64>> {
        let entries = list_entries(lake, &log_dir(topic, partition)).await?;
        for seq in entries.iter().rev().filter(|(_, e)| e.outcome).map(|(&seq, _)| seq) {
            let outcome: OutcomeRecord =
                read_json(lake, &entry_path(topic, partition, seq, EntryObject::Outcome)).await?;
            if outcome.outcome == Outcome::Committed {
                let intent: Intent = read_json(lake, &entry_path(topic, partition, seq, EntryObject::Intent)).await?;
                return Ok(Some(intent.next_offset));
            }
        }
        Ok(None)
    }

    /// Creates the outcome of entry `seq`, or reads the one that won the race.
    async fn decide(
        lake: &Lake,
        topic: &str,
        partition: i32,
        seq: u64,
        want: Outcome,
        writer: &str,
    ) -> Result<Outcome> {
        decide_at(lake, &entry_path(topic, partition, seq, EntryObject::Outcome), seq, want, writer).await
    }

    /// The sequence number the next flush's entry will have (its files are named with it).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first offset not yet durable in the lake, if the log has any committed entry.
    pub fn resume_offset(&self) -> Option<i64> {
        self.resume
    }

    /// Makes a flush covering `[from_offset, next_offset)` durable by the protocol above.
    pub async fn commit(
        &mut self,
        from_offset: i64,
        next_offset: i64,
        files: Vec<StagedFile>,
        crash: &Crasher,
    ) -> Result<Vec<EntryFile>> {
        let seq = self.next_seq;
        let (topic, partition) = (self.topic.as_str(), self.partition);
        let entries: Vec<EntryFile> = files.iter().map(|f| f.entry.clone()).collect();
        if let Some(resume) = self.resume.filter(|&resume| from_offset > resume) {
            // Only offsets the broker never delivers (transaction markers, a compacted topic's
            // removed records) may lie in between; anything else is a consumer bug.
            warn!(partition, resume, first_offset = from_offset, "a flush starts past where the log resumes");
        }
        let intent = Intent {
            seq,
            topic: topic.to_owned(),
            partition,
            from_offset: self.resume.unwrap_or(from_offset),
            next_offset,
            writer: self.writer.clone(),
            files: entries.clone(),
            created_at: Utc::now(),
        };
        let intent_path = entry_path(topic, partition, seq, EntryObject::Intent);
        if !create(&self.lake, &intent_path, serde_json::to_vec(&intent).expect("json")).await? {
            // Ours from an attempt that failed later (a retry), or another writer's: fenced.
            let existing: Intent = read_json(&self.lake, &intent_path).await?;
            if existing.writer != self.writer || existing.next_offset != next_offset {
                return Err(CommitError::Fenced { partition, seq });
            }
        }
        crash.reached(CrashPoint::AfterIntent);
        for (i, file) in files.into_iter().enumerate() {
            if put_create(&self.lake, &file.entry.path, file.bytes).await? == Created::AlreadyExisted {
                // Same name, same Kafka offsets: an earlier attempt of this very range.
                warn!(partition, path = %file.entry.path, "data file already existed");
            }
            if i == 0 {
                crash.reached(CrashPoint::MidFlush);
            }
        }
        crash.reached(CrashPoint::AfterData);
        match Self::decide(&self.lake, topic, partition, seq, Outcome::Committed, &self.writer).await? {
            Outcome::Committed => {}
            Outcome::Aborted => {
                delete_files(&self.lake, &entries).await?;
                return Err(CommitError::Fenced { partition, seq });
            }
        }
        crash.reached(CrashPoint::AfterOutcome);
        self.next_seq += 1;
        self.resume = Some(next_offset);
        self.lake.delta().committed(&self.lake, &log_dir(&self.topic, self.partition), seq, entries.clone());
        Ok(entries)
    }
}

#[cfg(test)]
mod tests;
