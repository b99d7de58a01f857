//! What the ingest reports: its metrics (one method per event, registered into the process's
//! registry, see [`testlake_schemas::observe`]) and the observations its health is decided from.
//!
//! Health ([`HealthRule::health`]), from what the consumer and the flushes saw:
//! - `unhealthy` when no broker has been reachable (librdkafka's statistics: no broker `UP`), or
//!   the store has failed every attempt (flushes, recoveries), for [`HealthRule::unhealthy_after`];
//! - `starting` until the member has joined its group (its first assignment);
//! - `degraded` when the consumer lag over the partitions it owns passes
//!   [`HealthRule::lag_degraded`] messages, or while the broker or the store fails for less than
//!   that long;
//! - else `healthy`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use testlake_schemas::observe::{Health, Registry};

pub const MESSAGES: &str = "testlake_ingest_messages";
pub const EVENTS: &str = "testlake_ingest_events";
pub const REJECTED: &str = "testlake_ingest_rejected";
pub const CONSUMER_LAG: &str = "testlake_ingest_consumer_lag";
pub const FLUSH_ROWS: &str = "testlake_ingest_flush_rows";
pub const FLUSH_DURATION: &str = "testlake_ingest_flush_duration_seconds";
pub const COMMIT_DURATION: &str = "testlake_ingest_commit_duration_seconds";
pub const BUFFERED_BYTES: &str = "testlake_ingest_buffered_bytes";
pub const RECOVERIES: &str = "testlake_ingest_recoveries";
pub const FENCED: &str = "testlake_ingest_fenced";
pub const FILES: &str = "testlake_ingest_files_written";
pub const BYTES: &str = "testlake_ingest_parquet_bytes";
pub const FLUSHES: &str = "testlake_ingest_flushes";
pub const FLUSH_ERRORS: &str = "testlake_ingest_flush_errors";
pub const PAUSED: &str = "testlake_ingest_paused_seconds";
pub const LAST_LANDED: &str = "testlake_ingest_last_landed_timestamp_seconds";
// Counters are registered without their `_total`, which the OpenMetrics encoder appends, and
// help texts without a final period, which the registry appends.

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// [`testlake_schemas::Rejection::code`]: a fixed set of values.
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: i32,
}

/// When the ingest is degraded or unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRule {
    /// Messages behind the high watermarks, over the partitions this member owns, past which it
    /// is degraded.
    pub lag_degraded: u64,
    /// How long the broker may be unreachable, or the store fail every attempt, before the
    /// ingest is unhealthy.
    pub unhealthy_after: Duration,
}

impl Default for HealthRule {
    fn default() -> Self {
        Self { lag_degraded: 100_000, unhealthy_after: Duration::from_secs(30) }
    }
}

/// What health is decided from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The member has had its first assignment.
    pub joined: bool,
    /// Since when no broker has been reachable (`None`: one is).
    pub broker_down_since: Option<Instant>,
    /// Since when every attempt to write or read the lake has failed (`None`: the last succeeded).
    pub store_failing_since: Option<Instant>,
    /// Messages behind, per owned partition.
    pub lag: BTreeMap<i32, u64>,
}

impl HealthRule {
    /// The ingest's health at `now`, from what it observed (see the module's documentation).
    pub fn health(&self, seen: &Observed, now: Instant) -> Health {
        let failing_for = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        let (broker, store) = (failing_for(seen.broker_down_since), failing_for(seen.store_failing_since));
        if [broker, store].iter().flatten().any(|d| *d >= self.unhealthy_after) {
            return Health::Unhealthy;
        }
        if !seen.joined {
            return Health::Starting;
        }
        if seen.lag.values().sum::<u64>() > self.lag_degraded || broker.is_some() || store.is_some() {
            return Health::Degraded;
        }
        Health::Healthy
    }
}

