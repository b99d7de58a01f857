//! The service's edges, on a real (local filesystem) lake: bearer-token auth on `/api/*`, probes
//! open, request metrics by route and status.

use std::sync::Arc;

use testlake_query::{AppState, ServeConfig};
use testlake_schemas::Lake;
use tokio_util::sync::CancellationToken;

/// The query service alone over an empty lake: its base URL, and what stops it.
async fn serve(
    config: ServeConfig,
) -> (String, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(AppState::new(Lake::open(dir.path().to_str().unwrap()).unwrap(), &config));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(testlake_query::serve(config, state, None, shutdown.clone(), Some(bound_tx)));
    (format!("http://{}", bound_rx.await.unwrap()), shutdown, server, dir)
}

#[tokio::test]
async fn a_token_guards_the_api_but_not_the_probes() {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth_token = Some("s3cret-token".into());
    let (base, shutdown, server, _dir) = serve(config).await;
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

#[tokio::test]
async fn the_openapi_document_matches_what_is_served() {
    let (base, shutdown, server, _dir) = serve(ServeConfig::new("127.0.0.1:0".parse().unwrap())).await;
    let http = reqwest::Client::new();

    let doc: serde_json::Value =
        http.get(format!("{base}/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), testlake_query::routes::ENDPOINTS.len());
    // What is not documented is not served.
    let undocumented = http.get(format!("{base}/api/v1/not-documented")).send().await.unwrap();
    assert_eq!(undocumented.status(), 404);
    for (path, item) in paths {
        let (method, operation) = item.as_object().unwrap().iter().next().unwrap();
        if path == "/api/v1/events" {
            continue; // a stream that does not end; covered by the live test
        }
        // Every documented endpoint answers (with its required parameters set) ...
        let required: Vec<(String, String)> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["required"] == true)
            .map(|p| (p["name"].as_str().unwrap().to_owned(), "x".to_owned()))
            .collect();
        let request = match method.as_str() {
            "get" => http.get(format!("{base}{path}")),
            "post" => http.post(format!("{base}{path}")).body("SELECT 1"),
            other => panic!("{other}"),
        };
        let response = request.query(&required).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        // ... and validates every parameter documented with a closed set of values.
        for p in operation["parameters"].as_array().unwrap() {
            if p["schema"]["enum"].is_array() || p["schema"]["type"] == "integer" {
                let mut query = required.clone();
                query.push((p["name"].as_str().unwrap().to_owned(), "-7.5x".to_owned()));
                let request = match method.as_str() {
                    "get" => http.get(format!("{base}{path}")),
                    _ => http.post(format!("{base}{path}")).body("SELECT 1"),
                };
                let response = request.query(&query).send().await.unwrap();
                assert_eq!(response.status(), 400, "{method} {path} with a bad {}", p["name"]);
            }
        }
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
