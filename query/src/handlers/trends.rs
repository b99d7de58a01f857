//! `GET /api/v1/trends`: hourly or daily trend buckets.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use chrono::Utc;
use datafusion::prelude::col;
use serde::Deserialize;
use serde_json::json;
use testlake_compute::trends::Interval;

use crate::cache::{Coverage, Loaded};
use crate::endpoint::{BRANCH, Endpoint, FORMAT, FROM, Method, PAGE, Param, REPOSITORY, SIZE, SUITE, TO};
use crate::error::ApiError;
use crate::frame::{collect_at_most, dates, filtered, head};
use crate::params::Filters;
use crate::render::{View, respond};
use crate::state::AppState;

pub const TRENDS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/trends",
    summary: "Hourly or daily trend buckets per repository, branch and suite.",
    params: &[
        Param::one_of("interval", "Bucket width (default hourly).", &["hourly", "daily"]),
        FROM,
        TO,
        REPOSITORY,
        BRANCH,
        SUITE,
        FORMAT,
        PAGE,
        SIZE,
    ],
    formats: true,
    handler: |method| on(method, trends),
    cache_key: Some("trends"),
};

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
    let key = TRENDS.key(format_args!("{interval:?}|{}", q.filters.key(range)));
    let coverage = Coverage::of(interval.table(), Some(dates(range))).for_repository(q.filters.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
            let schema = testlake_schemas::tables::trends_schema();
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let df = filtered(&ctx, interval.table(), range, &q.filters)
                .await?
                .select_columns(&columns)?
                .sort_by(vec![col("bucket_start"), col("repository"), col("branch"), col("suite")])?;
            let mut head = head(range, &q.filters);
            head.insert("interval".into(), json!(if interval == Interval::Hourly { "hourly" } else { "daily" }));
            Ok(Loaded { head, batch: collect_at_most(df, state.limits.answer_rows).await?, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}
