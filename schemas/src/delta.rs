//! The `results` table as a Delta Lake table (`results/_delta_log/`), for readers outside
//! testlake: DuckDB, Spark, Trino, polars and `deltalake` see atomic snapshots of the committed
//! files — never a crashed flush's files, never a compacted hour twice.
//!
//! The commit logs ([`crate::log`]) stay the writers' protocol and the truth: a flush or a
//! compaction is decided by its outcome object, and only then *published* to the Delta table by
//! [`publish`], which is idempotent and may be repeated by anyone who sees the decided entry
//! (the writer right after deciding, a partition's next owner when it recovers, a compactor
//! before it deletes inputs). See `ingest/COMMIT_PROTOCOL.md`, "The Delta table".
//!
//! - A flush adds its files (with partition values `date` and `hour`, row count and
//!   `finished_at` bounds as statistics) and sets the Delta application transaction (`txn`) of its
//!   partition's log folder (`appId` = `_log/<topic>/p<partition>`) to its sequence number: an
//!   entry whose number the table already holds is not published again.
//! - A compaction removes its inputs and adds its outputs (`dataChange: false`) in one commit,
//!   when all its inputs are in the table; when none are, it was published already.
//! - The log is checkpointed every [`CHECKPOINT_INTERVAL`] versions, and commits older than
//!   [`LOG_RETENTION`] before the newest checkpoint are deleted, so opening the table costs what a
//!   checkpoint and at most that many commits cost, however many flushes ever landed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, DataType, Remove, StructField, StructType, Transaction};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::config::TablePropertiesExt;
use deltalake_core::table::state::DeltaTableState;
use deltalake_core::{DeltaTableError, TableProperty, checkpoints};
use object_store::ObjectStoreExt;
use object_store::prefix::PrefixStore;
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::log::{CompactionKind, EntryFile};
use crate::log_reader::{CommittedFiles, LogReadError};
use crate::{Lake, Table};

/// A checkpoint every this many versions (Delta's default is 10; testlake commits often).
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// Commits are kept this long after a newer checkpoint: how far back time travel reaches (and
/// only as far as compaction's grace keeps replaced files). What testlake creates its tables
/// with (`delta.logRetentionDuration`); after that the table's own property decides, which any
/// Delta tool — or [`set_retention`] — may change.
pub const LOG_RETENTION: TimeDelta = TimeDelta::hours(1);

/// How long checkpoints remember removed files (Delta's default is a week): a checkpoint carries
/// every tombstone younger than this, so its size follows an hour of compactions (and computed
/// tables' replacements), not the table's whole history. Removed files are deleted by testlake
/// itself (after `--compact-grace`, or at once for computed tables), not by a VACUUM that would
/// read these. Also only what testlake creates its tables with (`delta.deletedFileRetentionDuration`,
/// which the Delta kernel reads when it writes a checkpoint).
pub const TOMBSTONE_RETENTION: TimeDelta = TimeDelta::hours(1);

/// How many times a commit that lost a race is tried again on the newer version.
const ATTEMPTS: usize = 10;

/// The lake's Delta tables, as one process sees them: a snapshot kept up to date by each
/// publication, and publications of one process one at a time (they would only race each other).
#[derive(Default)]
pub struct DeltaTables {
    results: Mutex<Option<Handle>>,
    /// The computed tables' ([`computed`]), opened on first use.
    computed: Mutex<HashMap<Table, Handle>>,
    /// The background publisher of committed flushes ([`publisher`]), started on first use.
    publisher: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<publisher::Job>>>,
}

impl std::fmt::Debug for DeltaTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeltaTables")
    }
}

struct Handle {
    log_store: LogStoreRef,
    state: DeltaTableState,
    txns: Txns,
}

/// The table's `txn` versions (per partition's log folder) as of one table version, kept current
/// by reading only the commits after it. The Delta kernel answers one application id by
/// replaying the log backwards to that id's newest `txn` — with several members writing, the
/// checkpoint and every commit since, per folder, per publication.
#[derive(Default)]
struct Txns {
    /// The table version `known` is current at.
    at: Option<u64>,
    /// Per application id, its newest `txn` version (`None`: the table has none).
    known: HashMap<String, Option<i64>>,
}

