//! Separate ingest and compute processes: compute learns what landed from the notice topic, not
//! from a timer (its periodic scan is set to an hour).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testlake_schemas::Lake;
use testlake_tests::{Broker, IngestRun, Running, produce_fleet, signal, testlake_binary, trend_runs, unique_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_follows_landed_notices_from_another_process() {
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    let (topic, group, landed_topic) = (unique_topic("n"), unique_topic("g"), unique_topic("landed"));
    testlake::kafka::ensure_topic(&brokers, &topic, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();

    let compute_log = dir.path().join("compute.log");
    let mut compute = Command::new(testlake_binary())
        .args(["compute", "--brokers", &brokers, "--landed-topic", &landed_topic, "--compute-interval", "1h"])
        .arg("--create-topics")
        .args(["--lake", lake_dir.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&compute_log).unwrap())
        .spawn()
        .map(Running)
        .unwrap();
    // The compute process follows the notice topic from its end: wait until it does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&compute_log).unwrap_or_default().contains("following landed notices") {
        assert!(Instant::now() < deadline, "compute never subscribed to the notices");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ingest_run = IngestRun {
        brokers: &brokers,
        topic: &topic,
        group: &group,
        lake: &lake_dir,
        flush_rows: 500,
        flush_age: "100ms",
        crash_at: None,
        log: None,
    };
    let mut ingest = Running(ingest_run.command().args(["--landed-topic", &landed_topic]).spawn().unwrap());
    let produced = produce_fleet(&brokers, &topic, 41, 6).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = 0;
    while Instant::now() < deadline {
        runs = trend_runs(&lake).await;
        if runs == produced.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    signal(&ingest, 15);
    signal(&compute, 15);
    let _ = ingest.wait();
    let _ = compute.wait();
    assert_eq!(runs, produced.len() as i64, "daily trends cover every produced event, driven by notices alone");
}
