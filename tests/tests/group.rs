//! Several `testlake ingest` processes in one consumer group: members joining and leaving
//! mid-stream, and a member paused past its session timeout (also on S3: moto, whose create-only
//! puts are atomic, so the zombie's and the new owner's writes race for real). The lake must hold
//! every produced `event_id` exactly once, and every partition's lag must reach zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use testlake_tests::{
    Backend, Broker, IngestRun, Produced, Running, Storage, TestLake, assert_exactly_once, committed_offsets,
    landed_ids, landed_ids_in, last_assignment, produce_fleet, signal, unique_topic,
};

const TERM: i32 = 15;
const STOP: i32 = 19;
const CONT: i32 = 18;

fn member<'a>(brokers: &'a str, topic: &'a str, group: &'a str, lake: &'a Path) -> IngestRun<'a> {
    IngestRun { brokers, topic, group, lake, flush_rows: 200, flush_age: "100ms", crash_at: None, log: None }
}

async fn wait_landed(lake: &testlake_schemas::Lake, want: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while landed_ids_in(lake).await.len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "ingest did not stop within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lag zero: the committed offset of every partition is one past the last offset produced to it
/// (judged from the producer's delivery reports, not the broker's watermark).
fn assert_lag_zero(produced: &[Produced], committed: &BTreeMap<i32, i64>) {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in produced {
        let end = ends.entry(p.partition).or_default();
        *end = (*end).max(p.offset + 1);
    }
    for (partition, end) in ends {
        assert_eq!(committed.get(&partition), Some(&end), "partition {partition}: committed offset vs. end");
    }
}

/// Waits until `want` ids landed; gives up when nothing new landed for `stall`.
async fn wait_landed_or_stall(lake: &Path, want: usize, stall: Duration) -> usize {
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let now = landed_ids(lake).await.len();
        if now >= want {
            return now;
        }
        if now > last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > stall {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A broker (sqlite engine) with a topic of six partitions, a group name, a lake folder and the
/// log file of the member that stays.
struct Scenario {
    _broker: Broker,
    brokers: String,
    topic: String,
    group: String,
    lake: tempfile::TempDir,
    a_log: std::path::PathBuf,
}

impl Scenario {
    async fn start(topic_prefix: &str) -> Self {
        let broker = Broker::start_with(Storage::Sqlite);
        let brokers = broker.bootstrap();
        let (topic, group) = (unique_topic(topic_prefix), unique_topic("g"));
        testlake::kafka::ensure_topic(&brokers, &topic, 6).await.unwrap();
        let lake = tempfile::tempdir().unwrap();
        let a_log = lake.path().join("a.log");
        Self { _broker: broker, brokers, topic, group, lake, a_log }
    }
}

/// One run of the scenario. `Err` when the broker left partitions without a live owner (see
/// below); every other failure panics.
async fn join_and_leave_once() -> Result<(), String> {
    let Scenario { _broker, brokers, topic, group, lake, a_log } = Scenario::start("grp").await;
    let m = member(&brokers, &topic, &group, lake.path());

    let mut produced = produce_fleet(&brokers, &topic, 11, 6).await;
    let mut a = IngestRun { log: Some(&a_log), ..m.clone() }.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    produced.extend(produce_fleet(&brokers, &topic, 12, 6).await);
    let b = m.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = m.spawn();
    produced.extend(produce_fleet(&brokers, &topic, 13, 6).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&b, TERM);
    produced.extend(produce_fleet(&brokers, &topic, 14, 4).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&c, TERM);
    produced.extend(produce_fleet(&brokers, &topic, 15, 4).await);

    settle("join and leave", (&mut a, &a_log), vec![b, c], &produced, lake.path(), (&brokers, &group, &topic)).await
}

/// Waits for everything produced to land with `a` the only member left, then checks exactly
/// once and the committed offsets, and stops every member. `Err` when the broker left
/// partitions without a live owner (see below); every other failure panics.
async fn settle(
    scenario: &str,
    (a, a_log): (&mut Running, &Path),
    mut others: Vec<Running>,
    produced: &[Produced],
    lake: &Path,
    (brokers, group, topic): (&str, &str, &str),
) -> Result<(), String> {
    let landed = wait_landed_or_stall(lake, produced.len(), Duration::from_secs(20)).await;
    if landed < produced.len() {
        // A is the only member left: a healthy group gives it all six partitions.
        let assignment = last_assignment(a_log);
        if assignment.as_deref() != Some("[0, 1, 2, 3, 4, 5]") {
            signal(a, TERM);
            let _ = a.wait();
            for other in &mut others {
                let _ = other.wait();
            }
            return Err(format!(
                "{} of {} events stalled; the only live member's last assignment from the broker: {assignment:?}",
                produced.len() - landed,
                produced.len()
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(scenario, produced, &landed_ids(lake).await);

    signal(a, TERM);
    assert!(wait_exit(a, Duration::from_secs(30)).success(), "a stopped cleanly");
    for (i, other) in others.iter_mut().enumerate() {
        assert!(wait_exit(other, Duration::from_secs(30)).success(), "member {} stopped cleanly", i + 2);
    }
    assert_lag_zero(produced, &committed_offsets(brokers, group, topic, 6));
    Ok(())
}

/// Three members join one after another while events keep arriving, then two leave cleanly
/// (SIGTERM: flush, commit, leave the group), each change a rebalance mid-stream.
///
/// Broker behaviour pinned down here: tansu 0.6's group coordinator sometimes ends this
/// sequence of rebalances without giving the one remaining member all partitions (its last
/// rebalance is a revocation with no assignment, or a partial assignment), so those partitions
/// are never consumed again — seen in 2 of 10 runs on 2026-11-27. That run is detected (stalled, and
/// the survivor's log shows the partial assignment) and the scenario is run again on a fresh
/// broker; the assertions are never relaxed. A member that is killed rather than leaving fared
/// worse (its partitions stayed assigned to it in 6 of 7 runs), so crash-and-restart is covered
/// by `exactly_once.rs` and session expiry by the paused-member test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_mid_stream() {
    retried_on_group_anomalies(join_and_leave_once).await;
}

/// Runs a scenario again (on a fresh broker) when the broker left partitions unassigned.
async fn retried_on_group_anomalies<F: Future<Output = Result<(), String>>>(scenario: impl Fn() -> F) {
    let mut anomalies = Vec::new();
    for attempt in 1..=4 {
        match scenario().await {
            Ok(()) => return,
            Err(anomaly) => {
                eprintln!("attempt {attempt}: broker group anomaly, running the scenario again: {anomaly}");
                anomalies.push(anomaly);
            }
        }
    }
    panic!("the broker left partitions unassigned in every attempt: {anomalies:#?}");
}

/// Three members join at once while the first is consuming a backlog and flushing every 200
/// events, while more events arrive: partitions move (several times, as the storm settles) after
/// some of their flushes landed, so each new owner recovers a log that resumes mid-stream, with
/// the previous owner's buffers dropped. Then they leave again, one rebalance each. Not one
/// event may be lost or doubled. (Seeks after recovery are exercised by `exactly_once.rs`, whose
/// crashes leave the Kafka offset behind the log, and by the cursor's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_at_once_while_flushing_lose_nothing() {
    retried_on_group_anomalies(join_storm_once).await;
}

async fn join_storm_once() -> Result<(), String> {
    let Scenario { _broker, brokers, topic, group, lake, a_log } = Scenario::start("storm").await;
    let m = member(&brokers, &topic, &group, lake.path());

    let mut produced = produce_fleet(&brokers, &topic, 31, 30).await;
    let mut a = IngestRun { log: Some(&a_log), ..m.clone() }.spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs: Vec<_> = (0..3).map(|i| lake.path().join(format!("joined{i}.log"))).collect();
    let others: Vec<Running> = logs.iter().map(|log| IngestRun { log: Some(log), ..m.clone() }.spawn()).collect();
    produced.extend(produce_fleet(&brokers, &topic, 32, 10).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for other in &others {
        signal(other, TERM);
    }
    produced.extend(produce_fleet(&brokers, &topic, 33, 4).await);
    let texts: Vec<String> =
        logs.iter().chain([&a_log]).map(|log| std::fs::read_to_string(log).unwrap_or_default()).collect();
    let count = |what: &str| texts.iter().map(|text| text.matches(what).count()).sum::<usize>();
    let (recoveries, seeks) = (count("commit log recovered"), count("seeking to where"));
    eprintln!("{} events; {recoveries} recoveries, {seeks} seeks", produced.len());
    assert!(recoveries > 6, "the members that joined took partitions over: {recoveries} recoveries");
    // deltalake logs each commit conflict at ERROR; the publisher re-reads the table and commits again.
    let errors: Vec<&str> = texts
        .iter()
        .flat_map(|text| text.lines())
        .filter(|l| l.contains("ERROR") && !l.contains("conflict detected"))
        .collect();
    assert!(errors.is_empty(), "members starting on a fresh lake log no error: {errors:#?}");
    settle("join storm", (&mut a, &a_log), others, &produced, lake.path(), (&brokers, &group, &topic)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_session_is_fenced() {
    paused_member_is_fenced(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_session_is_fenced_on_s3() {
    paused_member_is_fenced(Backend::Moto).await;
}

async fn paused_member_is_fenced(backend: Backend) {
    let broker = Broker::start_with(Storage::Sqlite);
    let brokers = broker.bootstrap();
    let (topic, group) = (unique_topic("pause"), unique_topic("g"));
    testlake::kafka::ensure_topic(&brokers, &topic, 2).await.unwrap();
    let lake = TestLake::start(backend);
    let produced = produce_fleet(&brokers, &topic, 21, 10).await;

    // A buffers everything and would flush only after 4 s; it is frozen before that.
    let a_log = lake.scratch().join("a.log");
    let a_run = IngestRun {
        flush_rows: 1_000_000,
        flush_age: "4s",
        log: Some(&a_log),
        ..member(&brokers, &topic, &group, lake.scratch())
    };
    let mut a = Running(a_run.command_on(&lake).spawn().expect("spawn testlake ingest"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    signal(&a, STOP);

    // B takes over once A's session expires, and lands everything.
    let b_run = member(&brokers, &topic, &group, lake.scratch());
    let mut b = Running(b_run.command_on(&lake).spawn().expect("spawn testlake ingest"));
    wait_landed(&lake.lake, produced.len(), Duration::from_secs(60)).await;
    assert_exactly_once("before A wakes", &produced, &landed_ids_in(&lake.lake).await);

    // A wakes with a stale buffer: its late flush must not land.
    signal(&a, CONT);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_exactly_once("after A wakes", &produced, &landed_ids_in(&lake.lake).await);
    let log = std::fs::read_to_string(&a_log).unwrap();
    for line in log.lines().filter(|l| l.contains("fenced") || l.contains("revoked") || l.contains("flush")) {
        eprintln!("A: {line}");
    }
    assert!(log.contains("commit log recovered"), "A owned partitions before it was paused:\n{log}");
    assert!(
        log.contains("fenced") || log.contains("dropped the state of a revoked partition"),
        "A's late writes were rejected or dropped:\n{log}"
    );

    signal(&a, TERM);
    signal(&b, TERM);
    wait_exit(&mut a, Duration::from_secs(30));
    wait_exit(&mut b, Duration::from_secs(30));
}
