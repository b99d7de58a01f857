//! Kafka → Arrow → Parquet in the lake.
//!
//! A consumer-group member ([`consumer::Ingest`], a thin `select!` loop doing the I/O) decodes
//! each message into a per-partition [`buffer::PartitionBuffer`], splitting rows by the UTC hour
//! of `finished_at` and keeping rejected messages with their reason. [`ownership`] decides, with
//! no I/O, which partitions are owned, which messages are new ([`cursor`]) and when a buffer
//! flushes ([`flush::FlushPolicy`], the memory budget). A flush is [`stage`]d — sorted zstd
//! Parquet files named by their Kafka offsets — and made durable through the partition's
//! [`log_writer`] in the lake (the truth about which offsets landed), [`retry`]ing transient
//! [`error`]s; only then is the Kafka offset committed (a hint) and a
//! [`testlake_schemas::Landed`] notice sent, which [`notices`] forwards to Kafka. Every Kafka
//! client of a process shares one [`kafka::KafkaConfig`] (bootstrap servers, security). [`compact`]
//! merges closed hours' small files. [`crash`] injects process aborts at each step of the
//! protocol for the exactly-once tests.

pub mod buffer;
pub mod compact;
pub mod consumer;
pub mod crash;
pub mod cursor;
pub mod error;
pub mod flush;
pub mod kafka;
pub mod log_writer;
pub mod metrics;
pub mod notices;
pub mod ownership;
pub mod retry;
pub mod stage;

pub use compact::{CompactConfig, Compactor};
pub use consumer::{Ingest, IngestConfig};
pub use error::{Error, Result};
pub use flush::FlushPolicy;
pub use kafka::KafkaConfig;
pub use metrics::IngestMetrics;
