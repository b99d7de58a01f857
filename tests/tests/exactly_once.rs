//! Exactly once under crashes: `testlake ingest` processes aborted (like `kill -9`) at each step
//! of the commit protocol, restarted, and the lake checked to hold every produced `event_id`
//! exactly once — by listing the folders, as any reader does.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use chrono::{TimeDelta, Utc};
use rdkafka::producer::FutureRecord;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::Lake;
use testlake_tests::{Broker, Storage, testlake_binary, unique_topic};

struct Setup {
    broker: Broker,
    topic: String,
    group: String,
    lake: tempfile::TempDir,
    ids: Vec<String>,
}

/// A broker, a 2-partition topic holding ~1,500 events from the synthetic fleet, and an empty lake.
async fn setup(seed: u64) -> Setup {
    // Restarted consumers resume mid-batch: only the sqlite engine fetches that correctly.
    let broker = Broker::start_with(Storage::Sqlite);
    let topic = unique_topic("eo");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 2).await.unwrap();
    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 2, ..FleetConfig::default() });
    let now = Utc::now();
    let events: Vec<_> =
        (0..14).flat_map(|i| fleet.run(now - TimeDelta::hours(3) + TimeDelta::minutes(i * 10))).collect();
    let producer = testlake::kafka::producer(&broker.bootstrap()).unwrap();
    let payloads: Vec<(String, String)> = events.iter().map(|e| (e.test_id.clone(), e.to_json())).collect();
    let mut deliveries = Vec::new();
    for (key, payload) in &payloads {
        let record = FutureRecord::to(&topic).key(key).payload(payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
    }
    for d in deliveries {
        d.await.expect("delivery reported").map_err(|(e, _)| e).expect("delivered");
    }
    let ids = events.iter().map(|e| e.event_id.to_string()).collect();
    Setup { broker, topic, group: unique_topic("g"), lake: tempfile::tempdir().unwrap(), ids }
}

/// Runs `testlake ingest`. Each run flushes at a different row count, so a range re-consumed
/// after a crash is cut into differently named files: only the protocol prevents duplicates.
fn spawn_ingest(s: &Setup, crash_at: Option<&str>, flush_rows: usize) -> Child {
    let mut cmd = Command::new(testlake_binary());
    cmd.args(["ingest", "--brokers", &s.broker.bootstrap(), "--topic", &s.topic, "--group", &s.group])
        .args(["--lake", s.lake.path().to_str().unwrap(), "--flush-age", "100ms"])
        .args(["--flush-rows", &flush_rows.to_string()])
        // A crashed member's session must expire before the group rebalances to the restart.
        .args(["--kafka-property", "session.timeout.ms=3000", "--kafka-property", "heartbeat.interval.ms=500"])
        .env("RUST_LOG", std::env::var("TESTLAKE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TESTLAKE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() });
    if let Some(spec) = crash_at {
        cmd.env("TESTLAKE_CRASH_AT", spec);
    }
    cmd.spawn().expect("spawn testlake ingest")
}

/// Every `event_id` in the `results` folders, with how often it appears. A file that recovery
/// deletes between listing and reading fails the read: list again.
async fn landed(lake_dir: &Path) -> BTreeMap<String, usize> {
    let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let mut attempts = 0;
    let batches = loop {
        let ctx = testlake_compute::catalog::lake_session(&lake).unwrap();
        match ctx.sql("SELECT event_id FROM results").await.unwrap().collect().await {
            Ok(batches) => break batches,
            Err(e) if attempts < 20 => {
                attempts += 1;
                eprintln!("reading the lake failed ({e}); listing again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reading the lake: {e}"),
        }
    };
    let mut ids = BTreeMap::new();
    for b in batches {
        for id in b.column(0).as_string::<i32>().iter().flatten() {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
    }
    ids
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Crashes ingest at `points` in turn (each the n-th time it is reached), then runs it clean
/// until everything landed, and checks every id landed exactly once.
async fn crash_then_recover(points: &[&str], seed: u64) {
    let s = setup(seed).await;
    for (i, spec) in points.iter().enumerate() {
        let mut child = spawn_ingest(&s, Some(spec), 150 + 13 * i);
        let status = wait_exit(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("ingest did not reach {spec} within 60 s");
        });
        assert_eq!(status.signal(), Some(6), "{spec}: expected the injected abort, got {status}");
    }
    let mut child = spawn_ingest(&s, None, 97);
    let deadline = Instant::now() + Duration::from_secs(90);
    let ids = loop {
        let ids = landed(s.lake.path()).await;
        if ids.len() >= s.ids.len() || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the clean run go on a little: a late duplicate would show up now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ids_after = landed(s.lake.path()).await;
    let _ = child.kill();
    let _ = child.wait();

    let produced: std::collections::BTreeSet<&String> = s.ids.iter().collect();
    let got: std::collections::BTreeSet<&String> = ids.keys().collect();
    assert_eq!(got, produced, "{points:?}: every produced id landed");
    let twice: Vec<_> = ids_after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{points:?}: ids landed more than once: {twice:?}");
    assert_eq!(ids_after.len(), s.ids.len(), "{points:?}: nothing unexpected landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_intent() {
    crash_then_recover(&["after_intent:1", "after_intent:3"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_flush() {
    crash_then_recover(&["mid_flush:2", "mid_flush:1"], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_data() {
    crash_then_recover(&["after_data:1", "after_data:4"], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_outcome_before_kafka_commit() {
    crash_then_recover(&["after_outcome:2", "after_outcome:1", "after_outcome:3"], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_kafka_commit() {
    crash_then_recover(&["after_kafka_commit:3"], 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_in_turn() {
    crash_then_recover(
        &["mid_flush:3", "after_outcome:2", "after_intent:2", "after_data:2", "after_kafka_commit:1"],
        6,
    )
    .await;
}
