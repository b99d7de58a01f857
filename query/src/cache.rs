//! Answers cached as Arrow batches, weighed by every byte an entry keeps (key, head, rows and
//! the rendering made once), loaded within a time limit, invalidated precisely.
//!
//! Every cached [`Answer`] knows what it was computed from (its [`Coverage`]: tables and dates)
//! and the invalidation epoch at which its load *started*. A landed notice bumps the epoch,
//! is logged, and removes the cached answers it covers. A load that was already running when the
//! notice arrived may still insert its (possibly stale) answer afterwards; the next read finds a
//! logged notice newer than the answer's epoch that covers it, and reloads. So a stale answer is
//! never served after the notice that made it stale has been seen by a later request. (A request
//! already waiting on a load when a notice arrives takes the load's answer: the notice is
//! concurrent with it.)
//!
//! Concurrent misses of one key are coalesced by moka: one load runs, the others wait for it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use moka::future::Cache;
use moka::notification::RemovalCause;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{Map, Value};
use testlake_schemas::observe::Registry;
use testlake_schemas::{Landed, Table};

use crate::error::ApiError;

/// What an answer was computed from: tables, each with the date partitions read (`None` when
/// any date may matter, e.g. "the latest snapshot").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Coverage {
    pub parts: Vec<(Table, Option<RangeInclusive<NaiveDate>>)>,
    /// The one repository the answer is about, if it is filtered to one.
    pub repository: Option<String>,
}

impl Coverage {
    /// `table` over the `dates` partitions.
    pub fn of(table: Table, dates: Option<RangeInclusive<NaiveDate>>) -> Self {
        Self { parts: vec![(table, dates)], repository: None }
    }

    /// Only about `repository` (when `Some`): notices that list other repositories pass it by.
    pub fn for_repository(mut self, repository: Option<&str>) -> Self {
        self.repository = repository.map(str::to_owned);
        self
    }

    /// Also `table` over `dates`.
    pub fn and(mut self, table: Table, dates: Option<RangeInclusive<NaiveDate>>) -> Self {
        self.parts.push((table, dates));
        self
    }

    pub fn covers(&self, notice: &Landed) -> bool {
        self.parts.iter().any(|(t, d)| *t == notice.table && d.as_ref().is_none_or(|d| d.contains(&notice.date)))
            && self.repository.as_deref().is_none_or(|r| notice.concerns(r))
    }
}

/// What a loader returns: metadata for the JSON head, and the rows.
pub struct Loaded {
    pub head: Map<String, Value>,
    pub batch: RecordBatch,
    /// A one-row answer rendered as a JSON object (the dashboard summary), not a list of rows.
    pub object: bool,
}

/// A cached answer.
pub struct Answer {
    pub head: Map<String, Value>,
    pub batch: RecordBatch,
    pub object: bool,
    /// A hash of the content: answers with equal content have equal versions (and ETags).
    pub version: u64,
    pub bytes: usize,
    epoch: u64,
    coverage: Coverage,
    /// The default rendering (JSON, first page), made once.
    pub default_json: OnceLock<Bytes>,
}

impl Answer {
    /// An answer that is not cached (a SQL statement's).
    pub fn uncached(loaded: Loaded) -> Result<Self, ApiError> {
        Self::new(loaded, 0, Coverage::default())
    }

    fn new(loaded: Loaded, epoch: u64, coverage: Coverage) -> Result<Self, ApiError> {
        let mut hasher = std::hash::DefaultHasher::new();
        let head = serde_json::to_string(&loaded.head).expect("json");
        head.hash(&mut hasher);
        hash_rows(&loaded.batch, &mut hasher)?;
        // What the answer holds besides its rows: the head, and what its coverage names.
        let bytes = loaded.batch.get_array_memory_size()
            + head.len()
            + coverage.repository.as_ref().map_or(0, String::len)
            + coverage.parts.len() * std::mem::size_of::<(Table, Option<RangeInclusive<NaiveDate>>)>()
            + std::mem::size_of::<Self>();
        Ok(Self {
            head: loaded.head,
            batch: loaded.batch,
            object: loaded.object,
            version: hasher.finish(),
            bytes,
            epoch,
            coverage,
            default_json: OnceLock::new(),
        })
    }

    /// A cached answer: its default rendering made now, so that what the cache weighs is all it
    /// will hold (a rendering made after the insert would grow the entry past its weight).
    fn cached(loaded: Loaded, epoch: u64, coverage: Coverage) -> Result<Self, ApiError> {
        let mut answer = Self::new(loaded, epoch, coverage)?;
        let body = crate::render::default_body(&answer)?;
        answer.bytes += body.len();
        let _ = answer.default_json.set(body);
        Ok(answer)
    }

