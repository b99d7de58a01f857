//! The whole pipeline on real parts: a tansu broker, an object store (the local filesystem, and
//! S3: a bucket on s3s-fs), the all-in-one stack. Checks the lake and the API against an
//! independent computation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use testlake::fleet::{Fleet, FleetConfig};
use testlake::stack::{Stack, StackConfig};
use testlake_compute::ComputeConfig;
use testlake_ingest::{FlushPolicy, IngestConfig};
use testlake_query::ServeConfig;
use testlake_schemas::{Lake, Status, TestEvent};
use testlake_tests::model::{self, Key, Trend, close};
use testlake_tests::{Backend, Broker, TestLake, unique_topic};
use tokio_util::sync::CancellationToken;

/// Malformed messages, each with the reason code the dead-letter table must give it.
fn malformed(now: DateTime<Utc>) -> Vec<(Vec<u8>, &'static str)> {
    let good = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({
            "schema_version": 1, "event_id": uuid::Uuid::new_v4().to_string(), "repository": "acme/bad",
            "branch": "main", "commit_sha": "c", "run_id": "r", "suite": "s", "test_id": "s.t",
            "status": "passed", "duration_ms": 1, "finished_at": now.to_rfc3339()
        });
        f(&mut v);
        v.to_string().into_bytes()
    };
    let mut out = vec![
        (b"not json at all".to_vec(), "invalid_json"),
        (b"{\"schema_version\": 1,".to_vec(), "invalid_json"),
        (vec![0xff, 0xfe, 0x00], "not_utf8"),
        (b"".to_vec(), "invalid_json"),
        (b"[1, 2, 3]".to_vec(), "invalid_json"),
    ];
    for i in 0..8 {
        out.push((good(&|v| drop(v.as_object_mut().unwrap().remove("status"))), "missing_field"));
        out.push((good(&|v| v["status"] = json!("flaky")), "invalid_value"));
        out.push((good(&|v| v["duration_ms"] = json!("fast")), "wrong_type"));
        out.push((good(&|v| v["schema_version"] = json!(2 + i)), "unknown_schema_version"));
        out.push((good(&|v| v["finished_at"] = json!("2099-01-01T00:00:00Z")), "timestamp_out_of_range"));
        out.push((good(&|v| v["repository"] = json!("r".repeat(5000))), "field_too_large"));
    }
    out
}

