//! The query service under load: cached dashboard and daily-trends requests from 64 concurrent
//! keep-alive connections on 127.0.0.1, against a baseline measured in the same run — the same
//! load on `/healthz`, a handler that does no work (this machine's HTTP ceiling). Also the
//! cache-miss latency of a 30-day daily-trends request.
//!
//! The load generator is a minimal HTTP/1.1 client (one request in flight per connection) running
//! in the same process, so it shares the machine's cores with the service: the figures are what
//! one box does for both sides.
//!
//! `cargo bench -p testlake-benches --bench query_cache [-- SECONDS [EVENTS]]` (5 s, 20,000,000 results)

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_schemas::files::{encode_parquet, put_create};
use testlake_schemas::tables::{Lineage, ResultsBuilder};
use testlake_schemas::{Lake, Landed};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 64;

/// One keep-alive connection: sends a GET, reads the status line, headers and the body.
struct Connection {
    stream: BufReader<TcpStream>,
    line: String,
    /// Bodies are read into this, kept between requests: a new zeroed buffer per answer (a daily
    /// trends page is ~330 KB) cost the load generator, which shares the cores with the service,
    /// a seventh of its CPU time.
    body: Vec<u8>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream: BufReader::new(stream), line: String::new(), body: Vec::new() }
    }

    /// The status and the body's length.
    async fn get(&mut self, path: &str) -> (u16, usize) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await.expect("write");
        self.line.clear();
        self.stream.read_line(&mut self.line).await.expect("status line");
        let status = self.line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await.expect("header");
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("length");
            }
        }
        if self.body.len() < length {
            self.body.resize(length, 0);
        }
        self.stream.read_exact(&mut self.body[..length]).await.expect("body");
        (status, length)
    }
}

struct Load {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `CONNECTIONS` connections each sending `paths` round robin for `seconds`.
async fn load(addr: std::net::SocketAddr, paths: &[String], seconds: u64) -> Load {
    let paths: Arc<Vec<String>> = Arc::new(paths.to_vec());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let paths = Arc::clone(&paths);
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await;
                let mut latencies = Vec::new();
                let mut i = c;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (status, _) = connection.get(&paths[i % paths.len()]).await;
                    assert_eq!(status, 200, "{}", paths[i % paths.len()]);
                    latencies.push(sent.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Load {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// A lake of `events` fleet results spread over `days` days, with its trends materialized,
/// generated one date at a time (never all in memory). Returns the event count.
async fn build_lake(lake: &Lake, days: i64, events: usize) -> usize {
    let mut fleet = Fleet::new(FleetConfig {
        repositories: 4,
        suites_per_repository: 5,
        tests_per_suite: 20,
        ..Default::default()
    });
    let per_day = events / days as usize;
    let today = Utc::now().date_naive();
    let ctx = testlake_compute::catalog::lake_session(lake).await.expect("session");
    let mut total = 0;
    for d in (0..days).rev() {
        let date = today - chrono::Duration::days(d);
        let start = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let per_run = 5 * 20 * 105 / 100; // one repository's tests, a few retries
        let step = chrono::Duration::microseconds(86_400_000_000 / (per_day / per_run + 1) as i64);
        let (mut at, mut rows, mut part) = (start, ResultsBuilder::default(), 0);
        let mut files = Vec::new();
        let mut written = 0;
        while written + rows.len() < per_day && at.date_naive() == date {
            for e in fleet.run(at) {
                if e.finished_at.date_naive() == date {
                    let from =
                        Lineage { topic: "bench", partition: 0, offset: rows.len() as i64, ingested_at: e.finished_at };
                    rows.append(&e, from);
                }
            }
            at += step;
            if rows.len() >= 500_000 {
                written += rows.len();
                files.push(write(lake, date, part, &mut rows).await);
                part += 1;
            }
        }
        written += rows.len();
        files.push(write(lake, date, part, &mut rows).await);
        testlake_compute::trends::materialize_date(&ctx, lake, date, &files, &testlake_compute::trends::Interval::ALL)
            .await
            .expect("trends");
        total += written;
    }
    total
}

async fn write(lake: &Lake, date: chrono::NaiveDate, part: usize, rows: &mut ResultsBuilder) -> String {
    let path = format!("results/date={date}/hour=00/bench_{part:04}.parquet");
    let batch = std::mem::take(rows).finish().expect("batch");
    put_create(lake, &path, encode_parquet(&batch, &path).expect("encode")).await.expect("put");
    path
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<u64>().ok());
    let seconds = args.next().unwrap_or(5);
    let events = args.next().unwrap_or(20_000_000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().to_str().expect("utf-8 path")).expect("lake");
    let built = Instant::now();
    let events = build_lake(&lake, 30, events).await;
    report("lake: results over 30 days", events as f64, "events");
    report("lake: building it", built.elapsed().as_secs_f64(), "s");

    let config = testlake_query::ServeConfig::new("127.0.0.1:0".parse().expect("addr"));
    let state = Arc::new(testlake_query::AppState::new(lake.clone(), &config));
    let (notices, rx) = tokio::sync::broadcast::channel::<Landed>(16);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(testlake_query::serve(config, state, Some(rx), shutdown.clone(), Some(bound_tx)));
    let addr = bound_rx.await.expect("bound");

    // Cache misses: each `to` is a distinct answer, read from the lake.
    let now: DateTime<Utc> = Utc::now();
    let mut connection = Connection::open(addr).await;
    let mut misses = Vec::new();
    for i in 0..60 {
        let to = (now + chrono::Duration::microseconds(i)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let from = (now - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let path = format!("/api/v1/trends?interval=daily&from={from}&to={to}").replace('+', "%2B");
        let sent = Instant::now();
        assert_eq!(connection.get(&path).await.0, 200);
        misses.push(sent.elapsed());
    }
    misses.sort();
    report("miss: 30-day daily trends p50", millis(misses[misses.len() / 2]), "ms");
    report("miss: 30-day daily trends p99", millis(misses[(misses.len() - 1) * 99 / 100]), "ms");

    let cached = ["/api/v1/dashboard".to_owned(), "/api/v1/trends?interval=daily".to_owned()];
    for path in &cached {
        let (status, bytes) = connection.get(path).await; // warm
        assert_eq!(status, 200);
        report(&format!("cached: {path} body"), bytes as f64, "bytes");
    }
    let baseline = load(addr, &["/healthz".to_owned()], seconds).await;
    let ours = load(addr, &cached, seconds).await;
    for (name, l) in [("baseline /healthz", &baseline), ("cached dashboard + daily trends", &ours)] {
        report(&format!("{name}: requests"), l.requests as f64, "");
        report(&format!("{name}: throughput"), l.per_second, "req/s");
        report(&format!("{name}: p50"), millis(l.p50), "ms");
        report(&format!("{name}: p99"), millis(l.p99), "ms");
    }
    report("ratio cached / baseline throughput", ours.per_second / baseline.per_second, "x");
    println!("targets: >= 20000 req/s and p99 <= 5 ms cached; p99 <= 100 ms on a miss");
    drop(notices);
    shutdown.cancel();
}
