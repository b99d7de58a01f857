//! The lake on an S3 server against the same lake in a local folder, in one run, with the release
//! binary:
//!
//! - ingest throughput: `testlake ingest` from a topic of synthetic fleet events (tansu,
//!   `memory://`) into a fresh lake, from process start to every partition's end durable in the
//!   commit log; the local folder and the S3 lake alternate, the best run of each is compared;
//! - compute: `testlake compute --once` over each lake (the day's trends and flaky scores);
//! - cache-miss latency of the query service over each lake: hourly trends (the computed tables)
//!   and a test's history (the committed `results` files), every request a distinct answer.
//!
//! The S3 server is s3s-fs (file-backed, release build, installed by `deploy/scripts/setup.sh`)
//! on 127.0.0.1, sharing the machine's cores with everything else: the ratios say what the S3
//! protocol and a server in between cost here, not what AWS's latency would.
//!
//! `cargo build --release -p testlake && cargo bench -p testlake-benches --bench lake_on_s3 [-- EVENTS]`
//! (default 1,000,000 events).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use chrono::{DateTime, SecondsFormat, Utc};
use object_store::ObjectStoreExt;
use parquet::file::reader::{FileReader, SerializedFileReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use testlake_benches::report;
use testlake_ingest::log_writer::PartitionLog;
use testlake_schemas::Lake;
use testlake_schemas::log_reader::CommittedFiles;
use testlake_tests::s3::S3Server;
use testlake_tests::{Backend, Broker, unique_topic};

const PARTITIONS: i32 = 4;
/// Ingest runs per backend, alternating; the best of each is compared.
const ROUNDS: usize = 2;
/// Requests per kind of cache miss.
const MISSES: usize = 40;

fn release_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target/release").join("testlake");
    assert!(bin.is_file(), "{} is missing: run `cargo build --release -p testlake` first", bin.display());
    bin
}

/// Where a run's lake lives: a folder, or a prefix of the S3 server's bucket.
struct Target<'a> {
    name: &'static str,
    location: String,
    /// The S3 server, for the lake's options and a process's `AWS_*` variables.
    server: Option<&'a S3Server>,
}

impl Target<'_> {
    fn lake(&self) -> Lake {
        Lake::open_with(&self.location, &self.server.map(S3Server::options).unwrap_or_default()).expect("lake")
    }

    fn command(&self, binary: &std::path::Path) -> Command {
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                command.env_remove(key);
            }
        }
        command.envs(self.server.map(|s| s.env(None)).unwrap_or_default());
        command.env("RUST_LOG", std::env::var("TESTLAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
        command
    }
}

/// Each partition's end (its last offset + 1), found by reading the `events` messages of the
/// topic once: tansu's `memory://` engine reports a high watermark behind its last record batch
/// (19,934 of 20,000 messages in one trial, all 20,000 there to read).
fn ends(brokers: &str, topic: &str, events: u64) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_topic("ends"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let (mut ends, mut read) = (BTreeMap::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < events {
        assert!(Instant::now() < deadline, "read {read} of {events} messages back");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            ends.insert(message.partition(), message.offset() + 1);
            read += 1;
        }
    }
    ends
}

/// Rows in the lake's committed `results` files, from their Parquet footers (each file read whole).
async fn committed_rows(lake: &Lake) -> i64 {
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await.expect("refresh");
    let mut rows = 0;
    for date in committed.dates() {
        for path in committed.results_for(date) {
            let bytes = lake.store().get(&lake.path(&path)).await.expect("get").bytes().await.expect("bytes");
            rows += SerializedFileReader::new(bytes).expect("parquet").metadata().file_metadata().num_rows();
        }
    }
    rows
}