impl Handle {
    fn new(log_store: LogStoreRef, state: DeltaTableState) -> Self {
        Self { log_store, state, txns: Txns::default() }
    }

    /// The newest `txn` version of application `app_id` in the held version.
    async fn txn_version(&mut self, app_id: &str) -> Result<Option<i64>, DeltaTableError> {
        self.catch_up_txns().await;
        if let Some(known) = self.txns.known.get(app_id) {
            return Ok(*known);
        }
        let version = self.state.transaction_version(self.log_store.as_ref(), app_id).await?;
        self.txns.known.insert(app_id.to_owned(), version);
        Ok(version)
    }

    /// Brings `txns` to the held version from the commits in between; when one cannot be read
    /// (deleted after a checkpoint, a store error), forgets them all (the kernel answers again).
    async fn catch_up_txns(&mut self) {
        let version = self.state.version();
        let from = match self.txns.at {
            Some(at) if at == version => return,
            Some(at) if at < version => at + 1,
            _ => {
                self.txns = Txns { at: Some(version), known: HashMap::new() };
                return;
            }
        };
        for v in from..=version {
            match self.log_store.read_commit_entry(v).await {
                Ok(Some(commit)) if let Some(txns) = commit_txns(&commit) => {
                    for txn in txns {
                        self.txns.known.insert(txn.app_id, Some(txn.version));
                    }
                }
                _ => {
                    self.txns.known.clear();
                    break;
                }
            }
        }
        self.txns.at = Some(version);
    }

    /// Brings the held version up to the table's newest (reading only the commits since).
    async fn update(&mut self) -> Result<(), DeltaTableError> {
        self.state.update(&self.log_store, None).await
    }

    /// Commits `actions` on the version held, then holds the version committed (at a checkpoint,
    /// deleting expired commits). Fails when another writer committed that version first.
    async fn commit(&mut self, actions: Vec<Action>, operation: DeltaOperation) -> Result<u64, DeltaTableError> {
        let done = CommitBuilder::from(commit_properties())
            .with_actions(actions)
            .build(Some(&self.state), Arc::clone(&self.log_store), operation)
            .await?;
        let version = done.version();
        self.state = done.snapshot();
        if (version + 1).is_multiple_of(CHECKPOINT_INTERVAL) && self.state.table_config().enable_expired_log_cleanup() {
            cleanup(&self.log_store, version, self.state.table_config().log_retention_duration()).await;
        }
        Ok(version)
    }
}

/// The `txn` actions of a commit file (one action per line); `None` when a line is not JSON.
fn commit_txns(commit: &[u8]) -> Option<Vec<Transaction>> {
    #[derive(serde::Deserialize)]
    struct Line {
        txn: Option<Transaction>,
    }
    let lines = commit.split(|b| *b == b'\n').filter(|line| !line.trim_ascii().is_empty());
    lines
        .filter_map(|line| serde_json::from_slice::<Line>(line).map(|l| l.txn).transpose())
        .collect::<Result<_, _>>()
        .ok()
}

/// deltalake reads a table through its kernel's engine, which, under a current-thread runtime,
/// starts a runtime of its own for each read; connections it opens through the lake's store die
/// with that runtime, and the next request handed one fails (`DispatchGone`). So all Delta work
/// runs here: one thread, a multi-thread runtime (the engine then uses it), alive as long as the
/// process. It also keeps parsing the table's log off the ingest's own threads.
static DELTA_RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("testlake-delta")
        .enable_all()
        .build()
        .expect("start the Delta runtime")
});

async fn on_delta_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match DELTA_RUNTIME.spawn(work).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A publication's data, owned, to move onto [`DELTA_RUNTIME`].
enum Owned {
    Flushes(Vec<FolderEntries>),
    Compaction { seq: u64, kind: CompactionKind, inputs: Vec<EntryFile>, outputs: Vec<EntryFile> },
}

impl From<Publication<'_>> for Owned {
    fn from(publication: Publication<'_>) -> Self {
        match publication {
            Publication::Flushes(folders) => Self::Flushes(folders.to_vec()),
            Publication::Compaction { seq, kind, inputs, outputs } => {
                Self::Compaction { seq, kind, inputs: inputs.to_vec(), outputs: outputs.to_vec() }
            }
        }
    }
}

