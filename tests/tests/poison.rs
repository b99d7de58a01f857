//! Poison batches: valid events spread over thousands of distinct hours (the accepted window goes
//! back to 2000) must land exactly once with the ingest's memory, files per flush and notices
//! bounded. Before the fix each hour had Arrow builders of its own (~130 KiB of capacity, not
//! counted by the memory budget) and a flush wrote every hour it held: this test's 4,000 events
//! would have been one flush of 4,000 files with ~500 MiB of builders (allocated, resident as
//! far as written), and ~200,000 such events ran the ingest out of memory, again after every
//! restart. Measured after (debug build, 2026-12-01, three runs): 16 flushes of at most 256
//! files, the restarted process's peak RSS 92–107 MiB.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use testlake_ingest::buffer::MAX_HOURS_PER_FLUSH;
use testlake_schemas::log::{Intent, Outcome, OutcomeRecord};
use testlake_schemas::{Status, Table, TestEvent};
use testlake_tests::{
    Broker, IngestRun, Storage, assert_exactly_once, landed_ids, produce_events, signal, unique_topic,
};

const EVENTS: i64 = 4000;

/// The smallest valid event, finished `hours_ago` hours ago.
fn event(hours_ago: i64) -> TestEvent {
    let finished_at = Utc::now() - TimeDelta::hours(hours_ago);
    TestEvent {
        schema_version: 1,
        event_id: uuid::Uuid::new_v4(),
        repository: "r".into(),
        branch: "b".into(),
        commit_sha: "c".into(),
        run_id: "x".into(),
        job_id: None,
        suite: "s".into(),
        test_id: "t".into(),
        name: "t".into(),
        status: Status::Passed,
        attempt: 1,
        duration_ms: 1.0,
        started_at: None,
        finished_at,
        ci_provider: None,
        host: None,
        failure_message: None,
        tags: Default::default(),
    }
}

/// The committed entries of the partition's log, in order.
fn committed_intents(lake: &Path, topic: &str) -> Vec<Intent> {
    let dir = lake.join(testlake_schemas::log::log_dir(topic, 0));
    let mut intents = Vec::new();
    for seq in 0.. {
        let read = |object: &str| std::fs::read(dir.join(format!("{seq:020}.{object}.json"))).ok();
        let Some(outcome) = read("outcome") else { break };
        let outcome: OutcomeRecord = serde_json::from_slice(&outcome).expect("outcome");
        if outcome.outcome == Outcome::Committed {
            intents.push(serde_json::from_slice(&read("intent").expect("intent")).expect("intent"));
        }
    }
    intents
}

/// The process's peak resident memory, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") << 10
}

/// A first run is aborted in the middle of writing its third flush's files (like `kill -9`), as
/// a process run out of memory would be; the restarted run recovers that wide entry (deleting its
/// files) and re-consumes from the log's end, within the same bounds.
#[tokio::test(flavor = "multi_thread")]
async fn events_over_thousands_of_hours_land_once_in_bounded_memory_and_flushes() {
    // The restarted run resumes mid-batch: only the sqlite engine fetches that correctly.
    let broker = Broker::start_with(Storage::Sqlite);
    let topic = unique_topic("poison");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 1).await.unwrap();
    let events: Vec<TestEvent> = (0..EVENTS).map(|i| event(i + 1)).collect();
    let produced = produce_events(&broker.bootstrap(), &topic, &events).await;
    let lake = tempfile::tempdir().unwrap();
    let group = unique_topic("g");

    // Thresholds that never cut the buffer before it holds every event: only the hour cap does.
    let (brokers, lake_dir) = (broker.bootstrap(), lake.path());
    let run = |crash_at| IngestRun {
        brokers: &brokers,
        topic: &topic,
        group: &group,
        lake: lake_dir,
        flush_rows: 1_000_000,
        flush_age: "10s",
        crash_at,
        log: None,
    };
    let mut crashed = run(Some("mid_flush:3")).spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = crashed.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the first run did not reach its third flush within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(6), "expected the injected abort");
    assert_eq!(committed_intents(lake_dir, &topic).len(), 2, "two flushes committed before the abort");

    let mut child = run(None).spawn();
    let deadline = Instant::now() + Duration::from_secs(240);
    let landed = loop {
        let landed: u64 = committed_intents(lake_dir, &topic)
            .iter()
            .flat_map(|i| &i.files)
            .filter(|f| f.table == Table::Results)
            .map(|f| f.rows)
            .sum();
        if landed >= EVENTS as u64 {
            break landed;
        }
        assert!(child.try_wait().unwrap().is_none(), "ingest exited with {landed} of {EVENTS} events landed");
        assert!(Instant::now() < deadline, "{landed} of {EVENTS} events landed within 240 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let peak = peak_rss(child.id());
    signal(&child, 15);
    let _ = child.wait();

    let intents = committed_intents(lake_dir, &topic);
    let widest = intents.iter().map(|i| i.files.len()).max().unwrap_or(0);
    eprintln!("{landed} events in {} flushes of at most {widest} files; peak RSS {} MiB", intents.len(), peak >> 20);
    assert!(widest <= MAX_HOURS_PER_FLUSH, "a flush wrote {widest} files");
    assert!(intents.len() as i64 >= EVENTS / MAX_HOURS_PER_FLUSH as i64, "{} flushes", intents.len());
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
    assert_exactly_once("events over thousands of hours", &produced, &landed_ids(lake_dir).await);
}