/// One `testlake ingest` from the topic's start into `target`, until the commit log says every
/// partition's end landed; the time it took.
async fn ingest(
    binary: &std::path::Path,
    target: &Target<'_>,
    brokers: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> Duration {
    let lake = target.lake();
    let started = Instant::now();
    let mut child = target
        .command(binary)
        .args(["ingest", "--brokers", brokers, "--topic", topic, "--group", &unique_topic("g")])
        .args(["--lake", &target.location, "--landed-topic", "", "--compact-every", "0s"])
        .spawn()
        .expect("spawn testlake ingest");
    loop {
        let mut done = true;
        for (&p, &end) in ends {
            let durable = PartitionLog::durable_offset(&lake, topic, p).await.expect("the commit log");
            done &= durable.is_some_and(|d| d >= end);
        }
        if done {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "ingest exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

/// `testlake compute --once` over `target`; the time it took.
fn compute_once(binary: &std::path::Path, target: &Target<'_>) -> Duration {
    let started = Instant::now();
    let status = target
        .command(binary)
        .args(["compute", "--once", "--lake", &target.location])
        .status()
        .expect("run testlake compute");
    assert!(status.success(), "testlake compute --once on {}", target.name);
    started.elapsed()
}

/// Cache-miss latencies (sorted) of the query service over `lake`: hourly trends with a distinct
/// `to` each, and the history of a distinct test each.
async fn misses(lake: &Lake, tests: &[(String, String)]) -> (Vec<Duration>, Vec<Duration>) {
    let config = testlake_query::ServeConfig::new("127.0.0.1:0".parse().expect("addr"));
    let state = Arc::new(testlake_query::AppState::new(lake.clone(), &config));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(testlake_query::serve(config, state, None, shutdown.clone(), Some(bound_tx)));
    let base = format!("http://{}", bound_rx.await.expect("bound"));
    let http = reqwest::Client::new();
    let now: DateTime<Utc> = Utc::now();
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let get = async |query: Vec<(&str, String)>, path: &str| {
        let sent = Instant::now();
        let response = http.get(format!("{base}{path}")).query(&query).send().await.expect("request");
        assert_eq!(response.status(), 200, "{path} {query:?}");
        response.bytes().await.expect("body");
        sent.elapsed()
    };
    let mut trends = Vec::new();
    for i in 0..MISSES {
        let range = vec![
            ("interval", "hourly".to_owned()),
            ("from", time(now - chrono::Duration::days(2))),
            ("to", time(now + chrono::Duration::microseconds(i as i64))),
        ];
        trends.push(get(range, "/api/v1/trends").await);
    }
    let mut history = Vec::new();
    for (repository, test_id) in tests.iter().take(MISSES) {
        let query = vec![("repository", repository.clone()), ("test_id", test_id.clone())];
        history.push(get(query, "/api/v1/tests/history").await);
    }
    shutdown.cancel();
    trends.sort();
    history.sort();
    (trends, history)
}

/// Distinct (repository, test_id) pairs of the lake's results.
async fn some_tests(lake: &Lake) -> Vec<(String, String)> {
    let ctx = testlake_compute::catalog::lake_session(lake).await.expect("session");
    let sql = format!("SELECT DISTINCT repository, test_id FROM results ORDER BY 1, 2 LIMIT {MISSES}");
    let batches = ctx.sql(&sql).await.expect("plan").collect().await.expect("tests");
    let mut tests = Vec::new();
    for b in batches {
        let (repositories, ids) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        tests.extend((0..b.num_rows()).map(|row| (repositories.value(row).to_owned(), ids.value(row).to_owned())));
    }
    tests
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    println!("load average at start: {}", load());
    let binary = release_binary();
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    let topic = unique_topic("bench");
    testlake::kafka::ensure_topic(&brokers, &topic, PARTITIONS).await.expect("topic");
    let produced = Instant::now();
    let status = Command::new(&binary)
        .args(["produce", "--brokers", &brokers, "--topic", &topic, "--landed-topic", ""])
        .args(["--synthetic", "--rate", "0", "--count", &events.to_string(), "--repositories", "8"])
        .env("RUST_LOG", "warn")
        .status()
        .expect("run testlake produce");
    assert!(status.success(), "testlake produce");
    let ends = ends(&brokers, &topic, events);
    println!("produced {events} events in {:.1} s", produced.elapsed().as_secs_f64());

    let server = S3Server::start(Backend::S3sFs, "bench");
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut best: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut last: BTreeMap<&str, Target> = BTreeMap::new();
    for round in 1..=ROUNDS {
        let targets = [
            Target {
                name: "local folder",
                location: scratch.path().join(format!("lake-{round}")).to_str().expect("utf-8").to_owned(),
                server: None,
            },
            Target { name: "S3 (s3s-fs)", location: format!("s3://bench/lake-{round}"), server: Some(&server) },
        ];
        for target in targets {
            let took = ingest(&binary, &target, &brokers, &topic, &ends).await;
            assert_eq!(committed_rows(&target.lake()).await, events as i64, "{}: every event landed once", target.name);
            println!("round {round}: {}: {:.0} events/s", target.name, events as f64 / took.as_secs_f64());
            let best = best.entry(target.name).or_insert(took);
            *best = (*best).min(took);
            last.insert(target.name, target);
        }
    }
    let (local, s3) = (&last["local folder"], &last["S3 (s3s-fs)"]);
    let compute = [compute_once(&binary, local), compute_once(&binary, s3)];
    let tests = some_tests(&local.lake()).await;
    assert_eq!(tests.len(), MISSES, "enough tests for the history misses");
    let (local_misses, s3_misses) = (misses(&local.lake(), &tests).await, misses(&s3.lake(), &tests).await);

    println!("lake_on_s3: {events} events, {PARTITIONS} partitions, tansu memory://, s3s-fs 0.14.1, all on 127.0.0.1");
    let (local_best, s3_best) = (best["local folder"], best["S3 (s3s-fs)"]);
    report("ingest, local folder (best of 2)", events as f64 / local_best.as_secs_f64(), "events/s");
    report("ingest, S3 (best of 2)", events as f64 / s3_best.as_secs_f64(), "events/s");
    report("ratio ingest S3 / local", local_best.as_secs_f64() / s3_best.as_secs_f64(), "x");
    report("compute --once, local folder", compute[0].as_secs_f64(), "s");
    report("compute --once, S3", compute[1].as_secs_f64(), "s");
    report("ratio compute S3 / local (time)", compute[1].as_secs_f64() / compute[0].as_secs_f64(), "x");
    for (name, pick) in [("miss: hourly trends", 0), ("miss: a test's history", 1)] {
        let of = |m: &(Vec<Duration>, Vec<Duration>)| if pick == 0 { m.0.clone() } else { m.1.clone() };
        let (l, s) = (of(&local_misses), of(&s3_misses));
        report(&format!("{name}, local p50"), millis(percentile(&l, 0.5)), "ms");
        report(&format!("{name}, local p99"), millis(percentile(&l, 0.99)), "ms");
        report(&format!("{name}, S3 p50"), millis(percentile(&s, 0.5)), "ms");
        report(&format!("{name}, S3 p99"), millis(percentile(&s, 0.99)), "ms");
        report(
            &format!("ratio {name} S3 / local (p50)"),
            millis(percentile(&s, 0.5)) / millis(percentile(&l, 0.5)),
            "x",
        );
    }
    println!("load average at the end: {}", load());
}