impl Owned {
    fn publication(&self) -> Publication<'_> {
        match self {
            Self::Flushes(folders) => Publication::Flushes(folders),
            Self::Compaction { seq, kind, inputs, outputs } => {
                Publication::Compaction { seq: *seq, kind: *kind, inputs, outputs }
            }
        }
    }
}

/// A decided commit-log entry to show in the Delta table.
#[derive(Debug, Clone, Copy)]
pub enum Publication<'a> {
    /// Committed flush entries of partitions' log folders, shown in one commit.
    Flushes(&'a [FolderEntries]),
    /// A committed compaction of `results`: a merge (the inputs' rows rewritten as the outputs,
    /// no data change) or an expiry (the inputs removed, no outputs).
    Compaction { seq: u64, kind: CompactionKind, inputs: &'a [EntryFile], outputs: &'a [EntryFile] },
}

/// Committed flush entries of one partition's log folder.
#[derive(Debug, Clone)]
pub struct FolderEntries {
    pub log_dir: String,
    /// In order: `(seq, files)`.
    pub entries: Vec<(u64, Vec<EntryFile>)>,
}

impl FolderEntries {
    pub fn new(log_dir: &str, entries: &[(u64, Vec<EntryFile>)]) -> Self {
        Self { log_dir: log_dir.to_owned(), entries: entries.to_vec() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Committed as this table version.
    Committed(u64),
    /// The table already showed it.
    Already,
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("Delta table {table}: {source}")]
    Delta { table: String, source: Box<DeltaTableError> },
    #[error("compaction {seq} cannot be published: {message}")]
    Inconsistent { seq: u64, message: String },
    #[error("reading the commit logs for the Delta table: {0}")]
    Log(#[from] LogReadError),
}

impl DeltaError {
    fn delta(lake: &Lake, source: DeltaTableError) -> Self {
        Self::Delta { table: table_url(lake).to_string(), source: Box::new(source) }
    }

    /// A store or a race, worth trying again (not a table in a state testlake never writes).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Inconsistent { .. } | Self::Log(LogReadError::Corrupt { .. }))
    }
}

fn table_url(lake: &Lake) -> url::Url {
    table_url_of(lake, Table::Results)
}

fn table_url_of(lake: &Lake, table: Table) -> url::Url {
    lake.url().join(&format!("{}/", table.name())).expect("a table folder is a valid URL")
}

fn log_store(lake: &Lake) -> LogStoreRef {
    log_store_of(lake, Table::Results)
}

fn log_store_of(lake: &Lake, table: Table) -> LogStoreRef {
    let prefixed = Arc::new(PrefixStore::new(Arc::clone(lake.store()), lake.path(table.name())));
    default_logstore(prefixed, Arc::clone(lake.store()), &table_url_of(lake, table), &StorageConfig::default())
}

/// The Delta schema of `results`: the files' columns, then the partition columns.
fn results_columns() -> Result<Vec<StructField>, DeltaTableError> {
    let files: StructType = crate::tables::results_schema().as_ref().try_into_kernel()?;
    let mut columns: Vec<StructField> = files.fields().cloned().collect();
    columns.push(StructField::new("date", DataType::DATE, false));
    columns.push(StructField::new("hour", DataType::INTEGER, false));
    Ok(columns)
}

/// Delta timestamps statistics are milliseconds: bounds are widened to whole milliseconds, so a
/// reader skipping files by them never skips a row.
fn stats(file: &EntryFile) -> String {
    let ms = |t: DateTime<Utc>, up: bool| {
        let floor = DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t);
        let t = if up && floor < t { floor + TimeDelta::milliseconds(1) } else { floor };
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    };
    let mut stats = serde_json::json!({ "numRecords": file.rows });
    if let (Some(min), Some(max)) = (file.min_time, file.max_time) {
        stats["minValues"] = serde_json::json!({ "finished_at": ms(min, false) });
        stats["maxValues"] = serde_json::json!({ "finished_at": ms(max, true) });
    }
    stats.to_string()
}

fn partition_values(file: &EntryFile) -> HashMap<String, Option<String>> {
    HashMap::from([
        ("date".to_owned(), Some(file.date.format("%Y-%m-%d").to_string())),
        ("hour".to_owned(), Some(file.hour.to_string())),
    ])
}

