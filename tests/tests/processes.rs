//! Several processes, one lake: the stages run as separate processes the way a deployment runs
//! them — two `testlake ingest` members of one group, two `testlake compute`, two
//! `testlake serve --brokers` — on one tansu broker and one S3 lake (a bucket on moto, whose
//! conditional writes are atomic under concurrency), while CI runs are produced. One process of
//! each kind is SIGKILLed mid-run and restarted. Checked against independent computations: every
//! produced event id is in the lake once; both services' trends (hourly and daily) equal the model
//! computed from the produced events; both services push an update to a connected dashboard when
//! data lands, and their dashboards then show the model's totals.
//!
//! The killed ingest member is restarted because tansu 0.6 leaves a SIGKILLed member's partitions
//! assigned to it (see `group.rs`); Apache Kafka would hand them to the surviving member once
//! `session.timeout.ms` (3 s here) passed without a heartbeat, and the restart would only
//! rebalance them back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::TestEvent;
use testlake_tests::model::{self, Key, Trend, close};
use testlake_tests::{
    Backend, Broker, IngestRun, Produced, Running, SseClient, Storage, TestLake, assert_exactly_once, free_port,
    landed_ids_in, last_assignment, produce_events, signal, testlake_binary, trend_runs, unique_topic,
};

/// What every process of the deployment shares: the broker, the topics, the group and the lake.
struct Deployment {
    broker: Broker,
    lake: TestLake,
    topic: String,
    group: String,
    landed: String,
    logs: PathBuf,
}

impl Deployment {
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// A `testlake <command>` on the lake and the notice topic, logging to `<name>.log`.
    fn command(&self, command: &str, name: &str) -> Command {
        let mut cmd = Command::new(testlake_binary());
        cmd.arg(command);
        self.lake.apply(&mut cmd);
        cmd.args(["--brokers", &self.broker.bootstrap(), "--landed-topic", &self.landed])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,datafusion=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log(name)).expect("log file"));
        cmd
    }

    /// A compute process: notices drive it; a 2 s cycle and a 5 s reconciliation catch what a
    /// killed peer left, and a 3 s lease lets the peer's dates go soon after it dies.
    fn compute(&self, name: &str) -> Running {
        let mut cmd = self.command("compute", name);
        cmd.args(["--compute-interval", "2s", "--reconcile-interval", "5s", "--lease-ttl", "3s"])
            .args(["--flaky-refresh", "1s"]);
        let running = Running(cmd.spawn().expect("spawn testlake compute"));
        wait_for_log(&self.log(name), "following landed notices");
        running
    }

    /// A query service on a free port, following the notices; returns it and its base URL.
    fn serve(&self, name: &str) -> (Running, String) {
        let port = free_port();
        let mut cmd = self.command("serve", name);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
        let running = Running(cmd.spawn().expect("spawn testlake serve"));
        testlake_tests::broker::wait_for_port(port, name);
        wait_for_log(&self.log(name), "following landed notices");
        (running, format!("http://127.0.0.1:{port}"))
    }

    /// An ingest member of the group, announcing what it lands on the notice topic.
    fn ingest(&self, name: &str) -> Running {
        let brokers = self.broker.bootstrap();
        let log = self.log(name);
        let run = IngestRun {
            brokers: &brokers,
            topic: &self.topic,
            group: &self.group,
            lake: self.lake.scratch(),
            flush_rows: 500,
            flush_age: "200ms",
            crash_at: None,
            log: Some(&log),
        };
        let mut cmd = run.command_on(&self.lake);
        cmd.args(["--landed-topic", &self.landed]);
        Running(cmd.spawn().expect("spawn testlake ingest"))
    }
}