/// The ingest's metrics, shared by the consume loop, its flushes, the consumer's callbacks and
/// the probes.
#[derive(Debug)]
pub struct IngestMetrics {
    messages: Counter,
    events: Counter,
    rejected: Family<ReasonLabel, Counter>,
    lag: Family<PartitionLabel, Gauge>,
    flush_rows: Histogram,
    flush_duration: Histogram,
    commit_duration: Histogram,
    buffered_bytes: Gauge,
    recoveries: Counter,
    fenced: Counter,
    files: Counter,
    bytes: Counter,
    flushes: Counter,
    flush_errors: Counter,
    paused: Counter<f64, AtomicU64>,
    last_landed: Gauge<f64, AtomicU64>,
    observed: Mutex<Observed>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            messages: Counter::default(),
            events: Counter::default(),
            rejected: Family::default(),
            lag: Family::default(),
            // 10 rows to 2.6 M rows, ×4.
            flush_rows: Histogram::new(exponential_buckets(10.0, 4.0, 10)),
            // 5 ms to 41 s, ×2.
            flush_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            // 1 ms to 16 s, ×2.
            commit_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            buffered_bytes: Gauge::default(),
            recoveries: Counter::default(),
            fenced: Counter::default(),
            files: Counter::default(),
            bytes: Counter::default(),
            flushes: Counter::default(),
            flush_errors: Counter::default(),
            paused: Counter::default(),
            last_landed: Gauge::default(),
            observed: Mutex::new(Observed {
                joined: false,
                // Not known to be reachable until the consumer's statistics say so.
                broker_down_since: Some(Instant::now()),
                store_failing_since: None,
                lag: BTreeMap::new(),
            }),
        }
    }
}

impl IngestMetrics {
    /// Registers every metric into the process's `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(MESSAGES, "Kafka messages consumed (buffered as events or rejected)", self.messages.clone());
        r.register(EVENTS, "Valid events buffered for the lake", self.events.clone());
        r.register(REJECTED, "Messages rejected to the dead-letter table, by reason", self.rejected.clone());
        r.register(
            CONSUMER_LAG,
            "Messages behind the partition's high watermark (last stable offset), per partition this member owns",
            self.lag.clone(),
        );
        r.register(FLUSH_ROWS, "Rows (events and rejected messages) per landed flush", self.flush_rows.clone());
        r.register(
            FLUSH_DURATION,
            "Time from a flush's start to its commit: staging, uploading and the commit log, retries included",
            self.flush_duration.clone(),
        );
        r.register(
            COMMIT_DURATION,
            "Time of one successful commit through the partition's commit log (intent, files, outcome)",
            self.commit_duration.clone(),
        );
        r.register(BUFFERED_BYTES, "Bytes buffered over all owned partitions", self.buffered_bytes.clone());
        r.register(
            RECOVERIES,
            "Partition commit logs recovered (on assignment or after fencing)",
            self.recoveries.clone(),
        );
        r.register(FENCED, "Flushes fenced: another member had taken the partition's log", self.fenced.clone());
        r.register(FILES, "Parquet files written", self.files.clone());
        r.register(BYTES, "Bytes of Parquet written", self.bytes.clone());
        r.register(FLUSHES, "Buffers flushed and committed", self.flushes.clone());
        r.register(
            FLUSH_ERRORS,
            "Attempts to write or read the lake that failed and were retried",
            self.flush_errors.clone(),
        );
        r.register(
            PAUSED,
            "Time the consume loop waited for a flush, not consuming: the buffers at their memory bound while \
             the object store is slow or down",
            self.paused.clone(),
        );
        r.register(
            LAST_LANDED,
            "Unix time of the last commit that landed events (0: none yet)",
            self.last_landed.clone(),
        );
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().expect("ingest observations lock")
    }

    pub fn message_accepted(&self) {
        self.messages.inc();
        self.events.inc();
    }

    /// A message was rejected; `reason` is its [`testlake_schemas::Rejection::code`].
    pub fn message_rejected(&self, reason: &'static str) {
        self.messages.inc();
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A flush of `rows` landed `files` files of `bytes` bytes, `events` of the rows valid
    /// events, `elapsed` after it started.
    pub fn landed(&self, rows: usize, events: usize, files: usize, bytes: usize, elapsed: Duration) {
        self.flushes.inc();
        self.files.inc_by(files as u64);
        self.bytes.inc_by(bytes as u64);
        self.flush_rows.observe(rows as f64);
        self.flush_duration.observe(elapsed.as_secs_f64());
        if events > 0 {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_landed.set(now.as_secs_f64());
        }
    }

    /// A commit through a partition's log succeeded in `elapsed`.
    pub fn committed(&self, elapsed: Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
        self.store_answered();
    }

    /// An attempt to write or read the lake failed and will be retried.
    pub fn flush_failed(&self) {
        self.flush_errors.inc();
        self.observed().store_failing_since.get_or_insert_with(Instant::now);
    }

    /// The lake answered (a commit or a recovery succeeded).
    pub fn store_answered(&self) {
        self.observed().store_failing_since = None;
    }

    pub fn recovered(&self) {
        self.recoveries.inc();
        self.store_answered();
    }

    pub fn fenced(&self) {
        self.fenced.inc();
    }

    pub fn buffered(&self, bytes: usize) {
        self.buffered_bytes.set(bytes as i64);
    }

    /// The consume loop waited `paused` for a flush, not consuming (the buffers at their bound).
    pub fn consumption_paused(&self, paused: Duration) {
        self.paused.inc_by(paused.as_secs_f64());
    }

    /// The member had an assignment (possibly empty): it has joined its group, so a broker was
    /// reachable just now (whatever the statistics said before).
    pub fn joined(&self) {
        let mut seen = self.observed();
        seen.joined = true;
        seen.broker_down_since = None;
    }

    /// What the consumer's statistics say: whether a broker is reachable, and the lag of each
    /// partition assigned to this member (any other partition's gauge is removed).
    pub fn consumer_statistics(&self, broker_up: bool, lag: BTreeMap<i32, u64>) {
        let mut seen = self.observed();
        match (broker_up, seen.broker_down_since) {
            (true, _) => seen.broker_down_since = None,
            (false, None) => seen.broker_down_since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
        for gone in seen.lag.keys().filter(|p| !lag.contains_key(p)) {
            self.lag.remove(&PartitionLabel { partition: *gone });
        }
        for (&partition, &behind) in &lag {
            self.lag.get_or_create(&PartitionLabel { partition }).set(behind.min(i64::MAX as u64) as i64);
        }
        seen.lag = lag;
    }

    /// The group took these partitions away: their lag is no longer this member's.
    pub fn revoked(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut seen = self.observed();
        for partition in partitions {
            seen.lag.remove(&partition);
            self.lag.remove(&PartitionLabel { partition });
        }
    }

    /// The health by `rule`, now.
    pub fn health(&self, rule: &HealthRule) -> Health {
        rule.health(&self.observed(), Instant::now())
    }

    /// Ready when joined to the group with a broker reachable (the store is asked by the probe).
    pub fn ready(&self) -> Result<(), &'static str> {
        let seen = self.observed();
        match (seen.joined, seen.broker_down_since) {
            (_, Some(_)) => Err("no Kafka broker is reachable"),
            (false, None) => Err("not yet joined to the consumer group"),
            (true, None) => Ok(()),
        }
    }

    /// Time the consume loop spent waiting for flushes, not consuming.
    pub fn paused(&self) -> Duration {
        Duration::from_secs_f64(self.paused.get())
    }

    pub fn events(&self) -> u64 {
        self.events.get()
    }

    /// Messages rejected, over every reason.
    pub fn rejected(&self) -> u64 {
        self.messages.get() - self.events.get()
    }

    pub fn flush_errors(&self) -> u64 {
        self.flush_errors.get()
    }

    /// The lag of each partition, as last seen.
    pub fn lag(&self) -> BTreeMap<i32, u64> {
        self.observed().lag.clone()
    }
}

