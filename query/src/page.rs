//! The dashboard web page: one self-contained HTML file (no external scripts, so it works on a
//! machine without internet) that draws the API's answers and refetches them when
//! `/api/v1/events` says its data changed.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("page/index.html");

/// `GET /`
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX)
}
