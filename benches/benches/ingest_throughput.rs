//! End-to-end ingest throughput against a real broker (tansu, `memory://`), in one run:
//!
//! - the raw consume ceiling: an rdkafka consumer that only counts messages and bytes, same topic,
//!   configured and timed as the ingest's (from subscribing, group join included);
//! - `testlake ingest` (the release binary, a separate process) from the same topic into a lake on
//!   the local filesystem: events/s, MB/s, and the ratio to the ceiling;
//! - the ingest process's peak RSS (VmHWM) and Parquet bytes per event against the JSON input.
//!
//! Two ratios: start to finish (process start and group join to the last flush durable — the
//! last buffers wait up to their flush age, 500 ms, which a raw consumer never does), and the
//! steady state (from 20 % to 80 % of the events: consumed for the raw consumer, durable in the
//! commit log for the ingest).
//!
//! With several members (`-- EVENTS 1 2 4`: one line of figures per count), that many
//! `testlake ingest` processes share the topic in one group, each writing its partitions' commit
//! logs and publishing them to the one Delta table: the commit contention. Each run also reports
//! how long after the commit log the Delta table showed every partition's last entry, and the
//! rate after the group settled: from the last `partitions assigned` in the members' logs to the
//! end — tansu's coordinator takes seconds to give every joining member its partitions, with
//! partitions idle meanwhile, which the start-to-finish figure counts and the commit contention
//! does not explain.
//!
//! `cargo build --release -p testlake && cargo bench -p testlake-benches --bench ingest_throughput -- [EVENTS [MEMBERS...]]`
//! (default 5,000,000 events, one member). Caught up is judged by the commit log, never by the
//! broker's watermark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_ingest::IngestConfig;
use testlake_ingest::log_writer::PartitionLog;
use testlake_schemas::Lake;
use testlake_schemas::log_reader::{CommittedFiles, read_entry};
use testlake_tests::{Broker, unique_topic};

const PARTITIONS: i32 = 4;
/// Runs of the raw consumer and of the ingest, alternating; the best of each is reported.
const ROUNDS: usize = 3;

fn release_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("testlake");
    assert!(bin.is_file(), "{} is missing: run `cargo build --release -p testlake` first", bin.display());
    bin
}

/// Produces `events` fleet events; returns JSON bytes and each partition's end offset.
fn produce(brokers: &str, topic: &str, events: usize) -> (u64, BTreeMap<i32, i64>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.type", "zstd")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap();
    let mut fleet = Fleet::new(FleetConfig {
        repositories: 8,
        suites_per_repository: 10,
        tests_per_suite: 50,
        ..Default::default()
    });
    let start = Utc::now() - TimeDelta::hours(20);
    let (mut sent, mut bytes, mut run) = (0usize, 0u64, 0i64);
    'outer: loop {
        for e in fleet.run(start + TimeDelta::seconds(run * 15)) {
            if sent == events {
                break 'outer;
            }
            let payload = e.to_json();
            bytes += payload.len() as u64;
            let partition = (sent % PARTITIONS as usize) as i32;
            let mut record = BaseRecord::<(), String>::to(topic).payload(&payload).partition(partition);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            sent += 1;
        }
        run += 1;
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    let per = (events as i64) / i64::from(PARTITIONS);
    let ends = (0..PARTITIONS).map(|p| (p, per + i64::from((p as usize) < events % PARTITIONS as usize))).collect();
    (bytes, ends)
}

/// Consumes the whole topic, counting messages and bytes: the ceiling for any consumer here. It
/// is configured exactly as the ingest's consumer and timed the same way, from subscribing (group
/// join included) to the last message.
fn raw_consume(brokers: &str, topic: &str, events: usize) -> (Duration, u64, f64) {
    let mut config = IngestConfig::new(brokers, topic);
    config.group_id = unique_topic("raw");
    let consumer: BaseConsumer = config.consumer_config().create().unwrap();
    let started = Instant::now();
    consumer.subscribe(&[topic]).unwrap();
    let (mut count, mut bytes) = (0usize, 0u64);
    let (from, to) = steady_window(events);
    let mut window = Steady::default();
    while count < events {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            count += 1;
            bytes += m.payload().map_or(0, <[u8]>::len) as u64;
            if count == from || count == to {
                window.sample(started.elapsed(), count as i64, from, to);
            }
        }
    }
    (started.elapsed(), bytes, window.rate())
}

/// The steady-state window: from 20 % to 80 % of the events, leaving out start-up (process
/// start, group join, log recovery) and the tail (the last buffers wait for their flush age).
fn steady_window(events: usize) -> (usize, usize) {
    (events / 5, events * 4 / 5)
}

