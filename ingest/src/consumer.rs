//! The run loop: a consumer-group member that buffers each owned partition, flushes it to the
//! lake through the partition's commit log ([`crate::log_writer`]), and only then commits the Kafka
//! offset (a hint) and announces what landed.
//!
//! The loop only loops — a `select!` over the consumer, finished flushes, a ticker and the
//! shutdown token — and does the I/O: what to do with each partition is decided by
//! [`crate::ownership`], when to flush by [`crate::flush`], which offsets are new by
//! [`crate::cursor`]; retries by [`crate::retry`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use testlake_schemas::log::EntryFile;
use testlake_schemas::{EventView, Lake, Landed, Rejection};

/// How many already-fetched messages the loop decodes together and then handles in a row before
/// it looks at finished flushes, the ticker and shutdown again.
const DRAIN_AT_ONCE: usize = 1024;

/// How long a stopping ingest waits for its committed flushes to be shown in the Delta table.
const DELTA_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::buffer::{PendingFlush, Pushed, decode_all};
use crate::crash::{CrashPoint, Crasher};
use crate::flush::FlushPolicy;
use crate::kafka::KafkaConfig;
use crate::log_writer::PartitionLog;
use crate::metrics::{ConsumerStatistics, HealthRule, IngestMetrics};
use crate::ownership::{Admit, Committed, Finished, Flush, FlushDone, FlushJob, FlushSummary, Ownership};
use crate::retry::Retry;
use crate::stage::stage;

pub use crate::error::{Error, Result};

/// How the ingest connects and when it writes.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How to reach Kafka (shared with the process's other clients); its properties are
    /// applied over the consumer's own.
    pub kafka: KafkaConfig,
    pub topic: String,
    pub group_id: String,
    pub flush: FlushPolicy,
    /// How often buffers are checked for age.
    pub tick: Duration,
    /// Fault injection for tests: `<crash point>:<n>` (see [`crate::crash`]).
    pub crash_at: Option<String>,
    /// When the ingest reports itself degraded or unhealthy ([`IngestMetrics::health`]).
    pub health: HealthRule,
    /// Events of UTC dates more than this many days old are dead-lettered (`past_retention`),
    /// as the compactor drops such dates ([`crate::compact::CompactConfig::retention_days`]).
    /// 0: no limit.
    pub retention_days: u32,
}

impl IngestConfig {
    /// The librdkafka settings of the ingest's consumer. Public so that a benchmark's raw
    /// consumer reads the topic exactly as the ingest does.
    pub fn consumer_config(&self) -> ClientConfig {
        self.kafka.client(&self.consumer_properties())
    }

    /// The consumer's own properties, under the shared ones.
    fn consumer_properties(&self) -> [(&str, &str); 12] {
        [
            ("group.id", &self.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", "10000"),
            // Bound what librdkafka prefetches per partition, so a backlog cannot grow memory.
            ("queued.max.messages.kbytes", "65536"),
            // When that bound is reached, look again after 20 ms, not librdkafka's default 1 s:
            // with the default, every moment the loop fell behind (a flush waiting for the
            // memory budget, a busy core) cost a partition a whole second without fetches —
            // the 1.0–1.3 s gaps between flushes that made single benchmark runs vary 0.45–0.86
            // of the raw ceiling.
            ("fetch.queue.backoff.ms", "20"),
            ("fetch.wait.max.ms", "100"),
            // Notice a topic created after subscribing (or new partitions) within seconds.
            ("topic.metadata.refresh.interval.ms", "10000"),
            // A missing topic is found before the consumer starts (`testlake`'s start-up check);
            // a consumer never creates one.
            ("allow.auto.create.topics", "false"),
            // Statistics each second: the consumer lag and whether a broker is reachable
            // (`GroupContext::stats_raw`).
            ("statistics.interval.ms", "1000"),
        ]
    }

    /// Consumes `topic` from `brokers`, a broker without security settings (see
    /// [`Self::with_kafka`]).
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::with_kafka(KafkaConfig::new(brokers), topic)
    }

    /// Consumes `topic` through `kafka`.
    pub fn with_kafka(kafka: KafkaConfig, topic: impl Into<String>) -> Self {
        Self {
            kafka,
            topic: topic.into(),
            group_id: "testlake-ingest".into(),
            flush: FlushPolicy::default(),
            tick: Duration::from_millis(100),
            crash_at: None,
            health: HealthRule::default(),
            retention_days: 0,
        }
    }
}

impl Default for IngestConfig {
    /// A broker on this machine ([`KafkaConfig::default`]) and the `ci-test-events` topic.
    fn default() -> Self {
        Self::with_kafka(KafkaConfig::default(), "ci-test-events")
    }
}