/// Waits up to 60 s until `log` holds `line`.
fn wait_for_log(log: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log).unwrap_or_default().contains(line) {
        assert!(Instant::now() < deadline, "{} never logged {line:?}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs `process` and reaps it.
fn kill(process: &mut Running) {
    signal(process, 9);
    let status = process.wait().expect("wait");
    assert!(!status.success(), "killed: {status:?}");
}

/// A dashboard connected to a service's event stream, past its `ready`.
async fn dashboard_stream(base: &str) -> SseClient {
    let mut sse = SseClient::connect(&format!("{base}/api/v1/events?tables=trends_hourly")).await;
    let (name, _) = sse.next().await.expect("the stream opens");
    assert_eq!(name, "ready");
    sse
}

/// Loads the dashboard into the service's cache (the second request is a hit) and returns the
/// runs it counts: an answer that only an invalidation replaces. While events land, a notice can
/// invalidate the answer between the two requests (seen once in a CI run: miss, miss): the pair
/// is tried again, up to ten times.
async fn cache_dashboard(base: &str, now: DateTime<Utc>) -> i64 {
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.clear();
        for _ in 0..2 {
            let response = http.get(format!("{base}/api/v1/dashboard")).query(&range(now)).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
            answers.push((cache, response.json::<Value>().await.unwrap()["runs"].as_i64().unwrap()));
        }
        if answers[1].0 == "hit" {
            return answers[1].1;
        }
    }
    panic!("{base}: the dashboard is never answered from the cache: {answers:?}");
}

fn range(now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    vec![("from", (now - TimeDelta::days(3)).to_rfc3339()), ("to", (now + TimeDelta::hours(1)).to_rfc3339())]
}

async fn get_json(base: &str, path: &str, query: &[(&str, String)]) -> Value {
    let response = reqwest::Client::new().get(format!("{base}{path}")).query(query).send().await.unwrap();
    assert_eq!(response.status(), 200, "{base}{path}");
    response.json().await.unwrap()
}

/// Waits for updates pushed by the service at `base` until its dashboard shows the model's total
/// of runs; then checks the dashboard's counts. Every wait needs a push: a service that never
/// invalidates on landing fails here.
async fn pushed_until_fresh(what: &str, base: &str, sse: &mut SseClient, events: &[TestEvent], now: DateTime<Utc>) {
    let want = model::summary(events, None);
    let started = Instant::now();
    loop {
        let update = sse.wait_for(Duration::from_secs(60), |name, _| name == "update").await;
        assert!(update.is_some(), "{what}: no update pushed within 60 s");
        let got = get_json(base, "/api/v1/dashboard", &range(now)).await;
        if got["runs"].as_i64() == Some(want.runs) {
            assert_eq!(
                (got["passed"].as_i64(), got["failed"].as_i64(), got["skipped"].as_i64()),
                (Some(want.passed), Some(want.failed), Some(want.skipped)),
                "{what}: {got}"
            );
            assert!(close(got["pass_rate"].as_f64(), want.pass_rate), "{what}: {got}");
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}: the dashboard never showed {} runs", want.runs);
    }
}

/// The service's trends of `interval` equal the model's, bucket for bucket.
async fn api_trends_equal_the_model(
    what: &str,
    base: &str,
    interval: &str,
    want: &BTreeMap<Key, Trend>,
    now: DateTime<Utc>,
) {
    let mut query = range(now);
    query.extend([("interval", interval.to_owned()), ("size", "100000".to_owned())]);
    let got = get_json(base, "/api/v1/trends", &query).await;
    let rows = got["rows"].as_array().unwrap_or_else(|| panic!("{what}: {got}"));
    let mut seen = BTreeMap::new();
    for row in rows {
        let start: DateTime<Utc> = row["bucket_start"].as_str().unwrap().parse().unwrap();
        let s = |k: &str| row[k].as_str().unwrap().to_owned();
        let key = (start, s("repository"), s("branch"), s("suite"));
        let w = want.get(&key).unwrap_or_else(|| panic!("{what} {interval}: a bucket the model has not: {row}"));
        let int = |k: &str| row[k].as_i64();
        assert_eq!(
            [int("runs"), int("passed"), int("failed"), int("skipped"), int("tests"), int("flaky_tests")],
            [w.runs, w.passed, w.failed, w.skipped, w.tests, w.flaky_tests].map(Some),
            "{what} {interval}: {row}"
        );
        for (name, b) in [
            ("pass_rate", w.pass_rate),
            ("duration_avg_ms", w.duration_avg_ms),
            ("duration_p50_ms", w.duration_p50_ms),
            ("duration_p90_ms", w.duration_p90_ms),
            ("duration_p95_ms", w.duration_p95_ms),
            ("duration_p99_ms", w.duration_p99_ms),
            ("duration_max_ms", w.duration_max_ms),
        ] {
            assert!(close(row[name].as_f64(), b), "{what} {interval} {name}: got {row}, want {b:?}");
        }
        assert!(seen.insert(key, ()).is_none(), "{what} {interval}: a bucket twice: {row}");
    }
    assert_eq!(seen.len(), want.len(), "{what} {interval}: every bucket of the model");
}

/// Once the service's flaky scores cover every scored event, every test's numbers equal the
/// model's over the snapshot's window (30 days, outage share 0.8: compute's defaults).
async fn flaky_scores_equal_the_model(what: &str, base: &str, events: &[TestEvent]) {
    let scored = events.iter().filter(|e| e.status != testlake_schemas::Status::Skipped).count() as i64;
    let query = [("state", "all".to_owned()), ("size", "100000".to_owned())];
    let started = Instant::now();
    let flaky = loop {
        let flaky = get_json(base, "/api/v1/flaky", &query).await;
        let covered: i64 = flaky["rows"]
            .as_array()
            .map(|rows| {
                rows.iter().map(|r| r["executions"].as_i64().unwrap() + r["outage_executions"].as_i64().unwrap()).sum()
            })
            .unwrap_or(0);
        if covered == scored {
            break flaky;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}: flaky scores cover {covered} of {scored}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let as_of: DateTime<Utc> = flaky["as_of"].as_str().unwrap().parse().unwrap();
    let expected = model::flaky_numbers(events, as_of - TimeDelta::days(30), as_of, 0.8);
    let rows = flaky["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "{what}: one score per test");
    for row in rows {
        let key = (row["repository"].as_str().unwrap().to_owned(), row["test_id"].as_str().unwrap().to_owned());
        let want = &expected[&key];
        let got = ["executions", "failures", "same_commit_flakes", "flips", "outage_executions"]
            .map(|k| row[k].as_i64().unwrap());
        assert_eq!(
            got,
            [want.executions, want.failures, want.same_commit_flakes, want.flips, want.outage_executions],
            "{what}: {row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_share_one_lake_and_survive_kills() {
    let started = Instant::now();
    // Restarted members resume mid-batch: only the sqlite engine fetches that correctly.
    let broker = Broker::start_with(Storage::Sqlite);
    let lake = TestLake::start(Backend::Moto);
    let logs = tempfile::tempdir().unwrap();
    let d = Deployment {
        broker,
        lake,
        topic: unique_topic("procs"),
        group: unique_topic("g"),
        landed: unique_topic("landed"),
        logs: logs.path().to_owned(),
    };
    let brokers = d.broker.bootstrap();
    testlake::kafka::ensure_topic(&brokers, &d.topic, 2).await.unwrap();
    testlake::kafka::ensure_topic(&brokers, &d.landed, 1).await.unwrap();

    let ((mut serve_a, base_a), (mut serve_b, mut base_b)) = (d.serve("serve-a"), d.serve("serve-b"));
    let (mut compute_a, mut compute_b) = (d.compute("compute-a-1"), d.compute("compute-b"));
    let now = Utc::now();
    let mut sse_a = dashboard_stream(&base_a).await;
    let mut sse_b = dashboard_stream(&base_b).await;
    // Empty dashboards, cached: only invalidation on landing shows the numbers later.
    assert_eq!(cache_dashboard(&base_a, now).await, 0);
    assert_eq!(cache_dashboard(&base_b, now).await, 0);
    let (mut ingest_a, mut ingest_b) = (d.ingest("ingest-a-1"), d.ingest("ingest-b"));

    // Eight CI runs ten minutes apart, ending about now, produced one at a time while the
    // processes run; one process of each kind is killed and restarted between them.
    let mut fleet = Fleet::new(FleetConfig { seed: 14, repositories: 2, ..FleetConfig::default() });
    let (mut events, mut produced): (Vec<TestEvent>, Vec<Produced>) = (Vec::new(), Vec::new());
    const ROUNDS: i64 = 8;
    for round in 0..ROUNDS {
        let run = fleet.run(now - TimeDelta::minutes(10 * (ROUNDS - round)));
        produced.extend(produce_events(&brokers, &d.topic, &run).await);
        events.extend(run);
        tokio::time::sleep(Duration::from_millis(400)).await;
        match round {
            1 => {
                // Killed while it owns partitions and data keeps coming.
                let deadline = Instant::now() + Duration::from_secs(30);
                while last_assignment(&d.log("ingest-a-1")).is_none_or(|p| p.trim() == "[]") {
                    assert!(Instant::now() < deadline, "ingest a was never assigned a partition");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                kill(&mut ingest_a);
                ingest_a = d.ingest("ingest-a-2");
            }
            3 => {
                // Killed once it has recomputed something, with more landing behind it.
                wait_for_log(&d.log("compute-a-1"), "outcome=\"completed\"");
                kill(&mut compute_a);
                compute_a = d.compute("compute-a-2");
            }
            5 => {
                kill(&mut serve_b);
                let (restarted, base) = d.serve("serve-b-2");
                (serve_b, base_b) = (restarted, base);
                sse_b = dashboard_stream(&base_b).await;
                let cached = cache_dashboard(&base_b, now).await;
                eprintln!("restarted serve b cached a dashboard of {cached} runs");
            }
            _ => {}
        }
    }
    eprintln!("{} events produced in {:.1?}", produced.len(), started.elapsed());

    // Every produced event lands once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let landed = loop {
        let landed = landed_ids_in(&d.lake.lake).await;
        if landed.len() >= produced.len() || Instant::now() > deadline {
            break landed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_exactly_once("two ingest members, one killed and restarted", &produced, &landed);
    eprintln!("landed in {:.1?}", started.elapsed());

    // Compute catches up: the daily trends count every event.
    let deadline = Instant::now() + Duration::from_secs(60);
    while trend_runs(&d.lake.lake).await != events.len() as i64 {
        assert!(Instant::now() < deadline, "compute never counted every event in trends_daily");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Both services were pushed the landing and answer the model.
    pushed_until_fresh("serve a", &base_a, &mut sse_a, &events, now).await;
    pushed_until_fresh("serve b (restarted)", &base_b, &mut sse_b, &events, now).await;
    let (hourly, daily) = (model::trends(&events, TimeDelta::hours(1)), model::trends(&events, TimeDelta::days(1)));
    for (what, base) in [("serve a", &base_a), ("serve b", &base_b)] {
        api_trends_equal_the_model(what, base, "hourly", &hourly, now).await;
        api_trends_equal_the_model(what, base, "daily", &daily, now).await;
    }
    flaky_scores_equal_the_model("serve a", &base_a, &events).await;
    flaky_scores_equal_the_model("serve b", &base_b, &events).await;
    eprintln!("checked in {:.1?}", started.elapsed());

    // Both compute processes did part of the work (a date recomputed under its lease).
    for name in ["compute-a-2", "compute-b"] {
        let log = std::fs::read_to_string(d.log(name)).unwrap();
        let completed = log.matches("outcome=\"completed\"").count();
        eprintln!("{name}: {completed} tasks completed");
    }

    for process in [&mut ingest_a, &mut ingest_b, &mut compute_a, &mut compute_b, &mut serve_a, &mut serve_b] {
        signal(process, 15);
    }
    for process in [&mut ingest_a, &mut ingest_b, &mut compute_a, &mut compute_b, &mut serve_a, &mut serve_b] {
        let _ = process.wait();
    }
}
