//! The contract between testlake's stages.
//!
//! CI runners produce one JSON [`event::TestEvent`] per test execution to Kafka. The ingest decodes
//! each message (or rejects it with a [`event::Rejection`]), appends it to Arrow batches shaped by
//! [`tables`], and writes them as Parquet under the hive [`paths`] of the lake. Compute reads the
//! `results` table and writes the trend tables; query serves them. Every process reports its
//! metrics and health the same way ([`observe`]).

pub mod delta;
pub mod event;
pub mod files;
pub mod lake;
pub mod landed;
pub mod log;
pub mod log_reader;
pub mod observe;
pub mod paths;
pub mod tables;

pub use event::{EventView, Rejection, Status, TestEvent};
pub use lake::Lake;
pub use landed::Landed;
pub use paths::{DataFileName, DataFilePath, DatePartition, HourPartition, Table};