/// The table path (relative to `results/`) of a file given relative to the lake root.
fn table_path(file: &EntryFile) -> &str {
    let prefix = Table::Results.name();
    file.path.strip_prefix(prefix).and_then(|p| p.strip_prefix('/')).unwrap_or(&file.path)
}

/// The file's size: recorded by its entry, or asked of the store (entries written before sizes
/// were recorded).
async fn size(lake: &Lake, file: &EntryFile) -> Result<i64, DeltaError> {
    if let Some(bytes) = file.bytes {
        return Ok(bytes as i64);
    }
    let meta = lake
        .store()
        .head(&lake.path(&file.path))
        .await
        .map_err(|e| LogReadError::Store { path: file.path.clone(), source: Box::new(e) })?;
    Ok(meta.size as i64)
}

async fn add(lake: &Lake, file: &EntryFile, data_change: bool, now: i64) -> Result<Action, DeltaError> {
    Ok(Action::Add(Add {
        path: table_path(file).to_owned(),
        partition_values: partition_values(file),
        size: size(lake, file).await?,
        modification_time: now,
        data_change,
        stats: Some(stats(file)),
        ..Default::default()
    }))
}

fn remove(file: &EntryFile, data_change: bool, now: i64) -> Action {
    Action::Remove(Remove {
        path: table_path(file).to_owned(),
        data_change,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(false),
        partition_values: Some(partition_values(file)),
        size: file.bytes.map(|b| b as i64),
        ..Default::default()
    })
}

fn txn(app_id: &str, seq: u64) -> Transaction {
    Transaction::new_with_last_update(app_id, seq as i64, Some(Utc::now().timestamp_millis()))
}

fn commit_properties() -> CommitProperties {
    // Expired commits are deleted after checkpoints only ([`cleanup`]): deltalake would list the
    // whole log after every commit.
    CommitProperties::default().with_cleanup_expired_logs(Some(false))
}

impl Lake {
    /// The lake's Delta tables.
    pub fn delta(&self) -> &DeltaTables {
        &self.delta
    }
}

impl DeltaTables {
    fn hand(&self, lake: &Lake, job: publisher::Job) {
        let mut slot = self.publisher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = slot.get_or_insert_with(|| publisher::start(lake.clone()));
        if let Err(unsent) = tx.send(job) {
            // Its task ended (a panic, printed where it happened): another starts and reads every
            // folder, so what the old one held comes back from the commit logs.
            tracing::error!("the Delta publisher stopped; starting another");
            let tx = slot.insert(publisher::start(lake.clone()));
            let _ = tx.send(publisher::Job::Everything);
            let _ = tx.send(unsent.0);
        }
    }

    /// Hands committed entry `seq` of partition log folder `dir` to this process's background
    /// publisher: shown in the table soon, without waiting for it here.
    pub fn committed(&self, lake: &Lake, dir: &str, seq: u64, files: Vec<EntryFile>) {
        self.hand(lake, publisher::Job::Entry { dir: dir.to_owned(), seq, files });
    }

    /// Asks the background publisher to show every committed entry of `dir` through `seq`
    /// (a recovered partition's, which an earlier owner may not have published).
    pub fn committed_through(&self, lake: &Lake, dir: &str, seq: u64) {
        self.hand(lake, publisher::Job::Through { dir: dir.to_owned(), seq });
    }

    /// Asks the background publisher to show every committed entry of every partition's log
    /// folder (reading the folders above what the table shows): on joining a group.
    pub fn publish_all_committed(&self, lake: &Lake) {
        self.hand(lake, publisher::Job::Everything);
    }

