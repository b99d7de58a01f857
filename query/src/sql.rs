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
//! `results` is a view over the *committed* `results` files only (never a folder listing, which
//! may show a crashed flush's files until recovery), with `date` and `hour` derived from
//! `finished_at` exactly as the partition folders are named.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{Lake, Table};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub struct SqlLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub max_rows: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), memory_bytes: 512 << 20, max_rows: 10_000 }
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
    ctx.register_object_store(&lake.store_url(), Arc::clone(lake.store()));
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
}

/// Runs one read-only statement. Bad SQL, a refused statement or an exceeded limit is an error
/// the caller is told of with DataFusion's message (which status each gets is `error.rs`'s call).
pub async fn run(ctx: &SessionContext, sql: &str, limits: &SqlLimits) -> Result<SqlAnswer, ApiError> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let (ctx, sql, limits) = (ctx.clone(), sql.to_owned(), limits.clone());
    let timeout = limits.timeout;
    // On its own task, so the timeout fires even while the plan is busy; aborting it stops the
    // plan at its next yield (between batches).
    let mut work = tokio::spawn(async move {
        let df = ctx.sql_with_options(&sql, options).await.map_err(ApiError::StatementRefused)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        // EXPLAIN [ANALYZE] must stay the root of its plan (a limit above it failed as a 500);
        // its answer is a few rows, and the row cap below still holds.
        let explains = matches!(df.logical_plan(), LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let df =
            if explains { df } else { df.limit(0, Some(limits.max_rows + 1)).map_err(ApiError::StatementRefused)? };
        let batches = df.collect().await.map_err(ApiError::statement_failed)?;
        let batch = concat_batches(&schema, &batches)?;
        let truncated = batch.num_rows() > limits.max_rows;
        Ok(SqlAnswer { batch: batch.slice(0, batch.num_rows().min(limits.max_rows)), truncated })
    });
    match tokio::time::timeout(timeout, &mut work).await {
        Ok(done) => done.map_err(ApiError::StatementPanicked)?,
        Err(_) => {
            work.abort();
            Err(ApiError::StatementTimeout(timeout))
        }
    }
}

#[cfg(test)]
mod tests;
