//! `testlake produce`: feeds a topic from a JSON-lines file or from the synthetic fleet.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testlake_ingest::KafkaConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::fleet::{Fleet, FleetConfig};

#[derive(Debug, Clone)]
pub enum Source {
    /// One message per line, sent as is (malformed lines included: the ingest must reject them).
    File(PathBuf),
    /// Runs of the synthetic fleet, timestamped now.
    Synthetic(FleetConfig),
}

#[derive(Debug, Clone)]
pub struct ProduceConfig {
    pub kafka: KafkaConfig,
    /// Must exist (see [`crate::kafka::prepare_topics`]).
    pub topic: String,
    pub source: Source,
    /// Messages per second; 0 means as fast as the broker takes them.
    pub rate: u64,
    /// Stop after this many messages (the synthetic fleet runs forever otherwise).
    pub count: Option<u64>,
}

/// Sends messages until the source or `count` runs out, or `shutdown`. Returns how many were sent.
pub async fn produce(config: ProduceConfig, shutdown: CancellationToken) -> Result<u64> {
    let producer = crate::kafka::events_producer(&config.kafka)?;
    let limit = config.count.unwrap_or(u64::MAX);
    let mut sender = Sender::new(producer, config.topic.clone(), config.rate);
    match config.source {
        Source::File(path) => {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if shutdown.is_cancelled() || sender.sent >= limit {
                    break;
                }
                if !line.trim().is_empty() {
                    sender.send(None, line.into_bytes()).await?;
                }
            }
        }
        Source::Synthetic(fleet) => {
            let mut fleet = Fleet::new(fleet);
            'runs: while !shutdown.is_cancelled() {
                for event in fleet.run(Utc::now()) {
                    if sender.sent >= limit || shutdown.is_cancelled() {
                        break 'runs;
                    }
                    sender.send(Some(event.test_id.clone()), event.to_json().into_bytes()).await?;
                }
            }
        }
    }
    sender.finish().await?;
    info!(sent = sender.sent, topic = %config.topic, "produced");
    Ok(sender.sent)
}

/// Paces sends to a rate and keeps a bounded number in flight.
struct Sender {
    producer: FutureProducer,
    topic: String,
    rate: u64,
    started: Instant,
    sent: u64,
    in_flight: FuturesUnordered<tokio::task::JoinHandle<Result<()>>>,
}

impl Sender {
    fn new(producer: FutureProducer, topic: String, rate: u64) -> Self {
        Self { producer, topic, rate, started: Instant::now(), sent: 0, in_flight: FuturesUnordered::new() }
    }

    async fn send(&mut self, key: Option<String>, payload: Vec<u8>) -> Result<()> {
        if self.rate > 0 {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        while self.in_flight.len() >= 10_000 {
            self.in_flight.next().await.expect("non-empty")??;
        }
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        self.in_flight.push(tokio::spawn(async move {
            let mut record = FutureRecord::<String, Vec<u8>>::to(&topic).payload(&payload);
            if let Some(key) = &key {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
            Ok(())
        }));
        self.sent += 1;
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        while let Some(done) = self.in_flight.next().await {
            done??;
        }
        Ok(())
    }
}
