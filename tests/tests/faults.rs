//! Object-store faults under a running ingest: failed, timed-out, slow and lost-response puts.
//! Every fault is retried with backoff; the Kafka offset is never committed ahead of what the
//! commit log says is durable; the lake ends with every event exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use testlake_ingest::log_writer::PartitionLog;
use testlake_ingest::{FlushPolicy, Ingest, IngestConfig, IngestMetrics};
use testlake_schemas::Lake;
use testlake_tests::faulty_store::{Faults, FaultyStore};
use testlake_tests::{
    Broker, Storage, assert_exactly_once, committed_offsets, landed_ids, produce_fleet, unique_topic,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_offsets_never_run_ahead_of_durable_data() {
    let broker = Broker::start_with(Storage::Sqlite);
    let brokers = broker.bootstrap();
    let (topic, group) = (unique_topic("faults"), unique_topic("g"));
    testlake::kafka::ensure_topic(&brokers, &topic, 3).await.unwrap();
    let produced = produce_fleet(&brokers, &topic, 31, 12).await;

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

    let mut config = IngestConfig::new(&brokers, &topic);
    config.group_id = group.clone();
    config.flush = FlushPolicy { max_rows: 120, max_age: Duration::from_millis(100), ..FlushPolicy::default() };
    let metrics = Arc::new(IngestMetrics::default());
    let ingest = Ingest::new(config, faulty_lake, None, Arc::clone(&metrics)).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(ingest.run(shutdown.clone()));

    // Sample the invariant while ingest works: Kafka's committed offset (read first) never
    // exceeds the durable offset of the commit log (read after; it only grows).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    loop {
        let kafka = committed_offsets(&brokers, &group, &topic, 3);
        for (&partition, &offset) in &kafka {
            let durable = PartitionLog::durable_offset(&plain_lake, &topic, partition).await.unwrap();
            assert!(
                durable.is_some_and(|d| offset <= d),
                "partition {partition}: kafka at {offset}, log durable at {durable:?}"
            );
        }
        samples += 1;
        if landed_ids(dir.path()).await.len() >= produced.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();

    assert_exactly_once("under object-store faults", &produced, &landed_ids(dir.path()).await);
    assert!(store.injected() >= 10, "only {} faults were injected", store.injected());
    assert!(metrics.flush_errors() >= 5, "retries counted: {}", metrics.flush_errors());
    assert!(samples >= 3, "the invariant was sampled {samples} times");
}
