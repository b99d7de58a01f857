//! The run loop: a consumer-group member that buffers each owned partition, flushes it to the
//! lake through the partition's commit log ([`crate::commit`]), and only then commits the Kafka
//! offset (a hint) and announces what landed.
//!
//! The loop itself is thin: decisions live in [`crate::buffer`], [`crate::flush`] and
//! [`crate::commit`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use testlake_schemas::commits::EntryFile;
use testlake_schemas::files::{self, WriteError};
use testlake_schemas::{Lake, Landed, Table};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::buffer::{PartitionBuffer, PendingFlush, Pushed};
use crate::commit::{CommitError, PartitionLog, StagedFile};
use crate::crash::{CrashPoint, Crasher};
use crate::cursor::Cursor;
use crate::flush::FlushPolicy;
use crate::metrics::IngestMetrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("arrow error building a batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("bad configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the ingest connects and when it writes.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub flush: FlushPolicy,
    /// How often buffers are checked for age.
    pub tick: Duration,
    /// Extra librdkafka properties, applied last.
    pub kafka_properties: Vec<(String, String)>,
    /// Fault injection for tests: `<crash point>:<n>` (see [`crate::crash`]).
    pub crash_at: Option<String>,
}

impl IngestConfig {
    /// The librdkafka settings of the ingest's consumer. Public so that a benchmark's raw
    /// consumer reads the topic exactly as the ingest does.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            // Bound what librdkafka prefetches per partition, so a backlog cannot grow memory.
            .set("queued.max.messages.kbytes", "65536")
            // When that bound is reached, look again after 20 ms, not librdkafka's default 1 s:
            // with the default, every moment the loop fell behind (a flush waiting for the
            // memory budget, a busy core) cost a partition a whole second without fetches —
            // the 1.0–1.3 s gaps between flushes that made single benchmark runs vary 0.45–0.86
            // of the raw ceiling.
            .set("fetch.queue.backoff.ms", "20")
            .set("fetch.wait.max.ms", "100")
            // Notice a topic created after subscribing (or new partitions) within seconds.
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (key, value) in &self.kafka_properties {
            client.set(key, value);
        }
        client
    }

    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            group_id: "testlake-ingest".into(),
            flush: FlushPolicy::default(),
            tick: Duration::from_millis(100),
            kafka_properties: Vec::new(),
            crash_at: None,
        }
    }
}

impl Default for IngestConfig {
    /// A broker on this machine and the `ci-test-events` topic.
    fn default() -> Self {
        Self::new("127.0.0.1:9092", "ci-test-events")
    }
}

/// Records partitions the group takes away, so the loop drops their state: the next owner
/// recovers from the partition's commit log, so nothing buffered here is lost.
#[derive(Default)]
struct GroupContext {
    revoked: Mutex<BTreeSet<i32>>,
    /// Set with `revoked`, so the loop checks for revocations without taking the lock.
    any_revoked: AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
            self.any_revoked.store(true, Ordering::Release);
            info!(partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            info!(partitions = ?assigned, "partitions assigned");
        }
    }
}

/// A partition this member owns: its recovered log, its buffer, and the next offset it accepts.
struct Owned {
    /// `None` while a flush of this partition is in flight (it holds the log meanwhile).
    log: Option<PartitionLog>,
    /// Which recovery of the partition this is; a flush started by an earlier one is stale.
    generation: u64,
    buffer: PartitionBuffer,
    cursor: Cursor,
}

/// What a flush task hands back to the loop.
struct FlushDone {
    partition: i32,
    generation: u64,
    log: PartitionLog,
    flush: FlushSummary,
    outcome: Result<(Vec<EntryFile>, usize), CommitError>,
}

/// The bookkeeping of a flush, without its batches.
struct FlushSummary {
    first_offset: i64,
    last_offset: i64,
    next_offset: i64,
    valid: usize,
    rejected: usize,
}

pub struct Ingest {
    config: IngestConfig,
    lake: Lake,
    consumer: Arc<StreamConsumer<GroupContext>>,
    owned: HashMap<i32, Owned>,
    topic: Arc<str>,
    process_id: uuid::Uuid,
    recoveries: u64,
    landed: Option<broadcast::Sender<Landed>>,
    metrics: Arc<IngestMetrics>,
    crash: Arc<Crasher>,
    /// Flushes encoding and uploading on other threads while the loop keeps consuming; at most
    /// one per partition, so a partition's log entries stay in order.
    in_flight: FuturesUnordered<tokio::task::JoinHandle<FlushDone>>,
}