    /// What the cache weighs an answer held under `key` at: every byte it keeps alive, and
    /// moka's bookkeeping of the entry (about as much again as the `Answer` itself).
    fn weight(&self, key: &str) -> u32 {
        u32::try_from(key.len() + self.bytes + std::mem::size_of::<Self>()).unwrap_or(u32::MAX)
    }
}

/// Feeds the rows' Arrow IPC encoding to `hasher`, a slice at a time: hashing the encoding of a
/// large answer at once would copy all of it.
fn hash_rows(batch: &RecordBatch, hasher: &mut impl Hasher) -> Result<(), ApiError> {
    /// Passes what the IPC writer writes to the hasher.
    struct Feed<'a, H>(&'a mut H);
    impl<H: Hasher> std::io::Write for Feed<'_, H> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const SLICE_ROWS: usize = 8192;
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Feed(hasher), &batch.schema())?;
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = SLICE_ROWS.min(batch.num_rows() - offset);
        writer.write(&batch.slice(offset, len))?;
        offset += len;
    }
    writer.finish()?;
    Ok(())
}

/// Runs a load, again (up to twice more) when it failed in a way a retry can fix: a file that
/// compute replaced (atomically) between the listing and the read shows up as a size mismatch or
/// a missing file; the next attempt lists afresh. Bad requests are not retried.
async fn retried<F, Fut>(load: &F) -> Result<Loaded, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Loaded, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match load().await {
            Err(e) if attempt < 2 && e.status().is_server_error() => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "retrying a load");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            done => return done,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Answers found stale at read time (a load raced a notice).
    pub stale: AtomicU64,
    /// Notices seen, by table.
    pub invalidations: Mutex<BTreeMap<String, u64>>,
    /// Cached answers removed by notices.
    pub invalidated_answers: AtomicU64,
}

/// The cache's metrics, read from its counters at each scrape.
struct CacheMetrics {
    stats: Arc<CacheStats>,
    cache: Cache<String, Arc<Answer>>,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheMetrics")
    }
}

