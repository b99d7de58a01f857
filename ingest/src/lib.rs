//! Kafka → Arrow → Parquet in the lake.
//!
//! A consumer-group member ([`consumer::Ingest`]) decodes each message into a per-partition
//! [`buffer::PartitionBuffer`], splitting rows by the UTC hour of `finished_at` and keeping
//! rejected messages with their reason. When the [`flush::FlushPolicy`] trips, [`testlake_schemas::files`] encodes
//! the buffer as zstd Parquet files named by their Kafka offsets and writes them create-only; only
//! then is the Kafka offset committed and a [`testlake_schemas::Landed`] notice sent.

pub mod buffer;
pub mod consumer;
pub mod flush;
pub mod metrics;

pub use consumer::{Ingest, IngestConfig};
pub use flush::FlushPolicy;
pub use metrics::IngestMetrics;