/// The first progress samples at or past each end of the steady window.
#[derive(Default)]
struct Steady {
    first: Option<(Duration, i64)>,
    last: Option<(Duration, i64)>,
}

impl Steady {
    fn sample(&mut self, at: Duration, done: i64, from: usize, to: usize) {
        if self.first.is_none() && done >= from as i64 {
            self.first = Some((at, done));
        }
        if self.last.is_none() && done >= to as i64 {
            self.last = Some((at, done));
        }
    }

    /// Events per second between the two samples.
    fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some((t1, n1)), Some((t2, n2))) if t2 > t1 => (n2 - n1) as f64 / (t2 - t1).as_secs_f64(),
            _ => f64::NAN,
        }
    }
}

/// Rows in the committed `results` files, read from their Parquet footers.
async fn landed_rows(lake: &Lake, lake_dir: &std::path::Path) -> i64 {
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await.unwrap();
    let files = committed.dates().into_iter().flat_map(|date| committed.results_for(date));
    files
        .map(|path| {
            let file = std::fs::File::open(lake_dir.join(path)).unwrap();
            SerializedFileReader::new(file).unwrap().metadata().file_metadata().num_rows()
        })
        .sum()
}

/// Offsets the broker skipped: tansu's `memory://` engine answers a fetch from inside a record
/// batch with the *next* batch (`Storage::Memory` in `tests/src/broker.rs`), so a partition
/// that a new member resumes mid-batch — with several members, the group's rebalances move
/// partitions after some of their flushes landed — never gets the rest of that batch. The ingest
/// logs each such gap ("a flush starts past where the log resumes"); here it is read back from
/// the lake: per committed entry, its files' first offset less the entry's `from_offset`.
async fn broker_skipped(lake: &Lake, topic: &str, ends: &BTreeMap<i32, i64>) -> i64 {
    use testlake_schemas::log::{EntryObject, Intent, Outcome, OutcomeRecord, entry_path};
    use testlake_schemas::paths::DataFileName;
    let mut skipped = 0;
    for &partition in ends.keys() {
        for seq in 0.. {
            let Ok(intent) = read_entry::<Intent>(lake, &entry_path(topic, partition, seq, EntryObject::Intent)).await
            else {
                break;
            };
            let outcome = entry_path(topic, partition, seq, EntryObject::Outcome);
            if !matches!(read_entry(lake, &outcome).await, Ok(OutcomeRecord { outcome: Outcome::Committed, .. })) {
                continue;
            }
            let first = intent.files.iter().filter_map(|f| f.path.rsplit('/').next()?.parse::<DataFileName>().ok());
            if let Some(first) = first.map(|name| name.first_offset).min() {
                skipped += first - intent.from_offset;
            }
        }
    }
    skipped
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every common configuration.
    Some(Duration::from_millis(ticks * 10))
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
                .sum()
        })
        .unwrap_or(0)
}

/// `members` `testlake ingest` processes in one group from the topic's start into a fresh lake,
/// until the commit log says every partition's end landed.
struct IngestRun {
    elapsed: Duration,
    /// From the commit log holding every event to the Delta table showing every partition's
    /// newest committed entry.
    delta_lag: Duration,
    /// Events per second over the steady window, from the commit log polled every 100 ms.
    steady: f64,
    /// Events per second from the group's last assignment (every member holding its partitions
    /// for good) to the end: NaN when the run ended before that.
    settled: f64,
    peak_kib: u64,
    cpu: Duration,
    parquet_bytes: u64,
}