impl Collector for CacheMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        let counters = [
            ("testlake_query_cache_hits", "Answers served from the cache.", &stats.hits),
            ("testlake_query_cache_misses", "Answers loaded from the lake.", &stats.misses),
            ("testlake_query_cache_evictions", "Answers evicted to stay within the memory budget.", &stats.evictions),
            (
                "testlake_query_cache_stale",
                "Cached answers found stale at read time (a load raced a notice) and reloaded.",
                &stats.stale,
            ),
            (
                "testlake_query_cache_invalidated_answers",
                "Cached answers removed by landed notices.",
                &stats.invalidated_answers,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        let help = "Landed notices applied, by table (the reason), or `missed_notices` when notices were lost.";
        let mut family =
            encoder.encode_descriptor("testlake_query_cache_invalidations", help, None, MetricType::Counter)?;
        for (reason, n) in stats.invalidations.lock().expect("stats lock").iter() {
            ConstCounter::new(*n).encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }
        let bytes = ConstGauge::new(self.cache.weighted_size() as i64);
        bytes.encode(encoder.encode_descriptor(
            "testlake_query_cache_bytes",
            "Bytes of cached answers.",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// A recent notice: its epoch, and the notice, or `None` for "everything changed".
type Logged = (u64, Option<Landed>);

/// How many notices the log keeps; an answer older than the log is treated as stale.
const LOG_LEN: usize = 16_384;

pub struct AnswerCache {
    cache: Cache<String, Arc<Answer>>,
    /// How long a load may take before it is abandoned.
    load_timeout: Duration,
    epoch: AtomicU64,
    log: Mutex<VecDeque<Logged>>,
    pub stats: Arc<CacheStats>,
}

impl AnswerCache {
    /// A cache holding at most `budget_bytes` of answers.
    pub fn new(budget_bytes: u64) -> Self {
        let stats = Arc::new(CacheStats::default());
        let listener_stats = Arc::clone(&stats);
        let cache = Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(|key: &String, a: &Arc<Answer>| a.weight(key))
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                if matches!(cause, RemovalCause::Size) {
                    listener_stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let load_timeout = Duration::from_secs(30);
        Self { cache, load_timeout, epoch: AtomicU64::new(0), log: Mutex::new(VecDeque::new()), stats }
    }

    /// Loads that take longer than `timeout` are abandoned (their work dropped) with a 503.
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// Runs `load` (retried as [`retried`] says) within the load timeout.
    async fn load<F, Fut>(&self, load: &F) -> Result<Loaded, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Loaded, ApiError>>,
    {
        tokio::time::timeout(self.load_timeout, retried(load))
            .await
            .unwrap_or(Err(ApiError::AnswerTimeout(self.load_timeout)))
    }

    /// The cached answer for `key`, loading it on a miss. Returns the answer and whether it was a hit.
    pub async fn get<F, Fut>(&self, key: &str, coverage: &Coverage, load: F) -> Result<(Arc<Answer>, bool), ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Loaded, ApiError>>,
    {
        // The notices this request has seen: an answer is stale for it only if one of those came
        // after the answer's load started. One that arrives while the request waits on a load is
        // concurrent with the request, and the answer may be either side of it (a request waiting
        // on a load restarted for every notice never answered while ingest landed every 200 ms).
        let seen = self.epoch.load(Ordering::SeqCst);
        for _ in 0..3 {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let entry = self
                .cache
                .entry_by_ref(key)
                .or_try_insert_with(async {
                    Ok(Arc::new(Answer::cached(self.load(&load).await?, epoch, coverage.clone())?))
                })
                .await
                .map_err(ApiError::Shared)?;
            let answer = entry.value();
            if entry.is_fresh() {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                return Ok((Arc::clone(answer), false));
            }
            if !self.is_stale(answer, seen) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((Arc::clone(answer), true));
            }
            self.stats.stale.fetch_add(1, Ordering::Relaxed);
            self.cache.invalidate(key).await;
        }
        // Notices keep arriving faster than the answer loads: answer uncached from a fresh load.
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let epoch = self.epoch.load(Ordering::SeqCst);
        Ok((Arc::new(Answer::new(self.load(&load).await?, epoch, coverage.clone())?), false))
    }

    /// Whether a notice up to epoch `seen`, newer than the answer's load, covers it.
    fn is_stale(&self, answer: &Answer, seen: u64) -> bool {
        if seen <= answer.epoch {
            return false; // loaded after every notice the request has seen
        }
        let log = self.log.lock().expect("log lock");
        if log.front().is_some_and(|(oldest, _)| *oldest > answer.epoch + 1) && log.len() >= LOG_LEN {
            return true; // the notices since this answer's load are no longer all known
        }
        log.iter()
            .rev()
            .skip_while(|(e, _)| *e > seen)
            .take_while(|(e, _)| *e > answer.epoch)
            .any(|(_, notice)| notice.as_ref().is_none_or(|n| answer.coverage.covers(n)))
    }

    fn log(&self, notice: Option<Landed>) {
        let mut log = self.log.lock().expect("log lock");
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        log.push_back((epoch, notice));
        while log.len() > LOG_LEN {
            log.pop_front();
        }
    }

    /// Removes every cached answer: for when notices were missed.
    pub fn invalidate_all(&self, reason: &str) {
        tracing::debug!(reason, answers = self.cache.entry_count(), "cache invalidation of every answer");
        self.log(None);
        *self.stats.invalidations.lock().expect("stats lock").entry(reason.to_owned()).or_default() += 1;
        self.stats.invalidated_answers.fetch_add(self.cache.entry_count(), Ordering::Relaxed);
        self.cache.invalidate_all();
    }

    /// Removes every cached answer the notice covers, and makes any load racing it stale.
    pub fn invalidate(&self, notice: &Landed) {
        tracing::debug!(table = notice.table.name(), date = %notice.date, hour = notice.hour, "cache invalidation");
        // Only what matching needs: the file list can be long.
        let notice = Landed { files: Vec::new(), ..notice.clone() };
        self.log(Some(notice.clone()));
        *self.stats.invalidations.lock().expect("stats lock").entry(notice.table.name().to_owned()).or_default() += 1;
        let covered = self.cache.iter().filter(|(_, a)| a.coverage.covers(&notice)).count() as u64;
        self.stats.invalidated_answers.fetch_add(covered, Ordering::Relaxed);
        // Entries inserted from now on carry a newer epoch, or are caught by `is_stale`.
        let _ = self.cache.invalidate_entries_if(move |_, a| a.coverage.covers(&notice));
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Registers the counters and the cached bytes, read at each scrape, for `/metrics`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry
            .register_collector(Box::new(CacheMetrics { stats: Arc::clone(&self.stats), cache: self.cache.clone() }));
    }

    /// Applies pending maintenance (tests use it to observe evictions and sizes).
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests;
