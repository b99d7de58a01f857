//! `/api/v1/*`: each endpoint validates its parameters, names its answer (a cache key and the
//! tables and dates it covers) and says how to load it; [`AnswerCache`](crate::cache) and
//! [`render`](crate::render) do the rest.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use testlake_compute::trends::Interval;
use testlake_schemas::Table;

use crate::AppState;
use crate::cache::{Coverage, Loaded};
use crate::error::ApiError;
use crate::params::{Filters, Range};
use crate::render::{View, respond};

pub(crate) fn ts(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into())))
}

pub(crate) fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The date partitions a range touches.
pub(crate) fn dates(range: Range) -> std::ops::RangeInclusive<NaiveDate> {
    let last = (range.to - chrono::Duration::microseconds(1)).date_naive();
    range.from.date_naive()..=last.max(range.from.date_naive())
}

pub(crate) async fn collect(df: DataFrame) -> Result<RecordBatch, ApiError> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Rows of a trends table whose bucket starts in the range and that match the filters. The
/// `date` partition column prunes files before any is opened.
pub(crate) async fn filtered(
    ctx: &SessionContext,
    table: Table,
    range: Range,
    filters: &Filters,
) -> Result<DataFrame, ApiError> {
    let days = dates(range);
    let mut df = ctx
        .table(table.name())
        .await?
        .filter(col("date").gt_eq(lit(date_text(*days.start()))).and(col("date").lt_eq(lit(date_text(*days.end())))))?
        .filter(col("bucket_start").gt_eq(ts(range.from)).and(col("bucket_start").lt(ts(range.to))))?;
    for (column, value) in filters.dimensions() {
        df = df.filter(col(column).eq(lit(value)))?;
    }
    Ok(df)
}

pub(crate) fn head(range: Range, filters: &Filters) -> Map<String, Value> {
    let Value::Object(head) = json!({
        "from": range.from,
        "to": range.to,
        "filters": { "repository": filters.repository, "branch": filters.branch, "suite": filters.suite },
    }) else {
        unreachable!()
    };
    head
}

#[derive(Debug, Deserialize)]
pub struct TrendsQuery {
    pub interval: Option<String>,
    #[serde(flatten)]
    pub filters: Filters,
    #[serde(flatten)]
    pub view: View,
}