async fn ingest_once(
    binary: &std::path::Path,
    brokers: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    events: usize,
    members: usize,
) -> IngestRun {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let started = Instant::now();
    let group = unique_topic("g");
    let started_at = Utc::now();
    let logs: Vec<_> = (0..members).map(|i| dir.path().join(format!("member{i}.log"))).collect();
    let mut children: Vec<std::process::Child> = logs
        .iter()
        .map(|log| {
            // Each member's assignments are read back from its log: when the group settled.
            let filter = std::env::var("TESTLAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into());
            std::process::Command::new(binary)
                .args(["ingest", "--brokers", brokers, "--topic", topic, "--group", &group])
                .args(["--lake", lake_dir.to_str().unwrap(), "--landed-topic", ""])
                .env("RUST_LOG", format!("{filter},testlake_ingest::consumer=info"))
                .env("NO_COLOR", "1")
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut samples = Vec::new();
    let mut peaks = vec![0; members];
    let (from, to) = steady_window(events);
    let mut window = Steady::default();
    // tansu's group coordinator has been seen leaving a partition unassigned after a rebalance
    // (ingest/COMMIT_PROTOCOL.md): a run that stops making progress fails rather than hangs.
    let mut progress = (0, Instant::now());
    loop {
        for (peak, child) in peaks.iter_mut().zip(&children) {
            *peak = (*peak).max(peak_rss_kib(child.id()).unwrap_or(0));
        }
        let (mut done, mut landed) = (true, 0);
        for (&p, &end) in ends {
            let durable = PartitionLog::durable_offset(&lake, topic, p).await.unwrap();
            done &= durable.is_some_and(|d| d >= end);
            landed += durable.unwrap_or(0);
        }
        window.sample(started.elapsed(), landed, from, to);
        samples.push((started.elapsed(), landed));
        if done {
            break;
        }
        if landed > progress.0 {
            progress = (landed, Instant::now());
        }
        assert!(
            progress.1.elapsed() < Duration::from_secs(60),
            "{members} member(s): no progress for 60 s at {landed}"
        );
        for child in &mut children {
            assert!(child.try_wait().unwrap().is_none(), "an ingest exited early");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let delta_lag = delta_caught_up(&lake).await;
    for (peak, child) in peaks.iter_mut().zip(&children) {
        *peak = (*peak).max(peak_rss_kib(child.id()).unwrap_or(0));
    }
    let cpu = children.iter().map(|c| cpu_time(c.id()).expect("the ingest's CPU time")).sum();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let landed = landed_rows(&lake, &lake_dir).await;
    let skipped = broker_skipped(&lake, topic, ends).await;
    if landed + skipped != events as i64 {
        let kept = dir.keep();
        panic!(
            "every event landed once: {landed} of {events} landed, {skipped} skipped by the broker; the lake is kept at {}",
            kept.display()
        );
    }
    if skipped > 0 {
        println!(
            "  {skipped} events never delivered by the broker (tansu memory:// resuming mid-batch; see broker_skipped)"
        );
    }
    let settled = settled_rate(&samples, last_assignment(&logs, started_at));
    let peak_kib = peaks.into_iter().max().unwrap_or(0);
    let parquet_bytes = dir_bytes(&lake_dir.join("results"));
    IngestRun { elapsed, delta_lag, steady: window.rate(), settled, peak_kib, cpu, parquet_bytes }
}

/// When, after `started_at`, the group last assigned partitions to one of its members (from the
/// members' `partitions assigned` log lines): the group settled then, unless a member was
/// revoked again later (then `None`, as the run never settled).
fn last_assignment(logs: &[std::path::PathBuf], started_at: chrono::DateTime<Utc>) -> Option<Duration> {
    let mut last: Option<(chrono::DateTime<Utc>, bool)> = None;
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let assigned = line.contains("partitions assigned");
            if !assigned && !line.contains("partitions revoked") {
                continue;
            }
            let Some(at) = line.split_whitespace().next().and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok()) else {
                continue;
            };
            if last.is_none_or(|(t, _)| at >= t) {
                last = Some((at, assigned));
            }
        }
    }
    let (at, assigned) = last?;
    assigned.then(|| (at - started_at).to_std().unwrap_or_default())
}

/// Events per second over the samples from `since` to the last one (NaN without two of them).
fn settled_rate(samples: &[(Duration, i64)], since: Option<Duration>) -> f64 {
    let Some(since) = since else { return f64::NAN };
    let after: Vec<_> = samples.iter().filter(|(at, _)| *at >= since).collect();
    match (after.first(), after.last()) {
        (Some(&&(t1, n1)), Some(&&(t2, n2))) if t2 > t1 => (n2 - n1) as f64 / (t2 - t1).as_secs_f64(),
        _ => f64::NAN,
    }
}

/// How long until the Delta table shows each partition's newest committed entry (polled every
/// 50 ms, at most 60 s).
async fn delta_caught_up(lake: &Lake) -> Duration {
    let started = Instant::now();
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await.unwrap();
    let want: BTreeMap<String, u64> = committed.committed_through().map(|(d, s)| (d.to_owned(), s)).collect();
    while started.elapsed() < Duration::from_secs(60) {
        let shown = testlake_schemas::delta::snapshot(lake).await.ok().flatten().unwrap_or_default();
        let shown: BTreeMap<String, u64> = shown.published.into_iter().collect();
        if want.iter().all(|(dir, seq)| shown.get(dir).is_some_and(|s| s >= seq)) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the Delta table did not catch up with the commit log within 60 s");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let events = args.first().copied().unwrap_or(5_000_000);
    let members: Vec<usize> = if args.len() > 1 { args[1..].to_vec() } else { vec![1] };
    let binary = release_binary();
    let broker = Broker::start();
    let brokers = broker.bootstrap();
    let topic = unique_topic("bench");
    testlake::kafka::ensure_topic(&brokers, &topic, PARTITIONS).await.unwrap();

    let t = Instant::now();
    let (json_bytes, ends) = produce(&brokers, &topic, events);
    println!("produced {events} events ({:.1} MB JSON) in {:.1} s", json_bytes as f64 / 1e6, t.elapsed().as_secs_f64());
    for &count in &members {
        measure(&binary, &brokers, &topic, &ends, events, json_bytes, count).await;
    }
}

/// The raw consumer and `count` ingest members, alternating ROUNDS times; the best of each.
async fn measure(
    binary: &std::path::Path,
    brokers: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    events: usize,
    json_bytes: u64,
    count: usize,
) {
    // The two alternate, ROUNDS times each, and the best of each is compared: on this shared
    // 2-core machine one run of either varies by up to 2× (ingest ratios 0.45–0.86 were seen in
    // single runs of the same build).
    let (mut raw, mut raw_steady, mut ingest_steady) = (Duration::MAX, 0f64, 0f64);
    let mut settled = f64::NAN;
    let (mut best, mut peak, mut lag) = (None::<IngestRun>, 0, Duration::ZERO);
    for round in 1..=ROUNDS {
        let (elapsed, raw_bytes, steady) = raw_consume(brokers, topic, events);
        assert_eq!(raw_bytes, json_bytes, "the raw consumer saw every byte");
        let run = ingest_once(binary, brokers, topic, ends, events, count).await;
        println!(
            "{count} member(s), round {round}: raw {:.0} events/s, ingest {:.0} events/s; steady window: raw {steady:.0}, ingest {:.0}; after the group settled: ingest {:.0}; Delta caught up {:.0} ms after the log",
            events as f64 / elapsed.as_secs_f64(),
            events as f64 / run.elapsed.as_secs_f64(),
            run.steady,
            run.settled,
            run.delta_lag.as_secs_f64() * 1e3
        );
        settled = settled.max(run.settled); // NaN (never settled) loses to any figure
        raw = raw.min(elapsed);
        raw_steady = raw_steady.max(steady);
        ingest_steady = ingest_steady.max(run.steady);
        peak = peak.max(run.peak_kib);
        lag = lag.max(run.delta_lag);
        if best.as_ref().is_none_or(|b| run.elapsed < b.elapsed) {
            best = Some(run);
        }
    }
    let IngestRun { elapsed: ingest, cpu, parquet_bytes: parquet, .. } = best.expect("ROUNDS ≥ 1");

    println!(
        "ingest_throughput: {events} events, {PARTITIONS} partitions, {count} member(s), tansu memory:// on 127.0.0.1, best of {ROUNDS}"
    );
    report("raw consume ceiling", events as f64 / raw.as_secs_f64(), "events/s");
    report("raw consume ceiling", json_bytes as f64 / 1e6 / raw.as_secs_f64(), "MB/s");
    report("testlake ingest", events as f64 / ingest.as_secs_f64(), "events/s");
    report("testlake ingest", json_bytes as f64 / 1e6 / ingest.as_secs_f64(), "MB/s");
    report("ratio ingest / raw ceiling (start to last durable)", raw.as_secs_f64() / ingest.as_secs_f64(), "×");
    report("raw consume ceiling, steady 20→80 %", raw_steady, "events/s");
    report("testlake ingest, steady 20→80 % durable", ingest_steady, "events/s");
    report("ratio ingest / raw ceiling, steady", ingest_steady / raw_steady, "×");
    report("testlake ingest, after the group settled", settled, "events/s");
    report("ratio ingest after the group settled / raw ceiling, steady", settled / raw_steady, "×");
    report("target ratio", 0.8, "×");
    report("ingest CPU time per event (all members' threads, best run)", cpu.as_secs_f64() * 1e6 / events as f64, "µs");
    report("ingest peak RSS of one member (VmHWM, any run)", peak as f64 / 1024.0, "MiB");
    report("Delta table behind the commit log at the end (worst run)", lag.as_secs_f64() * 1e3, "ms");
    report("JSON bytes per event", json_bytes as f64 / events as f64, "B");
    report("Parquet bytes per event", parquet as f64 / events as f64, "B");
}
