//! Every event counted once.
//!
//! The lake is exactly once per Kafka *offset*, but `event_id` is the event's identity: a
//! producer retry without idempotence, a re-run `testlake junit` or a CI job re-sending its
//! results lands another copy under another offset (maybe another partition, another flush,
//! another member). Readers of `results` — compute, the query service, `testlake sql` — count
//! each `event_id` once, as the copy that **landed first**: the smallest (`ingested_at`,
//! `kafka_topic`, `kafka_partition`, `kafka_offset`). The later copies ([`LaterCopy`]) are left out
//! of every number, and listed (the SQL table `duplicates`) with the columns where their content
//! differs from the first copy, so a conflicting re-send is visible rather than silently merged.
//!
//! Finding them costs what it must and no more:
//! - a copy has its event's `finished_at`, so it lands in the same hour folder: copies are
//!   looked for hour by hour, in the committed files of that hour only;
//! - the first pass reads one column, `event_id`, into a set of 128-bit ids; only the files that
//!   hold an id seen twice are read again, whole, to tell which copy came first and what differs;
//! - each hour's answer is kept ([`Memo`]) while its committed file set stays the same, and an
//!   hour whose files only grew (ingest appending to the open hour) reads just its new files
//!   against the ids it kept — a landing costs the files that landed, not the day.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ParquetRecordBatchReaderBuilder, RowFilter};
use testlake_schemas::Lake;

/// Where a copy landed: what "first" is decided by, in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Landing {
    /// Microseconds since the epoch, UTC.
    pub ingested_at: i64,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// A later copy of an event: not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterCopy {
    pub event_id: String,
    pub landing: Landing,
    /// The copy that counts.
    pub first: Landing,
    /// Columns (lineage aside) whose values differ from the first copy's, in schema order:
    /// empty for an exact copy.
    pub differs: Vec<String>,
}

/// Columns that say where a row came from, not what the event is.
const LINEAGE: [&str; 4] = ["kafka_topic", "kafka_partition", "kafka_offset", "ingested_at"];

/// The later copies among the given committed `results` files (paths relative to the lake root),
/// in the order of their hours, then event ids.
pub async fn later_copies(lake: &Lake, files: &[String]) -> Result<Vec<LaterCopy>> {
    let mut hours: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        hours.entry(hour_of(file)).or_default().push(file.clone());
    }
    // Two hours at once: a compacted hour is one file, read on one core.
    let hours: Vec<_> = hours
        .into_iter()
        .map(|(hour, files)| {
            let lake = lake.clone();
            async move { hour_copies(&lake, &hour, files).await }
        })
        .collect();
    let mut hours = futures::stream::iter(hours).buffered(2);
    let mut copies = Vec::new();
    while let Some(found) = hours.next().await {
        copies.extend(found?.iter().cloned());
    }
    Ok(copies)
}

/// The folder a file is in: `results/date=…/hour=…`, its hour.
fn hour_of(file: &str) -> String {
    file.rsplit_once('/').map_or("", |(folder, _)| folder).to_owned()
}

/// Forgets every hour's answer for `lake`, as a fresh process starts: for benchmarks that measure
/// the first read.
pub fn forget(lake: &Lake) {
    let url = lake.url().to_string();
    MEMOS.lock().expect("memo lock").retain(|(lake, _), _| *lake != url);
}

/// One hour's answer, as of a set of files.
#[derive(Default)]
struct Memo {
    /// The files the answer covers, in the order they were read.
    files: Vec<String>,
    /// Every id seen, and the index (in `files`) of the file it was first seen in: kept only for
    /// the hours that changed last ([`IDS_KEPT`]), the ones likely to grow again.
    ids: Option<Ids>,
    /// Ids seen more than once, and the indices of the files that hold them.
    copied_ids: IdSet,
    holding_copies: Vec<u32>,
    copies: Arc<Vec<LaterCopy>>,
    /// When it was last updated, in updates of the whole memo table.
    updated: u64,
}

/// How many hours keep their id sets (about 18 bytes per result each). An hour that grows after
/// losing its set is read again whole.
const IDS_KEPT: usize = 4;

