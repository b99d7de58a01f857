//! Kafka → Arrow → Parquet in the lake.
//!
//! A consumer-group member ([`consumer::Ingest`]) decodes each message into a per-partition
//! [`buffer::PartitionBuffer`], splitting rows by the UTC hour of `finished_at` and keeping
//! rejected messages with their reason. When the [`flush::FlushPolicy`] trips, the buffer becomes
//! zstd Parquet files named by their Kafka offsets, made durable through the partition's
//! [`commit`] log in the lake (the truth about which offsets landed); only then is the Kafka
//! offset committed (a hint) and a [`testlake_schemas::Landed`] notice sent. [`crash`] injects
//! process aborts at each step of that protocol for the exactly-once tests.

pub mod buffer;
pub mod commit;
pub mod compact;
pub mod consumer;
pub mod crash;
pub mod cursor;
pub mod flush;
pub mod metrics;
pub mod notices;

pub use compact::{CompactConfig, Compactor};
pub use consumer::{Ingest, IngestConfig};
pub use flush::FlushPolicy;
pub use metrics::IngestMetrics;
