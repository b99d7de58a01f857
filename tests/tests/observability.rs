//! Every long-running process observable: standalone `testlake ingest`, `compute`, `compact`
//! and `serve` processes answer `/metrics` (OpenMetrics text), `/healthz` and `/readyz`, their
//! metrics count the work they did (checked against what the test produced or computed itself),
//! and their health goes through each state for real: starting, healthy, degraded (lag past
//! `--lag-degraded`; a store failing briefly), unhealthy (the broker killed; the store down).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeDelta, Utc};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::TestEvent;
use testlake_tests::fault_proxy::FaultProxy;
use testlake_tests::{
    Backend, Broker, Running, TestLake, free_port, land_committed, model, produce_events, testlake_binary, unique_topic,
};

/// A process's probes.
struct Probes {
    base: String,
    http: reqwest::Client,
}

impl Probes {
    fn on(port: u16) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Self { base: format!("http://127.0.0.1:{port}"), http }
    }

    /// `/healthz`: its status code and `status`, and the whole answer.
    async fn health(&self) -> (u16, String, Value) {
        let response = self.http.get(format!("{}/healthz", self.base)).send().await.expect("/healthz");
        let code = response.status().as_u16();
        let body: Value = response.json().await.expect("/healthz is JSON");
        (code, body["status"].as_str().unwrap_or_default().to_owned(), body)
    }

    async fn ready(&self) -> u16 {
        self.http.get(format!("{}/readyz", self.base)).send().await.expect("/readyz").status().as_u16()
    }

    /// `/metrics`, checked to be OpenMetrics text.
    async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send().await.expect("/metrics");
        let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(kind, "application/openmetrics-text; version=1.0.0; charset=utf-8");
        let text = response.text().await.expect("metrics text");
        assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF:\n{text}");
        text
    }

    /// Polls `/healthz` until its status is `want`; returns every status seen on the way, in
    /// order (repeats collapsed). Panics after `within`.
    async fn health_until(&self, want: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let (code, status, body) = self.health().await;
            assert_eq!(code, if status == "unhealthy" { 503 } else { 200 }, "{body}");
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == want {
                return seen;
            }
            assert!(Instant::now() < deadline, "never {want} within {within:?}; seen {seen:?}, last {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The value of the sample `line_start` (its name and labels as printed) in OpenMetrics text.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

/// `testlake_component_health` of `component`: the one state at 1, checking the others are 0.
fn component_state(text: &str, component: &str) -> String {
    let states = ["starting", "healthy", "degraded", "unhealthy"];
    let values: Vec<f64> = states
        .iter()
        .map(|s| {
            let line = format!("testlake_component_health{{component=\"{component}\",state=\"{s}\"}}");
            sample(text, &line).unwrap_or_else(|| panic!("no {line} in\n{text}"))
        })
        .collect();
    assert_eq!(values.iter().sum::<f64>(), 1.0, "exactly one state of {component}: {values:?}");
    states[values.iter().position(|v| *v == 1.0).expect("one state")].to_owned()
}

/// The process metrics every process exports, checked for plausibility: it started within the
/// test's lifetime, holds some memory and file descriptors, under its limit.
fn assert_process_metrics(text: &str, test_started: f64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = sample(text, "process_start_time_seconds").expect("process_start_time_seconds");
    assert!(started >= test_started - 1.0 && started <= now, "started {started}, test {test_started}, now {now}");
    assert!(sample(text, "process_resident_memory_bytes").expect("rss") > 1e6);
    let (open, max) = (sample(text, "process_open_fds").expect("open"), sample(text, "process_max_fds").expect("max"));
    assert!(open >= 3.0 && open < max, "{open} of {max}");
    assert!(sample(text, "process_cpu_seconds_total").expect("cpu") > 0.0);
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A `testlake <args>` process with its probes on a free port, logging to `log`.
async fn spawn(args: &[&str], lake: &TestLake, via: Option<&str>, log: &Path) -> (Running, Probes) {
    spawn_listening(args, lake, via, log, "--probe-listen").await
}

/// [`spawn`], naming the probes' address with `how`: a flag, or a variable (`VAR=`).
async fn spawn_listening(
    args: &[&str],
    lake: &TestLake,
    via: Option<&str>,
    log: &Path,
    how: &str,
) -> (Running, Probes) {
    let port = free_port();
    let mut cmd = Command::new(testlake_binary());
    cmd.args(args);
    lake.apply_via(&mut cmd, via);
    if args[0] == "ingest" {
        // The landed-notice topic is created by the first member (the broker has no authorization).
        cmd.arg("--create-topics");
    }
    if let Some(variable) = how.strip_suffix('=') {
        cmd.env(variable, format!("127.0.0.1:{port}"));
    } else if args[0] != "serve" {
        cmd.args([how, &format!("127.0.0.1:{port}")]);
    } else {
        cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    }
    cmd.env("RUST_LOG", "info,datafusion=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    let mut running = Running(cmd.spawn().expect("spawn testlake"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = running.try_wait().expect("try_wait");
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        assert!(exited.is_none(), "testlake {} exited ({exited:?}):\n{}", args[0], log());
        assert!(Instant::now() < deadline, "testlake {} serves no probes on {port}:\n{}", args[0], log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (running, Probes::on(port))
}

/// A synthetic fleet's CI runs, ten minutes apart, ending about now.
fn fleet_events(seed: u64, runs: i64) -> Vec<TestEvent> {
    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 2, ..FleetConfig::default() });
    let start = Utc::now() - TimeDelta::minutes(10 * runs);
    (0..runs).flat_map(|i| fleet.run(start + TimeDelta::minutes(i * 10))).collect()
}

/// Produces raw payloads (no key) and waits for their delivery.
async fn produce_raw(brokers: &str, topic: &str, payloads: &[&str]) {
    let producer = testlake::kafka::producer(brokers).expect("producer");
    for payload in payloads {
        let record: FutureRecord<'_, (), str> = FutureRecord::to(topic).payload(payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("delivered");
    }
}

/// Polls `metrics` until `done` holds for them; returns them.
async fn metrics_until(probes: &Probes, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = probes.metrics().await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A standalone ingest: healthy once it joined its group, its metrics counting
/// exactly what was produced (events, rejections by reason, landed rows); degraded and then
/// unhealthy once its broker is killed, and unready.
#[tokio::test]
async fn standalone_ingest_counts_what_was_produced_and_is_unhealthy_without_its_broker() {
    let test_started = unix_now();
    let broker = Broker::start();
    let topic = unique_topic("observe");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 2).await.unwrap();
    let lake = TestLake::start(Backend::Local);
    let log = lake.scratch().join("ingest.log");
    let group = unique_topic("group");
    let args = ["ingest", "--brokers", &broker.bootstrap(), "--topic", &topic, "--group", &group];
    let (_ingest, probes) = spawn(
        &[&args[..], &["--flush-age", "200ms", "--unhealthy-after", "3s", "--compact-every", "0s"]].concat(),
        &lake,
        None,
        &log,
    )
    .await;
    let seen = probes.health_until("healthy", Duration::from_secs(30)).await;
    // `starting` until it joins its group — often too short to see: the probes start a moment
    // before the consumer subscribes (the rule's `starting` is unit-tested in ingest's metrics).
    assert!(seen == ["starting", "healthy"] || seen == ["healthy"], "{seen:?}");
    assert_eq!(probes.ready().await, 200);

    let events = fleet_events(7, 6);
    let produced = produce_events(&broker.bootstrap(), &topic, &events).await;
    let invalid_json = ["not json", "{\"schema_version\": 1,", "[1, 2]"];
    let missing_field =
        ["{\"schema_version\": 1}", "{\"schema_version\": 1, \"event_id\": \"6f1c1f3a-8a64-4d3e-9c2b-1a2b3c4d5e6f\"}"];
    produce_raw(&broker.bootstrap(), &topic, &[&invalid_json[..], &missing_field[..]].concat()).await;
    let (valid, rejected) = (produced.len() as f64, (invalid_json.len() + missing_field.len()) as f64);

    let text = metrics_until(&probes, "every message landed", Duration::from_secs(60), |t| {
        sample(t, "testlake_ingest_flush_rows_sum") == Some(valid + rejected)
    })
    .await;
    let expect = [
        ("testlake_ingest_messages_total", valid + rejected),
        ("testlake_ingest_events_total", valid),
        ("testlake_ingest_rejected_total{reason=\"invalid_json\"}", invalid_json.len() as f64),
        ("testlake_ingest_rejected_total{reason=\"missing_field\"}", missing_field.len() as f64),
        ("testlake_ingest_fenced_total", 0.0),
        ("testlake_ingest_flush_errors_total", 0.0),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
    let count = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name}"));
    let flushes = count("testlake_ingest_flushes_total");
    assert!(flushes >= 1.0);
    assert_eq!(count("testlake_ingest_flush_rows_count"), flushes, "one observation per landed flush");
    assert_eq!(count("testlake_ingest_flush_duration_seconds_count"), flushes);
    assert_eq!(count("testlake_ingest_commit_duration_seconds_count"), flushes, "one commit per flush, no retry");
    assert!(count("testlake_ingest_files_written_total") >= flushes);
    assert!(count("testlake_ingest_parquet_bytes_total") > 0.0);
    assert!(count("testlake_ingest_recoveries_total") >= 1.0, "each owned partition's log recovered");
    let landed = count("testlake_ingest_last_landed_timestamp_seconds");
    assert!(landed >= test_started && landed <= unix_now(), "{landed}");
    // Each owned partition's lag, down to nothing once everything is consumed.
    let text = metrics_until(&probes, "no lag", Duration::from_secs(10), |t| {
        (0..2).all(|p| sample(t, &format!("testlake_ingest_consumer_lag{{partition=\"{p}\"}}")) == Some(0.0))
    })
    .await;
    assert_eq!(component_state(&text, "ingest"), "healthy");
    assert_process_metrics(&text, test_started);

    // The broker dies: degraded at once, unhealthy (503) after --unhealthy-after, and unready.
    let killed = Instant::now();
    drop(broker);
    let seen = probes.health_until("unhealthy", Duration::from_secs(20)).await;
    assert_eq!(seen, ["healthy", "degraded", "unhealthy"], "{seen:?}");
    assert!(killed.elapsed() >= Duration::from_secs(3), "unhealthy only after --unhealthy-after");
    assert_eq!(probes.ready().await, 503);
    assert_eq!(component_state(&probes.metrics().await, "ingest"), "unhealthy");
}

/// An ingest whose consumer lag passes --lag-degraded is degraded, and healthy again once it
/// caught up; its lag gauge says how far behind it was.
#[tokio::test]
async fn an_ingest_behind_its_lag_threshold_is_degraded_until_it_catches_up() {
    let broker = Broker::start();
    let topic = unique_topic("lag");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 1).await.unwrap();
    // A backlog before the ingest starts.
    let events: Vec<TestEvent> = fleet_events(11, 60).into_iter().take(1200).collect();
    produce_events(&broker.bootstrap(), &topic, &events).await;
    let lake = TestLake::start(Backend::Local);
    let group = unique_topic("group");
    let args = ["ingest", "--brokers", &broker.bootstrap(), "--topic", &topic, "--group", &group];
    // A memory bound of one byte: every message waits for its own flush, so catching up is slow.
    let slow = ["--buffer-bytes", "1", "--lag-degraded", "100", "--compact-every", "0s"];
    let (_ingest, probes) =
        spawn(&[&args[..], &slow[..]].concat(), &lake, None, &lake.scratch().join("ingest.log")).await;

    let text = metrics_until(&probes, "lag past the threshold", Duration::from_secs(30), |t| {
        sample(t, "testlake_ingest_consumer_lag{partition=\"0\"}").is_some_and(|lag| lag > 100.0)
    })
    .await;
    let lag = sample(&text, "testlake_ingest_consumer_lag{partition=\"0\"}").unwrap();
    let consumed = sample(&text, "testlake_ingest_messages_total").unwrap();
    // The lag (from statistics up to a second old) is at least what is left now, at most the backlog.
    let backlog = events.len() as f64;
    assert!(lag <= backlog && lag + consumed >= backlog - 1.0, "lag {lag}, {consumed} of {backlog} consumed");
    assert_eq!(component_state(&text, "ingest"), "degraded");
    let (code, status, _) = probes.health().await;
    assert_eq!((code, status.as_str()), (200, "degraded"));

    let seen = probes.health_until("healthy", Duration::from_secs(120)).await;
    assert_eq!(seen.first().map(String::as_str), Some("degraded"), "{seen:?}");
    // Healthy as soon as it is no more than 100 behind; then it consumes the rest.
    let text = metrics_until(&probes, "every event consumed", Duration::from_secs(60), |t| {
        sample(t, "testlake_ingest_events_total") == Some(backlog)
            && sample(t, "testlake_ingest_consumer_lag{partition=\"0\"}") == Some(0.0)
    })
    .await;
    assert_eq!(component_state(&text, "ingest"), "healthy");
    assert!(sample(&text, "testlake_ingest_paused_seconds_total").unwrap() > 0.0, "it waited for flushes");
}

/// The number of trend rows the model gives: one per (bucket, repository, branch, suite).
fn model_rows(events: &[TestEvent], width: TimeDelta) -> f64 {
    model::trends(events, width).len() as f64
}

/// A standalone compute: starting before its first round, then healthy, its metrics counting the
/// trend rows the model says the lake holds, with duration histograms of every kind of work.
#[tokio::test]
async fn standalone_compute_reports_its_rounds_and_the_rows_it_persisted() {
    let test_started = unix_now();
    let lake = TestLake::start(Backend::Local);
    let events = fleet_events(3, 8);
    land_committed(&lake.lake, "observe", 0, 0, &events).await;
    let args = ["compute", "--compute-interval", "1s", "--compute-startup-delay", "2s", "--flaky-refresh", "1s"];
    let (_compute, probes) = spawn(&args, &lake, None, &lake.scratch().join("compute.log")).await;
    let seen = probes.health_until("healthy", Duration::from_secs(30)).await;
    assert_eq!(seen, ["starting", "healthy"]);
    assert_eq!(probes.ready().await, 200);
    let text = metrics_until(&probes, "a flaky snapshot", Duration::from_secs(30), |t| {
        sample(t, "testlake_compute_flaky_analysis_duration_seconds_count").is_some_and(|n| n >= 1.0)
    })
    .await;
    let expect = [
        ("testlake_compute_trends_persisted_total{interval=\"hourly\"}", model_rows(&events, TimeDelta::hours(1))),
        ("testlake_compute_trends_persisted_total{interval=\"daily\"}", model_rows(&events, TimeDelta::days(1))),
        ("testlake_compute_cycles_total{status=\"failed\"}", 0.0),
        ("testlake_compute_cycles_total{status=\"partial\"}", 0.0),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
    let count = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    let cycles = count("testlake_compute_cycles_total{status=\"success\"}");
    assert!(cycles >= 1.0);
    assert_eq!(count("testlake_compute_cycle_duration_seconds_count"), cycles);
    let dates = events.iter().map(|e| e.finished_at.date_naive()).collect::<std::collections::BTreeSet<_>>();
    for interval in ["hourly", "daily"] {
        let line = format!("testlake_compute_trend_calculation_duration_seconds_count{{interval=\"{interval}\"}}");
        assert_eq!(count(&line), dates.len() as f64, "one calculation per date: {line}");
    }
    assert!(count("testlake_compute_flaky_tests") >= 0.0);
    assert_eq!(component_state(&text, "compute"), "healthy");
    assert_process_metrics(&text, test_started);
}

/// Compute with a task that fails (a committed file of its one date corrupted): degraded at the
/// first failed cycle (a success within the interval before it), unhealthy (503) once no cycle succeeded for twice the interval (and 5 s),
/// healthy again once the file is whole.
#[tokio::test]
async fn compute_with_a_failing_task_is_degraded_then_unhealthy_then_recovers() {
    let lake = TestLake::start(Backend::Local);
    land_committed(&lake.lake, "observe", 0, 0, &fleet_events(5, 3)).await;
    let args = ["compute", "--compute-interval", "1s", "--compute-startup-delay", "0s"];
    let (_compute, probes) = spawn(&args, &lake, None, &lake.scratch().join("compute.log")).await;
    probes.health_until("healthy", Duration::from_secs(30)).await;
    let is_data = |p: &Path| {
        let p = p.to_string_lossy();
        p.contains("/results/date=") && p.ends_with(".parquet")
    };
    let file = walk(Path::new(lake.location())).into_iter().find(|p| is_data(p));
    let file = file.expect("a results file");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not parquet").unwrap();
    let seen = probes.health_until("unhealthy", Duration::from_secs(30)).await;
    assert_eq!(seen, ["healthy", "degraded", "unhealthy"]);
    let text = probes.metrics().await;
    assert!(sample(&text, "testlake_compute_cycles_total{status=\"failed\"}").unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "testlake_compute_tasks_total{task=\"trends_daily\",outcome=\"failed\"}").unwrap() >= 1.0);
    std::fs::write(&file, whole).unwrap();
    assert_eq!(probes.health_until("healthy", Duration::from_secs(30)).await, ["unhealthy", "healthy"]);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// Compute through a store that goes down: unhealthy (503, unready) once nothing succeeded for
/// twice the interval (and 5 s) — degraded on the way if a cycle fails sooner than that (the
/// store's client retries a refused connection for tens of seconds) — and healthy again once the
/// store is back.
#[tokio::test]
async fn compute_on_a_store_that_goes_down_is_unhealthy_then_recovers() {
    let lake = TestLake::start(Backend::Moto);
    land_committed(&lake.lake, "observe", 0, 0, &fleet_events(5, 3)).await;
    let proxy = FaultProxy::start(lake.server().expect("moto").port).await;
    let args = ["compute", "--compute-interval", "1s", "--compute-startup-delay", "0s"];
    let (_compute, probes) = spawn(&args, &lake, Some(&proxy.endpoint()), &lake.scratch().join("compute.log")).await;
    probes.health_until("healthy", Duration::from_secs(30)).await;
    proxy.set_down(true);
    let seen = probes.health_until("unhealthy", Duration::from_secs(30)).await;
    assert!(seen == ["healthy", "unhealthy"] || seen == ["healthy", "degraded", "unhealthy"], "{seen:?}");
    assert_eq!(probes.ready().await, 503, "the store does not answer");
    assert_eq!(component_state(&probes.metrics().await, "compute"), "unhealthy");
    proxy.set_down(false);
    probes.health_until("healthy", Duration::from_secs(30)).await;
}

/// With the periodic cycle off, compute works on notices only: idle, it stays healthy. (Its
/// probes named by `TESTLAKE_COMPUTE_LISTEN`, the variable of --probe-listen's old name.)
#[tokio::test]
async fn compute_without_a_cycle_stays_healthy_while_idle() {
    let lake = TestLake::start(Backend::Local);
    let args = ["compute", "--compute-interval", "0s", "--compute-startup-delay", "0s"];
    let log = lake.scratch().join("compute.log");
    let (_compute, probes) = spawn_listening(&args, &lake, None, &log, "TESTLAKE_COMPUTE_LISTEN=").await;
    // Past twice the old rule's slack: idle is not a fault.
    for _ in 0..4 {
        let (code, status, body) = probes.health().await;
        assert_eq!((code, status.as_str()), (200, "healthy"), "{body}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let text = probes.metrics().await;
    assert_eq!(sample(&text, "testlake_compute_cycle_duration_seconds_count"), Some(0.0), "no cycle ran");
}

/// `testlake serve` is healthy while its lake answers and unhealthy (503, unready) while it does
/// not; an ingest whose store is down is degraded, then unhealthy; a standalone compactor has
/// its probes too.
#[tokio::test]
async fn serve_and_ingest_follow_their_store_and_compact_has_probes() {
    let test_started = unix_now();
    let lake = TestLake::start(Backend::Moto);
    let proxy = FaultProxy::start(lake.server().expect("moto").port).await;
    let via = Some(proxy.endpoint());
    let (_serve, serve) = spawn(&["serve"], &lake, via.as_deref(), &lake.scratch().join("serve.log")).await;
    let seen = serve.health_until("healthy", Duration::from_secs(20)).await;
    assert_eq!(seen.last().map(String::as_str), Some("healthy"));
    assert_eq!(serve.ready().await, 200);

    let compact_args = ["compact", "--compact-every", "1s"];
    let (_compact, compact) = spawn(&compact_args, &lake, via.as_deref(), &lake.scratch().join("compact.log")).await;
    compact.health_until("healthy", Duration::from_secs(20)).await;
    let text = compact.metrics().await;
    assert_eq!(component_state(&text, "compact"), "healthy");
    assert_process_metrics(&text, test_started);

    let broker = Broker::start();
    let topic = unique_topic("store");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 1).await.unwrap();
    let group = unique_topic("group");
    let args = ["ingest", "--brokers", &broker.bootstrap(), "--topic", &topic, "--group", &group];
    let rest = ["--flush-age", "100ms", "--unhealthy-after", "3s", "--compact-every", "0s"];
    let (_ingest, ingest) =
        spawn(&[&args[..], &rest[..]].concat(), &lake, via.as_deref(), &lake.scratch().join("i.log")).await;
    ingest.health_until("healthy", Duration::from_secs(30)).await;

    proxy.set_down(true);
    // Events that cannot land: the flushes fail and are retried.
    let produced = produce_events(&broker.bootstrap(), &topic, &fleet_events(9, 1)).await.len();
    let seen = ingest.health_until("unhealthy", Duration::from_secs(30)).await;
    assert_eq!(seen, ["healthy", "degraded", "unhealthy"]);
    assert!(sample(&ingest.metrics().await, "testlake_ingest_flush_errors_total").unwrap() >= 1.0);
    serve.health_until("unhealthy", Duration::from_secs(20)).await;
    assert_eq!(serve.ready().await, 503);
    assert_eq!(component_state(&serve.metrics().await, "serve"), "unhealthy");
    assert_eq!(compact.health_until("unhealthy", Duration::from_secs(20)).await.last().unwrap(), "unhealthy");

    proxy.set_down(false);
    // Back: the retried flushes land every event, and health follows.
    metrics_until(&ingest, "every event landed", Duration::from_secs(30), |t| {
        sample(t, "testlake_ingest_flush_rows_sum") == Some(produced as f64)
    })
    .await;
    ingest.health_until("healthy", Duration::from_secs(30)).await;
    serve.health_until("healthy", Duration::from_secs(20)).await;
}

/// The README's table of metrics, built from the registries of every stage: each metric's name
/// (as scraped: counters with `_total`), type, labels and help text. Each family is given one
/// series first, so that its labels show.
fn metrics_reference() -> String {
    use testlake_compute::metrics::{ComputeMetrics, TaskOutcome};
    let mut state = testlake_query::AppState::new(testlake_schemas::Lake::in_memory(), &Default::default());
    let ingest = testlake_ingest::IngestMetrics::default();
    ingest.message_rejected("invalid_json");
    ingest.consumer_statistics(true, [(0, 0)].into());
    ingest.register(state.telemetry.registry());
    let compute = ComputeMetrics::new(Duration::from_secs(60));
    let daily = testlake_compute::trends::Interval::Daily;
    compute.trends_task(&[daily], TaskOutcome::Completed, Duration::ZERO);
    compute.fenced(testlake_schemas::Table::TrendsDaily);
    compute.register(state.telemetry.registry());
    state.requests.observe("/healthz", 200, 0.001);
    state.cache.invalidate_all("missed_notices");
    state.telemetry.add_component("ingest", || testlake_schemas::observe::Health::Healthy);
    let text = state.telemetry.encode();
    let mut rows = vec!["| metric | type | labels | meaning |".to_owned(), "|---|---|---|---|".to_owned()];
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' ')) else { continue };
        let help = lines[..i].iter().rev().find_map(|l| l.strip_prefix(&format!("# HELP {name} "))).unwrap_or("");
        // The labels of the family's first sample, but a histogram's `le`.
        let labels: Vec<&str> = lines.get(i + 1).and_then(|l| l.split_once('{')).map_or(Vec::new(), |(_, rest)| {
            rest.split(',').filter_map(|pair| pair.split_once('=')).map(|(k, _)| k).filter(|k| *k != "le").collect()
        });
        let shown = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        rows.push(format!("| `{shown}` | {kind} | {} | {} |", labels.join(", "), help.replace('|', "\\|")));
    }
    rows.join("\n") + "\n"
}

#[tokio::test]
async fn the_readme_lists_every_metric() {
    let (start, end) = ("<!-- metrics-reference:start -->\n", "<!-- metrics-reference:end -->");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let (before, rest) = readme.split_once(start).expect("the start marker");
    let (listed, after) = rest.split_once(end).expect("the end marker");
    let generated = metrics_reference();
    for name in ["testlake_ingest_consumer_lag", "testlake_compute_cycles_total", "process_cpu_seconds_total"] {
        assert!(generated.contains(&format!("`{name}`")), "{name} in\n{generated}");
    }
    if std::env::var_os("TESTLAKE_UPDATE_README").is_some() {
        std::fs::write(&path, format!("{before}{start}{generated}{end}{after}")).expect("write README.md");
    } else {
        assert_eq!(
            listed, generated,
            "README's metrics are stale: run TESTLAKE_UPDATE_README=1 cargo nextest run -p testlake-tests --test \
             observability the_readme"
        );
    }
}