/// Records partitions the group takes away, so the loop drops their state: the next owner
/// recovers from the partition's commit log, so nothing buffered here is lost. Reports the
/// group's assignments and librdkafka's statistics (lag, reachability) to the metrics.
struct GroupContext {
    revoked: Mutex<BTreeSet<i32>>,
    /// Set with `revoked`, so the loop checks for revocations without taking the lock.
    any_revoked: AtomicBool,
    topic: String,
    metrics: Arc<IngestMetrics>,
    lake: Lake,
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match serde_json::from_slice::<ConsumerStatistics>(statistics) {
            Ok(stats) => self.metrics.consumer_statistics(stats.broker_up(), stats.lag(&self.topic)),
            Err(e) => debug!(error = %e, "unreadable consumer statistics"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
            self.any_revoked.store(true, Ordering::Release);
            self.metrics.revoked(revoked.iter().copied());
            info!(partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.metrics.joined();
            info!(partitions = ?assigned, "partitions assigned");
            // A partition assigned here may hold committed entries no one published (its owner
            // died after committing), and may get no message to recover it for a while.
            self.lake.delta().publish_all_committed(&self.lake);
        }
    }
}

pub struct Ingest {
    config: IngestConfig,
    lake: Lake,
    consumer: Arc<StreamConsumer<GroupContext>>,
    partitions: Ownership<PartitionLog>,
    process_id: uuid::Uuid,
    landed: Option<broadcast::Sender<Landed>>,
    metrics: Arc<IngestMetrics>,
    crash: Arc<Crasher>,
    /// Flushes encoding and uploading on other threads while the loop keeps consuming; at most
    /// one per partition, so a partition's log entries stay in order.
    in_flight: FuturesUnordered<tokio::task::JoinHandle<FlushDone<PartitionLog>>>,
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
        let context = GroupContext {
            revoked: Mutex::default(),
            any_revoked: AtomicBool::new(false),
            topic: config.topic.clone(),
            metrics: Arc::clone(&metrics),
            lake: lake.clone(),
        };
        let consumer: StreamConsumer<GroupContext> =
            config.kafka.create_with_context(&config.consumer_properties(), context)?;
        let partitions =
            Ownership::new(Arc::from(config.topic.as_str()), config.flush).with_retention(config.retention_days);
        Ok(Self {
            config,
            lake,
            consumer: Arc::new(consumer),
            partitions,
            process_id: uuid::Uuid::new_v4(),
            landed,
            metrics,
            crash: Arc::new(crash),
            in_flight: FuturesUnordered::new(),
        })
    }