/// Every reader in the process shares the hours' answers: compute and the query service in
/// `testlake all` then read each new file's ids once. Keyed by lake URL and hour.
static MEMOS: LazyLock<Mutex<HashMap<(String, String), Memo>>> = LazyLock::new(Default::default);
static UPDATES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn hour_copies(lake: &Lake, hour: &str, mut files: Vec<String>) -> Result<Arc<Vec<LaterCopy>>> {
    files.sort();
    let key = (lake.url().to_string(), hour.to_owned());
    let mut memo = {
        let mut memos = MEMOS.lock().expect("memo lock");
        match memos.get_mut(&key) {
            Some(memo) if same_files(&memo.files, &files) => return Ok(Arc::clone(&memo.copies)),
            Some(memo) if memo.ids.is_some() && grown_from(&memo.files, &files) => std::mem::take(memo),
            _ => Memo::default(),
        }
    };
    let new: Vec<String> = {
        let known: HashSet<&String> = memo.files.iter().collect();
        files.iter().filter(|f| !known.contains(f)).cloned().collect()
    };
    let holding_before = memo.holding_copies.len();
    let mut scan = Scan {
        ids: memo.ids.take().unwrap_or_default(),
        copied: std::mem::take(&mut memo.copied_ids),
        holding: std::mem::take(&mut memo.holding_copies),
    };
    // Two files decoded at once (two cores); their ids added in order, off the runtime too.
    // (Owned futures: a stream of closures borrowing `lake` makes the caller's future not `Send`.)
    let reads: Vec<_> = new
        .into_iter()
        .map(|file| {
            let lake = lake.clone();
            async move { (event_ids(&lake, &file).await, file) }
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(2);
    while let Some((read, file)) = reads.next().await {
        let (keys, index) = (read?, u32::try_from(memo.files.len()).map_err(|_| external("too many files"))?);
        scan = blocking(move || {
            scan.add(index, &keys);
            Ok(scan)
        })
        .await?;
        memo.files.push(file);
    }
    let Scan { ids, copied, holding } = scan;
    (memo.copied_ids, memo.holding_copies) = (copied, holding);
    memo.holding_copies.sort_unstable();
    memo.holding_copies.dedup();
    if memo.holding_copies.len() != holding_before {
        let holding: Vec<&String> = memo.holding_copies.iter().map(|&i| &memo.files[i as usize]).collect();
        memo.copies = Arc::new(decide(lake, &holding, &memo.copied_ids).await?);
    }
    memo.ids = Some(ids);
    let copies = Arc::clone(&memo.copies);
    let mut memos = MEMOS.lock().expect("memo lock");
    memo.updated = UPDATES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    memos.insert(key, memo);
    forget_old_ids(&mut memos);
    Ok(copies)
}

fn same_files(known: &[String], files: &[String]) -> bool {
    known.len() == files.len() && {
        let mut known = known.to_vec();
        known.sort();
        known == files
    }
}

/// Whether `files` holds every one of `known` (and more): ingest only appended to the hour.
fn grown_from(known: &[String], files: &[String]) -> bool {
    let files: HashSet<&String> = files.iter().collect();
    known.iter().all(|f| files.contains(f))
}

fn forget_old_ids(memos: &mut HashMap<(String, String), Memo>) {
    let mut with_ids: Vec<u64> = memos.values().filter(|m| m.ids.is_some()).map(|m| m.updated).collect();
    if with_ids.len() <= IDS_KEPT {
        return;
    }
    with_ids.sort_unstable();
    let oldest_kept = with_ids[with_ids.len() - IDS_KEPT];
    for memo in memos.values_mut().filter(|m| m.updated < oldest_kept) {
        memo.ids = None;
    }
}

/// 64 bits of an event id: a UUID's two halves folded into one (their bits are random), or for an
/// id that is not a UUID (testlake's decoder accepts none, but a file may come from elsewhere) a
/// hash of it. Two ids with the same key (about one pair in an hour of 10⁹ results) only make the
/// second pass, which compares the ids themselves, read their files for nothing.
fn id_key(id: &str) -> u64 {
    match uuid::Uuid::try_parse_ascii(id.as_bytes()) {
        Ok(uuid) => {
            let (high, low) = uuid.as_u64_pair();
            high ^ low
        }
        Err(_) => std::hash::BuildHasher::hash_one(&std::hash::BuildHasherDefault::<DefaultHasher>::default(), id),
    }
}

/// The key is a hash already ([`id_key`]): hashing it again would only cost time.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// Every id seen in an hour, and the index of the file it was first seen in.
type Ids = HashMap<u64, u32, BuildHasherDefault<KeyIsHash>>;
type IdSet = HashSet<u64, BuildHasherDefault<KeyIsHash>>;

/// The first pass over an hour's files.
struct Scan {
    ids: Ids,
    /// Ids seen more than once.
    copied: IdSet,
    /// Indices of the files holding them (with repeats).
    holding: Vec<u32>,
}

impl Scan {
    fn add(&mut self, index: u32, keys: &[u64]) {
        self.ids.reserve(keys.len());
        for &key in keys {
            match self.ids.entry(key) {
                Entry::Occupied(first) => {
                    self.holding.extend([*first.get(), index]);
                    self.copied.insert(key);
                }
                Entry::Vacant(new) => {
                    new.insert(index);
                }
            }
        }
    }
}

/// Runs CPU-bound work off the runtime, which in `testlake all` also runs the ingest and the
/// service.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| external(format!("finding copies: {e}")))?
}

/// One whole file's bytes. (Fetched at once: a results file is one flush or one compacted hour,
/// and ranged reads would cost a request per column chunk on S3.)
async fn fetch(lake: &Lake, file: &str) -> Result<Bytes> {
    let read = |e: object_store::Error| external(format!("reading {file}: {e}"));
    lake.store().get(&lake.path(file)).await.map_err(read)?.bytes().await.map_err(read)
}

/// A reader of one file's bytes, and the `event_id` column's projection.
fn reader(bytes: Bytes, file: &str) -> Result<(ParquetRecordBatchReaderBuilder<Bytes>, ProjectionMask)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let column =
        builder.schema().index_of("event_id").map_err(|_| external(format!("{file} has no event_id column")))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
    Ok((builder, mask))
}

