//! `GET /api/v1/health`: the repositories' health score, derived from the materialized tables at
//! query time. The formula is documented in the README ("Health score and comparison") and here,
//! next to the SQL that implements it.
//!
//! In Rust it is the *health score* (`health_score`, [`HEALTH_SCORE_WEIGHTS`]), apart from the
//! process liveness of `/healthz`; the URL and the answer's `health` field keep their names, which
//! clients depend on.

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
use crate::endpoint::{BRANCH, Endpoint, FORMAT, FROM, Method, PAGE, REPOSITORY, SIZE, SUITE, TO};
use crate::error::ApiError;
use crate::frame::{collect_at_most, dates, filtered, head, latest_snapshot};
use crate::params::Filters;
use crate::render::{View, respond};
use crate::state::AppState;

pub const HEALTH_SCORE: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/health",
    summary: "Health score (0-100) per repository over a range.",
    params: &[FROM, TO, REPOSITORY, BRANCH, SUITE, FORMAT, PAGE, SIZE],
    formats: true,
    handler: |method| on(method, health_score),
    cache_key: Some("health_score"),
};

/// Weights of the health score's parts; they sum to 1.
pub const HEALTH_SCORE_WEIGHTS: (f64, f64, f64) = (0.5, 0.3, 0.2);

#[derive(Debug, Deserialize)]
pub struct HealthScoreQuery {
    #[serde(flatten)]
    pub filters: Filters,
    #[serde(flatten)]
    pub view: View,
}

/// `GET /api/v1/health?from=&to=&repository=&branch=&suite=`: per repository,
///
/// `health = 100 × (0.5 × pass_rate + 0.3 × (1 − flaky_tests / tests) + 0.2 × (1 − broken_tests / tests))`
///
/// with `pass_rate` over the range from `trends_daily` (1 when nothing passed or failed) and the
/// test counts from the latest `flaky_scores` snapshot (parts count as 1 without scored tests).
/// Ordered by health ascending: the repositories that need attention first.
pub async fn health_score(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HealthScoreQuery>,
) -> Result<Response, ApiError> {
    let shape = q.view.shape(&headers)?;
    let range = q.filters.range(Utc::now())?;
    let key = HEALTH_SCORE.key(format_args!("{}", q.filters.key(range)));
    let coverage = Coverage::of(Table::TrendsDaily, Some(dates(range)))
        .and(Table::FlakyScores, None)
        .for_repository(q.filters.repository.as_deref());
    let (answer, hit) = state
        .cache
        .get(&key, &coverage, || async {
            let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
            ctx.register_table("buckets", filtered(&ctx, Table::TrendsDaily, range, &q.filters).await?.into_view())?;
            let snapshot = latest_snapshot(&ctx).await?;
            let mut scores =
                ctx.table("flaky_scores").await?.filter(col("date").eq(lit(snapshot.clone().unwrap_or_default())))?;
            for (column, value) in [("repository", &q.filters.repository), ("suite", &q.filters.suite)] {
                if let Some(value) = value {
                    scores = scores.filter(col(column).eq(lit(value.as_str())))?;
                }
            }
            ctx.register_table("scores", scores.into_view())?;
            let (wp, wf, wb) = HEALTH_SCORE_WEIGHTS;
            let df = ctx
                .sql(&format!(
                    "WITH t AS (
                        SELECT repository, CAST(sum(runs) AS BIGINT) AS runs, CAST(sum(passed) AS BIGINT) AS passed,
                               CAST(sum(failed) AS BIGINT) AS failed
                        FROM buckets GROUP BY repository
                    ),
                    s AS (
                        SELECT repository, count(*) AS tests,
                               count(*) FILTER (WHERE state = 'flaky') AS flaky_tests,
                               count(*) FILTER (WHERE state = 'broken') AS broken_tests
                        FROM scores GROUP BY repository
                    ),
                    j AS (
                        SELECT t.repository, t.runs, t.passed, t.failed,
                               CAST(t.passed AS DOUBLE) / CAST(nullif(t.passed + t.failed, 0) AS DOUBLE) AS pass_rate,
                               coalesce(s.tests, 0) AS tests, coalesce(s.flaky_tests, 0) AS flaky_tests,
                               coalesce(s.broken_tests, 0) AS broken_tests
                        FROM t LEFT JOIN s ON t.repository = s.repository
                    )
                    SELECT *, 100.0 * ({wp} * coalesce(pass_rate, 1.0)
                        + {wf} * (1.0 - CAST(flaky_tests AS DOUBLE) / CAST(greatest(tests, 1) AS DOUBLE))
                        + {wb} * (1.0 - CAST(broken_tests AS DOUBLE) / CAST(greatest(tests, 1) AS DOUBLE))) AS health
                    FROM j ORDER BY health, repository"
                ))
                .await?;
            let mut head = head(range, &q.filters);
            head.insert("snapshot".into(), json!(snapshot));
            Ok(Loaded { head, batch: collect_at_most(df, state.limits.answer_rows).await?, object: false })
        })
        .await?;
    respond(&answer, shape, &headers, hit)
}
