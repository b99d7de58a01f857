//! The service's edges, on a real (local filesystem) lake: bearer-token auth on `/api/*`, probes
//! open, request metrics by route and status; what browsers may not do (DNS rebinding,
//! cross-site requests); the bounds on connections, slow clients and event streams.

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
    let sql = http.post(format!("{base}/api/v1/sql")).json(&serde_json::json!({ "sql": "SELECT 1" }));
    assert_eq!(status(sql.send().await.unwrap()), 401);
    let lower = http.get(&dashboard).header("authorization", "bearer s3cret-token");
    assert_eq!(status(lower.send().await.unwrap()), 200, "the scheme in any case");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(http.get(format!("{base}{probe}")).send().await.unwrap()), 200, "{probe}");
    }

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "testlake_http_requests_total{route=\"/api/v1/dashboard\",status=\"401\"} 2",
        "testlake_http_requests_total{route=\"/api/v1/dashboard\",status=\"200\"} 3",
        "testlake_http_requests_total{route=\"/readyz\",status=\"200\"} 1",
        "testlake_http_request_duration_seconds_count{route=\"/api/v1/dashboard\"} 5",
        "testlake_query_cache_misses_total 1",
        "testlake_query_cache_hits_total 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("testlake_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/v1/dashboard\"} 5")
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
            "post" => http.post(format!("{base}{path}")).json(&serde_json::json!({ "sql": "SELECT 1" })),
            other => panic!("{other}"),
        };
        let response = request.query(&required).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        // ... in the type its document says ...
        let served = response.headers()["content-type"].to_str().unwrap();
        let media = served.split(';').next().unwrap();
        assert!(operation["responses"]["200"]["content"].get(media).is_some(), "{path} serves {served}");
        // ... and validates every parameter documented with a closed set of values.
        for p in operation["parameters"].as_array().unwrap() {
            if p["schema"]["enum"].is_array() || p["schema"]["type"] == "integer" {
                let mut query = required.clone();
                query.push((p["name"].as_str().unwrap().to_owned(), "-7.5x".to_owned()));
                let request = match method.as_str() {
                    "get" => http.get(format!("{base}{path}")),
                    _ => http.post(format!("{base}{path}")).json(&serde_json::json!({ "sql": "SELECT 1" })),
                };
                let response = request.query(&query).send().await.unwrap();
                assert_eq!(response.status(), 400, "{method} {path} with a bad {}", p["name"]);
            }
        }
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Without a token, a web page could read the lake through 127.0.0.1: by re-pointing its own name
/// there (DNS rebinding: its requests carry its `Host`), or by posting a statement cross-site as
/// `text/plain`, which needs no CORS preflight. Probes answer by any name.
#[tokio::test]
async fn rebinding_and_cross_site_pages_are_refused() {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.allowed_hosts = vec!["dash.example".into()];
    let (base, shutdown, server, _dir) = serve(config).await;
    let http = reqwest::Client::new();
    let host = base.trim_start_matches("http://").to_owned();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("{base}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap() }
    };

    let rebound = get("/api/v1/dashboard", &[("host", "evil.example:8080")]).await;
    assert_eq!(rebound.status(), 403);
    let body: serde_json::Value = rebound.json().await.unwrap();
    assert_eq!(body["error"], "host \"evil.example:8080\" is not allowed (see --allowed-host)");
    assert_eq!(get("/", &[("host", "evil.example")]).await.status(), 403);
    assert_eq!(get("/healthz", &[("host", "evil.example")]).await.status(), 200, "probes answer any name");
    for allowed in ["dash.example", "localhost:1234", &host] {
        assert_eq!(get("/api/v1/dashboard", &[("host", allowed)]).await.status(), 200, "{allowed}");
    }
    let own = format!("http://{host}");
    assert_eq!(get("/api/v1/dashboard", &[("origin", &own)]).await.status(), 200);
    assert_eq!(get("/api/v1/dashboard", &[("origin", "http://evil.example")]).await.status(), 403);

    let sql = format!("{base}/api/v1/sql");
    let text = http.post(&sql).header("content-type", "text/plain").header("origin", "http://evil.example");
    assert_eq!(text.body("SELECT 1").send().await.unwrap().status(), 403, "cross-site");
    let text = http.post(&sql).header("content-type", "text/plain").body("SELECT 1");
    let refused = text.send().await.unwrap();
    assert_eq!(refused.status(), 415);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "the body must be sent as application/json, got \"text/plain\"");
    let json = http.post(&sql).header("origin", &own).json(&serde_json::json!({ "sql": "SELECT 1 AS n" }));
    assert_eq!(json.send().await.unwrap().status(), 200);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// A client that sends its headers too slowly is cut off, and no more than `max_connections`
