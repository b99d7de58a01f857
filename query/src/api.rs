//! `/api/v1/*`: answers from the materialized trends tables.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::json::writer::{JsonArray, WriterBuilder};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use datafusion::functions_aggregate::expr_fn::{count_distinct, max, sum};
use datafusion::prelude::{DataFrame, Expr, col, lit};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use testlake_compute::trends::Interval;
use testlake_schemas::{DatePartition, Table};

use crate::AppState;
use crate::error::ApiError;
use crate::params::{Filters, Range};

fn ts(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into())))
}

/// Rows of `table` whose bucket starts in the range and that match the filters. The `date`
/// partition column prunes files before any is opened.
async fn filtered(state: &AppState, table: Table, range: Range, filters: &Filters) -> Result<DataFrame, ApiError> {
    let ctx = testlake_compute::catalog::lake_session(&state.lake)?;
    let date = |t: DateTime<Utc>| DatePartition(t.date_naive()).to_string()["date=".len()..].to_owned();
    let mut df = ctx
        .table(table.name())
        .await?
        .filter(col("date").gt_eq(lit(date(range.from))).and(col("date").lt_eq(lit(date(range.to)))))?
        .filter(col("bucket_start").gt_eq(ts(range.from)).and(col("bucket_start").lt(ts(range.to))))?;
    for (column, value) in filters.dimensions() {
        df = df.filter(col(column).eq(lit(value)))?;
    }
    Ok(df)
}

/// Batches as a JSON array of objects, nulls included.
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
pub struct TrendsQuery {
    pub interval: Option<String>,
    #[serde(flatten)]
    pub filters: Filters,
}

/// `GET /api/v1/trends?interval=hourly|daily&from=&to=&repository=&branch=&suite=`
pub async fn trends(State(state): State<Arc<AppState>>, Query(q): Query<TrendsQuery>) -> Result<Response, ApiError> {
    let interval = match q.interval.as_deref().unwrap_or("hourly") {
        "hourly" => Interval::Hourly,
        "daily" => Interval::Daily,
        other => {
            return Err(ApiError::BadRequest(format!("`interval` must be hourly or daily, got {other:?}")));
        }
    };
    let range = q.filters.range(Utc::now())?;
    let schema = testlake_schemas::tables::trends_schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let df = filtered(&state, interval.table(), range, &q.filters).await?.select_columns(&columns)?.sort_by(vec![
        col("bucket_start"),
        col("repository"),
        col("branch"),
        col("suite"),
    ])?;
    let rows = json_rows(&df.collect().await?)?;
    let head = json!({ "interval": q.interval.as_deref().unwrap_or("hourly"), "from": range.from, "to": range.to });
    let mut body = serde_json::to_vec(&head).expect("json");
    body.pop(); // reopen the object to append the rows without re-parsing them
    body.extend_from_slice(b",\"rows\":");
    body.extend_from_slice(&rows);
    body.push(b'}');
    Ok(json_response(body))
}

/// `GET /api/v1/dashboard?from=&to=&repository=&branch=&suite=`: totals over the range.
///
/// Everything here is derivable from hourly buckets: counts sum, the duration mean is the
/// mean of bucket means weighted by their non-skipped executions, the maximum is the maximum.
pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    Query(filters): Query<Filters>,
) -> Result<Response, ApiError> {
    let range = filters.range(Utc::now())?;
    let timed = col("passed") + col("failed");
    let df = filtered(&state, Table::TrendsHourly, range, &filters).await?.aggregate(
        vec![],
        vec![
            sum(col("runs")).alias("runs"),
            sum(col("passed")).alias("passed"),
            sum(col("failed")).alias("failed"),
            sum(col("skipped")).alias("skipped"),
            sum(col("duration_avg_ms") * timed).alias("duration_sum_ms"),
            max(col("duration_max_ms")).alias("duration_max_ms"),
            count_distinct(col("repository")).alias("repositories"),
            count_distinct(col("bucket_start")).alias("active_hours"),
        ],
    )?;
    let rows: Vec<Map<String, Value>> = serde_json::from_slice(&json_rows(&df.collect().await?)?).expect("json");
    let row = rows.into_iter().next().unwrap_or_default();
    let int = |k: &str| row.get(k).and_then(Value::as_i64).unwrap_or(0);
    let (runs, passed, failed, skipped) = (int("runs"), int("passed"), int("failed"), int("skipped"));
    let pass_rate = (passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64);
    let duration_avg_ms = row
        .get("duration_sum_ms")
        .and_then(Value::as_f64)
        .filter(|_| passed + failed > 0)
        .map(|s| s / (passed + failed) as f64);
    let body = json!({
        "from": range.from,
        "to": range.to,
        "filters": { "repository": filters.repository, "branch": filters.branch, "suite": filters.suite },
        "runs": runs,
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "pass_rate": pass_rate,
        "duration_avg_ms": duration_avg_ms,
        "duration_max_ms": row.get("duration_max_ms").cloned().unwrap_or(Value::Null),
        "repositories": int("repositories"),
        "active_hours": int("active_hours"),
    });
    Ok(json_response(serde_json::to_vec(&body).expect("json")))
}