/// The parts of librdkafka's statistics (`statistics.interval.ms`) the ingest reads; any other
/// field is ignored, and a missing one is its default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ConsumerStatistics {
    brokers: HashMap<String, BrokerStatistics>,
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct BrokerStatistics {
    state: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct TopicStatistics {
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(default)]
struct PartitionStatistics {
    desired: bool,
    fetch_state: String,
    app_offset: i64,
    committed_offset: i64,
    lo_offset: i64,
    hi_offset: i64,
    ls_offset: i64,
}

impl Default for PartitionStatistics {
    fn default() -> Self {
        Self {
            desired: false,
            fetch_state: String::new(),
            app_offset: -1,
            committed_offset: -1,
            lo_offset: -1,
            hi_offset: -1,
            ls_offset: -1,
        }
    }
}

impl ConsumerStatistics {
    /// Whether librdkafka is connected to some broker.
    pub fn broker_up(&self) -> bool {
        self.brokers.values().any(|b| b.state == "UP")
    }

    /// Messages behind, per partition of `topic` assigned to this member and fetching: from the
    /// last stable offset (the high watermark when unknown) down to the next offset handed to
    /// the ingest — or, before any, the committed offset, else the low watermark. Partitions
    /// whose watermarks are not known yet are left out.
    pub fn lag(&self, topic: &str) -> BTreeMap<i32, u64> {
        let Some(topic) = self.topics.get(topic) else { return BTreeMap::new() };
        topic
            .partitions
            .iter()
            .filter_map(|(id, p)| {
                let partition: i32 = id.parse().ok().filter(|p| *p >= 0)?;
                if !p.desired || matches!(p.fetch_state.as_str(), "none" | "stopping" | "stopped") {
                    return None;
                }
                let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                let position = [p.app_offset, p.committed_offset, p.lo_offset].into_iter().find(|o| *o >= 0)?;
                (end >= 0).then(|| (partition, end.saturating_sub(position).max(0) as u64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