    /// Waits until the background publisher has tried to publish everything handed to it so
    /// far: `Err` with the reason when some of it is not in the table yet.
    pub async fn drain(&self, lake: &Lake) -> Result<(), String> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.hand(lake, publisher::Job::Drain(answer));
        answered.await.map_err(|_| "the Delta publisher stopped".to_owned())?
    }

    /// Shows a decided entry in the Delta table (creating the table first if the lake has none),
    /// unless the table shows it already.
    pub async fn publish(&self, lake: &Lake, publication: Publication<'_>) -> Result<Published, DeltaError> {
        let (lake, owned) = (lake.clone(), Owned::from(publication));
        on_delta_runtime(async move { lake.delta().publish_here(&lake, owned.publication()).await }).await
    }

    async fn publish_here(&self, lake: &Lake, publication: Publication<'_>) -> Result<Published, DeltaError> {
        let mut guard = self.results.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let handle = match guard.as_mut() {
                Some(handle) => {
                    handle.update().await.map_err(|e| DeltaError::delta(lake, e))?;
                    handle
                }
                None => guard.insert(open_or_create(lake).await?),
            };
            let Some((actions, operation)) = actions(lake, handle, publication).await? else {
                return Ok(Published::Already);
            };
            match handle.commit(actions, operation).await {
                Ok(version) => return Ok(Published::Committed(version)),
                Err(e) if attempt < ATTEMPTS => {
                    debug!(error = %e, attempt, "Delta commit lost a race or failed; reading the table again");
                }
                Err(e) => {
                    *guard = None;
                    return Err(DeltaError::delta(lake, e));
                }
            }
        }
    }

    /// The sequence number of the newest entry of a partition's log folder the table shows.
    pub async fn published_seq(&self, lake: &Lake, log_dir: &str) -> Result<Option<u64>, DeltaError> {
        let (lake, dirs) = (lake.clone(), vec![log_dir.to_owned()]);
        let seqs = on_delta_runtime(async move { lake.delta().published_seqs_here(&lake, &dirs).await }).await?;
        Ok(seqs.into_iter().next().flatten())
    }

    /// Per partition's log folder, the sequence number of its newest entry the table shows.
    async fn published_seqs_here(&self, lake: &Lake, log_dirs: &[String]) -> Result<Vec<Option<u64>>, DeltaError> {
        let mut guard = self.results.lock().await;
        let handle = match guard.as_mut() {
            Some(handle) => {
                handle.update().await.map_err(|e| DeltaError::delta(lake, e))?;
                handle
            }
            None => guard.insert(open_or_create(lake).await?),
        };
        let mut seqs = Vec::with_capacity(log_dirs.len());
        for dir in log_dirs {
            let version = handle.txn_version(dir).await.map_err(|e| DeltaError::delta(lake, e))?;
            seqs.push(version.map(|v| v as u64));
        }
        Ok(seqs)
    }
}

/// The files of the table's newest version, relative to the lake root (read afresh: for the
/// compactor's planning and for tests). `None` when the lake has no Delta table yet.
pub async fn results_files(lake: &Lake) -> Result<Option<HashSet<String>>, DeltaError> {
    let lake = lake.clone();
    on_delta_runtime(async move { results_files_here(&lake).await }).await
}

async fn results_files_here(lake: &Lake) -> Result<Option<HashSet<String>>, DeltaError> {
    let Some(state) = existing_state(&log_store(lake)).await.map_err(|e| DeltaError::delta(lake, e))? else {
        return Ok(None);
    };
    let prefix = Table::Results.name();
    Ok(Some(state.log_data().iter().map(|file| format!("{prefix}/{}", file.path())).collect()))
}

