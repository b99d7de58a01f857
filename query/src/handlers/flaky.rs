//! `GET /api/v1/flaky`: the latest flaky-scores snapshot, filtered and ranked.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use chrono::DateTime;
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::{Value, json};
use testlake_schemas::Table;

use crate::cache::{Coverage, Loaded};
use crate::endpoint::{Endpoint, FORMAT, Method, PAGE, Param, REPOSITORY, SIZE, SUITE};
use crate::error::ApiError;
use crate::frame::{collect_at_most, latest_snapshot};
use crate::render::{View, respond};
use crate::state::AppState;

pub const FLAKY: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/flaky",
    summary: "The latest flaky-scores snapshot, ranked.",
    params: &[
        Param::one_of("state", "Tests in this state (default flaky).", &FLAKY_STATES),
        Param::int_in("min_executions", "Only tests with at least this many counted executions.", 0, i64::MAX as u64),
        REPOSITORY,
        SUITE,
        Param::text("test_id", "Only this test."),
        Param::one_of("sort", "Descending order (default score).", &FLAKY_SORTS),
        FORMAT,
        PAGE,
        SIZE,
    ],
    formats: true,
    handler: |method| on(method, flaky),
    cache_key: Some("flaky"),
};

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
pub const FLAKY_STATES: [&str; 4] = ["flaky", "broken", "healthy", "all"];

/// The accepted `sort` values of `/api/v1/flaky` (the OpenAPI document lists these).
pub const FLAKY_SORTS: [&str; 6] =
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
    let key =
        FLAKY.key(format_args!("{:?}|{:?}|{:?}|{wanted}|{min_executions}|{sort}", q.repository, q.suite, q.test_id));
    let coverage = Coverage::of(Table::FlakyScores, None).for_repository(q.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
            let latest = latest_snapshot(&ctx).await?;
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
            let batch = collect_at_most(df, state.limits.answer_rows).await?;
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
