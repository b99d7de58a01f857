//! Publishes committed flush entries to the Delta table in the background, in order per
//! partition's log folder, so that a flush never waits for the table: its offsets, its landed
//! notice and the next flush follow its outcome object at once, as before Delta.
//!
//! A process's writers hand their committed entries (and, on recovering a partition, "everything
//! committed through N") to one task. It takes what has queued up, asks the table which entry of
//! each folder it shows last (the folder's `txn` version), and publishes the rest of every folder
//! in one commit (one per round, not per folder: every commit is one more the other members'
//! publishers read before their next). Entries it was not handed — committed by another process, or before a crash — are
//! read from the commit log. A publication that fails is kept and tried again after a backoff
//! (0.5 s, doubling to 30 s), merged with whatever was handed meanwhile: what is pending is a
//! list of files per folder, never data.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{DeltaError, FolderEntries, Publication};
use crate::Lake;
use crate::log::{EntryFile, EntryObject, Intent, Outcome, OutcomeRecord, entry_path_in, parse_entry_name};
use crate::log_reader::{LogReadError, read_entry};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LAST_BACKOFF: Duration = Duration::from_secs(30);

pub(super) enum Job {
    /// Entry `seq` of log folder `dir` committed these files.
    Entry { dir: String, seq: u64, files: Vec<EntryFile> },
    /// Every committed entry of `dir` through `seq`.
    Through { dir: String, seq: u64 },
    /// Every committed entry of every partition's log folder.
    Everything,
    /// Ends the task as a panic would (tests of the restart).
    #[cfg(test)]
    Panic,
    /// Publish what is pending now, then answer whether everything was published.
    Drain(oneshot::Sender<Result<(), String>>),
}

/// What one folder still has to publish.
#[derive(Default)]
struct Pending {
    /// Entries handed with their files.
    entries: BTreeMap<u64, Vec<EntryFile>>,
    /// Everything committed through this entry is to be shown.
    through: u64,
}

pub(super) fn start(lake: Lake) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    super::DELTA_RUNTIME.spawn(run(lake, rx));
    tx
}

async fn run(lake: Lake, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut drains = Vec::new();
    let mut everything = false;
    let mut backoff = FIRST_BACKOFF;
    while let Some(job) = jobs.recv().await {
        take(job, &mut pending, &mut drains, &mut everything);
        loop {
            while let Ok(job) = jobs.try_recv() {
                take(job, &mut pending, &mut drains, &mut everything);
            }
            let result = match everything {
                true => every_folder(&lake, &mut pending).await.map(|()| everything = false),
                false => Ok(()),
            };
            let result = match result {
                Ok(()) => publish_pending(&lake, &mut pending).await,
                Err(e) => Err(e),
            };
            for drain in drains.drain(..) {
                let _ = drain.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
            }
            match result {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, folders = pending.len(), retry_in = ?backoff, "not published to the Delta table yet");
                    let wake = tokio::time::sleep(backoff);
                    tokio::pin!(wake);
                    loop {
                        tokio::select! {
                            _ = &mut wake => break,
                            job = jobs.recv() => match job {
                                Some(job) => take(job, &mut pending, &mut drains, &mut everything),
                                None => return,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(LAST_BACKOFF);
                }
            }
        }
    }
}

fn take(
    job: Job,
    pending: &mut BTreeMap<String, Pending>,
    drains: &mut Vec<oneshot::Sender<Result<(), String>>>,
    everything: &mut bool,
) {
    match job {
        Job::Everything => *everything = true,
        #[cfg(test)]
        Job::Panic => panic!("a Delta publisher stopped by a test"),
        Job::Entry { dir, seq, files } => {
            let folder = pending.entry(dir).or_default();
            folder.entries.insert(seq, files);
            folder.through = folder.through.max(seq);
        }
        Job::Through { dir, seq } => {
            let folder = pending.entry(dir).or_default();
            folder.through = folder.through.max(seq);
        }
        Job::Drain(answer) => drains.push(answer),
    }
}

/// Makes every partition's log folder pending through its newest entry, whatever it is.
async fn every_folder(lake: &Lake, pending: &mut BTreeMap<String, Pending>) -> Result<(), DeltaError> {
    for dir in crate::log_reader::log_folders(lake).await? {
        pending.entry(dir).or_default().through = u64::MAX;
    }
    Ok(())
}

/// Publishes every folder's pending entries in one commit, and then has nothing pending; on an
/// error everything stays pending.
async fn publish_pending(lake: &Lake, pending: &mut BTreeMap<String, Pending>) -> Result<(), DeltaError> {
    let dirs: Vec<String> = pending.keys().cloned().collect();
    let shown = lake.delta().published_seqs_here(lake, &dirs).await?;
    let mut folders = Vec::new();
    for (dir, shown) in dirs.into_iter().zip(shown) {
        let folder = &pending[&dir];
        let first = shown.map_or(0, |s| s + 1);
        if first <= folder.through {
            let entries = entries(lake, &dir, folder, first).await?;
            folders.push(FolderEntries { log_dir: dir, entries });
        }
    }
    if !folders.is_empty() {
        let published = lake.delta().publish_here(lake, Publication::Flushes(&folders)).await?;
        debug!(folders = folders.len(), ?published, "published to the Delta table");
    }
    pending.clear();
    Ok(())
}

/// The committed entries `first..=through` of a folder: those handed over, or, when any entry in
/// that range was not handed over, all of them as the log has them.
async fn entries(
    lake: &Lake,
    dir: &str,
    folder: &Pending,
    first: u64,
) -> Result<Vec<(u64, Vec<EntryFile>)>, DeltaError> {
    let handed = (first..=folder.through).all(|seq| folder.entries.contains_key(&seq));
    if handed {
        return Ok(folder.entries.range(first..).map(|(seq, files)| (*seq, files.clone())).collect());
    }
    Ok(committed_entries(lake, dir, first, folder.through).await?)
}

/// Reads the committed entries `first..=through` of a partition's log folder, in order.
pub(super) async fn committed_entries(
    lake: &Lake,
    dir: &str,
    first: u64,
    through: u64,
) -> Result<Vec<(u64, Vec<EntryFile>)>, LogReadError> {
    let listed: Vec<_> = lake
        .store()
        .list(Some(&lake.path(dir)))
        .try_collect()
        .await
        .map_err(|e| LogReadError::Store { path: dir.to_owned(), source: Box::new(e) })?;
    let mut decided: Vec<u64> = listed
        .iter()
        .filter_map(|o| o.location.filename().and_then(parse_entry_name))
        .filter(|(seq, object)| *object == EntryObject::Outcome && (first..=through).contains(seq))
        .map(|(seq, _)| seq)
        .collect();
    decided.sort_unstable();
    let mut entries = Vec::new();
    for seq in decided {
        let outcome: OutcomeRecord = read_entry(lake, &entry_path_in(dir, seq, EntryObject::Outcome)).await?;
        if outcome.outcome == Outcome::Committed {
            let intent: Intent = read_entry(lake, &entry_path_in(dir, seq, EntryObject::Intent)).await?;
            entries.push((seq, intent.files));
        }
    }
    Ok(entries)
}
