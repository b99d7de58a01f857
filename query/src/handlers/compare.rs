//! `GET /api/v1/compare`: this period against the previous one, derived from the materialized
//! tables at query time. The definitions of every field are in the README ("Health score and
//! comparison") and here, next to the SQL that implements them.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use testlake_schemas::Table;

use crate::cache::{Coverage, Loaded};
use crate::endpoint::{BRANCH, Endpoint, FORMAT, Method, Param, REPOSITORY, SUITE};
use crate::error::ApiError;
use crate::frame::{collect, date_text, dates, filtered, first_row, register_committed, ts};
use crate::params::{Filters, Range, parse_time};
use crate::render::{View, respond};
use crate::state::AppState;

pub const COMPARE: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/compare",
    summary: "This period against the previous one: pass rate, durations, new failures, newly flaky, recovered.",
    params: &[
        Param::int_in("days", "Length of each period in days, 1..=366 (default 7).", 1, 366),
        Param::text("to", "End of the current period (default: the end of today, UTC)."),
        REPOSITORY,
        BRANCH,
        SUITE,
        FORMAT,
    ],
    formats: true,
    handler: |method| on(method, compare),
    cache_key: Some("compare"),
};

/// A one-row batch of a JSON object's fields (types inferred; nulls are Null columns).
fn object_batch(object: &Map<String, Value>) -> Result<RecordBatch, ApiError> {
    let value = Value::Object(object.clone());
    let schema = arrow::json::reader::infer_json_schema_from_iterator(std::iter::once(Ok(value.clone())))?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema)).build_decoder()?;
    decoder.serialize(&[value])?;
    Ok(decoder.flush()?.expect("one row"))
}

#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// Length of each period in days (default 7).
    pub days: Option<String>,
    /// End of the current period (default: the end of today, UTC).
    pub to: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub suite: Option<String>,
    #[serde(flatten)]
    pub view: View,
}

