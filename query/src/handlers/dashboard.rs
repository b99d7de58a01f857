//! `GET /api/v1/dashboard`: totals over a range.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use chrono::Utc;
use serde::Deserialize;
use testlake_schemas::Table;

use crate::cache::{Coverage, Loaded};
use crate::endpoint::{BRANCH, Endpoint, FORMAT, FROM, Method, REPOSITORY, SUITE, TO};
use crate::error::ApiError;
use crate::frame::{collect, dates, filtered, head};
use crate::params::Filters;
use crate::render::{View, respond};
use crate::state::AppState;

pub const DASHBOARD: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/dashboard",
    summary: "Totals over a range: runs, passed, failed, skipped, pass_rate, duration_avg_ms, duration_max_ms, repositories, active_hours.",
    params: &[FROM, TO, REPOSITORY, BRANCH, SUITE, FORMAT],
    formats: true,
    handler: |method| on(method, dashboard),
    cache_key: Some("dashboard"),
};

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
    let key = DASHBOARD.key(format_args!("{}", q.filters.key(range)));
    let coverage =
        Coverage::of(Table::TrendsHourly, Some(dates(range))).for_repository(q.filters.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
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
