//! Compute reads only what the ingest commit log says is committed: the files of a flush that
//! crashed before its outcome never reach the trends, even while they sit in the folders.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use testlake_ingest::buffer::PendingFile;
use testlake_ingest::crash::Crasher;
use testlake_ingest::log_writer::{PartitionLog, StagedFile};
use testlake_ingest::stage::stage_file;
use testlake_schemas::files::put_create;
use testlake_schemas::log::{EntryObject, Intent, entry_path};
use testlake_schemas::tables::{Lineage, ResultsBuilder};
use testlake_schemas::{DataFileName, DataFilePath, HourPartition, Lake, Table, TestEvent};

/// A results file of entry `entry` for offsets from `first`, staged as the ingest stages it.
fn results_file(entry: u64, first: i64, ids: std::ops::Range<u32>) -> StagedFile {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let mut rows = ResultsBuilder::default();
    for i in ids.clone() {
        let json = format!(
            r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{i:012}","repository":"acme/r","branch":"main",
            "commit_sha":"c","run_id":"r","suite":"s","test_id":"t{i}","status":"passed","duration_ms":5,
            "finished_at":"2026-11-27T10:30:00Z"}}"#
        );
        let event = TestEvent::decode(json.as_bytes(), now).unwrap();
        rows.append(
            &event,
            Lineage { topic: "t", partition: 0, offset: first + i64::from(i - ids.start), ingested_at: now },
        );
    }
    let path = DataFilePath {
        table: Table::Results,
        partition: HourPartition { date: now.date_naive(), hour: 10 },
        file: DataFileName { topic: "t".into(), partition: 0, first_offset: first, last_offset: first + 9, entry },
    };
    let file = PendingFile {
        path,
        batch: rows.finish().unwrap(),
        rows: None,
        min_time: None,
        max_time: None,
        repositories: None,
    };
    stage_file(&file).unwrap()
}

#[tokio::test]
async fn trends_count_committed_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();

    // Entry 0: committed, 10 events.
    let mut log = PartitionLog::recover(&lake, "t", 0, "w").await.unwrap();
    log.commit(0, 10, vec![results_file(0, 0, 0..10)], &Crasher::default()).await.unwrap();

    // Entry 1: the writer died after its data file, before the outcome.
    let file = results_file(1, 10, 10..17);
    let intent = Intent {
        seq: 1,
        topic: "t".into(),
        partition: 0,
        from_offset: 10,
        next_offset: 20,
        writer: "w".into(),
        files: vec![file.entry.clone()],
        created_at: Utc::now(),
    };
    let intent_path = entry_path("t", 0, 1, EntryObject::Intent);
    put_create(&lake, &intent_path, Bytes::from(serde_json::to_vec(&intent).unwrap())).await.unwrap();
    put_create(&lake, &file.entry.path, file.bytes).await.unwrap();

    // A folder listing sees 17 rows; compute must count 10.
    let ctx = testlake_compute::catalog::lake_session(&lake).await.unwrap();
    let listed = ctx.sql("SELECT count(*) FROM results").await.unwrap().collect().await.unwrap();
    assert_eq!(arrow::util::pretty::pretty_format_batches(&listed).unwrap().to_string().matches("17").count(), 1);

    let tally = testlake_compute::run_once(&lake, &Default::default()).await.unwrap();
    assert_eq!((tally.completed, tally.failed), (2, 0), "one date of trends, one flaky snapshot");
    let ctx = testlake_compute::catalog::lake_session(&lake).await.unwrap();
    let batches = ctx.sql("SELECT sum(runs) AS runs FROM trends_daily").await.unwrap().collect().await.unwrap();
    datafusion::assert_batches_eq!(["+------+", "| runs |", "+------+", "| 10   |", "+------+"], &batches);
}