/// `GET /api/v1/compare?days=7&to=&repository=&branch=&suite=`: the current period
/// `[to − days, to)` against the previous one `[to − 2·days, to − days)`. See the README for the
/// definitions of every field.
pub async fn compare(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CompareQuery>,
) -> Result<Response, ApiError> {
    let shape = q.view.shape(&headers)?;
    let days = match &q.days {
        None => 7,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=366).contains(d))
            .ok_or_else(|| ApiError::BadRequest(format!("`days` must be an integer in 1..=366, got {v:?}")))?,
    };
    let to = match &q.to {
        Some(v) => parse_time("to", v)?,
        None => (Utc::now().date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
    };
    let mid = to - Duration::days(days);
    let whole = Range { from: to - Duration::days(2 * days), to };
    let filters = Filters {
        from: None,
        to: None,
        repository: q.repository.clone(),
        branch: q.branch.clone(),
        suite: q.suite.clone(),
    };
    let snapshot_of = |end: DateTime<Utc>| -> NaiveDate { (end - Duration::microseconds(1)).date_naive() };
    let key = COMPARE.key(format_args!("{days}|{}", filters.key(whole)));
    let coverage = Coverage::of(Table::TrendsDaily, Some(dates(whole)))
        .and(Table::Results, Some(dates(whole)))
        .and(Table::FlakyScores, Some(snapshot_of(mid)..=snapshot_of(to).max(Utc::now().date_naive())))
        .for_repository(q.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
            ctx.register_table("buckets", filtered(&ctx, Table::TrendsDaily, whole, &filters).await?.into_view())?;
            let mut object = Map::new();
            object.insert("days".into(), json!(days));
            for (name, from, until) in [("current", mid, to), ("previous", whole.from, mid)] {
                object.insert(format!("{name}_from"), json!(from));
                object.insert(format!("{name}_to"), json!(until));
                let row = first_row(
                    &collect(
                        ctx.sql(&format!(
                            "SELECT CAST(coalesce(sum(runs), 0) AS BIGINT) AS runs,
                                CAST(coalesce(sum(passed), 0) AS BIGINT) AS passed,
                                CAST(coalesce(sum(failed), 0) AS BIGINT) AS failed,
                                CAST(sum(passed) AS DOUBLE) / CAST(nullif(sum(passed + failed), 0) AS DOUBLE) AS pass_rate,
                                sum(duration_avg_ms * CAST(passed + failed AS DOUBLE))
                                    / CAST(nullif(sum(passed + failed), 0) AS DOUBLE) AS duration_avg_ms,
                                sum(duration_p50_ms * CAST(passed + failed AS DOUBLE))
                                    / CAST(nullif(sum(CASE WHEN duration_p50_ms IS NULL THEN 0 ELSE passed + failed END), 0) AS DOUBLE) AS duration_p50_ms,
                                sum(duration_p95_ms * CAST(passed + failed AS DOUBLE))
                                    / CAST(nullif(sum(CASE WHEN duration_p95_ms IS NULL THEN 0 ELSE passed + failed END), 0) AS DOUBLE) AS duration_p95_ms
                            FROM buckets WHERE bucket_start >= to_timestamp_micros({}) AND bucket_start < to_timestamp_micros({})",
                            from.timestamp_micros(),
                            until.timestamp_micros()
                        ))
                        .await?,
                    )
                    .await?,
                )?;
                for (k, v) in row {
                    object.insert(format!("{name}_{k}"), v);
                }
            }
            for k in ["pass_rate", "duration_avg_ms", "duration_p50_ms", "duration_p95_ms"] {
                let (c, p) = (object[&format!("current_{k}")].as_f64(), object[&format!("previous_{k}")].as_f64());
                object.insert(format!("change_{k}"), json!(c.zip(p).map(|(c, p)| c - p)));
            }

            // New failures: tests that failed in the current period and ran without failing in the previous.
            register_committed(&state.lake, &state.committed, &ctx, "committed_results", whole).await?;
            let mut results = ctx
                .table("committed_results")
                .await?
                .filter(col("finished_at").gt_eq(ts(whole.from)).and(col("finished_at").lt(ts(whole.to))))?;
            for (column, value) in filters.dimensions() {
                results = results.filter(col(column).eq(lit(value)))?;
            }
            ctx.register_table("period_results", results.into_view())?;
            let new_failures = first_row(
                &collect(
                    ctx.sql(&format!(
                        "SELECT count(*) AS new_failures FROM (
                            SELECT repository, test_id,
                                count(*) FILTER (WHERE finished_at >= to_timestamp_micros({mid}) AND status IN ('failed', 'error')) AS current_failures,
                                count(*) FILTER (WHERE finished_at < to_timestamp_micros({mid}) AND status <> 'skipped') AS previous_executions,
                                count(*) FILTER (WHERE finished_at < to_timestamp_micros({mid}) AND status IN ('failed', 'error')) AS previous_failures
                            FROM period_results GROUP BY repository, test_id
                        ) WHERE current_failures > 0 AND previous_executions > 0 AND previous_failures = 0",
                        mid = mid.timestamp_micros()
                    ))
                    .await?,
                )
                .await?,
            )?;
            object.extend(new_failures);

            // Newly flaky and recovered: the snapshots at the end of each period, when both exist.
            let (current, previous) = (snapshot_of(to).min(Utc::now().date_naive()), snapshot_of(mid));
            let have = collect(
                ctx.sql(&format!(
                    "SELECT count(DISTINCT date) FROM flaky_scores WHERE date IN ('{}', '{}')",
                    date_text(current),
                    date_text(previous)
                ))
                .await?,
            )
            .await?;
            let both = have.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) == 2;
            object.insert("current_snapshot".into(), json!(date_text(current)));
            object.insert("previous_snapshot".into(), json!(date_text(previous)));
            if both {
                let snap = |date: NaiveDate| {
                    let mut sql = format!(
                        "SELECT repository, test_id, state FROM flaky_scores WHERE date = '{}'",
                        date_text(date)
                    );
                    for (column, value) in [("repository", &filters.repository), ("suite", &filters.suite)] {
                        if let Some(value) = value {
                            sql.push_str(&format!(" AND {column} = '{}'", value.replace('\'', "''")));
                        }
                    }
                    sql
                };
                let row = first_row(
                    &collect(
                        ctx.sql(&format!(
                            "SELECT count(*) FILTER (WHERE c.state = 'flaky' AND coalesce(p.state, 'healthy') <> 'flaky') AS newly_flaky,
                                    count(*) FILTER (WHERE p.state = 'flaky' AND coalesce(c.state, 'healthy') <> 'flaky') AS recovered
                             FROM ({}) c FULL OUTER JOIN ({}) p ON c.repository = p.repository AND c.test_id = p.test_id",
                            snap(current),
                            snap(previous)
                        ))
                        .await?,
                    )
                    .await?,
                )?;
                object.extend(row);
            } else {
                object.insert("newly_flaky".into(), Value::Null);
                object.insert("recovered".into(), Value::Null);
            }
            let filters_json = json!({ "repository": filters.repository, "branch": filters.branch, "suite": filters.suite });
            let batch = object_batch(&object)?;
            let mut head = Map::new();
            head.insert("filters".into(), filters_json);
            Ok(Loaded { head, batch, object: true })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}