/// The keys of one file's `event_id` column.
async fn event_ids(lake: &Lake, file: &str) -> Result<Vec<u64>> {
    let (bytes, file) = (fetch(lake, file).await?, file.to_owned());
    blocking(move || {
        let (builder, mask) = reader(bytes, &file)?;
        let mut keys = Vec::with_capacity(usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0));
        for batch in builder.with_projection(mask).build()? {
            keys.extend(event_id_strings(&batch?)?.iter().flatten().map(id_key));
        }
        Ok(keys)
    })
    .await
}

/// The rows of one file whose event id is one of `copied`: the Parquet reader decodes the other
/// columns of those rows only.
async fn rows_with(lake: &Lake, file: &str, copied: Arc<IdSet>) -> Result<Vec<RecordBatch>> {
    let (bytes, file) = (fetch(lake, file).await?, file.to_owned());
    blocking(move || {
        let (builder, mask) = reader(bytes, &file)?;
        let wanted = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let ids = cast(batch.column(0), &DataType::Utf8)?;
            Ok(ids
                .as_string::<i32>()
                .iter()
                .map(|id| Some(id.is_some_and(|id| copied.contains(&id_key(id)))))
                .collect())
        });
        let rows = builder.with_row_filter(RowFilter::new(vec![Box::new(wanted)])).build()?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
    .await
}

/// One copy of an event as the second pass sees it.
struct Seen {
    landing: Landing,
    /// Every non-lineage column's value, rendered, in schema order.
    content: Vec<(String, String)>,
}