/// Runs `sql` over the lake's folders. A read racing compute's atomic replace of a file fails
/// (the size listed no longer matches the file): it is read again from a fresh listing, as the
/// query service does.
async fn query_lake(lake: &Lake, sql: &str) -> Vec<RecordBatch> {
    let mut attempt = 0;
    loop {
        let ctx = testlake_compute::catalog::lake_session(lake).await.unwrap();
        match ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await {
            Ok(batches) => return batches,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("{sql}: read raced a replace, again: {e}");
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

async fn count(lake: &Lake, sql: &str) -> i64 {
    let batches = query_lake(lake, sql).await;
    batches.first().map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0))
}

fn opt_f64(b: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let c = b.column_by_name(name).unwrap().as_primitive::<Float64Type>();
    (!c.is_null(row)).then(|| c.value(row))
}

/// Reads a trends table from the lake into the model's shape.
async fn lake_trends(lake: &Lake, table: &str) -> BTreeMap<Key, Trend> {
    let mut out = BTreeMap::new();
    for b in query_lake(lake, &format!("SELECT * FROM {table}")).await {
        for row in 0..b.num_rows() {
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().value(row).to_owned();
            let i = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Int64Type>().value(row);
            let start = b.column_by_name("bucket_start").unwrap().as_primitive::<TimestampMicrosecondType>().value(row);
            let key = (DateTime::from_timestamp_micros(start).unwrap(), s("repository"), s("branch"), s("suite"));
            let trend = Trend {
                runs: i("runs"),
                passed: i("passed"),
                failed: i("failed"),
                skipped: i("skipped"),
                pass_rate: opt_f64(&b, "pass_rate", row),
                duration_avg_ms: opt_f64(&b, "duration_avg_ms", row),
                duration_p50_ms: opt_f64(&b, "duration_p50_ms", row),
                duration_p90_ms: opt_f64(&b, "duration_p90_ms", row),
                duration_p95_ms: opt_f64(&b, "duration_p95_ms", row),
                duration_p99_ms: opt_f64(&b, "duration_p99_ms", row),
                duration_max_ms: opt_f64(&b, "duration_max_ms", row),
                tests: i("tests"),
                flaky_tests: i("flaky_tests"),
            };
            assert!(out.insert(key.clone(), trend).is_none(), "duplicate bucket {key:?} in {table}");
        }
    }
    out
}

fn assert_trends_equal(table: &str, got: &BTreeMap<Key, Trend>, want: &BTreeMap<Key, Trend>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{table}: bucket keys");
    for (key, w) in want {
        let g = &got[key];
        let exact = (g.runs, g.passed, g.failed, g.skipped, g.tests, g.flaky_tests);
        assert_eq!(exact, (w.runs, w.passed, w.failed, w.skipped, w.tests, w.flaky_tests), "{table} {key:?}");
        for (name, a, b) in [
            ("pass_rate", g.pass_rate, w.pass_rate),
            ("avg", g.duration_avg_ms, w.duration_avg_ms),
            ("max", g.duration_max_ms, w.duration_max_ms),
        ] {
            assert!(close(a, b), "{table} {key:?} {name}: got {a:?}, want {b:?}");
        }
        // Percentiles are exact (compute/src/percentiles.rs): equal to the model's to rounding.
        for (name, a, b) in [
            ("p50", g.duration_p50_ms, w.duration_p50_ms),
            ("p90", g.duration_p90_ms, w.duration_p90_ms),
            ("p95", g.duration_p95_ms, w.duration_p95_ms),
            ("p99", g.duration_p99_ms, w.duration_p99_ms),
        ] {
            assert!(close(a, b), "{table} {key:?} {name}: got {a:?}, want {b:?}");
        }
    }
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lands_every_event_once_and_numbers_match() {
    pipeline(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lands_every_event_once_and_numbers_match_on_s3() {
    pipeline(Backend::S3sFs).await;
}

async fn pipeline(backend: Backend) {
    let run = Run::start(backend).await;
    every_event_lands_exactly_once(&run).await;
    copies_are_listed_and_left_out(&run).await;
    malformed_messages_are_rejected_with_their_reason(&run).await;
    trends_equal_the_model(&run).await;
    dashboard_and_trends_answer_the_model(&run).await;
    pages_etag_csv_and_arrow_agree(&run).await;
    let flaky = flaky_scores_equal_the_model(&run).await;
    health_follows_the_formula(&run, &flaky.rows).await;
    compare_splits_today_from_yesterday(&run).await;
    history_lists_one_tests_executions(&run, flaky.expected.keys().next().unwrap()).await;
    sql_answers_over_http_and_cli(&run).await;
    bad_requests_are_400s(&run).await;
    run.shutdown().await;
}

/// What the phases share: the events produced and the model's trends of them, the malformed
/// messages, the lake they land in and the stack's API over it.
struct Run {
    /// Every event once: what every number must count.
    events: Vec<TestEvent>,
    /// Exact copies of every 20th event, re-sent under another key (so to other partitions,
    /// flushes and files, across every hour) after all the events: a producer retrying.
    resent: Vec<TestEvent>,
    /// The model's trends of `events`, hour and day buckets.
    hourly: BTreeMap<Key, Trend>,
    daily: BTreeMap<Key, Trend>,
    bad: Vec<(Vec<u8>, &'static str)>,
    /// How many malformed messages were produced (one before every 60th event).
    bad_sent: usize,
    lake: Lake,
    test_lake: TestLake,
    /// The API's base address, `http://127.0.0.1:<port>`.
    base: String,
    now: DateTime<Utc>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The events' topic.
    topic: String,
    broker: Broker,
}

impl Run {
    /// Produces ~3,000 events from 30 CI runs an hour apart, ending now (at least two UTC dates),
    /// with a malformed message before every 60th, then a copy of every 20th event, and starts
    /// the stack on them.
    async fn start(backend: Backend) -> Self {
        let broker = Broker::start();
        let topic = unique_topic("e2e");
        testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 3).await.unwrap();

        let now = Utc::now();
        let mut fleet = Fleet::new(FleetConfig { seed: 7, ..FleetConfig::default() });
        let events: Vec<TestEvent> =
            (0..30).flat_map(|i| fleet.run(now - TimeDelta::hours(30) + TimeDelta::hours(i))).collect();
        let bad = malformed(now);
        assert!(events.len() > 2500, "{} events", events.len());
        produce(&broker.bootstrap(), &topic, &events, &bad).await;
        let bad_sent = events.len().div_ceil(60);
        let resent: Vec<TestEvent> = events.iter().step_by(20).cloned().collect();
        resend(&broker.bootstrap(), &topic, &resent).await;

        let test_lake = TestLake::start(backend);
        let mut ingest = IngestConfig::new(broker.bootstrap(), &topic);
        ingest.group_id = unique_topic("group");
        // Fewer, larger files on S3, where compute reads each with a few requests of milliseconds.
        let (max_rows, max_age) = if backend == Backend::Local {
            (1000, Duration::from_millis(200))
        } else {
            (10_000, Duration::from_secs(1))
        };
        ingest.flush = FlushPolicy { max_rows, max_age, ..FlushPolicy::default() };
        let config = StackConfig {
            lake: test_lake.location().to_owned(),
            lake_options: test_lake.options().to_vec(),
            ingest,
            // Off: this test reads the folders, which show a compacted hour twice during the grace
            // (tests/tests/compaction.rs covers compaction).
            compact: testlake_ingest::CompactConfig::off(),
            // On S3 every file read is a few requests of milliseconds each (the debug build, s3s-fs
            // on the same two cores): a cycle reading every file takes seconds, which the
            // 2-second cadence would report as unhealthy.
            compute: if backend == Backend::Local {
                ComputeConfig {
                    interval: Duration::from_secs(2),
                    debounce: Duration::from_millis(100),
                    flaky_refresh: Duration::from_millis(500),
                    ..ComputeConfig::default()
                }
            } else {
                ComputeConfig {
                    interval: Duration::from_secs(10),
                    debounce: Duration::from_millis(100),
                    flaky_refresh: Duration::from_secs(3),
                    ..ComputeConfig::default()
                }
            },
            serve: ServeConfig::new("127.0.0.1:0".parse().unwrap()),
            refresh_caches: true,
        };
        let shutdown = CancellationToken::new();
        let stack = Stack::start(config, shutdown.clone()).await.unwrap();
        let (lake, base) = (stack.lake.clone(), format!("http://{}", stack.addr));
        let running = tokio::spawn(stack.wait());
        Self {
            hourly: model::trends(&events, TimeDelta::hours(1)),
            daily: model::trends(&events, TimeDelta::days(1)),
            events,
            resent,
            bad,
            bad_sent,
            lake,
            test_lake,
            base,
            now,
            http: reqwest::Client::new(),
            shutdown,
            running,
            topic,
            broker,
        }
    }

    /// How many valid events were produced.
    fn valid(&self) -> i64 {
        self.events.len() as i64
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET of `path` over the common range (three days back to an hour ahead) and `extra`.
    fn request(&self, path: &str, extra: Vec<(&str, String)>) -> reqwest::RequestBuilder {
        let mut params = vec![
            ("from", (self.now - TimeDelta::days(3)).to_rfc3339()),
            ("to", (self.now + TimeDelta::hours(1)).to_rfc3339()),
        ];
        params.extend(extra);
        self.http.get(self.url(path)).query(&params)
    }

    async fn get(&self, path: &str, extra: Vec<(&str, String)>) -> reqwest::Response {
        self.request(path, extra).send().await.unwrap()
    }

    async fn get_json(&self, path: &str, extra: Vec<(&str, String)>) -> Value {
        self.get(path, extra).await.json().await.unwrap()
    }

    /// `GET path?query` without the common range, as JSON.
    async fn get_json_without_range(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.http.get(self.url(path)).query(query).send().await.unwrap().json().await.unwrap()
    }

    async fn sql(&self, body: Value) -> reqwest::Response {
        self.http.post(self.url("/api/v1/sql")).json(&body).send().await.unwrap()
    }

    /// Waits until `sql`, a count over the lake, satisfies `done`.
    async fn wait_for_count(&self, what: &str, timeout: Duration, sql: &str, done: impl Fn(i64) -> bool) {
        wait_for(what, timeout, || {
            let lake = self.lake.clone();
            let done = &done;
            async move { done(count(&lake, sql).await) }
        })
        .await;
    }

    /// Stops the stack and checks every stage stopped cleanly.
    async fn shutdown(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running).await.expect("stack stops").unwrap().unwrap();
    }
}

/// Produces `events` keyed by test id, `bad`'s messages in turn before every 60th, and waits for
/// every delivery.
async fn produce(bootstrap: &str, topic: &str, events: &[TestEvent], bad: &[(Vec<u8>, &'static str)]) {
    let producer = testlake::kafka::producer(bootstrap).unwrap();
    let mut sends = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let payload = e.to_json();
        let record = FutureRecord::to(topic).key(&e.test_id).payload(&payload);
        sends.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
        if i % 60 == 0 {
            let (payload, _) = &bad[(i / 60) % bad.len()];
            let record = FutureRecord::<(), _>::to(topic).payload(payload);
            sends.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
        }
    }
    for s in sends {
        s.await.expect("delivery reported").map_err(|(e, _)| e).expect("delivered");
    }
}

/// Produces copies of `events` keyed by event id (not test id, as the originals were), and waits
/// for every delivery.
async fn resend(bootstrap: &str, topic: &str, events: &[TestEvent]) {
    let producer = testlake::kafka::producer(bootstrap).unwrap();
    let mut sends = Vec::new();
    for e in events {
        let (key, payload) = (e.event_id.to_string(), e.to_json());
        sends.push(
            producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)).map_err(|(e, _)| e).unwrap(),
        );
    }
    for s in sends {
        s.await.expect("delivery reported").map_err(|(e, _)| e).expect("delivered");
    }
}

/// How often each event id is in the lake's folders, and how many rows they hold per Kafka
/// message (each must be one).
async fn landed_ids(run: &Run) -> (BTreeMap<String, usize>, BTreeMap<(i32, i64), usize>) {
    let (mut ids, mut messages) = (BTreeMap::new(), BTreeMap::new());
    for b in query_lake(&run.lake, "SELECT event_id, kafka_partition, kafka_offset FROM results").await {
        let (partitions, offsets) = (b.column(1).as_primitive::<Int32Type>(), b.column(2).as_primitive::<Int64Type>());
        for (row, id) in b.column(0).as_string::<i32>().iter().enumerate() {
            *ids.entry(id.unwrap().to_owned()).or_default() += 1;
            *messages.entry((partitions.value(row), offsets.value(row))).or_default() += 1;
        }
    }
    (ids, messages)
}

/// Every produced message lands exactly once (caught up is judged by what landed, never by the
/// broker's watermark): each event once, and again for each copy of it.
async fn every_event_lands_exactly_once(run: &Run) {
    let sent = run.valid() + run.resent.len() as i64;
    let sql = "SELECT count(*) FROM results";
    run.wait_for_count("every message to land", Duration::from_secs(120), sql, |n| n >= sent).await;
    let (landed, messages) = landed_ids(run).await;
    let mut produced: BTreeMap<String, usize> = run.events.iter().map(|e| (e.event_id.to_string(), 1)).collect();
    for e in &run.resent {
        *produced.get_mut(&e.event_id.to_string()).unwrap() += 1;
    }
    assert_eq!(landed, produced, "the lake holds every produced message's event once");
    assert!(messages.values().all(|&n| n == 1), "no message landed twice");
}

/// The copies re-sent with the events, and copies re-sent later with another status and
/// duration, are listed in the SQL table `duplicates` — the later ones as conflicts naming the
/// columns that differ — and left out of `results` (every later phase checks the numbers).
async fn copies_are_listed_and_left_out(run: &Run) {
    let conflicting: Vec<TestEvent> = run
        .events
        .iter()
        .skip(7)
        .step_by(400)
        .map(|e| {
            let mut copy = e.clone();
            copy.status = if e.status == Status::Passed { Status::Failed } else { Status::Passed };
            copy.duration_ms += 1.0;
            copy
        })
        .collect();
    resend(&run.broker.bootstrap(), &run.topic, &conflicting).await;
    let sent = run.valid() + (run.resent.len() + conflicting.len()) as i64;
    let sql = "SELECT count(*) FROM results";
    run.wait_for_count("the conflicting copies to land", Duration::from_secs(60), sql, |n| n >= sent).await;

    let answer: Value = run
        .sql(json!({"sql": "SELECT event_id, conflict, differs FROM duplicates ORDER BY event_id", "max_rows": 10000}))
        .await
        .json()
        .await
        .unwrap();
    let rows = answer["rows"].as_array().unwrap_or_else(|| panic!("{answer}"));
    let mut want: BTreeMap<String, Value> =
        run.resent.iter().map(|e| (e.event_id.to_string(), json!({"conflict": false}))).collect();
    for e in &conflicting {
        want.insert(e.event_id.to_string(), json!({"conflict": true, "differs": "status,duration_ms"}));
    }
    let mut got = BTreeMap::new();
    for row in rows {
        let mut fields = json!({"conflict": row["conflict"]});
        if row["conflict"] == true {
            fields["differs"] = row["differs"].clone();
        }
        assert!(got.insert(row["event_id"].as_str().unwrap().to_owned(), fields).is_none(), "{row}");
    }
    assert_eq!(got, want, "one row per copy left out");
}

/// Every malformed message is rejected with its reason.
async fn malformed_messages_are_rejected_with_their_reason(run: &Run) {
    let bad_sent = run.bad_sent as i64;
    let sql = "SELECT count(*) FROM rejected";
    run.wait_for_count("every malformed message to be rejected", Duration::from_secs(60), sql, |n| n >= bad_sent).await;
    let mut expected_reasons: BTreeMap<Vec<u8>, &str> = BTreeMap::new();
    for i in (0..run.events.len()).step_by(60) {
        let (payload, code) = &run.bad[(i / 60) % run.bad.len()];
        expected_reasons.insert(payload.clone(), code);
    }
    let mut rejected = 0;
    for b in query_lake(&run.lake, "SELECT payload, reason_code, reason FROM rejected").await {
        let payloads = b.column(0).as_binary::<i32>();
        for row in 0..b.num_rows() {
            let payload = if payloads.is_null(row) { vec![] } else { payloads.value(row).to_vec() };
            let code = b.column(1).as_string::<i32>().value(row);
            let reason = b.column(2).as_string::<i32>().value(row);
            assert_eq!(
                Some(&code),
                expected_reasons.get(&payload),
                "reason for {:?}: {reason}",
                String::from_utf8_lossy(&payload)
            );
            assert!(!reason.is_empty());
            rejected += 1;
        }
    }
    assert_eq!(rejected, run.bad_sent);
}

/// The hourly and daily trends tables equal the independent computation, once compute has
/// caught up.
async fn trends_equal_the_model(run: &Run) {
    let valid = run.valid();
    let sql = "SELECT CAST(sum(runs) AS BIGINT) FROM trends_daily";
    run.wait_for_count("trends to cover every event", Duration::from_secs(60), sql, |n| n == valid).await;
    assert_trends_equal("trends_hourly", &lake_trends(&run.lake, "trends_hourly").await, &run.hourly);
    assert_trends_equal("trends_daily", &lake_trends(&run.lake, "trends_daily").await, &run.daily);
    // The same runs per date as an independent Delta reader (PyPI deltalake and polars) reads the
    // computed tables.
    let location = run.test_lake.location();
    let env = run.test_lake.env_via(None);
    for (table, model) in [("trends_hourly", &run.hourly), ("trends_daily", &run.daily)] {
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for (key, trend) in model {
            *want.entry(key.0.date_naive().to_string()).or_default() += trend.runs;
        }
        assert_eq!(testlake_tests::delta::delta_sums(location, &env, table, "runs"), want, "{table} read as Delta");
    }
}

/// The HTTP API's health, dashboard (all and one repository) and daily trends answer the model's
/// numbers.
async fn dashboard_and_trends_answer_the_model(run: &Run) {
    // Every component healthy: compute's last round succeeded. A round may fail on a transient
    // store error (and is logged); health is judged on the state the next rounds settle in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = run.get_json_without_range("/healthz", &[]).await;
        if health["status"] == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "not healthy within 30 s: {health}");
        eprintln!("health: {health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for repository in [None, Some("acme/checkout")] {
        let extra = repository.map(|r| vec![("repository", r.to_owned())]).unwrap_or_default();
        let response = run.get("/api/v1/dashboard", extra).await;
        assert_eq!(response.status(), 200);
        let got: Value = response.json().await.unwrap();
        let want = model::summary(&run.events, repository);
        let int = |k: &str| got[k].as_i64().unwrap_or(-1);
        assert_eq!(
            (int("runs"), int("passed"), int("failed"), int("skipped"), int("repositories")),
            (want.runs, want.passed, want.failed, want.skipped, want.repositories),
            "dashboard {repository:?}: {got}"
        );
        assert!(close(got["pass_rate"].as_f64(), want.pass_rate), "pass_rate {got}");
        assert!(close(got["duration_avg_ms"].as_f64(), want.duration_avg_ms), "avg {got} vs {want:?}");
        assert!(close(got["duration_max_ms"].as_f64(), want.duration_max_ms), "max {got}");
    }

    let response = run.get("/api/v1/trends", vec![("interval", "daily".into())]).await;
    assert_eq!(response.status(), 200);
    let got: Value = response.json().await.unwrap();
    let rows = got["rows"].as_array().unwrap();
    assert_eq!(rows.len(), run.daily.len());
    for row in rows {
        let start: DateTime<Utc> = row["bucket_start"].as_str().unwrap().parse().unwrap();
        let key = (
            start,
            row["repository"].as_str().unwrap().into(),
            row["branch"].as_str().unwrap().into(),
            row["suite"].as_str().unwrap().into(),
        );
        let want = &run.daily[&key];
        assert_eq!(row["runs"].as_i64(), Some(want.runs), "{row}");
        assert_eq!(row["flaky_tests"].as_i64(), Some(want.flaky_tests), "{row}");
        assert!(close(row["duration_p95_ms"].as_f64(), want.duration_p95_ms), "{row}");
    }
}

/// Pages follow a stable order; an unchanged answer is a 304 from the cache; CSV and Arrow IPC
/// carry the same rows.
async fn pages_etag_csv_and_arrow_agree(run: &Run) {
    // Page 2 of 10 is rows 10..20 of the whole list.
    let all = run.get_json("/api/v1/trends", vec![]).await;
    let page = run.get_json("/api/v1/trends", vec![("page", "2".into()), ("size", "10".into())]).await;
    assert_eq!(page["total"].as_u64(), Some(run.hourly.len() as u64));
    assert_eq!(page["rows"].as_array().unwrap()[..], all["rows"].as_array().unwrap()[10..20]);
    assert_eq!(page["next_page"], 3);

    // ETag and If-None-Match.
    let first = run.get("/api/v1/dashboard", vec![]).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = run.request("/api/v1/dashboard", vec![]).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["x-cache"], "hit");
    assert_eq!(again.headers()["cache-control"], "no-cache");

    let csv = run.get("/api/v1/trends", vec![("interval", "daily".into()), ("format", "csv".into())]).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("bucket_start,repository,branch,suite,runs,"), "{csv}");
    assert_eq!(csv.lines().count(), run.daily.len() + 1);
    let ipc = run
        .request("/api/v1/trends", vec![("interval", "daily".into())])
        .header("accept", "application/vnd.apache.arrow.stream")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let runs: i64 = reader
        .map(|b| b.unwrap().column_by_name("runs").unwrap().as_primitive::<Int64Type>().iter().flatten().sum::<i64>())
        .sum();
    assert_eq!(runs, run.valid());
}