impl Ingest {
    pub fn new(
        config: IngestConfig,
        lake: Lake,
        landed: Option<broadcast::Sender<Landed>>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Self> {
        let crash =
            config.crash_at.as_deref().map(Crasher::parse).transpose().map_err(Error::Config)?.unwrap_or_default();
        let client = config.consumer_config();
        let consumer: StreamConsumer<GroupContext> = client.create_with_context(GroupContext::default())?;
        consumer.subscribe(&[&config.topic])?;
        let topic = Arc::from(config.topic.as_str());
        Ok(Self {
            config,
            lake,
            consumer: Arc::new(consumer),
            owned: HashMap::new(),
            topic,
            process_id: uuid::Uuid::new_v4(),
            recoveries: 0,
            landed,
            metrics,
            crash: Arc::new(crash),
            in_flight: FuturesUnordered::new(),
        })
    }

    /// Consumes until `shutdown`, then flushes and commits what is buffered.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        info!(topic = %self.config.topic, group = %self.config.group_id, lake = %self.lake.url(), "ingest started");
        // A local handle, so a received message borrows it rather than `self`.
        let consumer = Arc::clone(&self.consumer);
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                message = consumer.recv() => {
                    self.drop_revoked();
                    match message {
                        Ok(m) => {
                            let partition = m.partition();
                            if self.accept(partition, m.offset()).await? {
                                self.push(partition, m.offset(), m.key(), m.payload());
                                self.flush_if_due(partition, None).await?;
                            }
                        }
                        Err(e) => warn!(error = %e, "kafka consumer error"),
                    }
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finish_flush(done.expect("flush tasks do not panic"))?;
                }
                _ = tick.tick() => {
                    self.drop_revoked();
                    let due: Vec<i32> = self.owned.keys().copied().collect();
                    let now = Instant::now();
                    for partition in due {
                        self.flush_if_due(partition, Some(now)).await?;
                    }
                }
            }
        }
        // Drain: finish what is in flight, flush what is left, finish that too.
        self.wait_in_flight().await?;
        let partitions: Vec<i32> = self.owned.keys().copied().collect();
        for &partition in &partitions {
            self.start_flush(partition)?;
        }
        self.wait_in_flight().await?;
        // Leave the hint where the log says the lake ends, synchronously, before leaving the group.
        let mut offsets = TopicPartitionList::new();
        for (&partition, owned) in &self.owned {
            if let Some(resume) = owned.log.as_ref().and_then(PartitionLog::resume_offset) {
                offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(resume))?;
            }
        }
        if offsets.count() > 0
            && let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync)
        {
            warn!(error = %e, "final kafka offset commit failed");
        }
        info!("ingest stopped");
        Ok(())
    }

    /// Whether the message at `offset` is new. The first message of a newly owned partition
    /// recovers the partition's commit log and, if the log says consumption must resume
    /// elsewhere, seeks there and skips the message.
    async fn accept(&mut self, partition: i32, offset: i64) -> Result<bool> {
        if !self.owned.contains_key(&partition) {
            self.recoveries += 1;
            let writer = format!("{}/{partition}/{}", self.process_id, self.recoveries);
            let log = retry("recover the commit log", partition, &self.metrics, || {
                PartitionLog::recover(&self.lake, &self.config.topic, partition, &writer)
            })
            .await;
            let position = log.resume_offset();
            let buffer = PartitionBuffer::new(Arc::clone(&self.topic), partition);
            let owned = Owned { log: Some(log), generation: self.recoveries, buffer, cursor: Cursor::at(position) };
            self.owned.insert(partition, owned);
            if let Some(resume) = position
                && resume != offset
            {
                info!(partition, offset, resume, "seeking to where the commit log says the lake ends");
                let seek =
                    self.consumer.seek(&self.config.topic, partition, Offset::Offset(resume), Duration::from_secs(10));
                if let Err(e) = seek {
                    // Forget the partition: its next message recovers and seeks again.
                    warn!(partition, resume, error = %e, "seek failed; will retry");
                    self.owned.remove(&partition);
                }
                return Ok(false);
            }
        }
        let admitted = self.owned.get_mut(&partition).expect("owned above").cursor.admit(offset);
        if !admitted {
            debug!(partition, offset, "skipping a message that is already durable or a duplicate");
        }
        Ok(admitted)
    }

    fn push(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let buffer = &mut self.owned.get_mut(&partition).expect("accepted partitions are owned").buffer;
        match buffer.push(offset, key, payload, chrono::Utc::now()) {
            Pushed::Accepted => self.metrics.message_accepted(),
            Pushed::Rejected(why) => {
                debug!(partition, offset, reason = %why, "message rejected");
                self.metrics.message_rejected();
            }
        }
    }

    fn drop_revoked(&mut self) {
        let context = self.consumer.context();
        if !context.any_revoked.swap(false, Ordering::AcqRel) {
            return;
        }
        let revoked = std::mem::take(&mut *context.revoked.lock().expect("revoked lock"));
        for partition in revoked {
            if let Some(owned) = self.owned.remove(&partition) {
                info!(partition, rows = owned.buffer.rows(), "dropped the state of a revoked partition");
            }
        }
    }

    /// Flushes the partition if its buffer is full, or, given the time `now`, old enough. Per
    /// message the age is not looked at (reading the clock per message cost ~3 % of the ingest's
    /// CPU): the tick looks at every buffer's age.
    async fn flush_if_due(&mut self, partition: i32, now: Option<Instant>) -> Result<()> {
        let Some(owned) = self.owned.get(&partition) else { return Ok(()) };
        let b = &owned.buffer;
        let age = now.map_or(Duration::ZERO, |now| b.age(now));
        if self.config.flush.should_flush(b.rows(), b.bytes(), age) {
            self.start_flush(partition)?;
        }
        // Cheap per message: the budget is looked at only when this one buffer could matter.
        let bytes = self.owned.get(&partition).map_or(0, |o| o.buffer.bytes());
        if bytes.saturating_mul(self.owned.len()) < self.config.flush.max_total_bytes {
            return Ok(());
        }
        let sizes = self.owned.iter().map(|(&p, o)| (p, o.buffer.bytes()));
        if let Some(largest) = self.config.flush.over_budget(sizes) {
            debug!(partition = largest, "buffers over the memory budget: flushing the largest early");
            if !self.start_flush(largest)? {
                // Its previous flush is still in flight: stop consuming until one completes.
                if let Some(done) = self.in_flight.next().await {
                    self.finish_flush(done.expect("flush tasks do not panic"))?;
                }
            }
        }
        Ok(())
    }

    /// Starts flushing the partition's buffer on another task, unless one is in flight already
    /// (returns whether it started one). The task makes the files durable through the
    /// partition's commit log, retrying faults; [`Self::finish_flush`] then commits the Kafka
    /// offset and announces what landed.
    fn start_flush(&mut self, partition: i32) -> Result<bool> {
        let Some(owned) = self.owned.get_mut(&partition) else { return Ok(false) };
        let Some(next_seq) = owned.log.as_ref().map(PartitionLog::next_seq) else { return Ok(false) };
        let Some(flush) = owned.buffer.take(next_seq)? else { return Ok(false) };
        let mut log = owned.log.take().expect("checked above");
        let generation = owned.generation;
        let (crash, metrics) = (Arc::clone(&self.crash), Arc::clone(&self.metrics));
        self.in_flight.push(tokio::spawn(async move {
            let summary = FlushSummary {
                first_offset: flush.first_offset,
                last_offset: flush.last_offset,
                next_offset: flush.next_offset(),
                valid: flush.valid,
                rejected: flush.rejected,
            };
            let staged = match tokio::task::spawn_blocking(move || stage(&flush)).await.expect("staging does not panic")
            {
                Ok(staged) => staged,
                Err(e) => {
                    let outcome = Err(CommitError::Write(match e {
                        Error::Write(w) => w,
                        other => WriteError::Arrow {
                            path: format!("partition {partition}"),
                            source: arrow::error::ArrowError::ExternalError(Box::new(other)),
                        },
                    }));
                    return FlushDone { partition, generation, log, flush: summary, outcome };
                }
            };
            let bytes: usize = staged.iter().map(|f| f.bytes.len()).sum();
            let mut backoff = Backoff::default();
            let outcome = loop {
                match log.commit(summary.first_offset, summary.next_offset, staged.clone(), &crash).await {
                    Ok(entries) => break Ok((entries, bytes)),
                    Err(e @ CommitError::Fenced { .. }) => break Err(e),
                    Err(e) => backoff.failed(partition, "flush", &e, &metrics).await,
                }
            };
            FlushDone { partition, generation, log, flush: summary, outcome }
        }));
        Ok(true)
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        while let Some(done) = self.in_flight.next().await {
            self.finish_flush(done.expect("flush tasks do not panic"))?;
        }
        Ok(())
    }

    /// Takes a finished flush back: commits the Kafka offset (a hint) and announces what landed,
    /// or drops the partition's state when the flush was fenced. A flush whose partition was
    /// revoked (or recovered again) meanwhile is only logged: the log holds what it did.
    fn finish_flush(&mut self, done: FlushDone) -> Result<()> {
        let FlushDone { partition, generation, log, flush, outcome } = done;
        let current = self.owned.get_mut(&partition).filter(|o| o.generation == generation && o.log.is_none());
        let (entries, bytes) = match outcome {
            Ok(committed) => committed,
            Err(e @ CommitError::Fenced { .. }) => {
                warn!(partition, error = %e, "fenced: another member owns this partition now");
                if current.is_some() {
                    self.owned.remove(&partition);
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let Some(owned) = current else {
            info!(partition, next_offset = flush.next_offset, "a flush finished after its partition was revoked");
            return Ok(());
        };
        owned.log = Some(log);
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(flush.next_offset))?;
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            // The commit log holds the truth; a failed hint only costs a seek on the next start.
            warn!(partition, offset = flush.next_offset, error = %e, "kafka offset commit failed");
        }
        self.crash.reached(CrashPoint::AfterKafkaCommit);
        self.metrics.flushed();
        self.metrics.files_written(entries.len(), bytes);
        info!(
            partition,
            first_offset = flush.first_offset,
            last_offset = flush.last_offset,
            valid = flush.valid,
            rejected = flush.rejected,
            files = entries.len(),
            "flushed"
        );
        if let Some(landed) = &self.landed {
            for entry in entries {
                let _ = landed.send(landed_notice(entry));
            }
        }
        Ok(())
    }
}

