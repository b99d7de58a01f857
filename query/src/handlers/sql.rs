//! `POST /api/v1/sql`: one read-only statement over the lake's tables (see [`crate::sql`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::on;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::{Answer, Loaded};
use crate::endpoint::{Endpoint, FORMAT, Method};
use crate::error::ApiError;
use crate::render::{Shape, View, respond};
use crate::sql::session;
use crate::state::AppState;

pub const SQL: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/sql",
    summary: "One read-only SQL statement over the lake's tables. Body: {\"sql\": \"...\", \"max_rows\": n} (application/json).",
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

/// `POST /api/v1/sql`: a JSON body `{"sql": "…", "max_rows": n}` (`guard` refuses any other
/// content type with a 415 before this runs).
/// The answer is shown like any other (`format=` or `Accept`): JSON carries `truncated`.
pub async fn sql(
    State(state): State<Arc<AppState>>,
    Query(view): Query<View>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shape = view.shape(&headers)?;
    let request = serde_json::from_slice::<SqlRequest>(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be {{\"sql\": \"…\"}}: {e}")))?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::BadRequest("no SQL statement in the body".into()));
    }
    let mut limits = state.sql_limits.clone();
    limits.max_rows = request.max_rows.unwrap_or(limits.max_rows).min(limits.max_rows);
    let ctx = {
        let mut committed = state.committed.lock().await;
        session(&state.lake, &mut committed, &limits).await?
    };
    let answer = state.sql.run(&ctx, &request.sql, &limits).await?;
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
