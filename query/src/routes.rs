//! The endpoint table: every route the service serves, each declared once next to its handler.
//! The router and the OpenAPI document are both built from [`ENDPOINTS`], so a route cannot
//! exist undocumented, nor a documented one be missing.

use std::sync::Arc;

use axum::Router;
use axum::routing::on;

use crate::endpoint::{Endpoint, Method};
use crate::handlers::{compare, dashboard, events, flaky, health_score, history, page, probes, sql, trends};
use crate::state::AppState;

pub const ENDPOINTS: &[Endpoint] = &[
    dashboard::DASHBOARD,
    trends::TRENDS,
    flaky::FLAKY,
    history::HISTORY,
    health_score::HEALTH_SCORE,
    compare::COMPARE,
    sql::SQL,
    events::EVENTS,
    OPENAPI,
    probes::LIVENESS,
    probes::READINESS,
    probes::METRICS,
    page::PAGE,
];

/// `GET /api/v1/openapi.json`: the document of this table (declared here, as it serves the table).
pub const OPENAPI: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/openapi.json",
    summary: "This document.",
    params: &[],
    formats: false,
    handler: |method| on(method, || async { axum::Json(crate::openapi::document(ENDPOINTS)) }),
    cache_key: None,
};

/// The service: exactly the documented endpoints, each request measured and checked by
/// [`crate::guard`], `/api/*` behind the token when one is configured.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for endpoint in ENDPOINTS {
        router = router.route(endpoint.path, endpoint.route());
    }
    let token = state.auth_token.as_deref().map(Arc::<str>::from);
    router
        .route_layer(axum::middleware::from_fn_with_state(token, crate::http::authorize))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state.allowed_hosts), crate::guard::guard))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state.requests), crate::http::measure))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn paths_and_cache_keys_are_unique() {
        let paths: HashSet<_> = ENDPOINTS.iter().map(|e| e.path).collect();
        assert_eq!(paths.len(), ENDPOINTS.len(), "a path declared twice");
        let keys: Vec<_> = ENDPOINTS.iter().filter_map(|e| e.cache_key).collect();
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len(), "two endpoints share a cache key: {keys:?}");
    }

    #[test]
    fn answers_in_formats_are_cached_unless_a_statement() {
        for e in ENDPOINTS {
            assert_eq!(e.formats && e.method == Method::Get, e.cache_key.is_some(), "{}", e.path);
        }
    }
}
