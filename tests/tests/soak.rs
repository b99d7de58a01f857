//! A bounded soak of the query service while ingest runs: `testlake all` with its synthetic
//! fleet producing to a real broker, and 16 clients on 127.0.0.1 asking every dashboard endpoint
//! and the SQL endpoint over and over. Every answer must be a success (zero errors), the process
//! must stay up and its memory bounded; the figures (requests, p50/p99, RSS) are printed.
//!
//! 20 s by default; `TESTLAKE_SOAK_SECS=600 cargo nextest run -p testlake-tests --test soak
//! --no-capture` soaks longer.

use std::time::{Duration, Instant};

use serde_json::json;
use testlake_tests::{Broker, Running, free_port, testlake_binary, unique_topic};

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is running");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// The value of a counter in a Prometheus text page.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// One request of the mix: what it asks, and how.
fn request(http: &reqwest::Client, base: &str, n: usize) -> reqwest::RequestBuilder {
    let get = |path: &str| http.get(format!("{base}{path}"));
    match n % 8 {
        0 => get("/api/v1/dashboard"),
        1 => get("/api/v1/trends?interval=hourly"),
        2 => get("/api/v1/trends?interval=daily&format=csv"),
        3 => get("/api/v1/flaky?state=all"),
        4 => get("/api/v1/health"),
        5 => get("/api/v1/compare"),
        6 => http.post(format!("{base}/api/v1/sql")).json(&json!({
            "sql": "SELECT repository, count(*) AS n, count(DISTINCT test_id) AS tests FROM results GROUP BY repository"
        })),
        _ => get("/api/v1/dashboard?format=arrow"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_service_answers_every_request_while_ingest_runs() {
    let soak = Duration::from_secs(std::env::var("TESTLAKE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20));
    let broker = Broker::start();
    let topic = unique_topic("soak");
    let lake = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut all = std::process::Command::new(testlake_binary());
    all.args(["all", "--brokers", &broker.bootstrap(), "--topic", &topic, "--landed-topic", ""])
        .args(["--group", &unique_topic("g"), "--lake", lake.path().to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--fleet-rate", "2000", "--flush-age", "200ms"])
        .args(["--compute-interval", "2s", "--flaky-refresh", "2s", "--compact-every", "0s"])
        .args(["--answer-timeout", "120s"])
        .env("RUST_LOG", std::env::var("TESTLAKE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null());
    let mut all = Running(all.spawn().expect("spawn testlake all"));
    let pid = all.id();

    // `/api/v1/compare` rereads the period's results for every answer, and landings every 200 ms
    // make each answer stale: here (a debug build saturating 2 cores with ingest, its Delta
    // publisher, compute every 2 s and 16 clients) one load took over 30 s, the service's default
    // --answer-timeout, and a compare that waits on a load and then needs its own took up to 35 s.
    // The soak asks that every request is answered (the service is given 120 s per load); the
    // latencies are printed.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let metrics = || async { http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok() };
    let started = Instant::now();
    let events_at_start = loop {
        if let Some(page) = metrics().await {
            let events = counter(&page, "testlake_ingest_events_total");
            if events > 0.0 {
                break events;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "testlake all never landed an event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rss_at_start = rss_mib(pid);

    let deadline = Instant::now() + soak;
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), Vec::new());
                let mut n = client;
                while Instant::now() < deadline {
                    let asked = Instant::now();
                    match request(&http, &base, n).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(_) => latencies.push(asked.elapsed()),
                            Err(e) => errors.push(format!("request {n}: reading the body: {e}")),
                        },
                        Ok(r) => {
                            errors.push(format!("request {n}: {} {}", r.status(), r.text().await.unwrap_or_default()))
                        }
                        Err(e) => errors.push(format!("request {n}: {e} ({e:?}) after {:?}", asked.elapsed())),
                    }
                    n += 16;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut rss_max = rss_at_start;
    while Instant::now() < deadline {
        rss_max = rss_max.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    for client in clients {
        let (l, e) = client.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let rss_at_end = rss_mib(pid);
    let events_at_end = counter(&metrics().await.expect("/metrics after the soak"), "testlake_ingest_events_total");
    assert!(matches!(all.try_wait(), Ok(None)), "testlake all is still running");

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "soak {soak:?}: {} requests ({:.0}/s), {} errors, p50 {:?}, p99 {:?}, max {:?}; \
         events landed meanwhile {}; RSS {rss_at_start:.0} MiB at start, {rss_max:.0} MiB at most, {rss_at_end:.0} MiB at end",
        latencies.len(),
        latencies.len() as f64 / soak.as_secs_f64(),
        errors.len(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap(),
        events_at_end - events_at_start,
    );
    assert!(errors.is_empty(), "{} errors, the first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(latencies.len() > 100, "the service answered only {} requests", latencies.len());
    assert!(events_at_end > events_at_start, "ingest kept landing events during the soak");
    // Bounded: the cache (256 MiB by default) and the SQL pools are the service's memory.
    assert!(rss_max < 2048.0, "RSS reached {rss_max:.0} MiB");
}
