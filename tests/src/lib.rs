//! Support for testlake's integration tests: a real tansu broker on a free port, unique topics,
//! and an independent model of the numbers the lake must hold.
//!
//! A test that needs the broker fails when `tansu` is missing; it never skips.

pub mod faulty_store;
pub mod model;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker process on 127.0.0.1, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// The `testlake` binary next to the running test (cargo builds it with the workspace's tests:
/// `deploy/tests/cli.rs` needs it).
pub fn testlake_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let bin = dir.join("testlake");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build -p testlake`", bin.display());
    bin
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Which tansu storage engine a test broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `memory://` (dynostore): fastest. Its fetch returns only record batches whose *base*
    /// offset is at or after the requested offset, so a consumer resuming from an offset inside
    /// a batch silently skips the rest of that batch (tansu-storage 0.6.0, `dynostore.rs`,
    /// `offsets.split_off(&offset)`). Fine for tests that never resume mid-batch.
    Memory,
    /// `sqlite://` (libsql): stores records one by one and fetches from any offset, as Kafka
    /// does. Tests that restart consumers use it.
    Sqlite,
}

impl Broker {
    /// Starts `tansu broker` with the in-memory storage engine (see [`Storage::Memory`]).
    pub fn start() -> Self {
        Self::start_with(Storage::Memory)
    }

    /// Starts `tansu broker` on a free port and waits until it accepts connections. Panics, with
    /// the reason, if it cannot.
    pub fn start_with(storage: Storage) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args([
                "--storage-engine",
                match storage {
                    Storage::Memory => "memory://tansu/",
                    Storage::Sqlite => "sqlite://tansu.db",
                },
            ])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the tansu broker ({e}); run deploy/scripts/setup.sh"));
        let broker = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One produced message: its event id and where the broker put it.
#[derive(Debug, Clone)]
pub struct Produced {
    pub event_id: String,
    pub partition: i32,
    pub offset: i64,
}

/// Produces `runs` CI runs of a synthetic fleet (ten minutes apart, ending about now) to
/// `topic`, keyed by test id, and returns where each event went.
pub async fn produce_fleet(brokers: &str, topic: &str, seed: u64, runs: i64) -> Vec<Produced> {
    use chrono::{TimeDelta, Utc};
    use testlake::fleet::{Fleet, FleetConfig};

    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 2, ..FleetConfig::default() });
    let start = Utc::now() - TimeDelta::minutes(10 * runs);
    let events: Vec<_> = (0..runs).flat_map(|i| fleet.run(start + TimeDelta::minutes(i * 10))).collect();
    produce_events(brokers, topic, &events).await
}

