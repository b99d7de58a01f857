//! DataFusion jobs over the lake.
//!
//! [`catalog`] registers the lake's hive-partitioned tables with DataFusion. [`trends`] holds the
//! SQL that turns one date of `results` into the same date of `trends_hourly` and `trends_daily`,
//! and writes it back as one file per date partition, committed to the table's Delta log. [`schedule`] decides which dates to
//! recompute: those named by landed-partition notices, and those a periodic scan finds changed.
//! [`flaky`] scores every test's flakiness over a window into `flaky_scores`.

pub mod catalog;
pub mod dedup;
pub mod flaky;
pub mod lease;
pub mod metrics;
pub mod percentiles;
pub mod schedule;
pub mod trends;

pub use schedule::{ComputeConfig, Scheduler, run, run_once};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Write(#[from] testlake_schemas::files::WriteError),
    #[error("object store: {0}")]
    Store(Box<object_store::Error>),
    #[error("reading the commit log: {0}")]
    Log(#[from] testlake_schemas::log_reader::LogReadError),
    #[error(transparent)]
    Delta(#[from] testlake_schemas::delta::DeltaError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
