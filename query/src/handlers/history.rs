//! `GET /api/v1/tests/history`: every execution of one test, from the committed `results` files.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use chrono::Utc;
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::json;
use testlake_schemas::Table;

use crate::cache::{Coverage, Loaded};
use crate::endpoint::{BRANCH, Endpoint, FORMAT, FROM, Method, PAGE, Param, SIZE, TO};
use crate::error::ApiError;
use crate::frame::{collect_at_most, dates, head, register_committed, ts};
use crate::params::Filters;
use crate::render::{View, respond};
use crate::state::AppState;

pub const HISTORY: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/tests/history",
    summary: "Every execution of one test, newest first, with its Kafka lineage.",
    params: &[
        Param::required("repository", "The test's repository."),
        Param::required("test_id", "The test."),
        FROM,
        TO,
        BRANCH,
        FORMAT,
        PAGE,
        SIZE,
    ],
    formats: true,
    handler: |method| on(method, history),
    cache_key: Some("history"),
};

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
    let key = HISTORY.key(format_args!("{test_id:?}|{}", filters.key(range)));
    let coverage = Coverage::of(Table::Results, Some(dates(range))).for_repository(Some(&repository));
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
            register_committed(&state.lake, &state.committed, &ctx, "committed_results", range).await?;
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
            Ok(Loaded { head, batch: collect_at_most(df, state.limits.answer_rows).await?, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}