/// Produces `events` (keyed by test_id) and waits for every delivery report.
pub async fn produce_events(brokers: &str, topic: &str, events: &[testlake_schemas::TestEvent]) -> Vec<Produced> {
    use rdkafka::producer::FutureRecord;
    let producer = testlake::kafka::producer(brokers).expect("producer");
    let payloads: Vec<(String, String)> = events.iter().map(|e| (e.test_id.clone(), e.to_json())).collect();
    let mut deliveries = Vec::new();
    for (key, payload) in &payloads {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
    }
    let mut produced = Vec::new();
    for (d, e) in deliveries.into_iter().zip(events) {
        let delivery = d.await.expect("delivery reported").map_err(|(e, _)| e).expect("delivered");
        produced.push(Produced {
            event_id: e.event_id.to_string(),
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    produced
}

/// The all-in-one stack on a fresh topic of `broker` and a fresh lake, flushing every 200 ms.
pub struct TestStack {
    pub base: String,
    pub topic: String,
    pub lake_dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestStack {
    pub async fn start(broker: &Broker, prefix: &str, compute: testlake_compute::ComputeConfig) -> Self {
        let topic = unique_topic(prefix);
        testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 2).await.expect("topic");
        let lake_dir = tempfile::tempdir().expect("tempdir");
        let mut ingest = testlake_ingest::IngestConfig::new(broker.bootstrap(), &topic);
        ingest.group_id = unique_topic("group");
        ingest.flush = testlake_ingest::FlushPolicy {
            max_age: Duration::from_millis(200),
            ..testlake_ingest::FlushPolicy::default()
        };
        let config = testlake::stack::StackConfig {
            lake: lake_dir.path().to_str().expect("utf-8 path").to_owned(),
            ingest,
            // Off: tests reading the folders would see a compacted hour twice during the grace.
            compact: testlake_ingest::CompactConfig::off(),
            compute,
            serve: testlake_query::ServeConfig::new("127.0.0.1:0".parse().expect("addr")),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stack = testlake::stack::Stack::start(config, shutdown.clone()).await.expect("stack starts");
        let base = format!("http://{}", stack.addr);
        let running = tokio::spawn(stack.wait());
        Self { base, topic, lake_dir, shutdown, running }
    }

    /// Stops the stack and checks every stage stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running)
            .await
            .expect("the stack stops")
            .expect("no stage panicked")
            .expect("every stage stopped cleanly");
    }
}

/// Every `event_id` in the lake's `results` folders, with how often it appears — read by listing
/// the folders, as any reader does. A file deleted by a recovering ingest between listing and
/// reading fails the read: list again.
pub async fn landed_ids(lake_dir: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    use arrow::array::AsArray;

    let lake = testlake_schemas::Lake::open(lake_dir.to_str().expect("utf-8 path")).expect("lake");
    let mut attempts = 0;
    let batches = loop {
        let ctx = testlake_compute::catalog::lake_session(&lake).expect("session");
        match ctx.sql("SELECT event_id FROM results").await.expect("plan").collect().await {
            Ok(batches) => break batches,
            Err(e) if attempts < 20 => {
                attempts += 1;
                eprintln!("reading the lake failed ({e}); listing again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reading the lake: {e}"),
        }
    };
    let mut ids = std::collections::BTreeMap::new();
    for b in batches {
        for id in b.column(0).as_string::<i32>().iter().flatten() {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
    }
    ids
}

/// Asserts the lake holds exactly the produced ids, each once.
pub fn assert_exactly_once(what: &str, produced: &[Produced], landed: &std::collections::BTreeMap<String, usize>) {
    let want: std::collections::BTreeSet<&str> = produced.iter().map(|p| p.event_id.as_str()).collect();
    let got: std::collections::BTreeSet<&str> = landed.keys().map(String::as_str).collect();
    let missing = want.difference(&got).count();
    let unexpected = got.difference(&want).count();
    let twice: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        missing == 0 && unexpected == 0 && twice.is_empty(),
        "{what}: {missing} produced ids missing, {unexpected} unexpected ids, landed more than once: {twice:?}"
    );
}

/// How to run one `testlake ingest` process.
#[derive(Debug, Clone)]
pub struct IngestRun<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
    pub lake: &'a std::path::Path,
    pub flush_rows: usize,
    pub flush_age: &'a str,
    /// `TESTLAKE_CRASH_AT` for this run.
    pub crash_at: Option<&'a str>,
    /// Where the process's log goes (`None`: discarded, or the test's stderr when
    /// `TESTLAKE_TEST_LOG` is set).
    pub log: Option<&'a std::path::Path>,
}

/// A child process that is killed when the guard drops, so a failing test leaves no process
/// behind.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The partitions the broker last gave an ingest process, from its log (`IngestRun::log`): the
/// list as logged (`[0, 1]`), or `None` after a revocation that no assignment followed, or before
/// any assignment.
pub fn last_assignment(log: &std::path::Path) -> Option<String> {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let last = log.lines().rev().find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))?;
    last.contains("partitions assigned").then(|| last.rsplit("partitions=").next().unwrap_or("").to_owned())
}

impl IngestRun<'_> {
    /// Starts the process (killed when the guard drops). A member that dies is noticed by the
    /// group after 3 s.
    pub fn spawn(&self) -> Running {
        Running(self.command().spawn().expect("spawn testlake ingest"))
    }

    /// The command line of the process, to add arguments to before spawning.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(testlake_binary());
        cmd.args(["ingest", "--brokers", self.brokers, "--topic", self.topic, "--group", self.group])
            .args(["--lake", self.lake.to_str().expect("utf-8 path"), "--flush-age", self.flush_age])
            .args(["--flush-rows", &self.flush_rows.to_string()])
            // These tests read the folders, which show a compacted hour twice during the grace.
            .args(["--compact-every", "0s"])
            .args(["--kafka-property", "session.timeout.ms=3000", "--kafka-property", "heartbeat.interval.ms=500"])
            .env("RUST_LOG", std::env::var("TESTLAKE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null());
        match self.log {
            Some(path) => cmd.stderr(std::fs::File::create(path).expect("log file")),
            None if std::env::var_os("TESTLAKE_TEST_LOG").is_some() => cmd.stderr(Stdio::inherit()),
            None => cmd.stderr(Stdio::null()),
        };
        if let Some(spec) = self.crash_at {
            cmd.env("TESTLAKE_CRASH_AT", spec);
        }
        cmd
    }
}

/// Sends `signal` (`libc` numbers: 15 TERM, 19 STOP, 18 CONT, 9 KILL) to a child process.
pub fn signal(child: &Child, signal: i32) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().expect("kill");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// The group's committed offset of each partition that has one, read with the group's id
/// without joining the group.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> std::collections::BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    offsets
        .elements()
        .iter()
        .filter_map(|e| if let Offset::Offset(o) = e.offset() { Some((e.partition(), o)) } else { None })
        .collect()
}

