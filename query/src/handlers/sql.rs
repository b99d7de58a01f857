//! `POST /api/v1/sql`: one read-only statement over the lake's tables (see [`crate::sql`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::on;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::{Answer, Loaded};
use crate::endpoint::{Endpoint, FORMAT, Method};
use crate::error::ApiError;
use crate::render::{Shape, View, respond};
use crate::sql::{SqlEngine, SqlLimits, session};
use crate::state::AppState;

pub const SQL: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/sql",
    summary: "One read-only SQL statement over the lake's tables. Body: {\"sql\": \"...\", \"max_rows\": n} or the statement as text/plain.",
    params: &[FORMAT],
    formats: true,
    handler: |method| on(method, sql),
    cache_key: None,
};

#[derive(Debug, Deserialize)]
pub struct SqlRequest {
    pub sql: String,
    /// At most this many rows (default and upper bound: the service's `max_rows`).
    pub max_rows: Option<usize>,
}

/// `POST /api/v1/sql`: a JSON body `{"sql": "…", "max_rows": n}` or the statement as plain text.
/// The answer is shown like any other (`format=` or `Accept`): JSON carries `truncated`.
pub async fn sql(
    State(state): State<Arc<AppState>>,
    Query(view): Query<View>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shape = view.shape(&headers)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let request = if json_body {
        serde_json::from_slice::<SqlRequest>(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body must be {{\"sql\": \"…\"}}: {e}")))?
    } else {
        let sql = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the body must be UTF-8".into()))?;
        SqlRequest { sql: sql.to_owned(), max_rows: None }
    };
    if request.sql.trim().is_empty() {
        return Err(ApiError::BadRequest("no SQL statement in the body".into()));
    }
    let mut limits = state.sql_limits.clone();
    limits.max_rows = request.max_rows.unwrap_or(limits.max_rows).min(limits.max_rows);
    let ctx = {
        let mut committed = state.committed.lock().await;
        session(&state.lake, &mut committed, &limits).await?
    };
    let answer = engine(&state.sql_limits).run(&ctx, &request.sql, &limits).await?;
    let Value::Object(head) = json!({
        "truncated": answer.truncated,
        "max_rows": limits.max_rows,
    }) else {
        unreachable!()
    };
    let rendered = Answer::uncached(Loaded { head, batch: answer.batch.clone(), object: false })?;
    let shape = Shape { page: 1, size: limits.max_rows.max(1), ..shape };
    // The statement keeps its slot until its answer is written (`SqlEngine`).
    let response = respond(&rendered, shape, &headers, false);
    drop(answer);
    response
}

/// The statements' engine of this process for these limits' concurrency, shared by every request.
/// (Its place is `AppState`, next to `sql_limits`; kept here until it moves there. Keyed by the
/// concurrency so that services with different limits in one process — tests — keep theirs.)
fn engine(limits: &SqlLimits) -> Arc<SqlEngine> {
    static ENGINES: Mutex<BTreeMap<usize, Arc<SqlEngine>>> = Mutex::new(BTreeMap::new());
    let mut engines = ENGINES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Arc::clone(engines.entry(limits.concurrency).or_insert_with(|| Arc::new(SqlEngine::new(limits))))
}