/// The newest version of the table at `log_store`, or `None` when it has none yet. Looked for
/// first: the Delta kernel logs an error of its own for every attempt to load a table that is
/// not there, which every process starting on a fresh lake made.
pub(crate) async fn existing_state(log_store: &LogStoreRef) -> Result<Option<DeltaTableState>, DeltaTableError> {
    if !log_store.is_delta_table_location().await? {
        return Ok(None);
    }
    match DeltaTableState::try_new(log_store.as_ref(), None).await {
        Ok(state) => Ok(Some(state)),
        Err(DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The table's newest version as a reader starts from it: its files, and per partition's log
/// folder the newest entry it shows (its `txn` version).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    /// Relative to the lake root; what a reader needs of each (rows from the statistics, size; no
    /// time range or repositories).
    pub files: Vec<EntryFile>,
    pub published: Vec<(String, u64)>,
}

/// The newest version of the `results` table (its last checkpoint and the commits after it), or
/// `None` when the lake has no Delta table yet.
pub async fn snapshot(lake: &Lake) -> Result<Option<Snapshot>, DeltaError> {
    let lake = lake.clone();
    on_delta_runtime(async move { snapshot_here(&lake).await }).await
}

async fn snapshot_here(lake: &Lake) -> Result<Option<Snapshot>, DeltaError> {
    let log_store = log_store(lake);
    let Some(state) = existing_state(&log_store).await.map_err(|e| DeltaError::delta(lake, e))? else {
        return Ok(None);
    };
    let prefix = Table::Results.name();
    let mut files = Vec::new();
    for file in state.log_data().iter() {
        let path = format!("{prefix}/{}", file.path());
        let Some((date, hour)) = hour_partition(&path) else {
            return Err(DeltaError::Inconsistent {
                seq: state.version(),
                message: format!("{path} is not in a date=…/hour=… folder"),
            });
        };
        files.push(EntryFile {
            path,
            table: Table::Results,
            date,
            hour,
            rows: file.num_records().unwrap_or_default() as u64,
            min_time: None,
            max_time: None,
            repositories: None,
            bytes: u64::try_from(file.size()).ok(),
        });
    }
    let mut published = Vec::new();
    for dir in crate::log_reader::log_folders(lake).await? {
        let version =
            state.transaction_version(log_store.as_ref(), &dir).await.map_err(|e| DeltaError::delta(lake, e))?;
        if let Some(seq) = version.and_then(|v| u64::try_from(v).ok()) {
            published.push((dir, seq));
        }
    }
    Ok(Some(Snapshot { version: state.version(), files, published }))
}

/// The `date=YYYY-MM-DD/hour=H` folders of a file's path.
fn hour_partition(path: &str) -> Option<(NaiveDate, u8)> {
    let value = |key: &str| path.split('/').find_map(|part| part.strip_prefix(key));
    Some((value("date=")?.parse().ok()?, value("hour=")?.parse().ok()?))
}

/// What a publication adds to the table at `state`, or `None` when the table shows it already./// What a publication adds to the table at `state`, or `None` when the table shows it already.
async fn actions(
    lake: &Lake,
    handle: &mut Handle,
    publication: Publication<'_>,
) -> Result<Option<(Vec<Action>, DeltaOperation)>, DeltaError> {
    let now = Utc::now().timestamp_millis();
    match publication {
        Publication::Flushes(folders) => {
            let mut actions = Vec::new();
            for folder in folders {
                let published = handle.txn_version(&folder.log_dir).await.map_err(|e| DeltaError::delta(lake, e))?;
                let new = folder.entries.iter().filter(|(seq, _)| published.is_none_or(|p| *seq as i64 > p));
                let new: Vec<&(u64, Vec<EntryFile>)> = new.collect();
                let Some(last) = new.last().map(|(seq, _)| *seq) else {
                    continue;
                };
                for file in new.iter().flat_map(|(_, files)| files).filter(|f| f.table == Table::Results) {
                    actions.push(add(lake, file, true, now).await?);
                }
                actions.push(Action::Txn(txn(&folder.log_dir, last)));
            }
            if actions.is_empty() {
                return Ok(None);
            }
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec!["date".into(), "hour".into()]),
                predicate: None,
            };
            Ok(Some((actions, operation)))
        }
        Publication::Compaction { seq, kind, inputs, outputs } => {
            let active: HashSet<String> = handle.state.log_data().iter().map(|f| f.path().into_owned()).collect();
            let shown = inputs.iter().filter(|f| active.contains(table_path(f))).count();
            if shown == 0 {
                return Ok(None);
            }
            if shown < inputs.len() {
                return Err(DeltaError::Inconsistent {
                    seq,
                    message: format!("{shown} of its {} inputs are in the table", inputs.len()),
                });
            }
            let expiry = kind == CompactionKind::Expire;
            let mut actions: Vec<Action> = inputs.iter().map(|f| remove(f, expiry, now)).collect();
            for file in outputs {
                actions.push(add(lake, file, false, now).await?);
            }
            let operation = if expiry {
                let dates: BTreeSet<NaiveDate> = inputs.iter().map(|f| f.date).collect();
                let dates: Vec<String> = dates.iter().map(|d| format!("'{d}'")).collect();
                DeltaOperation::Delete { predicate: Some(format!("date IN ({})", dates.join(", "))) }
            } else {
                let target_size = outputs.iter().filter_map(|f| f.bytes).max().unwrap_or(0) as i64;
                DeltaOperation::Optimize { predicate: None, target_size }
            };
            Ok(Some((actions, operation)))
        }
    }
}

