use chrono::{DateTime, TimeZone, Utc};
use testlake_schemas::files::{encode_parquet, put_create};
use testlake_schemas::tables::{Lineage, ResultsBuilder};
use testlake_schemas::{DataFileName, DataFilePath, HourPartition, Lake, Table, TestEvent};

use super::{Landing, LaterCopy, later_copies};
use crate::trends::{Interval, compute_files};

/// One message of a file: the event's number, its status, and when it was ingested (seconds
/// after noon).
type Message = (u32, &'static str, i64);

fn ingested(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn event_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Writes a results file of Kafka partition `partition`, offsets from `first`, in hour `hour` of
/// 2026-11-27; every event finishes at minute `n` of that hour.
async fn file(lake: &Lake, partition: i32, first: i64, hour: u8, messages: &[Message]) -> String {
    let mut rows = ResultsBuilder::default();
    for (i, &(n, status, at)) in messages.iter().enumerate() {
        let json = format!(
            r#"{{"schema_version":1,"event_id":"{}","repository":"acme/r","branch":"main","commit_sha":"c{}",
            "run_id":"r","suite":"s","test_id":"t{n}","status":"{status}","duration_ms":{},
            "finished_at":"2026-11-27T{hour:02}:{:02}:00Z"}}"#,
            event_id(n),
            n % 3,
            n * 10,
            n % 60
        );
        let event = TestEvent::decode(json.as_bytes(), ingested(0)).unwrap();
        let offset = first + i64::try_from(i).unwrap();
        rows.append(&event, Lineage { topic: "tests", partition, offset, ingested_at: ingested(at) });
    }
    let path = DataFilePath {
        table: Table::Results,
        partition: HourPartition { date: ingested(0).date_naive(), hour },
        file: DataFileName {
            topic: "tests".into(),
            partition,
            first_offset: first,
            last_offset: first + i64::try_from(messages.len()).unwrap() - 1,
            entry: u64::try_from(first).unwrap(),
        },
    }
    .to_string();
    let bytes = encode_parquet(&rows.finish().unwrap(), &path).unwrap();
    put_create(lake, &path, bytes).await.unwrap();
    path
}

fn landing(partition: i32, offset: i64, at: i64) -> Landing {
    Landing {
        ingested_at: ingested(at).timestamp_micros(),
        kafka_topic: "tests".into(),
        kafka_partition: partition,
        kafka_offset: offset,
    }
}

#[tokio::test]
async fn later_copies_across_files_partitions_and_within_a_file_are_found() {
    let lake = Lake::in_memory();
    // Partition 0 lands events 1-4 first; partition 1 later re-sends 2 and 3 (3 now failed), and
    // its own event 7 twice in one file; hour 11 holds unrelated events only.
    let a = file(&lake, 0, 0, 10, &[(1, "passed", 0), (2, "passed", 0), (3, "passed", 0), (4, "passed", 0)]).await;
    let b = file(&lake, 1, 100, 10, &[(2, "passed", 5), (3, "failed", 5), (7, "passed", 5), (7, "passed", 6)]).await;
    let c = file(&lake, 0, 4, 11, &[(5, "passed", 9), (6, "passed", 9)]).await;

    let copies = later_copies(&lake, &[c.clone(), b.clone(), a.clone()]).await.unwrap();
    let want = vec![
        LaterCopy { event_id: event_id(2), landing: landing(1, 100, 5), first: landing(0, 1, 0), differs: vec![] },
        LaterCopy {
            event_id: event_id(3),
            landing: landing(1, 101, 5),
            first: landing(0, 2, 0),
            differs: vec!["status".into()],
        },
        LaterCopy { event_id: event_id(7), landing: landing(1, 103, 6), first: landing(1, 102, 5), differs: vec![] },
    ];
    assert_eq!(copies, want);

    // The same files in another order, and the hour alone: the same answer.
    assert_eq!(later_copies(&lake, &[a.clone(), b.clone()]).await.unwrap(), want);
    // Without the re-sending file, no copies: partition 0's landing stands alone.
    assert_eq!(later_copies(&lake, &[a.clone(), c.clone()]).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_hour_that_grows_finds_copies_in_its_new_files_only_and_a_replaced_set_is_read_again() {
    let lake = Lake::in_memory();
    let a = file(&lake, 0, 0, 10, &[(1, "passed", 0), (2, "passed", 0)]).await;
    assert_eq!(later_copies(&lake, std::slice::from_ref(&a)).await.unwrap(), vec![]);
    let b = file(&lake, 1, 0, 10, &[(3, "passed", 1)]).await;
    assert_eq!(later_copies(&lake, &[a.clone(), b.clone()]).await.unwrap(), vec![]);
    // A later file re-sends event 1: found although `a` was read in an earlier call.
    let c = file(&lake, 1, 1, 10, &[(1, "error", 2)]).await;
    let copies = later_copies(&lake, &[a.clone(), b.clone(), c.clone()]).await.unwrap();
    assert_eq!(
        copies,
        vec![LaterCopy {
            event_id: event_id(1),
            landing: landing(1, 1, 2),
            first: landing(0, 0, 0),
            differs: vec!["status".into()]
        }]
    );
    // A set that is not a superset (as after a compaction) is read again from scratch.
    assert_eq!(later_copies(&lake, &[b.clone(), c.clone()]).await.unwrap(), vec![]);
}

/// The trends of a lake holding copies equal those of a lake where every event was sent once.
#[tokio::test]
async fn trends_count_every_event_once() {
    let once = Lake::in_memory();
    let twice = Lake::in_memory();
    let all: Vec<Message> = (1..=40).map(|n| (n, if n % 4 == 0 { "failed" } else { "passed" }, 0)).collect();
    let once_files = vec![file(&once, 0, 0, 10, &all).await];
    let resent: Vec<Message> = all.iter().filter(|(n, _, _)| n % 3 == 0).map(|&(n, s, _)| (n, s, 30)).collect();
    let twice_files = vec![file(&twice, 0, 0, 10, &all).await, file(&twice, 1, 0, 10, &resent).await];
    let intervals = Interval::ALL;

    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_object_store(&once.store_url(), std::sync::Arc::clone(once.store()));
    let want = compute_files(&ctx, &once, &once_files, &intervals).await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_object_store(&twice.store_url(), std::sync::Arc::clone(twice.store()));
    let got = compute_files(&ctx, &twice, &twice_files, &intervals).await.unwrap();
    assert_eq!(got, want);
    assert_eq!(want[0].num_rows(), 1);
    let runs = want[0].column_by_name("runs").unwrap();
    assert_eq!(arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(runs).value(0), 40);
}