/// are served at once: the next one waits until a place frees.
#[tokio::test]
async fn slow_clients_are_cut_and_connections_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits.header_read_timeout = std::time::Duration::from_millis(500);
    config.limits.max_connections = 2;
    let (base, shutdown, server, _dir) = serve(config).await;
    let addr = base.trim_start_matches("http://").to_owned();

    // Slowloris: half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let mut buf = [0; 256];
    let cut = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(_) | Err(_))), "a slow client kept its connection: {cut:?}");
    drop(slow);

    // Two clients hold both places (for up to the header timeout); a third waits.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_millis(300)).build().unwrap();
    assert!(http.get(format!("{base}/healthz")).send().await.is_err(), "a third connection was served");
    drop(idle);
    let http = reqwest::Client::new();
    let served = http.get(format!("{base}/healthz")).timeout(std::time::Duration::from_secs(5)).send().await;
    assert_eq!(served.unwrap().status(), 200, "a freed place serves the next client");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Each live-update stream holds one of `max_subscribers` places; past them, a 503 that says so.
#[tokio::test]
async fn event_streams_are_capped() {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits.max_subscribers = 1;
    let (base, shutdown, server, _dir) = serve(config).await;
    let http = reqwest::Client::new();
    let events = format!("{base}/api/v1/events");

    let first = http.get(&events).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let full = http.get(&events).send().await.unwrap();
    assert_eq!(full.status(), 503);
    let body: serde_json::Value = full.json().await.unwrap();
    assert_eq!(body["error"], "too many event-stream subscribers (at most 1): try again later");
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let again = http.get(&events).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the place of a gone client was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Hostile statements are refused and the process survives them: a flat `1+1+…+1` of 1,000
/// terms (it overflowed the stack and aborted the process), `repeat('x', 2147483647)` (2 GiB
/// grown after the answer); one statement more than the concurrency limit is a 429 with
/// `Retry-After`, and a statement whose client disconnects is stopped and frees its slot.
#[tokio::test]
async fn hostile_statements_are_refused_and_the_service_survives() {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.sql_limits.concurrency = 1;
    config.sql_limits.timeout = std::time::Duration::from_secs(120);
    let (base, shutdown, server, _dir) = serve(config).await;
    let http = reqwest::Client::new();
    let post = |sql: String| http.post(format!("{base}/api/v1/sql")).json(&serde_json::json!({ "sql": sql })).send();

    let deep = format!("SELECT {}", vec!["1"; 1_000].join("+"));
    let response = post(deep).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("deeper than"), "{body}");
    let started = std::time::Instant::now();
    let response = post("SELECT repeat('x', 2147483647)".into()).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("would produce"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());

    let endless = "SELECT count(DISTINCT a.x * 100000 + b.y) FROM unnest(range(1, 100000)) AS a(x) \
                   CROSS JOIN unnest(range(1, 100000)) AS b(y)";
    let client = tokio::spawn({
        let request = http.post(format!("{base}/api/v1/sql")).json(&serde_json::json!({ "sql": endless }));
        async move { request.send().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let busy = post("SELECT 1".into()).await.unwrap();
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "1");
    // The client disconnects: its statement stops, and the next one gets the slot.
    client.abort();
    let started = std::time::Instant::now();
    loop {
        let status = post("SELECT 1".into()).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the disconnected statement kept its slot");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