/// `GET /api/v1/trends?interval=hourly|daily&from=&to=&repository=&branch=&suite=`: trend
/// buckets ordered by (bucket_start, repository, branch, suite).
pub async fn trends(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TrendsQuery>,
) -> Result<Response, ApiError> {
    let interval = match q.interval.as_deref().unwrap_or("hourly") {
        "hourly" => Interval::Hourly,
        "daily" => Interval::Daily,
        other => return Err(ApiError::BadRequest(format!("`interval` must be hourly or daily, got {other:?}"))),
    };
    let shape = q.view.shape(&headers)?;
    let range = q.filters.range(Utc::now())?;
    let key = format!("trends|{interval:?}|{}", q.filters.key(range));
    let coverage = Coverage::of(interval.table(), Some(dates(range))).for_repository(q.filters.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake)?;
            let schema = testlake_schemas::tables::trends_schema();
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let df = filtered(&ctx, interval.table(), range, &q.filters)
                .await?
                .select_columns(&columns)?
                .sort_by(vec![col("bucket_start"), col("repository"), col("branch"), col("suite")])?;
            let mut head = head(range, &q.filters);
            head.insert("interval".into(), json!(if interval == Interval::Hourly { "hourly" } else { "daily" }));
            Ok(Loaded { head, batch: collect(df).await?, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    #[serde(flatten)]
    pub filters: Filters,
    #[serde(flatten)]
    pub view: View,
}

/// `GET /api/v1/dashboard?from=&to=&repository=&branch=&suite=`: totals over the range.
///
/// Everything here is derivable from hourly buckets: counts sum, the duration mean is the
/// mean of bucket means weighted by their non-skipped executions, the maximum is the maximum.
pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<DashboardQuery>,
) -> Result<Response, ApiError> {
    let shape = q.view.shape(&headers)?;
    let range = q.filters.range(Utc::now())?;
    let key = format!("dashboard|{}", q.filters.key(range));
    let coverage =
        Coverage::of(Table::TrendsHourly, Some(dates(range))).for_repository(q.filters.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake)?;
            ctx.register_table("buckets", filtered(&ctx, Table::TrendsHourly, range, &q.filters).await?.into_view())?;
            let df = ctx
                .sql(
                    "SELECT CAST(coalesce(sum(runs), 0) AS BIGINT) AS runs,
                        CAST(coalesce(sum(passed), 0) AS BIGINT) AS passed,
                        CAST(coalesce(sum(failed), 0) AS BIGINT) AS failed,
                        CAST(coalesce(sum(skipped), 0) AS BIGINT) AS skipped,
                        CAST(sum(passed) AS DOUBLE) / CAST(nullif(sum(passed + failed), 0) AS DOUBLE) AS pass_rate,
                        sum(duration_avg_ms * CAST(passed + failed AS DOUBLE))
                            / CAST(nullif(sum(passed + failed), 0) AS DOUBLE) AS duration_avg_ms,
                        max(duration_max_ms) AS duration_max_ms,
                        count(DISTINCT repository) AS repositories,
                        count(DISTINCT bucket_start) AS active_hours
                    FROM buckets",
                )
                .await?;
            Ok(Loaded { head: head(range, &q.filters), batch: collect(df).await?, object: true })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}

#[derive(Debug, Deserialize)]
pub struct FlakyQuery {
    pub repository: Option<String>,
    pub suite: Option<String>,
    pub test_id: Option<String>,
    /// `flaky` (default), `broken`, `healthy` or `all`.
    pub state: Option<String>,
    pub min_executions: Option<String>,
    /// `score` (default), `ewma_flip_rate`, `failure_rate`, `executions`, `same_commit_flakes`,
    /// `last_flake_at`: descending, then repository and test_id.
    pub sort: Option<String>,
    #[serde(flatten)]
    pub view: View,
}

/// The accepted `state` values of `/api/v1/flaky` (the OpenAPI document lists these).
pub(crate) const FLAKY_STATES: [&str; 4] = ["flaky", "broken", "healthy", "all"];

/// The accepted `sort` values of `/api/v1/flaky` (the OpenAPI document lists these).
pub(crate) const FLAKY_SORTS: [&str; 6] =
    ["score", "ewma_flip_rate", "failure_rate", "executions", "same_commit_flakes", "last_flake_at"];

/// `GET /api/v1/flaky`: the latest flaky-scores snapshot, filtered and ranked.
pub async fn flaky(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<FlakyQuery>,
) -> Result<Response, ApiError> {
    let shape = q.view.shape(&headers)?;
    let wanted = q.state.clone().unwrap_or_else(|| "flaky".into());
    if !FLAKY_STATES.contains(&wanted.as_str()) {
        return Err(ApiError::BadRequest(format!("`state` must be flaky, broken, healthy or all, got {wanted:?}")));
    }
    let sort = q.sort.clone().unwrap_or_else(|| "score".into());
    if !FLAKY_SORTS.contains(&sort.as_str()) {
        return Err(ApiError::BadRequest(format!("`sort` must be one of {FLAKY_SORTS:?}, got {sort:?}")));
    }
    let min_executions = match &q.min_executions {
        None => 0,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!("`min_executions` must be a non-negative integer, got {v:?}"))
        })?,
    };
    let key = format!("flaky|{:?}|{:?}|{:?}|{wanted}|{min_executions}|{sort}", q.repository, q.suite, q.test_id);
    let coverage = Coverage::of(Table::FlakyScores, None).for_repository(q.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake)?;
            let latest = crate::insights::latest_snapshot(&ctx).await?;
            let schema = testlake_schemas::tables::flaky_scores_schema();
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let mut df =
                ctx.table("flaky_scores").await?.filter(col("date").eq(lit(latest.clone().unwrap_or_default())))?;
            for (column, value) in [("repository", &q.repository), ("suite", &q.suite), ("test_id", &q.test_id)] {
                if let Some(value) = value {
                    df = df.filter(col(column).eq(lit(value.as_str())))?;
                }
            }
            if wanted != "all" {
                df = df.filter(col("state").eq(lit(wanted.as_str())))?;
            }
            let df = df.filter(col("executions").gt_eq(lit(min_executions)))?.select_columns(&columns)?.sort(vec![
                col(sort.as_str()).sort(false, false),
                col("repository").sort(true, true),
                col("test_id").sort(true, true),
            ])?;
            let batch = collect(df).await?;
            let as_of = batch
                .column(0)
                .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                .filter(|a| !a.is_empty())
                .and_then(|a| DateTime::from_timestamp_micros(a.value(0)));
            let Value::Object(head) = json!({
                "snapshot": latest,
                "as_of": as_of,
                "definition_version": testlake_compute::flaky::DEFINITION_VERSION,
                "filters": { "repository": q.repository, "suite": q.suite, "test_id": q.test_id,
                             "state": wanted, "min_executions": min_executions },
                "sort": sort,
            }) else {
                unreachable!()
            };
            Ok(Loaded { head, batch, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}

/// Registers `name` as the committed `results` files of the dates `range` touches (never a
/// folder listing, which may hold a crashed flush's files until recovery).
pub(crate) async fn register_committed(
    state: &AppState,
    ctx: &SessionContext,
    name: &str,
    range: Range,
) -> Result<(), ApiError> {
    let files: Vec<String> = {
        let mut committed = state.committed.lock().await;
        committed.refresh(&state.lake).await?;
        let days = dates(range);
        days.start().iter_days().take_while(|d| d <= days.end()).flat_map(|d| committed.results_for(d)).collect()
    };
    if files.is_empty() {
        let empty =
            datafusion::datasource::MemTable::try_new(testlake_schemas::tables::results_schema(), vec![vec![]])?;
        ctx.register_table(name, Arc::new(empty))?;
    } else {
        testlake_compute::catalog::register_files(ctx, &state.lake, name, Table::Results, &files)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub repository: Option<String>,
    pub test_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub branch: Option<String>,
    #[serde(flatten)]
    pub view: View,
}

/// `GET /api/v1/tests/history?repository=&test_id=&from=&to=&branch=`: every execution of one
/// test, newest first, with its lineage. Reads only committed `results` files.
pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let shape = q.view.shape(&headers)?;
    let (Some(repository), Some(test_id)) = (q.repository.clone(), q.test_id.clone()) else {
        return Err(ApiError::BadRequest("`repository` and `test_id` are required".into()));
    };
    let filters = Filters {
        from: q.from.clone(),
        to: q.to.clone(),
        repository: Some(repository.clone()),
        branch: q.branch.clone(),
        suite: None,
    };
    let range = filters.range(Utc::now())?;
    let key = format!("history|{test_id:?}|{}", filters.key(range));
    let coverage = Coverage::of(Table::Results, Some(dates(range))).for_repository(Some(&repository));
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake)?;
            register_committed(&state, &ctx, "committed_results", range).await?;
            let mut df = ctx
                .table("committed_results")
                .await?
                .filter(col("repository").eq(lit(repository.as_str())))?
                .filter(col("test_id").eq(lit(test_id.as_str())))?
                .filter(col("finished_at").gt_eq(ts(range.from)).and(col("finished_at").lt(ts(range.to))))?;
            if let Some(branch) = &q.branch {
                df = df.filter(col("branch").eq(lit(branch.as_str())))?;
            }
            let df = df
                .select_columns(&[
                    "finished_at",
                    "status",
                    "attempt",
                    "duration_ms",
                    "branch",
                    "commit_sha",
                    "run_id",
                    "job_id",
                    "suite",
                    "name",
                    "host",
                    "failure_message",
                    "event_id",
                    "kafka_topic",
                    "kafka_partition",
                    "kafka_offset",
                ])?
                .sort(vec![
                    col("finished_at").sort(false, false),
                    col("attempt").sort(false, false),
                    col("event_id").sort(true, true),
                ])?;
            let mut head = head(range, &filters);
            head.insert("test_id".into(), json!(test_id));
            Ok(Loaded { head, batch: collect(df).await?, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}
