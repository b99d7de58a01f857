//! `GET /`: the dashboard web page, one self-contained HTML file (no external scripts, so it works
//! on a machine without internet) that draws the API's answers and refetches them when
//! `/api/v1/events` says its data changed.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::on;

use crate::endpoint::{Endpoint, Method};

pub const PAGE: Endpoint = Endpoint {
    method: Method::Get,
    path: "/",
    summary: "The dashboard web page.",
    params: &[],
    formats: false,
    handler: |method| on(method, index),
    cache_key: None,
};

const INDEX: &str = include_str!("page/index.html");

/// What the page is served as (the OpenAPI document says so too).
pub const HTML: &str = "text/html; charset=utf-8";

/// `GET /`
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HTML), (header::CACHE_CONTROL, "no-cache")], INDEX)
}