    /// Joins the group and consumes until `shutdown`, then flushes and commits what is buffered.
    /// Retries of the object store stop at `shutdown` too: a flush that cannot finish then is
    /// left to the partition's next owner.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        self.consumer.subscribe(&[&self.config.topic])?;
        info!(topic = %self.config.topic, group = %self.config.group_id, lake = %self.lake.url(), "ingest started");
        // A local handle, so a received message borrows it rather than `self`; one stream for the
        // whole run (each `recv()` registers and drops a waker slot under a lock).
        let consumer = Arc::clone(&self.consumer);
        let mut messages = consumer.stream();
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'run: loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                message = messages.next() => {
                    // That message and what librdkafka already fetched besides, bounded (finished
                    // flushes, the ticker and shutdown are looked at within a few milliseconds):
                    // decoded together, on two threads when many, then handled in order without
                    // going through the select for each (its other branches' futures were made
                    // and dropped per message).
                    let mut batch = vec![message.expect("kafka streams never end")];
                    while batch.len() < DRAIN_AT_ONCE {
                        let Some(Some(message)) = messages.next().now_or_never() else { break };
                        batch.push(message);
                    }
                    let now = chrono::Utc::now();
                    let payloads: Vec<&[u8]> =
                        batch.iter().map(|m| m.as_ref().ok().and_then(Message::payload).unwrap_or_default()).collect();
                    for (message, decoded) in batch.iter().zip(decode_all(&payloads, now)) {
                        if !self.on_message(message, decoded, now, &shutdown).await? {
                            break 'run;
                        }
                    }
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finish_flush(done.expect("flush tasks do not panic"))?;
                }
                _ = tick.tick() => {
                    self.drop_revoked();
                    let now = Instant::now();
                    for partition in self.partitions.partitions() {
                        let due = self.partitions.due(partition, Some(now))?;
                        self.flush(due, &shutdown).await?;
                    }
                    self.metrics.buffered(self.partitions.buffered_bytes());
                }
            }
        }
        // Drain: finish what is in flight, flush what is left, finish that too.
        self.wait_in_flight().await?;
        for job in self.partitions.drain()? {
            self.start_flush(job, &shutdown);
        }
        self.wait_in_flight().await?;
        // Leave the hint where the log says the lake ends, synchronously, before leaving the group.
        let mut offsets = TopicPartitionList::new();
        for (partition, resume) in self.partitions.resume_offsets() {
            offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(resume))?;
        }
        if offsets.count() > 0
            && let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync)
        {
            warn!(error = %e, "final kafka offset commit failed");
        }
        // Show what this member committed in the Delta table before leaving, within a bound (the
        // partition's next owner publishes it otherwise, when it recovers the partition).
        match tokio::time::timeout(DELTA_DRAIN, self.lake.delta().drain(&self.lake)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "stopping with flushes not yet in the Delta table"),
            Err(_) => warn!(after = ?DELTA_DRAIN, "stopping with flushes not yet in the Delta table"),
        }
        info!("ingest stopped");
        Ok(())
    }

    /// Handles what the consumer delivered; says whether to go on (not when shutting down).
    async fn on_message(
        &mut self,
        message: &rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
        decoded: std::result::Result<EventView<'_>, Rejection>,
        now: chrono::DateTime<chrono::Utc>,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        self.drop_revoked();
        match message {
            Ok(m) => match self.consume(m, decoded, now, shutdown).await {
                Err(Error::ShuttingDown) => return Ok(false),
                result => result?,
            },
            Err(e) => warn!(error = %e, "kafka consumer error"),
        }
        Ok(true)
    }

    /// Handles one message, `decoded` from its payload at `now`: recovers its partition's log
    /// first if the partition is new here (and seeks if the log says so), buffers it if it is
    /// new, and starts the flushes it makes due.
    async fn consume(
        &mut self,
        message: &BorrowedMessage<'_>,
        decoded: std::result::Result<EventView<'_>, Rejection>,
        now: chrono::DateTime<chrono::Utc>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        let admit = match self.partitions.admit(partition, offset) {
            Admit::Recover { generation } => {
                let writer = format!("{}/{partition}/{generation}", self.process_id);
                let (lake, topic) = (&self.lake, self.config.topic.as_str());
                let mut retry = Retry::new("recover the commit log", partition, &self.metrics, shutdown);
                let log = loop {
                    match PartitionLog::recover(lake, topic, partition, &writer).await {
                        Ok(log) => break log,
                        Err(e) => retry.failed(e).await?,
                    }
                };
                self.metrics.recovered();
                self.partitions.recovered(partition, generation, log, offset)
            }
            admit => admit,
        };
        match admit {
            Admit::Recover { .. } => unreachable!("a recovered partition is owned"),
            Admit::Seek { resume } => {
                info!(partition, offset, ?resume, "seeking to where the commit log says the lake ends");
                let to = resume.map_or(Offset::Beginning, Offset::Offset);
                let seek = self.consumer.seek(&self.config.topic, partition, to, Duration::from_secs(10));
                if let Err(e) = seek {
                    // Forget the partition: its next message recovers and seeks again.
                    warn!(partition, ?resume, error = %e, "seek failed; will retry");
                    self.partitions.forget(partition);
                }
            }
            Admit::Skip => debug!(partition, offset, "skipping a message that is already durable or a duplicate"),
            Admit::Buffer => {
                match self.partitions.push(partition, offset, message.key(), message.payload(), decoded, now) {
                    Some(Pushed::Accepted) => self.metrics.message_accepted(),
                    Some(Pushed::Rejected(why)) => {
                        debug!(partition, offset, reason = %why, "message rejected");
                        self.metrics.message_rejected(why.code());
                    }
                    None => {}
                }
                // Asked again after waiting for a flush: a buffer held back may be able to flush now.
                loop {
                    let due = self.partitions.due(partition, None)?;
                    if !self.flush(due, shutdown).await? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_revoked(&mut self) {
        let context = self.consumer.context();
        if !context.any_revoked.swap(false, Ordering::AcqRel) {
            return;
        }
        let revoked = std::mem::take(&mut *context.revoked.lock().expect("revoked lock"));
        self.partitions.revoke(revoked);
    }

    /// Starts the flushes that are due; when told to wait (the buffers over the memory budget, or
    /// a buffer at the hour cap, with the flush that would relieve it in flight), stops consuming
    /// until a flush completes. Says whether it waited for one.
    async fn flush(&mut self, due: Vec<Flush<PartitionLog>>, shutdown: &CancellationToken) -> Result<bool> {
        let mut waited = false;
        for flush in due {
            match flush {
                Flush::Start(job) => self.start_flush(job, shutdown),
                Flush::WaitForAFlush => {
                    if let Some(done) = self.wait_for_a_flush().await {
                        self.finish_flush(done.expect("flush tasks do not panic"))?;
                        waited = true;
                    }
                }
            }
        }
        Ok(waited)
    }

    /// Waits, not consuming, for a flush to finish: counted in the metrics, and logged when it
    /// lasts (the object store slow or down: the flushes in flight keep retrying).
    async fn wait_for_a_flush(&mut self) -> Option<Result<FlushDone<PartitionLog>, tokio::task::JoinError>> {
        const LONG: Duration = Duration::from_secs(1);
        let started = Instant::now();
        let done = match tokio::time::timeout(LONG, self.in_flight.next()).await {
            Ok(done) => done,
            Err(_) => {
                warn!(
                    in_flight = self.in_flight.len(),
                    "consumption paused: the buffers are at their memory bound and no flush has finished \
                     for a second (the object store is slow or down)"
                );
                let done = self.in_flight.next().await;
                warn!(paused_ms = started.elapsed().as_millis() as u64, "consumption resumed");
                done
            }
        };
        self.metrics.consumption_paused(started.elapsed());
        done
    }

    /// Flushes on another task: stages the files, then makes them durable through the
    /// partition's commit log, retrying faults; [`Self::finish_flush`] takes it back.
    fn start_flush(&mut self, job: FlushJob<PartitionLog>, shutdown: &CancellationToken) {
        let FlushJob { partition, generation, mut log, flush } = job;
        let (crash, metrics, shutdown) = (Arc::clone(&self.crash), Arc::clone(&self.metrics), shutdown.clone());
        self.in_flight.push(tokio::spawn(async move {
            let (summary, started) = (FlushSummary::of(&flush), Instant::now());
            let outcome = write(&mut log, flush, &crash, &metrics, &shutdown).await;
            FlushDone { partition, generation, log, summary, outcome, started }
        }));
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        while let Some(done) = self.in_flight.next().await {
            self.finish_flush(done.expect("flush tasks do not panic"))?;
        }
        Ok(())
    }

    /// Takes a finished flush back and does what [`Ownership::finished`] decides: commits the
    /// Kafka offset (a hint) and announces what landed, or only logs.
    fn finish_flush(&mut self, done: FlushDone<PartitionLog>) -> Result<()> {
        let started = done.started;
        let (partition, summary, Committed { entries, bytes }) = match self.partitions.finished(done) {
            Finished::Landed { partition, summary, committed } => (partition, summary, committed),
            Finished::Stale { partition, summary } => {
                info!(partition, next_offset = summary.next_offset, "a flush finished after its partition was revoked");
                return Ok(());
            }
            Finished::Fenced { partition, error } => {
                self.metrics.fenced();
                warn!(partition, %error, "fenced: another member owns this partition now");
                return Ok(());
            }
            Finished::Abandoned { partition, summary } => {
                warn!(
                    partition,
                    first_offset = summary.first_offset,
                    last_offset = summary.last_offset,
                    "shutting down before a flush could commit; the partition's next owner consumes it again"
                );
                return Ok(());
            }
            Finished::Failed(error) => return Err(error),
        };
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(summary.next_offset))?;
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            // The commit log holds the truth; a failed hint only costs a seek on the next start.
            warn!(partition, offset = summary.next_offset, error = %e, "kafka offset commit failed");
        }
        self.crash.reached(CrashPoint::AfterKafkaCommit);
        let rows = summary.valid + summary.rejected;
        self.metrics.landed(rows, summary.valid, entries.len(), bytes, started.elapsed());
        info!(
            partition,
            first_offset = summary.first_offset,
            last_offset = summary.last_offset,
            valid = summary.valid,
            rejected = summary.rejected,
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

/// A flush's I/O: stages its files off the runtime, then commits them through the log,
/// retrying transient faults until `shutdown`.
async fn write(
    log: &mut PartitionLog,
    flush: PendingFlush,
    crash: &Crasher,
    metrics: &IngestMetrics,
    shutdown: &CancellationToken,
) -> Result<Committed> {
    let (partition, first_offset, next_offset) = (flush.partition, flush.first_offset, flush.next_offset());
    let staged = tokio::task::spawn_blocking(move || stage(&flush)).await.expect("staging does not panic")?;
    let bytes = staged.iter().map(|f| f.bytes.len()).sum();
    let mut retry = Retry::new("flush", partition, metrics, shutdown);
    let entries = loop {
        let attempt = Instant::now();
        match log.commit(first_offset, next_offset, staged.clone(), crash).await {
            Ok(entries) => {
                metrics.committed(attempt.elapsed());
                break entries;
            }
            Err(e) => retry.failed(e).await?,
        }
    };
    Ok(Committed { entries, bytes })
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
