//! The periodic cycle finds the dates to compute by listing `results`; a compaction's output is a
//! `results` file like any other.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use testlake_schemas::files::{encode_parquet, put_create};
use testlake_schemas::log::{
    CompactionIntent, EntryFile, EntryObject, Intent, Outcome, OutcomeRecord, compaction_dir, entry_path, entry_path_in,
};
use testlake_schemas::paths::{CompactedFileName, HourFilePath};
use testlake_schemas::tables::{Lineage, ResultsBuilder};
use testlake_schemas::{DataFileName, DataFilePath, HourPartition, Lake, Table, TestEvent};

use super::*;

async fn put_json(lake: &Lake, path: &str, value: &impl serde::Serialize) {
    put_create(lake, path, serde_json::to_vec(value).unwrap().into()).await.unwrap();
}

/// A date whose every ingest file was compacted away (outputs committed, inputs deleted) before
/// this compute process first ran: its folder holds only compacted files. The cycle must still
/// see the date and compute its trends — when compacted names were not recognised, the listing
/// found nothing there and the date was never computed.
#[tokio::test]
async fn a_date_holding_only_compacted_files_is_computed() {
    let lake = Lake::in_memory();
    let now = Utc::now();
    let hour = HourPartition::of(now);
    let mut rows = ResultsBuilder::default();
    for i in 0..7u32 {
        let json = format!(
            r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{i:012}","repository":"acme/r","branch":"main",
            "commit_sha":"c","run_id":"r","suite":"s","test_id":"t{i}","status":"passed","duration_ms":5,
            "finished_at":"{}"}}"#,
            hour.start().to_rfc3339()
        );
        let event = TestEvent::decode(json.as_bytes(), now).unwrap();
        rows.append(&event, Lineage { topic: "t", partition: 0, offset: i64::from(i), ingested_at: now });
    }
    let bytes = encode_parquet(&rows.finish().unwrap(), "x").unwrap();
    let entry_file = |path: String| EntryFile {
        path,
        table: Table::Results,
        date: hour.date,
        hour: hour.hour,
        rows: 7,
        min_time: None,
        max_time: None,
        repositories: None,
        bytes: None,
    };
    let at = DateTime::<Utc>::UNIX_EPOCH;

    // The ingest committed one file...
    let name = DataFileName { topic: "t".into(), partition: 0, first_offset: 0, last_offset: 6, entry: 0 };
    let input = entry_file(DataFilePath { table: Table::Results, partition: hour, file: name }.to_string());
    let intent = Intent {
        seq: 0,
        topic: "t".into(),
        partition: 0,
        from_offset: 0,
        next_offset: 7,
        writer: "w".into(),
        files: vec![input.clone()],
        created_at: at,
    };
    put_json(&lake, &entry_path("t", 0, 0, EntryObject::Intent), &intent).await;
    let committed = |seq, writer: &str| OutcomeRecord { seq, outcome: Outcome::Committed, writer: writer.into(), at };
    put_json(&lake, &entry_path("t", 0, 0, EntryObject::Outcome), &committed(0, "w")).await;

    // ...which a compaction replaced, and whose input is deleted since.
    let file = CompactedFileName { seq: 0, n: 0 };
    let output = entry_file(HourFilePath::Compacted { table: Table::Results, partition: hour, file }.to_string());
    put_create(&lake, &output.path, bytes).await.unwrap();
    let compaction = CompactionIntent {
        seq: 0,
        table: Table::Results,
        kind: Default::default(),
        date: hour.date,
        hour: hour.hour,
        writer: "c".into(),
        inputs: vec![input],
        outputs: vec![output],
        created_at: at,
    };
    let dir = compaction_dir(Table::Results);
    put_json(&lake, &entry_path_in(&dir, 0, EntryObject::Intent), &compaction).await;
    put_json(&lake, &entry_path_in(&dir, 0, EntryObject::Outcome), &committed(0, "c")).await;

    let versions = scan_results(&lake).await.unwrap();
    assert_eq!(versions.get(&hour.date).map(|v| v.files), Some(1), "the listing sees the compacted file");

    let mut scheduler = Scheduler::new(lake.clone(), ComputeConfig::default(), None);
    let tally = scheduler.cycle().await.unwrap();
    assert_eq!(tally.failed, 0);
    let files = lake.delta().computed_files(&lake, Table::TrendsHourly).await.unwrap().unwrap_or_default();
    let path = files.iter().find(|f| f.path.date == hour.date).expect("trends_hourly of the date were computed");
    let file = lake.store().get(&lake.path(&path.path.to_string())).await.unwrap();
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file.bytes().await.unwrap())
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let runs = batch.column_by_name("runs").unwrap().as_primitive::<Int64Type>();
    assert_eq!(runs.iter().flatten().sum::<i64>(), 7);
}
