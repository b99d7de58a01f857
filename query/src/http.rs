//! What wraps every request: optional bearer-token auth for `/api/*`, and request metrics
//! (counts by route and status, latency histograms by route) for `/metrics`. Probes —
//! `/healthz`, `/readyz`, `/metrics` — are never behind the token.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use testlake_schemas::observe::Registry;

use crate::error::ApiError;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

pub(crate) fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Request counters by route and status, and latency histograms by route.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<RouteStatus, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self { requests: Family::default(), latency: Family::new_with_constructor(latency_histogram) }
    }
}

impl RequestMetrics {
    /// A request to `route` answered `status` after `seconds`.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RouteStatus { route: route.to_owned(), status }).inc();
        self.latency.get_or_create(&Route { route: route.to_owned() }).observe(seconds);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register("testlake_http_requests", "Requests by route and status", self.requests.clone());
        registry.register("testlake_http_request_duration_seconds", "Request latency by route", self.latency.clone());
    }
}

/// Counts the request under its route template (`/api/v1/trends`, never the raw URI, so the
/// label set stays bounded).
pub async fn measure(State(requests): State<Arc<RequestMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned(); // an Arc: no copy of the text
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    requests.observe(route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The token a request presents: `Authorization: Bearer <token>` (the scheme in any case, as
/// RFC 7235 says), else the percent-decoded `access_token` query parameter.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim_start().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    from_header.or_else(|| {
        url::form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| (k == "access_token").then(|| v.into_owned()))
    })
}

/// Whether two byte strings are equal, in time independent of where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With a configured token, `/api/*` needs `Authorization: Bearer <token>` (or, for clients that
/// cannot set headers such as a browser's `EventSource`, `access_token=<token>` in the query).
pub async fn authorize(State(token): State<Option<Arc<str>>>, request: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let presented = presented_token(request.headers(), request.uri().query());
    match presented {
        Some(presented) if same(presented.as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::TokenInvalid.into_response(),
        None => ApiError::TokenMissing.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        HeaderMap::from_iter([(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap())])
    }

    /// RFC 7235: the scheme is case-insensitive.
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR  t0k "] {
            assert_eq!(presented_token(&headers(value), None).as_deref(), Some("t0k"), "{value}");
        }
        assert_eq!(presented_token(&headers("Basic t0k"), None), None);
        assert_eq!(presented_token(&headers("Bearert0k"), None), None);
    }

    /// A browser's `EventSource` URL-encodes the token it carries in the query.
    #[test]
    fn the_query_token_is_percent_decoded() {
        let none = HeaderMap::new();
        assert_eq!(presented_token(&none, Some("a=1&access_token=s%2F3+c%3Dr")).as_deref(), Some("s/3 c=r"));
        assert_eq!(presented_token(&none, Some("access_token=plain")).as_deref(), Some("plain"));
        assert_eq!(presented_token(&none, Some("access_token=%ZZ")).as_deref(), Some("%ZZ"));
        assert_eq!(presented_token(&none, Some("other=1")), None);
        assert_eq!(
            presented_token(&headers("Bearer h"), Some("access_token=q")).as_deref(),
            Some("h"),
            "the header wins"
        );
    }
}
