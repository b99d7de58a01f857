//! Kafka at start and the producers: the start-up check every command that talks to Kafka makes
//! ([`prepare_topics`]: the brokers answer with this configuration, and the topics exist, or are
//! created when asked), topic creation, and a producer as CI fleets configure one.
//!
//! librdkafka retries an unreachable broker, a refused password or an untrusted certificate
//! forever, logging; a process started with one would look alive and do nothing. The check turns
//! those into an error naming the cause, within [`STARTUP_TIMEOUT`] at most (a refused password or
//! certificate as soon as the broker refuses it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use testlake_ingest::KafkaConfig;
use tracing::{info, warn};

/// How long the start-up check waits for a broker to answer.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why Kafka cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Kafka at {brokers}: authentication failed: {reason} (check security.protocol, sasl.mechanism, \
         sasl.username and sasl.password)"
    )]
    Authentication { brokers: String, reason: String },
    #[error(
        "Kafka at {brokers}: TLS failed: {reason} (check security.protocol, and ssl.ca.location: the CA \
         that signed the brokers' certificates)"
    )]
    Tls { brokers: String, reason: String },
    #[error("Kafka at {brokers}: no broker answered within {}: {reason}", humantime::format_duration(*within))]
    Unreachable { brokers: String, within: Duration, reason: String },
    #[error(
        "Kafka at {brokers}: topic {} missing; create {}, or pass --create-topics (which needs the \
         right to create topics)", topics.join(", "), if topics.len() == 1 { "it" } else { "them" }
    )]
    Missing { brokers: String, topics: Vec<String> },
    #[error("Kafka at {brokers}: topic {topic}: {code}")]
    Topic { brokers: String, topic: String, code: RDKafkaErrorCode },
    #[error(
        "Kafka at {brokers}: creating topic {topic} ({partitions} partitions, replication factor \
         {replication_factor}): {code}"
    )]
    Create { brokers: String, topic: String, partitions: i32, replication_factor: i32, code: RDKafkaErrorCode },
    #[error("Kafka client: {0}")]
    Client(#[from] KafkaError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How missing topics are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creation {
    /// Partitions of the events topic (the landed-notice topic has one).
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i32,
}

impl Default for Creation {
    fn default() -> Self {
        Self { partitions: 4, replication_factor: -1 }
    }
}

/// Checks that Kafka answers with this configuration and that every topic in `topics` (name,
/// partitions if created) exists; with `create`, creates the missing ones first. Fails naming
/// the cause: authentication, TLS, no answer, a missing topic, a refused creation.
pub async fn prepare_topics(kafka: &KafkaConfig, topics: &[(&str, i32)], create: Option<Creation>) -> Result<()> {
    info!(brokers = %kafka.brokers, properties = %kafka.properties, "kafka client configuration");
    let names: Vec<String> = topics.iter().map(|(name, _)| (*name).to_owned()).collect();
    let missing = missing_topics(kafka, &names, STARTUP_TIMEOUT).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let Some(creation) = create else {
        return Err(Error::Missing { brokers: kafka.brokers.clone(), topics: missing });
    };
    let new: Vec<(&str, i32)> = topics.iter().filter(|(name, _)| missing.iter().any(|m| m == name)).copied().collect();
    create_topics(kafka, &new, creation.replication_factor).await?;
    let still = missing_topics(kafka, &missing, STARTUP_TIMEOUT).await?;
    if !still.is_empty() {
        return Err(Error::Missing { brokers: kafka.brokers.clone(), topics: still });
    }
    Ok(())
}

