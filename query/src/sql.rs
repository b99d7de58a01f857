//! Read-only SQL over the lake's tables, for `POST /api/v1/sql` (`handlers::sql`) and `testlake sql`.
//!
//! What keeps it read-only and inside the lake:
//! - DataFusion's `SQLOptions` refuse any plan with DDL (`CREATE [EXTERNAL] TABLE`, views, …),
//!   DML (`INSERT`, `COPY … TO`) or statements (`SET`, transactions); only queries run.
//! - The session knows only the lake's tables; URL tables (`SELECT * FROM '/etc/passwd'`) are off
//!   (DataFusion's default) and no file-reading table function is registered.
//! - Every statement runs under a memory pool of `memory_bytes` (never spilling to disk) and a
//!   `timeout`, and returns at most `max_rows` rows (the answer says whether it was truncated).
//!
//! What keeps one statement from taking the service down: its size and depth are checked before
//! it is planned (`shape`), it runs on the statements' own threads, a few at a time ([`SqlEngine`],
//! whose doc says what bounds its time and memory), and the functions that can produce far more
//! than they read are capped (`capped`).
//!
//! `results` is a view over the *committed* `results` files only (never a folder listing, which
//! may show a crashed flush's files until recovery), with `date` and `hour` derived from
//! `finished_at` exactly as the partition folders are named.

use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{Lake, Table};

use crate::error::ApiError;

mod capped;
mod engine;
mod shape;

pub use engine::{Described, STACK_BYTES, SqlEngine};
pub use shape::{MAX_DEPTH, MAX_RELATIONS, MAX_STATEMENT_BYTES};

#[derive(Debug, Clone, PartialEq)]
pub struct SqlLimits {
    pub timeout: Duration,
    /// One statement's memory pool; its amplifying functions may produce as much again.
    pub memory_bytes: usize,
    pub max_rows: usize,
    /// Statements running at once (all of them: at most this many `memory_bytes` pools).
    pub concurrency: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), memory_bytes: 256 << 20, max_rows: 10_000, concurrency: 4 }
    }
}

/// The name the committed `results` files are registered under, behind the `results` view.
const COMMITTED: &str = "committed_results_files";

/// The later copies of events, left out of `results` (`testlake_compute::dedup::copies_batch`).
const DUPLICATES: &str = "duplicates";

/// A session with every lake table under its name, memory-limited.
pub async fn session(
    lake: &Lake,
    committed: &mut CommittedFiles,
    limits: &SqlLimits,
) -> Result<SessionContext, ApiError> {
    // No spilling: a statement over its memory is refused rather than written to the service's
    // disk (with spilling on, whether it was refused depended on which operator hit the limit
    // first, and a refused-or-not test flaked under load).
    let no_spill = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(no_spill)
        .build_arc()?;
    let config = SessionConfig::new().with_target_partitions(2).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_object_store(&lake.store_url(), testlake_compute::catalog::lake_view(lake).await?);
    for table in Table::ALL.into_iter().filter(|t| *t != Table::Results) {
        testlake_compute::catalog::register(&ctx, lake, table)?;
    }
    committed.refresh(lake).await?;
    let files: Vec<String> = committed.dates().into_iter().flat_map(|d| committed.results_for(d)).collect();
    let copies = crate::frame::register_results(&ctx, lake, COMMITTED, &files).await?;
    ctx.register_batch(DUPLICATES, testlake_compute::dedup::copies_batch(&copies)?)?;
    ctx.sql(&format!(
        "CREATE VIEW results AS SELECT *, to_char(finished_at, '%Y-%m-%d') AS date, to_char(finished_at, '%H') AS hour
         FROM {COMMITTED}"
    ))
    .await?;
    Ok(ctx)
}

/// The answer of one statement: at most `max_rows` rows, and whether more were cut off.
pub struct SqlAnswer {
    pub batch: RecordBatch,
    pub truncated: bool,
    /// The statement's place among those running, given back when the answer is dropped.
    _slot: Option<engine::Slot>,
}

#[cfg(test)]
mod tests;