/// A Server-Sent Events client over a streaming `reqwest` response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str) -> Self {
        let response = reqwest::Client::new().get(url).send().await.expect("connect to the event stream");
        assert_eq!(response.status(), 200, "event stream status");
        Self { response, buffer: String::new() }
    }

    /// The next event as (event name, data parsed as JSON); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits up to `timeout` for an event matching `want`, skipping others.
    pub async fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        want: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<(String, serde_json::Value)> {
        tokio::time::timeout(timeout, async {
            while let Some((name, data)) = self.next().await {
                if want(&name, &data) {
                    return Some((name, data));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// Lands `events` in the lake as ingest would — one committed log entry per hour of
/// `finished_at`, on partition `partition` of `topic`, offsets following on from `first_offset` —
/// without a broker: for tests of what reads the lake. Returns the next offset.
pub async fn land_committed(
    lake: &testlake_schemas::Lake,
    topic: &str,
    partition: i32,
    first_offset: i64,
    events: &[testlake_schemas::TestEvent],
) -> i64 {
    land_committed_chunks(lake, topic, partition, first_offset, [events]).await
}

/// As [`land_committed`], for each chunk in turn (each chunk's hours its own entries), reading
/// the partition's log once: thousands of small flushes without a quadratic set-up.
pub async fn land_committed_chunks<'e>(
    lake: &testlake_schemas::Lake,
    topic: &str,
    partition: i32,
    first_offset: i64,
    chunks: impl IntoIterator<Item = &'e [testlake_schemas::TestEvent]>,
) -> i64 {
    use testlake_ingest::buffer::PendingFile;
    use testlake_ingest::commit::PartitionLog;
    use testlake_ingest::stage::stage_file;
    use testlake_schemas::tables::{Lineage, ResultsBuilder};
    use testlake_schemas::{DataFileName, DataFilePath, HourPartition, Table};

    let mut log = PartitionLog::recover(lake, topic, partition, "tests").await.expect("recover the log");
    let mut offset = first_offset;
    for events in chunks {
        let mut by_hour: std::collections::BTreeMap<HourPartition, Vec<&testlake_schemas::TestEvent>> =
            Default::default();
        for e in events {
            by_hour.entry(HourPartition::of(e.finished_at)).or_default().push(e);
        }
        for (hour, es) in by_hour {
            let mut rows = ResultsBuilder::default();
            for (i, e) in es.iter().enumerate() {
                let from = Lineage { topic, partition, offset: offset + i as i64, ingested_at: chrono::Utc::now() };
                rows.append(e, from);
            }
            let next = offset + es.len() as i64;
            let path = DataFilePath {
                table: Table::Results,
                partition: hour,
                file: DataFileName {
                    topic: topic.to_owned(),
                    partition,
                    first_offset: offset,
                    last_offset: next - 1,
                    entry: log.next_seq(),
                },
            };
            // Sorted and encoded by the ingest's own staging.
            let file = PendingFile {
                path,
                batch: rows.finish().expect("rows"),
                min_time: None,
                max_time: None,
                repositories: None,
            };
            let staged = stage_file(&file).expect("stage");
            log.commit(offset, next, vec![staged], &Default::default()).await.expect("commit");
            offset = next;
        }
    }
    offset
}
