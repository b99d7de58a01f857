//! What wraps every request: optional bearer-token auth for `/api/*`, and request metrics
//! (counts by route and status, latency histograms by route) for `/metrics`. Probes —
//! `/healthz`, `/readyz`, `/metrics` — are never behind the token.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// One route's counters: requests by status (indexed by the status code) and the latency
/// histogram, all atomics, so recording a request takes no lock.
struct RouteStats {
    by_status: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            by_status: (0..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// Request counters and latency histograms.
#[derive(Default)]
pub struct RequestMetrics {
    routes: RwLock<BTreeMap<String, Arc<RouteStats>>>,
}

impl RequestMetrics {
    fn route(&self, route: &str) -> Arc<RouteStats> {
        if let Some(stats) = self.routes.read().expect("metrics lock").get(route) {
            return Arc::clone(stats);
        }
        Arc::clone(self.routes.write().expect("metrics lock").entry(route.to_owned()).or_default())
    }

    fn observe(&self, route: &str, status: u16, seconds: f64) {
        let stats = self.route(route);
        stats.by_status[usize::from(status).min(599)].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            stats.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let routes = self.routes.read().expect("metrics lock");
        let _ = writeln!(
            out,
            "# HELP testlake_http_requests_total Requests by route and status.\n# TYPE testlake_http_requests_total counter"
        );
        for (route, stats) in routes.iter() {
            for (status, n) in stats.by_status.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "testlake_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP testlake_http_request_duration_seconds Request latency by route.\n\
             # TYPE testlake_http_request_duration_seconds histogram"
        );
        for (route, stats) in routes.iter() {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&stats.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "testlake_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = stats.count.load(Ordering::Relaxed);
            let sum = stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "testlake_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}\n\
                 testlake_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\n\
                 testlake_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
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
fn same(a: &[u8], b: &[u8]) -> bool {
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
