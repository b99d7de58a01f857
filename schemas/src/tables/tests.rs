use super::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::TimeZone;

fn event(i: u32) -> TestEvent {
    let json = format!(
        r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{i:012}","repository":"acme/r","branch":"main",
        "commit_sha":"c1","run_id":"r1","suite":"s","test_id":"s.t{i}","status":"passed","duration_ms":1.5,
        "finished_at":"2026-11-27T10:00:00Z","tags":{{"os":"linux","i":"{i}"}}}}"#
    );
    TestEvent::decode(json.as_bytes(), Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap()).unwrap()
}

#[test]
fn results_batches_match_the_schema_and_keep_lineage() {
    let mut b = ResultsBuilder::default();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap();
    for i in 0..3 {
        b.append(&event(i), Lineage { topic: "t", partition: 2, offset: 100 + i64::from(i), ingested_at: now });
    }
    assert_eq!(b.len(), 3);
    let batch = b.finish().unwrap();
    assert!(b.is_empty());
    assert_eq!(batch.schema(), results_schema());
    assert_eq!(batch.num_rows(), 3);
    let offsets = batch.column_by_name("kafka_offset").unwrap().as_primitive::<Int64Type>();
    assert_eq!(offsets.values().to_vec(), vec![100, 101, 102]);
    let finished = batch.column_by_name("finished_at").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(finished.value(0), Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap().timestamp_micros());
    let tags = batch.column_by_name("tags").unwrap().as_map();
    assert_eq!(tags.value(1).len(), 2);
    let ids = batch.column_by_name("event_id").unwrap().as_string::<i32>();
    assert_eq!(ids.value(2), "00000000-0000-4000-8000-000000000002");
}

#[test]
fn rejected_batches_keep_the_reason() {
    let mut b = RejectedBuilder::default();
    let now = Utc::now();
    let why = Rejection::MissingField { field: "status" };
    b.append(None, Some(b"{}"), &why, Lineage { topic: "t", partition: 0, offset: 7, ingested_at: now });
    let batch = b.finish().unwrap();
    assert_eq!(batch.schema(), rejected_schema());
    let reason = batch.column_by_name("reason").unwrap().as_string::<i32>();
    assert_eq!(reason.value(0), "required field `status` is missing");
    assert!(batch.column_by_name("kafka_key").unwrap().is_null(0));
}

/// The `results` and `rejected` files as written since schema version 1: these columns, in this
/// order, with these types. Schemas evolve only by adding nullable columns at the end, so this
/// list may grow, never change.
#[test]
fn persisted_columns_only_grow_by_nullable_columns_at_the_end() {
    let described = |schema: &SchemaRef| -> Vec<String> {
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}{}", f.name(), f.data_type(), if f.is_nullable() { "?" } else { "" }))
            .collect()
    };
    let ts = "Timestamp(µs, \"UTC\")";
    let tags = described(&results_schema()).into_iter().find(|c| c.starts_with("tags ")).unwrap();
    let results_v1 = [
        "event_id Utf8",
        "repository Utf8",
        "branch Utf8",
        "commit_sha Utf8",
        "run_id Utf8",
        "job_id Utf8?",
        "suite Utf8",
        "test_id Utf8",
        "name Utf8",
        "status Utf8",
        "attempt Int32",
        "duration_ms Float64",
        &format!("started_at {ts}?"),
        &format!("finished_at {ts}"),
        "ci_provider Utf8?",
        "host Utf8?",
        "failure_message Utf8?",
        &tags,
        "schema_version Int32",
        "kafka_topic Utf8",
        "kafka_partition Int32",
        "kafka_offset Int64",
        &format!("ingested_at {ts}"),
    ];
    assert!(tags.starts_with("tags Map(") && tags.ends_with('?'), "{tags}");
    let rejected_v1 = [
        "kafka_topic Utf8",
        "kafka_partition Int32",
        "kafka_offset Int64",
        "kafka_key Binary?",
        "payload Binary?",
        "reason_code Utf8",
        "reason Utf8",
        &format!("ingested_at {ts}"),
    ];
    for (schema, v1) in [(results_schema(), &results_v1[..]), (rejected_schema(), &rejected_v1[..])] {
        let now = described(&schema);
        assert_eq!(&now[..v1.len()], v1);
        assert!(schema.fields()[v1.len()..].iter().all(|f| f.is_nullable()), "added columns must be nullable");
    }
}
