//! Events into the lake and back out: produced to the broker ([`produce_fleet`],
//! [`produce_events`]) or committed straight into a lake as ingest would ([`land_committed`]),
//! and the ids that landed, checked against those produced ([`assert_exactly_once`]).

use std::time::Duration;

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

/// Every `event_id` in the lake's `results` folders, with how often it appears — read by listing
/// the folders, as any reader does. A file deleted by a recovering ingest between listing and
/// reading fails the read: list again.
pub async fn landed_ids(lake_dir: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    landed_ids_in(&testlake_schemas::Lake::open(lake_dir.to_str().expect("utf-8 path")).expect("lake")).await
}

/// [`landed_ids`] of a lake on any backend.
pub async fn landed_ids_in(lake: &testlake_schemas::Lake) -> std::collections::BTreeMap<String, usize> {
    use arrow::array::AsArray;

    let mut attempts = 0;
    let batches = loop {
        let ctx = testlake_compute::catalog::lake_session(lake).await.expect("session");
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

/// The executions `trends_daily` counts over every date (0 before it exists): what compute has
/// materialized so far.
pub async fn trend_runs(lake: &testlake_schemas::Lake) -> i64 {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    let ctx = testlake_compute::catalog::lake_session(lake).await.expect("session");
    let Ok(df) = ctx.sql("SELECT CAST(coalesce(sum(runs), 0) AS BIGINT) FROM trends_daily").await else { return 0 };
    df.collect()
        .await
        .ok()
        .and_then(|b| b.first().map(|b| b.column(0).as_primitive::<Int64Type>().value(0)))
        .unwrap_or(0)
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

/// Lands `events` in the lake as ingest would — one committed log entry per hour of
/// `finished_at`, on partition `partition` of `topic`, offsets following on from `first_offset`,
/// and published to the Delta table — without a broker: for tests of what reads the lake.
/// Returns the next offset.
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
    use testlake_ingest::log_writer::PartitionLog;
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
                rows: None,
                min_time: None,
                max_time: None,
                repositories: None,
            };
            let staged = stage_file(&file).expect("stage");
            log.commit(offset, next, vec![staged], &Default::default()).await.expect("commit");
            offset = next;
        }
    }
    // Landed as ingest lands: in the Delta table too, before the caller looks.
    lake.delta().drain(lake).await.expect("published to the Delta table");
    offset
}