/// Reads the rows of the ids seen more than once from the files that hold them, and decides for
/// each such id which copy came first and how the others differ.
async fn decide(lake: &Lake, files: &[&String], copied: &IdSet) -> Result<Vec<LaterCopy>> {
    let copied = Arc::new(copied.clone());
    let mut seen: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    let reads: Vec<_> = files
        .iter()
        .map(|file| {
            let (lake, file, copied) = (lake.clone(), (*file).clone(), Arc::clone(&copied));
            async move { rows_with(&lake, &file, copied).await }
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(2);
    while let Some(rows) = reads.next().await {
        for batch in rows? {
            collect_seen(&batch, &mut seen)?;
        }
    }
    // Two ids sharing a key ([`id_key`]) are grouped by the ids themselves: each alone, no copy.
    let mut copies = Vec::new();
    for (event_id, mut all) in seen {
        all.sort_by(|a, b| a.landing.cmp(&b.landing));
        all.dedup_by(|a, b| a.landing == b.landing);
        let Some((first, later)) = all.split_first() else { continue };
        for copy in later {
            let differs = copy
                .content
                .iter()
                .zip(&first.content)
                .filter(|(a, b)| a != b)
                .map(|((column, _), _)| column.clone())
                .collect();
            copies.push(LaterCopy {
                event_id: event_id.clone(),
                landing: copy.landing.clone(),
                first: first.landing.clone(),
                differs,
            });
        }
    }
    Ok(copies)
}

fn event_id_strings(batch: &RecordBatch) -> Result<StringArray> {
    let column = batch.column_by_name("event_id").ok_or_else(|| external("a results file has no event_id column"))?;
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn collect_seen(rows: &RecordBatch, seen: &mut BTreeMap<String, Vec<Seen>>) -> Result<()> {
    let column = |name: &str| rows.column_by_name(name).ok_or_else(|| external(format!("no {name} column")));
    let ids = event_id_strings(rows)?;
    let topics = cast(column("kafka_topic")?, &DataType::Utf8)?;
    let topics = topics.as_string::<i32>();
    let partitions = column("kafka_partition")?.as_primitive::<Int32Type>();
    let offsets = column("kafka_offset")?.as_primitive::<Int64Type>();
    let ingested = column("ingested_at")?.as_primitive::<TimestampMicrosecondType>();
    let schema = rows.schema();
    let content: Vec<(String, ArrayFormatter<'_>)> = schema
        .fields()
        .iter()
        .zip(rows.columns())
        .filter(|(f, _)| !LINEAGE.contains(&f.name().as_str()))
        .map(|(f, c)| Ok((f.name().clone(), ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?)))
        .collect::<Result<_>>()?;
    for row in 0..rows.num_rows() {
        let landing = Landing {
            ingested_at: ingested.value(row),
            kafka_topic: topics.value(row).to_owned(),
            kafka_partition: partitions.value(row),
            kafka_offset: offsets.value(row),
        };
        let content = content.iter().map(|(name, f)| (name.clone(), f.value(row).to_string())).collect();
        seen.entry(ids.value(row).to_owned()).or_default().push(Seen { landing, content });
    }
    Ok(())
}

/// The later copies as the SQL table `duplicates`: one row per copy left out, with where it
/// landed, where the copy that counts landed, and whether (and in which columns) they differ.
pub fn copies_batch(copies: &[LaterCopy]) -> Result<RecordBatch> {
    let time = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![Field::new("event_id", DataType::Utf8, false)];
    for prefix in ["", "first_"] {
        fields.extend([
            Field::new(format!("{prefix}kafka_topic"), DataType::Utf8, false),
            Field::new(format!("{prefix}kafka_partition"), DataType::Int32, false),
            Field::new(format!("{prefix}kafka_offset"), DataType::Int64, false),
            Field::new(format!("{prefix}ingested_at"), time(), false),
        ]);
    }
    fields.push(Field::new("conflict", DataType::Boolean, false));
    fields.push(Field::new("differs", DataType::Utf8, true));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(copies.iter().map(|c| &c.event_id)))];
    for landing in [|c: &LaterCopy| c.landing.clone(), |c: &LaterCopy| c.first.clone()] {
        let landings: Vec<Landing> = copies.iter().map(landing).collect();
        columns.extend::<[ArrayRef; 4]>([
            Arc::new(StringArray::from_iter_values(landings.iter().map(|l| &l.kafka_topic))),
            Arc::new(Int32Array::from_iter_values(landings.iter().map(|l| l.kafka_partition))),
            Arc::new(Int64Array::from_iter_values(landings.iter().map(|l| l.kafka_offset))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(landings.iter().map(|l| l.ingested_at))
                    .with_timezone("UTC"),
            ),
        ]);
    }
    columns.push(Arc::new(BooleanArray::from_iter(copies.iter().map(|c| Some(!c.differs.is_empty())))));
    columns.push(Arc::new(StringArray::from_iter(
        copies.iter().map(|c| (!c.differs.is_empty()).then(|| c.differs.join(","))),
    )));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn external(message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(message.into().into())
}

pub mod filter;

#[cfg(test)]
mod tests;
