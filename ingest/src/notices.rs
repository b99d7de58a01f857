//! Landed-partition notices on a Kafka topic, so processes other than the ingest (compute, query)
//! learn what landed without polling the object store. A process that was down catches up from
//! the lake itself (compute's scan of changed dates); the topic is only the fast path.
//!
//! The stages only emit notices into a `broadcast` channel; [`publish`] forwards a channel to
//! the topic, the same way for every stage, and [`subscribe`] brings the topic back into one.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use testlake_schemas::Landed;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::kafka::KafkaConfig;

/// The topic notices are published on unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "testlake-landed";

/// Publishes notices; a failed publish is logged, never fatal (subscribers catch up from the lake).
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    /// A producer on `topic` through `kafka`, the process's shared client configuration.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> rdkafka::error::KafkaResult<Self> {
        let producer = kafka.create(&[("linger.ms", "5"), ("message.timeout.ms", "10000")])?;
        Ok(Self { producer, topic: topic.to_owned() })
    }

    pub fn publish(&self, notice: &Landed) {
        let payload = serde_json::to_vec(notice).expect("a notice always serializes");
        let key = format!("{}/{}/{:02}", notice.table, notice.date, notice.hour);
        if let Err((e, _)) = self.producer.send_result(FutureRecord::to(&self.topic).key(&key).payload(&payload)) {
            warn!(error = %e, topic = %self.topic, "could not publish a landed notice");
        }
    }
}

/// Forwards every notice sent on the channel of `notices` to the topic, until every sender is
/// dropped, then waits (up to the producer's message timeout) for what is queued to be delivered.
///
/// It takes no shutdown token on purpose: a stage emits its last notices while it shuts down
/// (the ingest's final flush), so the forwarder stops when the stage has let go of its sender.
pub async fn publish(mut notices: broadcast::Receiver<Landed>, publisher: Publisher) {
    loop {
        match notices.recv().await {
            Ok(notice) => publisher.publish(&notice),
            Err(RecvError::Lagged(missed)) => {
                // Subscribers catch up from the lake.
                warn!(missed, topic = %publisher.topic, "landed notices dropped before publishing");
            }
            Err(RecvError::Closed) => break,
        }
    }
    let producer = publisher.producer.clone();
    let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    if let Ok(Err(e)) = flushed {
        warn!(error = %e, topic = %publisher.topic, "landed notices not delivered before stopping");
    }
}

/// Logs when the subscription is live: notices published from then on are seen.
struct FollowContext;

impl ClientContext for FollowContext {}

impl ConsumerContext for FollowContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let topics: Vec<String> =
                tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
            tracing::info!(?topics, "following landed notices");
        }
    }
}

/// Subscribes to the notice topic from its end (a fresh, private group) and forwards every
/// notice to the returned channel until `shutdown`.
pub fn subscribe(
    kafka: &KafkaConfig,
    topic: &str,
    shutdown: CancellationToken,
) -> rdkafka::error::KafkaResult<broadcast::Receiver<Landed>> {
    let group = format!("testlake-notices-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer<FollowContext> = kafka.create_with_context(
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "latest"),
            ("topic.metadata.refresh.interval.ms", "5000"),
        ],
        FollowContext,
    )?;
    consumer.subscribe(&[topic])?;
    let (tx, rx) = broadcast::channel(4096);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                message = consumer.recv() => match message {
                    Ok(m) => match m.payload().map(serde_json::from_slice::<Landed>) {
                        Some(Ok(notice)) => {
                            debug!(table = %notice.table, date = %notice.date, hour = notice.hour, "landed notice");
                            let _ = tx.send(notice);
                        }
                        _ => warn!(offset = m.offset(), "ignoring a malformed landed notice"),
                    },
                    Err(e) => {
                        warn!(error = %e, "landed-notice consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    });
    Ok(rx)
}