/// Creates each of `topics` (name, partitions) unless it exists.
pub async fn create_topics(kafka: &KafkaConfig, topics: &[(&str, i32)], replication_factor: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.create(&[])?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                let partitions = topics.iter().find(|(name, _)| *name == topic).map_or(-1, |(_, p)| *p);
                return Err(Error::Create {
                    brokers: kafka.brokers.clone(),
                    topic,
                    partitions,
                    replication_factor,
                    code,
                });
            }
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` partitions (replication factor 1) unless it exists, on a
/// broker without security settings: tests and benchmarks.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    create_topics(&KafkaConfig::new(brokers), &[(topic, partitions)], 1).await
}

/// A producer as CI fleets configure one: batched, zstd-compressed, idempotence off (tansu).
pub fn events_producer(kafka: &KafkaConfig) -> Result<FutureProducer> {
    Ok(kafka.create(&[
        ("linger.ms", "20"),
        ("compression.type", "zstd"),
        ("message.timeout.ms", "30000"),
        ("queue.buffering.max.messages", "200000"),
    ])?)
}

/// [`events_producer`] for a broker without security settings: tests and benchmarks.
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    events_producer(&KafkaConfig::new(brokers))
}

/// Which of `topics` do not exist, asked of the brokers until one answers (within `within`).
async fn missing_topics(kafka: &KafkaConfig, topics: &[String], within: Duration) -> Result<Vec<String>> {
    let (kafka, topics) = (kafka.clone(), topics.to_vec());
    tokio::task::spawn_blocking(move || Probe::new(&kafka)?.missing(&topics, within))
        .await
        .expect("the start-up check does not panic")
}

/// A client that only asks for metadata, remembering what librdkafka reported on the way.
struct Probe {
    consumer: BaseConsumer<Causes>,
    brokers: String,
}

impl Probe {
    fn new(kafka: &KafkaConfig) -> Result<Self> {
        let consumer = kafka.create_with_context(&[("allow.auto.create.topics", "false")], Causes::default())?;
        Ok(Self { consumer, brokers: kafka.brokers.clone() })
    }

    fn missing(&self, topics: &[String], within: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + within;
        let mut missing = Vec::new();
        for topic in topics {
            loop {
                let metadata = self.consumer.fetch_metadata(Some(topic), Duration::from_millis(500));
                let code = match metadata {
                    Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                        Some(found) => found.error().map(RDKafkaErrorCode::from),
                        None => Some(RDKafkaErrorCode::UnknownTopicOrPartition),
                    },
                    Err(e) => {
                        self.serve_events(Duration::from_millis(200));
                        self.decisive()?;
                        if Instant::now() >= deadline {
                            let reason = self.consumer.context().last().unwrap_or_else(|| e.to_string());
                            return Err(Error::Unreachable { brokers: self.brokers.clone(), within, reason });
                        }
                        continue;
                    }
                };
                match code {
                    None => break,
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                        missing.push(topic.clone());
                        break;
                    }
                    // Just created: its partitions have no leader yet.
                    Some(RDKafkaErrorCode::LeaderNotAvailable) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Some(code) => {
                        return Err(Error::Topic { brokers: self.brokers.clone(), topic: topic.clone(), code });
                    }
                }
            }
        }
        Ok(missing)
    }

    /// Hands librdkafka's queued events to the context for `time`: errors reach it only so, and
    /// behind its log lines (a zero-time poll serves one event).
    fn serve_events(&self, time: Duration) {
        let until = Instant::now() + time;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.consumer.poll(left);
        }
    }

    /// An authentication or TLS failure: retrying does not help.
    fn decisive(&self) -> Result<()> {
        let Some((code, reason)) = self.consumer.context().decisive.lock().expect("causes lock").clone() else {
            return Ok(());
        };
        let brokers = self.brokers.clone();
        Err(match code {
            RDKafkaErrorCode::SSL => Error::Tls { brokers, reason },
            _ => Error::Authentication { brokers, reason },
        })
    }
}

/// What librdkafka reported: the first authentication or TLS failure, and the last error.
#[derive(Default)]
struct Causes {
    decisive: Mutex<Option<(RDKafkaErrorCode, String)>>,
    last: Mutex<Option<String>>,
}

impl Causes {
    fn last(&self) -> Option<String> {
        self.last.lock().expect("causes lock").clone()
    }
}

impl ClientContext for Causes {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let reason = if reason.is_empty() { error.to_string() } else { reason.to_owned() };
        match code {
            Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) => {
                self.decisive.lock().expect("causes lock").get_or_insert((code, reason));
            }
            // "1/1 brokers are down" says less than the error before it.
            Some(RDKafkaErrorCode::AllBrokersDown) => {}
            _ => {
                let mut last = self.last.lock().expect("causes lock");
                if last.is_none() {
                    let within = humantime::format_duration(STARTUP_TIMEOUT);
                    warn!(error = %reason, %within, "kafka: no answer yet; still trying");
                }
                *last = Some(reason);
            }
        }
    }
}

impl ConsumerContext for Causes {}
