//! The run loop: a consumer-group member that buffers each assigned partition, flushes it to the
//! lake by the [`FlushPolicy`], and commits the Kafka offset only after every file is durable.
//!
//! The loop itself is thin: decisions live in [`crate::buffer`] and [`crate::flush`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use testlake_schemas::{Lake, Landed, Table};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::buffer::{PartitionBuffer, PendingFlush, Pushed};
use crate::flush::FlushPolicy;
use crate::metrics::IngestMetrics;
use testlake_schemas::files::{self as write, Created, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("arrow error building a batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
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
}

impl IngestConfig {
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            group_id: "testlake-ingest".into(),
            flush: FlushPolicy::default(),
            tick: Duration::from_millis(100),
            kafka_properties: Vec::new(),
        }
    }
}

/// Records partitions the group takes away, so the loop drops their buffers: the next owner
/// resumes from the last committed offset, so nothing buffered here is lost.
#[derive(Default)]
struct GroupContext {
    revoked: Mutex<BTreeSet<i32>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
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

pub struct Ingest {
    config: IngestConfig,
    lake: Lake,
    consumer: Arc<StreamConsumer<GroupContext>>,
    buffers: HashMap<i32, PartitionBuffer>,
    topic: Arc<str>,
    landed: Option<broadcast::Sender<Landed>>,
    metrics: Arc<IngestMetrics>,
}

impl Ingest {
    pub fn new(
        config: IngestConfig,
        lake: Lake,
        landed: Option<broadcast::Sender<Landed>>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            // Bound what librdkafka prefetches per partition, so a backlog cannot grow memory.
            .set("queued.max.messages.kbytes", "65536")
            .set("fetch.wait.max.ms", "100")
            // Notice a topic created after subscribing (or new partitions) within seconds.
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (key, value) in &config.kafka_properties {
            client.set(key, value);
        }
        let consumer: StreamConsumer<GroupContext> = client.create_with_context(GroupContext::default())?;
        consumer.subscribe(&[&config.topic])?;
        let topic = Arc::from(config.topic.as_str());
        Ok(Self { config, lake, consumer: Arc::new(consumer), buffers: HashMap::new(), topic, landed, metrics })
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
                            self.push(partition, m.offset(), m.key(), m.payload());
                            self.flush_if_due(partition).await?;
                        }
                        Err(e) => warn!(error = %e, "kafka consumer error"),
                    }
                }
                _ = tick.tick() => {
                    self.drop_revoked();
                    let due: Vec<i32> = self.buffers.keys().copied().collect();
                    for partition in due {
                        self.flush_if_due(partition).await?;
                    }
                }
            }
        }
        let partitions: Vec<i32> = self.buffers.keys().copied().collect();
        for partition in partitions {
            self.flush(partition, CommitMode::Sync).await?;
        }
        info!("ingest stopped");
        Ok(())
    }

    fn push(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let topic = &self.topic;
        let buffer =
            self.buffers.entry(partition).or_insert_with(|| PartitionBuffer::new(Arc::clone(topic), partition));
        match buffer.push(offset, key, payload, chrono::Utc::now()) {
            Pushed::Accepted => self.metrics.message_accepted(),
            Pushed::Rejected(why) => {
                debug!(partition, offset, reason = %why, "message rejected");
                self.metrics.message_rejected();
            }
        }
    }

    fn drop_revoked(&mut self) {
        let revoked = std::mem::take(&mut *self.consumer.context().revoked.lock().expect("revoked lock"));
        for partition in revoked {
            if let Some(buffer) = self.buffers.remove(&partition) {
                info!(partition, rows = buffer.rows(), "dropped the buffer of a revoked partition");
            }
        }
    }

    async fn flush_if_due(&mut self, partition: i32) -> Result<()> {
        let Some(buffer) = self.buffers.get(&partition) else {
            return Ok(());
        };
        if self.config.flush.should_flush(buffer.rows(), buffer.bytes(), buffer.age(Instant::now())) {
            self.flush(partition, CommitMode::Async).await?;
        }
        Ok(())
    }

    /// Writes the partition's buffered files, retrying until they are durable, then commits.
    async fn flush(&mut self, partition: i32, mode: CommitMode) -> Result<()> {
        let Some(buffer) = self.buffers.get_mut(&partition) else {
            return Ok(());
        };
        let Some(flush) = buffer.take()? else {
            return Ok(());
        };
        let mut backoff = Duration::from_millis(50);
        let written = loop {
            match write_files(&self.lake, &flush, &self.metrics).await {
                Ok(written) => break written,
                Err(e) => {
                    self.metrics.flush_failed();
                    warn!(partition, error = %e, ?backoff, "flush failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(flush.next_offset()))?;
        if let Err(e) = self.consumer.commit(&offsets, mode) {
            // The files are durable; a failed commit only means some messages are consumed again.
            warn!(partition, offset = flush.next_offset(), error = %e, "offset commit failed");
        }
        self.metrics.flushed();
        info!(
            partition,
            first_offset = flush.first_offset,
            last_offset = flush.last_offset,
            valid = flush.valid,
            rejected = flush.rejected,
            files = written.len(),
            "flushed"
        );
        if let Some(landed) = &self.landed {
            for notice in written {
                let _ = landed.send(notice);
            }
        }
        Ok(())
    }
}

/// Encodes and uploads every file of a flush; returns what landed.
async fn write_files(lake: &Lake, flush: &PendingFlush, metrics: &IngestMetrics) -> Result<Vec<Landed>, WriteError> {
    let uploads = flush.files.iter().map(|file| async move {
        let path = file.path.to_string();
        let sort_by: &[&str] = match file.path.table {
            Table::Results => &["repository", "test_id", "finished_at"],
            _ => &["kafka_offset"],
        };
        let sorted = write::sort_batch(&file.batch, sort_by)
            .map_err(|source| WriteError::Arrow { path: path.clone(), source })?;
        let bytes = write::encode_parquet(&sorted, &path)?;
        let size = bytes.len();
        if write::put_create(lake, &path, bytes).await? == Created::Written {
            metrics.file_written(size);
        }
        let mut landed = Landed::new(file.path.table, file.path.partition, vec![path], file.batch.num_rows() as u64);
        landed.min_time = file.min_time;
        landed.max_time = file.max_time;
        Ok::<_, WriteError>(landed)
    });
    try_join_all(uploads).await
}
