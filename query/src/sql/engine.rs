//! Where statements run: threads of their own, a few statements at a time.
//!
//! - Isolation: statements run on the engine's own tokio runtime ([`SqlEngine`]), never on the
//!   runtime that serves HTTP and, in `testlake all`, runs ingest and compute. A statement that
//!   keeps a thread busy takes one of the engine's threads, not theirs.
//! - Stack: the engine's threads have [`STACK_BYTES`] of stack, far more than the deepest statement
//!   `shape` lets through needs; the statement is parsed, checked, planned, run and dropped there.
//! - Concurrency: at most `SqlLimits::concurrency` statements hold a slot; one more is refused at
//!   once (`ApiError::SqlBusy`, 429 with `Retry-After`). A statement keeps its slot until its work
//!   has really ended — past its timeout, while a thread is still inside work that does not yield —
//!   and until its answer is written (the slot travels with [`SqlAnswer`]).
//! - Time: the caller stops waiting at `SqlLimits::timeout`, and the statement's task is aborted
//!   then, or when the caller goes away (a client that disconnects drops the request's future). An
//!   aborted task stops at its next yield: DataFusion's operators yield between batches. What does
//!   not yield is bounded by the statement's shape (planning) and by the capped functions
//!   (`capped`: the scalar functions whose work is not proportional to their input).
//! - Memory: per statement, its own pool of `SqlLimits::memory_bytes` for operators' state, the
//!   same again for the amplifying functions' outputs (`capped`), and the collected answer counted
//!   in the pool (collection stops when the pool is full). A statement's memory is therefore at most
//!   about `2 × memory_bytes` (plus the copies of its answer made while it is written), and all
//!   statements' at most `concurrency ×` that.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle};

use super::{SqlAnswer, SqlLimits, capped, shape};
use crate::error::ApiError;

/// The stack of each statement thread. A 256-deep expression (`shape::MAX_DEPTH`) needs about
/// 6 MiB to plan in a debug build; untouched stack costs address space, not memory.
pub const STACK_BYTES: usize = 64 << 20;

/// The statements' runtime and their slots.
pub struct SqlEngine {
    /// Started with the first statement (a service nobody sends SQL has no statement threads).
    /// A runtime cannot be dropped inside another one: it is shut down in the background instead.
    runtime: tokio::sync::OnceCell<tokio::runtime::Runtime>,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

impl SqlEngine {
    pub fn new(limits: &SqlLimits) -> Self {
        let concurrency = limits.concurrency.max(1);
        Self { runtime: Default::default(), slots: Arc::new(Semaphore::new(concurrency)), concurrency }
    }

    /// Runs one read-only statement under `limits` (its time, memory and rows; the concurrency is
    /// the engine's). Bad SQL, a refused statement or an exceeded limit is an error the caller is
    /// told of (which status each gets is `error.rs`'s call).
    pub async fn run(&self, ctx: &SessionContext, sql: &str, limits: &SqlLimits) -> Result<SqlAnswer, ApiError> {
        self.run_with(ctx, sql, None, limits).await
    }

    /// [`SqlEngine::run`] with values for the statement's `$1`, `$2`, … (PostgreSQL's extended
    /// protocol binds them; they are values, never SQL).
    pub async fn run_with(
        &self,
        ctx: &SessionContext,
        sql: &str,
        params: Option<ParamValues>,
        limits: &SqlLimits,
    ) -> Result<SqlAnswer, ApiError> {
        let (ctx, owned, limits) = (ctx.clone(), sql.to_owned(), limits.clone());
        self.on_thread(sql, limits.timeout, move |slot| async move {
            let answer = statement(&ctx, &owned, params, &limits).await?;
            Ok(SqlAnswer { _slot: Some(slot), ..answer })
        })
        .await
    }

    /// What a statement would answer, without running it: its columns and its parameters' types
    /// (`None` where the plan does not say), planned like [`SqlEngine::run`] plans it, under the
    /// same checks and in one of the same slots.
    pub async fn describe(&self, ctx: &SessionContext, sql: &str, limits: &SqlLimits) -> Result<Described, ApiError> {
        let (ctx, owned, limits) = (ctx.clone(), sql.to_owned(), limits.clone());
        self.on_thread(sql, limits.timeout, move |slot| async move {
            let _slot = slot;
            let plan = plan(&ctx, &owned, &limits).await?;
            let mut params: Vec<(String, Option<DataType>)> =
                plan.get_parameter_types().map_err(ApiError::StatementRefused)?.into_iter().collect();
            params.sort_by_key(|(id, _)| id.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
            Ok(Described {
                schema: Arc::new(plan.schema().as_arrow().clone()),
                params: params.into_iter().map(|(_, t)| t).collect(),
            })
        })
        .await
    }

    /// Runs `work` on a statement thread, holding a slot, until it ends or `timeout` passes.
    async fn on_thread<T, F>(&self, sql: &str, timeout: Duration, work: impl FnOnce(Slot) -> F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        shape::check_length(sql).map_err(ApiError::StatementTooComplex)?;
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| ApiError::SqlBusy(self.concurrency))?;
        let work = Aborting(self.runtime().await?.spawn(work(slot)));
        match tokio::time::timeout(timeout, work).await {
            Ok(done) => done.map_err(ApiError::StatementPanicked)?,
            Err(_) => Err(ApiError::StatementTimeout(timeout)),
        }
    }

