//! Freshness, end to end through the real broker with default settings: the time from producing
//! an event to the pushed update that reflects it reaching a connected dashboard
//! (`/api/v1/events`, the `trends_hourly` update), over many samples. Baseline in the same run:
//! the time to the `results` update (the event landed in the lake), so the report shows how the
//! total splits between ingest and compute.
//!
//! `cargo bench -p testlake-benches --bench freshness [-- SAMPLES]` (default 40; needs tansu)

use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::FutureRecord;
use testlake::fleet::{Fleet, FleetConfig};
use testlake::stack::{Stack, StackConfig};
use testlake_benches::report;
use testlake_compute::ComputeConfig;
use testlake_ingest::IngestConfig;
use testlake_query::ServeConfig;
use testlake_tests::{Broker, SseClient, unique_topic};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(40);
    let broker = Broker::start();
    let topic = unique_topic("freshness");
    testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 4).await.expect("topic");
    let lake_dir = tempfile::tempdir().expect("tempdir");
    let mut ingest = IngestConfig::new(broker.bootstrap(), &topic);
    ingest.group_id = unique_topic("group");
    let config = StackConfig {
        lake: lake_dir.path().to_str().expect("utf-8 path").to_owned(),
        lake_options: Vec::new(),
        ingest, // default flush policy: 500 ms max age
        compact: testlake_ingest::CompactConfig::off(),
        compute: ComputeConfig::default(),
        serve: ServeConfig::new("127.0.0.1:0".parse().expect("addr")),
        refresh_caches: true,
    };
    let shutdown = CancellationToken::new();
    let stack = Stack::start(config, shutdown.clone()).await.expect("stack");
    let base = format!("http://{}", stack.addr);
    let running = tokio::spawn(stack.wait());
    let producer = testlake::kafka::producer(&broker.bootstrap()).expect("producer");
    let mut events = SseClient::connect(&format!("{base}/api/v1/events?tables=results,trends_hourly")).await;
    assert_eq!(events.next().await.expect("ready").0, "ready");

    let mut fleet =
        Fleet::new(FleetConfig { repositories: 1, suites_per_repository: 1, tests_per_suite: 5, ..Default::default() });
    // Warm up: the consumer joins its group and the first files land.
    for e in fleet.run(Utc::now()) {
        let payload = e.to_json();
        producer
            .send(FutureRecord::to(&topic).key(&e.test_id).payload(&payload), Duration::from_secs(5))
            .await
            .expect("send");
    }
    events
        .wait_for(Duration::from_secs(60), |name, data| name == "update" && data["table"] == "trends_hourly")
        .await
        .expect("warm-up");
    tokio::time::sleep(Duration::from_secs(1)).await;
    while tokio::time::timeout(Duration::from_millis(300), events.next()).await.is_ok() {}

    let (mut landed, mut pushed) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let e = fleet.run(Utc::now()).remove(0);
        let payload = e.to_json();
        let sent = Instant::now();
        producer
            .send(FutureRecord::to(&topic).key(&e.test_id).payload(&payload), Duration::from_secs(5))
            .await
            .expect("send");
        let mut results_at = None;
        loop {
            let (name, data) =
                events.wait_for(Duration::from_secs(30), |name, _| name == "update").await.expect("an update");
            assert_eq!(name, "update");
            if data["table"] == "results" && results_at.is_none() {
                results_at = Some(sent.elapsed());
            }
            if let Some(at) = results_at.filter(|_| data["table"] == "trends_hourly") {
                landed.push(at);
                pushed.push(sent.elapsed());
                break;
            }
        }
        // Let the pipeline go quiet so samples do not overlap.
        tokio::time::sleep(Duration::from_millis(700)).await;
        while tokio::time::timeout(Duration::from_millis(100), events.next()).await.is_ok() {}
    }
    landed.sort();
    pushed.sort();
    report("samples", samples as f64, "");
    report("baseline: produce → results landed, p50", percentile(&landed, 0.5), "ms");
    report("baseline: produce → results landed, p99", percentile(&landed, 0.99), "ms");
    report("produce → trends update pushed, p50", percentile(&pushed, 0.5), "ms");
    report("produce → trends update pushed, p99", percentile(&pushed, 0.99), "ms");
    report("ratio pushed / landed (p50)", percentile(&pushed, 0.5) / percentile(&landed, 0.5), "x");
    println!("targets: p50 <= 2000 ms, p99 <= 5000 ms");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}
