//! Object-store faults under a running ingest, and what it does with them. Wrapped around the
//! local store (`FaultyStore`): failed, timed-out, slow and lost-response puts. On the wire in
//! front of an S3 server (`FaultProxy` before moto): `503 SlowDown`, requests held past the
//! client's timeout and delivered late, lost responses, and the store down for a while. Every
//! fault is retried with backoff; the Kafka offset is never committed ahead of what the commit
//! log says is durable; while the store is down the ingest stops consuming once its buffers are
//! at their bound, its memory stays bounded, and it resumes by itself; the lake ends with every
//! event exactly once. A store that ignores conditional writes, and wrong credentials, stop a
//! writer at start with the cause and no secret.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use testlake_ingest::log_writer::PartitionLog;
use testlake_ingest::{FlushPolicy, Ingest, IngestConfig, IngestMetrics};
use testlake_schemas::Lake;
use testlake_tests::fault_proxy::{FaultProxy, ProxyFaults};
use testlake_tests::faulty_store::{Faults, FaultyStore};
use testlake_tests::{
    Backend, Broker, IngestRun, Produced, Running, Storage, TestLake, assert_exactly_once, committed_offsets,
    landed_ids_in, produce_fleet, testlake_binary, unique_topic,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_offsets_never_run_ahead_of_durable_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let faults = Faults {
        fail_every: 7,
        timeout_every: 11,
        timeout: Duration::from_millis(300),
        lose_response_every: 5,
        slow: Duration::from_millis(3),
    };
    let store = Arc::new(FaultyStore::new(Arc::new(LocalFileSystem::new()), faults));
    let faulty_lake = Lake::with_store(url, store.clone());
    let plain_lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let metrics = ingest_through_faults(faulty_lake, &plain_lake).await;
    assert!(store.injected() >= 10, "only {} faults were injected", store.injected());
    assert!(metrics.flush_errors() >= 5, "retries counted: {}", metrics.flush_errors());
}

/// The same on S3 (moto), the faults injected on the wire: throttling, requests that time out
/// and land late, lost responses. object_store retries a 503 itself, and a request whose
/// response was lost (a create-only put then finds its own object: "already exists", which the
/// protocol takes as its own earlier attempt); the ingest retries what reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_on_the_wire_are_retried_and_offsets_never_run_ahead_of_durable_data() {
    let test_lake = TestLake::start(Backend::Moto);
    let proxy = FaultProxy::start(test_lake.server().expect("an S3 server").port).await;
    proxy.set_faults(ProxyFaults {
        slow_down_every: 4,
        timeout_every: 13,
        hold: Duration::from_millis(1500),
        lose_response_every: 7,
        strip_conditions: false,
    });
    // A client timeout below the proxy's hold.
    let faulty_lake = test_lake.open_via(&proxy.endpoint(), &[("timeout", "1s")]);
    ingest_through_faults(faulty_lake, &test_lake.lake).await;
    let injected = proxy.injected();
    eprintln!("{} requests through the proxy, faults injected: {injected:?}", proxy.requests());
    for fault in ["slow_down", "timeout", "lost_response"] {
        assert!(injected.get(fault).copied().unwrap_or(0) >= 3, "{fault} injected: {injected:?}");
    }
}