/// Opens the table, or creates it with what the commit logs have committed so far: every visible
/// file, and per partition's log folder the newest committed entry as its transaction version.
async fn open_or_create(lake: &Lake) -> Result<Handle, DeltaError> {
    let log_store = log_store(lake);
    if let Ok(Some(state)) = existing_state(&log_store).await {
        return Ok(Handle::new(log_store, state));
    }
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await?;
    let now = Utc::now().timestamp_millis();
    let mut actions = Vec::new();
    for file in committed.results_files() {
        actions.push(add(lake, file, true, now).await?);
    }
    actions.extend(committed.committed_through().map(|(dir, seq)| Action::Txn(txn(dir, seq))));
    let files = actions.len();
    let created = CreateBuilder::new()
        .with_log_store(Arc::clone(&log_store))
        .with_table_name(Table::Results.name())
        .with_columns(results_columns().map_err(|e| DeltaError::delta(lake, e))?)
        .with_partition_columns(["date", "hour"])
        .with_configuration_property(TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL.to_string()))
        .with_configuration_property(
            TableProperty::LogRetentionDuration,
            Some(format!("interval {} minutes", LOG_RETENTION.num_minutes())),
        )
        .with_configuration_property(
            TableProperty::DeletedFileRetentionDuration,
            Some(format!("interval {} minutes", TOMBSTONE_RETENTION.num_minutes())),
        )
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_commit_properties(commit_properties())
        .with_actions(actions)
        .await;
    match created {
        Ok(_) => info!(table = %table_url(lake), actions = files, "created the Delta table from the commit logs"),
        // Another process created it first: use theirs.
        Err(e) => debug!(error = %e, "the Delta table exists"),
    }
    let state = DeltaTableState::try_new(log_store.as_ref(), None).await.map_err(|e| DeltaError::delta(lake, e))?;
    Ok(Handle::new(log_store, state))
}

/// After a checkpoint at `version`: deletes commits older than `retention` (the table's
/// `delta.logRetentionDuration`) that a checkpoint covers. Failing only leaves them for the next
/// checkpoint.
async fn cleanup(log_store: &LogStoreRef, version: u64, retention: std::time::Duration) {
    let cutoff = Utc::now().timestamp_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match checkpoints::cleanup_expired_logs_for(version, log_store.as_ref(), cutoff, None).await {
        Ok(deleted) => debug!(version, deleted, "expired Delta commits deleted"),
        Err(e) => debug!(version, error = %e, "expired Delta commits not deleted; tried after the next checkpoint"),
    }
}

/// Sets how long the `results` table keeps history: commits for time travel
/// (`delta.logRetentionDuration`, deleted after a newer checkpoint) and removed files' tombstones
/// in checkpoints (`delta.deletedFileRetentionDuration`). A reader still following a checkpoint
/// older than `history` may find commits gone (and has to start from the newest): keep it well
/// above how long a read takes. `lake_open` sets 0 to open lakes as they are once their history
/// is older than the retention.
pub async fn set_retention(lake: &Lake, history: TimeDelta) -> Result<(), DeltaError> {
    let lake = lake.clone();
    on_delta_runtime(async move {
        let interval = format!("interval {} seconds", history.num_seconds());
        let properties = HashMap::from([
            (TableProperty::LogRetentionDuration.as_ref().to_owned(), interval.clone()),
            (TableProperty::DeletedFileRetentionDuration.as_ref().to_owned(), interval),
        ]);
        let mut table = deltalake_core::DeltaTable::new(log_store(&lake));
        let set = async {
            table.load().await?;
            table.set_tbl_properties().with_properties(properties).with_commit_properties(commit_properties()).await
        };
        set.await.map_err(|e| DeltaError::delta(&lake, e))?;
        // This process's handle holds the properties it read.
        *lake.delta().results.lock().await = None;
        Ok(())
    })
    .await
}

pub mod computed;
mod publisher;
pub mod view;

#[cfg(test)]
mod tests;