    /// The statement threads: as many as the machine's cores, at most one per slot.
    async fn runtime(&self) -> Result<&tokio::runtime::Runtime, ApiError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let build = || async {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores.min(self.concurrency))
                .thread_name("testlake-sql")
                .thread_stack_size(STACK_BYTES)
                .enable_all()
                .build()
        };
        self.runtime.get_or_try_init(build).await.map_err(ApiError::SqlThreads)
    }
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task aborted when its handle is dropped: a caller that stops waiting (a timeout, a client
/// gone) stops the work too.
struct Aborting<T>(JoinHandle<T>);

impl<T> Future for Aborting<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Parses, checks, plans and runs one statement (on a statement thread).
async fn statement(
    ctx: &SessionContext,
    sql: &str,
    params: Option<ParamValues>,
    limits: &SqlLimits,
) -> Result<SqlAnswer, ApiError> {
    let plan = plan(ctx, sql, limits).await?;
    let plan = match params {
        Some(params) => plan.with_param_values(params).map_err(ApiError::StatementRefused)?,
        None => plan,
    };
    let df = ctx.execute_logical_plan(plan).await.map_err(ApiError::StatementRefused)?;
    // EXPLAIN [ANALYZE] must stay the root of its plan (a limit above it failed as a 500);
    // its answer is a few rows, and the row cap in `collect` still holds.
    let explains = matches!(df.logical_plan(), LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
    let df = if explains { df } else { df.limit(0, Some(limits.max_rows + 1)).map_err(ApiError::StatementRefused)? };
    collect(ctx, df, limits.max_rows).await
}

/// Parses, checks and plans one statement: only a query gets a plan.
async fn plan(ctx: &SessionContext, sql: &str, limits: &SqlLimits) -> Result<LogicalPlan, ApiError> {
    capped::register(ctx, limits.memory_bytes);
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).map_err(ApiError::StatementRefused)?;
    shape::check(&statement).map_err(ApiError::StatementTooComplex)?;
    let plan = state.statement_to_plan(statement).await.map_err(ApiError::StatementRefused)?;
    read_only().verify_plan(&plan).map_err(ApiError::StatementRefused)?;
    Ok(plan)
}

/// Nothing but queries: no DDL, DML or statements.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// At most `max_rows` rows of the answer, counted in the statement's memory pool: a statement
/// whose answer outgrows its pool fails like one whose operators do.
async fn collect(ctx: &SessionContext, df: DataFrame, max_rows: usize) -> Result<SqlAnswer, ApiError> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let reservation = MemoryConsumer::new("sql answer").register(&ctx.runtime_env().memory_pool);
    let mut stream = df.execute_stream().await.map_err(ApiError::statement_failed)?;
    let (mut batches, mut rows) = (Vec::new(), 0);
    while rows <= max_rows {
        let Some(batch) = stream.next().await else { break };
        let batch = batch.map_err(ApiError::statement_failed)?;
        reservation.try_grow(batch.get_array_memory_size()).map_err(ApiError::statement_failed)?;
        rows += batch.num_rows();
        batches.push(batch);
    }
    drop(stream);
    let batch = match <[_; 1]>::try_from(batches) {
        Ok([batch]) => batch,
        Err(batches) => {
            // Concatenating copies the batches once more.
            reservation.try_grow(reservation.size()).map_err(ApiError::statement_failed)?;
            concat_batches(&schema, &batches)?
        }
    };
    let truncated = batch.num_rows() > max_rows;
    Ok(SqlAnswer { batch: batch.slice(0, batch.num_rows().min(max_rows)), truncated, _slot: None })
}

/// A statement's answer's shape, from its plan ([`SqlEngine::describe`]).
pub struct Described {
    pub schema: SchemaRef,
    /// `$1`, `$2`, …: each parameter's type where the plan infers one.
    pub params: Vec<Option<DataType>>,
}

/// The slot a statement holds, kept with its answer until that is written.
pub(super) type Slot = OwnedSemaphorePermit;