/// The flaky snapshot as served (every state) and the model's numbers it matched.
struct FlakySnapshot {
    rows: Vec<Value>,
    expected: BTreeMap<(String, String), model::FlakyNumbers>,
}

/// Once the flaky scores cover every event, every test's numbers equal the model's over the
/// snapshot's window, and the default listing is the flaky tests ranked by score.
async fn flaky_scores_equal_the_model(run: &Run) -> FlakySnapshot {
    let scored_events = run.events.iter().filter(|e| e.status != testlake_schemas::Status::Skipped).count() as i64;
    let today = Utc::now().date_naive().format("%Y-%m-%d");
    let sql =
        format!("SELECT CAST(sum(executions + outage_executions) AS BIGINT) FROM flaky_scores WHERE date = '{today}'");
    run.wait_for_count("flaky scores to cover every event", Duration::from_secs(60), &sql, |n| n == scored_events)
        .await;
    let flaky = run.get_json_without_range("/api/v1/flaky", &[("state", "all"), ("size", "100000")]).await;
    assert_eq!(flaky["definition_version"], 1);
    let as_of: DateTime<Utc> = flaky["as_of"].as_str().unwrap().parse().unwrap();
    let expected = model::flaky_numbers(&run.events, as_of - TimeDelta::days(30), as_of, 0.8);
    let rows = flaky["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "one score per test");
    for row in rows {
        let key = (row["repository"].as_str().unwrap().to_owned(), row["test_id"].as_str().unwrap().to_owned());
        let want = &expected[&key];
        let got = [
            &row["executions"],
            &row["failures"],
            &row["same_commit_flakes"],
            &row["flips"],
            &row["outage_executions"],
        ]
        .map(|v| v.as_i64().unwrap());
        assert_eq!(
            got,
            [want.executions, want.failures, want.same_commit_flakes, want.flips, want.outage_executions],
            "{row}"
        );
    }
    let flaky_only = run.get_json_without_range("/api/v1/flaky", &[]).await;
    let scores: Vec<f64> =
        flaky_only["rows"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(!scores.is_empty(), "the fleet has flaky tests: {flaky_only}");
    assert!(flaky_only["rows"].as_array().unwrap().iter().all(|r| r["state"] == "flaky"));
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked by score: {scores:?}");
    FlakySnapshot { rows: rows.clone(), expected }
}

/// The health score per repository follows the documented formula, over the model's pass rate
/// and the snapshot's states (`flaky_rows`).
async fn health_follows_the_formula(run: &Run, flaky_rows: &[Value]) {
    let health = run.get_json("/api/v1/health", vec![]).await;
    let health_rows = health["rows"].as_array().unwrap();
    assert_eq!(health_rows.len(), 3, "{health}");
    for row in health_rows {
        let repository = row["repository"].as_str().unwrap();
        let states: Vec<&str> =
            flaky_rows.iter().filter(|r| r["repository"] == repository).map(|r| r["state"].as_str().unwrap()).collect();
        let share = |s: &str| states.iter().filter(|x| **x == s).count() as f64 / states.len() as f64;
        let pass_rate = model::summary(&run.events, Some(repository)).pass_rate.unwrap();
        let want = 100.0 * (0.5 * pass_rate + 0.3 * (1.0 - share("flaky")) + 0.2 * (1.0 - share("broken")));
        assert!(model::close(row["health"].as_f64(), Some(want)), "{row} vs {want}");
        assert_eq!(row["tests"].as_u64(), Some(states.len() as u64));
    }
}

/// Compare: this day against the day before — runs, failures, pass rate and new failures.
async fn compare_splits_today_from_yesterday(run: &Run) {
    let compare = run.get_json_without_range("/api/v1/compare", &[("days", "1")]).await;
    let midnight = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (today_events, yesterday_events): (Vec<TestEvent>, Vec<TestEvent>) = run
        .events
        .iter()
        .filter(|e| e.finished_at >= midnight - TimeDelta::days(1))
        .cloned()
        .partition(|e| e.finished_at >= midnight);
    for (period, es) in [("current", &today_events), ("previous", &yesterday_events)] {
        let want = model::summary(es, None);
        assert_eq!(compare[format!("{period}_runs")].as_i64(), Some(want.runs), "{period}: {compare}");
        assert_eq!(compare[format!("{period}_failed")].as_i64(), Some(want.failed), "{period}: {compare}");
        assert!(model::close(compare[format!("{period}_pass_rate")].as_f64(), want.pass_rate), "{compare}");
    }
    let failing = |es: &[TestEvent]| -> BTreeSet<(String, String)> {
        es.iter().filter(|e| e.status.is_failure()).map(|e| (e.repository.clone(), e.test_id.clone())).collect()
    };
    let ran_before: BTreeSet<(String, String)> = yesterday_events
        .iter()
        .filter(|e| e.status != testlake_schemas::Status::Skipped)
        .map(|e| (e.repository.clone(), e.test_id.clone()))
        .collect();
    let failed_before = failing(&yesterday_events);
    let new_failures =
        failing(&today_events).into_iter().filter(|t| ran_before.contains(t) && !failed_before.contains(t)).count();
    assert_eq!(compare["new_failures"].as_u64(), Some(new_failures as u64), "{compare}");
    assert_eq!(compare["newly_flaky"], Value::Null, "no snapshot of yesterday was computed: {compare}");
}

/// Drill-down: one test's executions, newest first, exactly the produced ones; without a test
/// it is a 400.
async fn history_lists_one_tests_executions(run: &Run, (repository, test_id): &(String, String)) {
    let history = run
        .get_json(
            "/api/v1/tests/history",
            vec![("repository", repository.clone()), ("test_id", test_id.clone()), ("size", "100000".into())],
        )
        .await;
    let mut want: Vec<&TestEvent> =
        run.events.iter().filter(|e| &e.repository == repository && &e.test_id == test_id).collect();
    want.sort_by_key(|e| std::cmp::Reverse((e.finished_at, e.attempt)));
    let got: Vec<&str> = history["rows"].as_array().unwrap().iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    let want: Vec<String> = want.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(got, want, "history of {test_id}");
    let missing = run.http.get(run.url("/api/v1/tests/history")).send().await.unwrap();
    assert_eq!(missing.status(), 400);
}

/// Read-only SQL over the same tables, over HTTP (JSON and CSV, capped rows, refused
/// statements) and from the command line.
async fn sql_answers_over_http_and_cli(run: &Run) {
    let valid = run.valid();
    let answer: Value = run
        .sql(json!({"sql": "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM results"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["rows"][0]["n"].as_i64(), Some(valid), "{answer}");
    assert_eq!(answer["rows"][0]["ids"].as_i64(), Some(valid), "{answer}");
    assert_eq!(answer["truncated"], false);
    let by_date: Value = run
        .sql(json!({
            "sql": "SELECT date, count(*) AS n FROM results GROUP BY date ORDER BY date", "max_rows": 1
        }))
        .await
        .json()
        .await
        .unwrap();
    let first_date = run.events.iter().map(|e| e.finished_at.date_naive()).min().unwrap();
    let on_first = run.events.iter().filter(|e| e.finished_at.date_naive() == first_date).count() as i64;
    assert_eq!(by_date["rows"][0]["date"], first_date.to_string(), "{by_date}");
    assert_eq!(by_date["rows"][0]["n"].as_i64(), Some(on_first), "{by_date}");
    assert_eq!((by_date["rows"].as_array().unwrap().len(), &by_date["truncated"]), (1, &json!(true)));
    for statement in ["DROP VIEW results", "COPY (SELECT 1) TO '/tmp/testlake-e2e-copy.csv'", "SELECT * FROM nowhere"] {
        assert_bad_request(run.sql(json!({ "sql": statement })).await, statement).await;
    }
    let text = run
        .http
        .post(run.url("/api/v1/sql?format=csv"))
        .json(&json!({"sql": "SELECT count(*) AS n FROM rejected"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, format!("n\n{}\n", run.bad_sent));
    let cli = run
        .test_lake
        .apply(std::process::Command::new(testlake_tests::testlake_binary()).arg("sql"))
        .args(["--format", "csv"])
        .arg("SELECT count(*) AS n FROM results")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(String::from_utf8_lossy(&cli.stdout), format!("n\n{valid}\n"));
}

/// Bad query parameters are 400s with a message.
async fn bad_requests_are_400s(run: &Run) {
    for (path, extra) in [
        ("/api/v1/trends", vec![("interval", "weekly".to_owned())]),
        ("/api/v1/dashboard", vec![("from", "yesterday".to_owned())]),
        ("/api/v1/dashboard", vec![("format", "xml".to_owned())]),
        ("/api/v1/trends", vec![("page", "0".to_owned())]),
        ("/api/v1/flaky", vec![("state", "sometimes".to_owned())]),
        ("/api/v1/flaky", vec![("sort", "name; DROP TABLE".to_owned())]),
        ("/api/v1/flaky", vec![("min_executions", "-1".to_owned())]),
    ] {
        let response = run.http.get(run.url(path)).query(&extra).send().await.unwrap();
        assert_bad_request(response, &format!("{path} {extra:?}")).await;
    }
}

/// A 400 whose JSON body carries a non-empty `error` message.
async fn assert_bad_request(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 400, "{what}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}