/// Runs an ingest on `faulty` (a lake whose store injects faults) over ~1,200 fleet events, and
/// samples the invariant on `plain` (the same lake without faults) while it works: Kafka's
/// committed offset (read first) never exceeds the durable offset of the commit log (read
/// after; it only grows). Every event lands once.
async fn ingest_through_faults(faulty: Lake, plain: &Lake) -> Arc<IngestMetrics> {
    let broker = Broker::start_with(Storage::Sqlite);
    let brokers = broker.bootstrap();
    let (topic, group) = (unique_topic("faults"), unique_topic("g"));
    testlake::kafka::ensure_topic(&brokers, &topic, 3).await.unwrap();
    let produced = produce_fleet(&brokers, &topic, 31, 12).await;

    let mut config = IngestConfig::new(&brokers, &topic);
    config.group_id = group.clone();
    config.flush = FlushPolicy { max_rows: 120, max_age: Duration::from_millis(100), ..FlushPolicy::default() };
    let metrics = Arc::new(IngestMetrics::default());
    let ingest = Ingest::new(config, faulty, None, Arc::clone(&metrics)).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(ingest.run(shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    loop {
        let kafka = committed_offsets(&brokers, &group, &topic, 3);
        for (&partition, &offset) in &kafka {
            let durable = PartitionLog::durable_offset(plain, &topic, partition).await.unwrap();
            assert!(
                durable.is_some_and(|d| offset <= d),
                "partition {partition}: kafka at {offset}, log durable at {durable:?}"
            );
        }
        samples += 1;
        if landed_ids_in(plain).await.len() >= produced.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();

    assert_exactly_once("under object-store faults", &produced, &landed_ids_in(plain).await);
    assert!(samples >= 3, "the invariant was sampled {samples} times");
    metrics
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") << 10
}

/// `TESTLAKE_S3_OUTAGE_SECONDS` (20 by default; the README says what was run longer).
fn outage() -> Duration {
    let seconds = std::env::var("TESTLAKE_S3_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(seconds)
}

/// `testlake ingest` on S3 (moto) while the store goes down (connections refused, open ones cut)
/// for [`outage`], and a backlog many times its memory bound is produced meanwhile: the ingest
/// stops consuming once its buffers are at their bound (it says so, and how long), its resident
/// memory stays within the bound, and once the store is back it resumes by itself and lands
/// every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_down_for_a_while_pauses_the_ingest_within_its_memory_bound_and_loses_nothing() {
    const BUFFER_BYTES: u64 = 4 << 20;
    const PREFETCH_KIB: u64 = 2048;
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    let (topic, group) = (unique_topic("outage"), unique_topic("g"));
    testlake::kafka::ensure_topic(&brokers, &topic, 2).await.unwrap();
    let test_lake = TestLake::start(Backend::Moto);
    let proxy = FaultProxy::start(test_lake.server().expect("an S3 server").port).await;
    let log = test_lake.scratch().join("ingest.log");
    let run = IngestRun {
        brokers: &brokers,
        topic: &topic,
        group: &group,
        lake: test_lake.scratch(),
        flush_rows: 5000,
        flush_age: "200ms",
        crash_at: None,
        log: Some(&log),
    };
    let mut command = run.command_on(&test_lake);
    command
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .args(["--buffer-bytes", &BUFFER_BYTES.to_string(), "--flush-bytes", &(1u64 << 20).to_string()])
        .args(["--kafka-property", &format!("queued.max.messages.kbytes={PREFETCH_KIB}")]);
    let mut child = Running(command.spawn().expect("spawn testlake ingest"));

    let mut produced = produce_fleet(&brokers, &topic, 41, 10).await;
    wait_landed(&test_lake.lake, &produced, Duration::from_secs(60)).await;
    let baseline = rss(child.id());

    // Down, and a backlog produced meanwhile: ~18 times the buffers' bound in JSON.
    proxy.set_down(true);
    let went_down = Instant::now();
    let mut backlog: Vec<Produced> = Vec::new();
    let mut json_bytes = 0;
    for round in 0..10 {
        let events = produce_fleet(&brokers, &topic, 100 + round, 120).await;
        json_bytes += events.len() as u64 * 560;
        backlog.extend(events);
    }
    let produced_in = went_down.elapsed();
    let mut peak = baseline;
    while went_down.elapsed() < outage() {
        assert!(child.try_wait().unwrap().is_none(), "the ingest exited while the store was down");
        peak = peak.max(rss(child.id()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let landed_while_down = landed_ids_in(&test_lake.lake).await.len();
    proxy.set_down(false);
    let back = Instant::now();
    produced.extend(backlog.iter().cloned());
    wait_landed(&test_lake.lake, &produced, Duration::from_secs(180)).await;
    let caught_up = back.elapsed();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(child.try_wait().unwrap().is_none(), "the ingest is still running");
    signal_stop(&mut child);
    let text = std::fs::read_to_string(&log).unwrap();

    let grew = peak.saturating_sub(baseline);
    eprintln!(
        "outage {:?}: {} events ({} MiB of JSON) produced meanwhile; RSS {} MiB before, peak {} MiB while down \
         (+{} MiB); produced in {produced_in:?}, caught up {caught_up:?} after the store came back",
        outage(),
        backlog.len(),
        json_bytes >> 20,
        baseline >> 20,
        peak >> 20,
        grew >> 20,
    );
    assert_exactly_once("after the store was down", &produced, &landed_ids_in(&test_lake.lake).await);
    assert!(
        landed_while_down < produced.len() - backlog.len() / 2,
        "most of the backlog landed only once the store was back ({landed_while_down} while down)"
    );
    // The bound: the buffers, a flush in flight per partition, librdkafka's prefetch, and slack
    // for the allocator; far below the backlog, which an ingest that kept consuming would hold.
    let bound = 2 * BUFFER_BYTES + (PREFETCH_KIB << 10) + (16 << 20);
    assert!(json_bytes > 2 * bound, "the backlog ({json_bytes} B) is well over the bound ({bound} B)");
    assert!(grew < bound, "memory grew {grew} B while the store was down (bound {bound} B)");
    let paused = text.lines().find(|l| l.contains("consumption paused")).expect("the ingest said it paused");
    let resumed = text.lines().find(|l| l.contains("consumption resumed")).expect("the ingest said it resumed");
    let paused_ms: u64 = resumed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("paused_ms="))
        .and_then(|v| v.parse().ok())
        .expect("paused_ms");
    assert!(
        Duration::from_millis(paused_ms) > outage() / 2,
        "consumption paused for {paused_ms} ms of a {:?} outage: {paused} / {resumed}",
        outage()
    );
}

/// Waits until every produced id is in the lake (read directly from the store).
async fn wait_landed(lake: &Lake, produced: &[Produced], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let landed = landed_ids_in(lake).await.len();
        if landed >= produced.len() {
            return;
        }
        assert!(Instant::now() < deadline, "{landed} of {} events landed within {timeout:?}", produced.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SIGTERM, and the process's exit within 30 s.
fn signal_stop(child: &mut Running) {
    testlake_tests::signal(child, 15);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the ingest did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writers refuse, at start, a store that ignores conditional writes (moto behind a proxy that
/// drops `If-None-Match` and `If-Match`, as garage does), and a wrong secret (s3s-fs checks
/// signatures) is a clear error at start; no secret appears in the output, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_stores_and_wrong_credentials_stop_a_writer_at_start() {
    let compact = |lake: &TestLake, endpoint: Option<&str>, secret: Option<&str>| {
        let mut command = std::process::Command::new(testlake_binary());
        lake.apply_via(command.args(["compact", "--once"]), endpoint).env("RUST_LOG", "debug").env("NO_COLOR", "1");
        if let Some(secret) = secret {
            command.env("AWS_SECRET_ACCESS_KEY", secret);
        }
        let output = command.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("run testlake compact");
        let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
        (output.status.success(), text)
    };

    let moto = TestLake::start(Backend::Moto);
    let proxy = FaultProxy::start(moto.server().expect("an S3 server").port).await;
    let (ok, text) = compact(&moto, Some(&proxy.endpoint()), None);
    assert!(ok, "through a proxy that changes nothing: {text}");
    proxy.set_faults(ProxyFaults { strip_conditions: true, ..ProxyFaults::default() });
    let (ok, text) = compact(&moto, Some(&proxy.endpoint()), None);
    assert!(!ok && text.contains("ignores If-None-Match"), "a store ignoring conditional writes: {text}");

    let s3s = TestLake::start(Backend::S3sFs);
    let right = s3s.env_via(None).into_iter().find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    let (ok, text) = compact(&s3s, None, None);
    assert!(ok && text.contains("honours create-only"), "the right secret: {text}");
    assert!(!text.contains(&right), "the secret in the output: {text}");
    let wrong = "wrong-secret-8b1f6f0d4e2a";
    let started = Instant::now();
    let (ok, text) = compact(&s3s, None, Some(wrong));
    assert!(!ok && text.contains("403 Forbidden") && text.contains("privileges"), "a wrong secret: {text}");
    assert!(started.elapsed() < Duration::from_secs(20), "the refusal is not retried: {:?}", started.elapsed());
    assert!(!text.contains(wrong) && !text.contains(&right), "a secret in the output: {text}");
}