/// Sorts and encodes every file of a flush.
fn stage(flush: &PendingFlush) -> Result<Vec<StagedFile>> {
    flush
        .files
        .iter()
        .map(|file| {
            let path = file.path.to_string();
            let sort_by: &[&str] = match file.path.table {
                Table::Results => files::RESULTS_SORT,
                _ => &["kafka_offset"],
            };
            let sorted = files::sort_batch(&file.batch, sort_by)
                .map_err(|source| WriteError::Arrow { path: path.clone(), source })?;
            let bytes = files::encode_parquet(&sorted, &path)?;
            let entry = EntryFile {
                path,
                table: file.path.table.name().to_owned(),
                date: file.path.partition.date,
                hour: file.path.partition.hour,
                rows: file.batch.num_rows() as u64,
                min_time: file.min_time,
                max_time: file.max_time,
                repositories: file.repositories.clone(),
            };
            Ok(StagedFile { entry, bytes })
        })
        .collect()
}

fn landed_notice(entry: EntryFile) -> Landed {
    Landed {
        table: entry.table,
        date: entry.date,
        hour: entry.hour,
        files: vec![entry.path],
        rows: entry.rows,
        min_time: entry.min_time,
        max_time: entry.max_time,
        repositories: entry.repositories,
    }
}

/// Capped exponential backoff between retries of an object-store operation.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(50))
    }
}

impl Backoff {
    /// Counts and logs a failure of `what`, then waits before the next attempt.
    async fn failed(&mut self, partition: i32, what: &str, error: &CommitError, metrics: &IngestMetrics) {
        metrics.flush_failed();
        warn!(partition, error = %error, backoff = ?self.0, "failed to {what}; retrying");
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Retries an object-store operation with capped exponential backoff until it succeeds.
async fn retry<T, F, Fut>(what: &str, partition: i32, metrics: &IngestMetrics, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CommitError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => backoff.failed(partition, what, &e, metrics).await,
        }
    }
}
