use super::*;
use chrono::NaiveDate;
use testlake_schemas::Table;

fn staged(path: &str) -> StagedFile {
    StagedFile {
        entry: EntryFile {
            path: path.to_owned(),
            table: Table::Results,
            date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            hour: 4,
            rows: 1,
            min_time: None,
            max_time: None,
            repositories: None,
            bytes: None,
        },
        bytes: Bytes::from_static(b"parquet bytes"),
    }
}

async fn exists(lake: &Lake, path: &str) -> bool {
    lake.store().head(&lake.path(path)).await.is_ok()
}

#[tokio::test]
async fn commits_resume_where_the_last_one_ended() {
    let lake = Lake::in_memory();
    let mut log = PartitionLog::recover(&lake, "t", 0, "w1").await.unwrap();
    assert_eq!((log.next_seq, log.resume_offset()), (0, None));
    log.commit(0, 10, vec![staged("results/a.parquet")], &Crasher::default()).await.unwrap();
    log.commit(10, 25, vec![staged("results/b.parquet")], &Crasher::default()).await.unwrap();
    assert!(exists(&lake, "results/a.parquet").await && exists(&lake, "results/b.parquet").await);

    let again = PartitionLog::recover(&lake, "t", 0, "w2").await.unwrap();
    assert_eq!((again.next_seq, again.resume_offset()), (2, Some(25)));
    let intent: Intent = read_json(&lake, &entry_path("t", 0, 1, EntryObject::Intent)).await.unwrap();
    assert_eq!((intent.from_offset, intent.next_offset), (10, 25), "entries are contiguous");
    let other = PartitionLog::recover(&lake, "t", 1, "w2").await.unwrap();
    assert_eq!(other.resume_offset(), None, "partitions have separate logs");
}

#[tokio::test]
async fn a_second_writer_for_the_same_entry_is_fenced_and_writes_nothing() {
    let lake = Lake::in_memory();
    let mut a = PartitionLog::recover(&lake, "t", 0, "a").await.unwrap();
    let mut b = PartitionLog::recover(&lake, "t", 0, "b").await.unwrap();
    a.commit(0, 10, vec![staged("results/a.parquet")], &Crasher::default()).await.unwrap();
    let err = b.commit(0, 12, vec![staged("results/b.parquet")], &Crasher::default()).await.unwrap_err();
    assert!(matches!(err, CommitError::Fenced { seq: 0, .. }), "{err}");
    assert!(!exists(&lake, "results/b.parquet").await);
}

#[tokio::test]
async fn recovery_aborts_a_pending_entry_and_deletes_its_files() {
    let lake = Lake::in_memory();
    let mut a = PartitionLog::recover(&lake, "t", 0, "a").await.unwrap();
    a.commit(0, 10, vec![staged("results/a.parquet")], &Crasher::default()).await.unwrap();
    // A writer that died after its intent and one data file of entry 1.
    let pending = Intent {
        seq: 1,
        topic: "t".into(),
        partition: 0,
        from_offset: 10,
        next_offset: 20,
        writer: "a".into(),
        files: vec![staged("results/b.parquet").entry, staged("results/c.parquet").entry],
        created_at: Utc::now(),
    };
    let intent_path = entry_path("t", 0, 1, EntryObject::Intent);
    assert!(create(&lake, &intent_path, serde_json::to_vec(&pending).unwrap()).await.unwrap());
    put_create(&lake, "results/b.parquet", Bytes::from_static(b"x")).await.unwrap();

    let b = PartitionLog::recover(&lake, "t", 0, "b").await.unwrap();
    assert_eq!((b.next_seq, b.resume_offset()), (2, Some(10)));
    assert!(!exists(&lake, "results/b.parquet").await, "the pending entry's file is gone");
    assert!(exists(&lake, "results/a.parquet").await, "committed files stay");

    // The late writer now tries to commit entry 1: the recovering owner's abort won.
    let late = PartitionLog::decide(&lake, "t", 0, 1, Outcome::Committed, "a").await.unwrap();
    assert_eq!(late, Outcome::Aborted);
}

#[test]
fn crash_specs_parse() {
    assert!(Crasher::parse("after_outcome:3").is_ok());
    assert!(Crasher::parse("mid_flush").is_ok());
    assert!(Crasher::parse("nowhere:1").is_err());
    assert!(Crasher::parse("after_data:x").is_err());
    Crasher::default().reached(CrashPoint::AfterData); // unarmed: nothing happens
}

#[tokio::test]
async fn a_fenced_writers_cleanup_never_touches_the_new_owners_files() {
    use testlake_schemas::{DataFileName, DataFilePath, HourPartition};
    let name = |entry| {
        DataFilePath {
            table: Table::Results,
            partition: HourPartition { date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(), hour: 4 },
            file: DataFileName { topic: "t".into(), partition: 0, first_offset: 0, last_offset: 9, entry },
        }
        .to_string()
    };
    let lake = Lake::in_memory();
    // A claims entry 0 and writes its file for offsets 0..=9, then freezes before its outcome.
    let a_files = vec![staged(&name(0)).entry];
    let a_intent = Intent {
        seq: 0,
        topic: "t".into(),
        partition: 0,
        from_offset: 0,
        next_offset: 10,
        writer: "a".into(),
        files: a_files.clone(),
        created_at: Utc::now(),
    };
    assert!(
        create(&lake, &entry_path("t", 0, 0, EntryObject::Intent), serde_json::to_vec(&a_intent).unwrap())
            .await
            .unwrap()
    );
    put_create(&lake, &name(0), Bytes::from_static(b"a")).await.unwrap();

    // B takes over: aborts entry 0, then writes the very same offsets as entry 1.
    let mut b = PartitionLog::recover(&lake, "t", 0, "b").await.unwrap();
    assert_eq!(b.next_seq(), 1);
    b.commit(0, 10, vec![staged(&name(b.next_seq()))], &Crasher::default()).await.unwrap();

    // A wakes, loses the outcome race, and cleans up what it wrote.
    assert_eq!(PartitionLog::decide(&lake, "t", 0, 0, Outcome::Committed, "a").await.unwrap(), Outcome::Aborted);
    delete_files(&lake, &a_files).await.unwrap();
    assert!(exists(&lake, &name(1)).await, "B's committed file survives A's cleanup");
    assert_eq!(PartitionLog::durable_offset(&lake, "t", 0).await.unwrap(), Some(10));
}

#[tokio::test]
async fn a_corrupt_entry_is_an_error_no_retry_fixes() {
    let lake = Lake::in_memory();
    let mut a = PartitionLog::recover(&lake, "t", 0, "a").await.unwrap();
    a.commit(0, 10, vec![staged("results/a.parquet")], &Crasher::default()).await.unwrap();
    let outcome = entry_path("t", 0, 1, EntryObject::Outcome);
    assert!(create(&lake, &entry_path("t", 0, 1, EntryObject::Intent), b"{}".to_vec()).await.unwrap());
    assert!(create(&lake, &outcome, b"committed".to_vec()).await.unwrap());
    let err = PartitionLog::recover(&lake, "t", 0, "b").await.unwrap_err();
    assert!(matches!(&err, CommitError::Corrupt { path, .. } if *path == outcome), "{err}");
    assert!(!err.is_transient());
}
