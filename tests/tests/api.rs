//! The service's edges, on a real (local filesystem) lake: bearer-token auth on `/api/*`, probes
//! open, request metrics by route and status.

use std::sync::Arc;

use testlake_query::{AppState, ServeConfig};
use testlake_schemas::Lake;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_token_guards_the_api_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth_token = Some("s3cret-token".into());
    let state = Arc::new(AppState::new(Lake::open(dir.path().to_str().unwrap()).unwrap(), &config));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(testlake_query::serve(config, state, None, shutdown.clone(), Some(bound_tx)));
    let base = format!("http://{}", bound_rx.await.unwrap());
    let http = reqwest::Client::new();

    let status = |r: reqwest::Response| r.status().as_u16();
    let dashboard = format!("{base}/api/v1/dashboard");
    assert_eq!(status(http.get(&dashboard).send().await.unwrap()), 401);
    let wrong = http.get(&dashboard).bearer_auth("s3cret-tokem").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer realm=\"testlake\"");
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid bearer token");
    assert_eq!(status(http.get(&dashboard).bearer_auth("s3cret-token").send().await.unwrap()), 200);
    assert_eq!(status(http.get(format!("{dashboard}?access_token=s3cret-token")).send().await.unwrap()), 200);
    assert_eq!(status(http.post(format!("{base}/api/v1/sql")).body("SELECT 1").send().await.unwrap()), 401);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(http.get(format!("{base}{probe}")).send().await.unwrap()), 200, "{probe}");
    }

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "testlake_http_requests_total{route=\"/api/v1/dashboard\",status=\"401\"} 2",
        "testlake_http_requests_total{route=\"/api/v1/dashboard\",status=\"200\"} 2",
        "testlake_http_requests_total{route=\"/readyz\",status=\"200\"} 1",
        "testlake_http_request_duration_seconds_count{route=\"/api/v1/dashboard\"} 4",
        "testlake_query_cache_misses_total 1",
        "testlake_query_cache_hits_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("testlake_http_request_duration_seconds_bucket{route=\"/api/v1/dashboard\",le=\"+Inf\"} 4")
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
