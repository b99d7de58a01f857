use super::*;
use testlake_schemas::files::put_create;

fn file(name: &str, rows: u64) -> EntryFile {
    EntryFile {
        path: format!("results/date=2026-11-27/hour=04/{name}"),
        table: Table::Results,
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        hour: 4,
        rows,
        min_time: None,
        max_time: None,
        repositories: None,
        bytes: None,
    }
}

fn names(groups: &[Vec<EntryFile>]) -> Vec<Vec<&str>> {
    groups.iter().map(|g| g.iter().map(|f| f.path.rsplit('/').next().unwrap()).collect()).collect()
}

/// A fenced writer that wrote a file of its entry after the new owner aborted it (and then
/// crashed): the file is swept once the abort is older than `stale_after`, and only once.
#[tokio::test]
async fn a_late_file_of_an_aborted_entry_is_swept() {
    use crate::log_writer::{PartitionLog, StagedFile};
    use testlake_schemas::log::entry_path;
    let lake = Lake::in_memory();
    let staged = |name: &str| StagedFile { entry: file(name, 1), bytes: bytes::Bytes::from_static(b"rows") };
    let exists = |path: String| {
        let lake = lake.clone();
        async move { lake.store().head(&lake.path(&path)).await.is_ok() }
    };
    let mut a = PartitionLog::recover(&lake, "t", 0, "a").await.unwrap();
    a.commit(0, 10, vec![staged("a.parquet")], &Crasher::default()).await.unwrap();
    // The zombie's entry 1: its intent, then B's recovery aborts it, then its late file.
    let zombie = staged("zombie.parquet");
    let intent = Intent {
        seq: 1,
        topic: "t".into(),
        partition: 0,
        from_offset: 10,
        next_offset: 20,
        writer: "z".into(),
        files: vec![zombie.entry.clone()],
        created_at: Utc::now(),
    };
    let intent_path = entry_path("t", 0, 1, EntryObject::Intent);
    create(&lake, &intent_path, serde_json::to_vec(&intent).unwrap()).await.unwrap();
    let mut b = PartitionLog::recover(&lake, "t", 0, "b").await.unwrap();
    put_create(&lake, &zombie.entry.path, zombie.bytes.clone()).await.unwrap();
    b.commit(10, 20, vec![staged("b.parquet")], &Crasher::default()).await.unwrap();

    let never_closed = CompactConfig { closed_after: Duration::from_secs(1 << 40), ..CompactConfig::default() };
    let mut young =
        Compactor::new(lake.clone(), CompactConfig { stale_after: Duration::from_secs(3600), ..never_closed.clone() });
    assert_eq!(young.pass(&Crasher::default()).await.unwrap().swept, 0, "the abort is recent");
    assert!(exists(zombie.entry.path.clone()).await);

    let config = CompactConfig { stale_after: Duration::ZERO, grace: Duration::ZERO, ..never_closed };
    let mut compactor = Compactor::new(lake.clone(), config.clone());
    assert_eq!(compactor.pass(&Crasher::default()).await.unwrap().swept, 1);
    assert!(!exists(zombie.entry.path.clone()).await, "the late file is gone");
    assert!(exists(file("a.parquet", 1).path).await && exists(file("b.parquet", 1).path).await);
    assert!(exists(entry_path("t", 0, 1, EntryObject::Cleaned)).await);
    assert_eq!(compactor.pass(&Crasher::default()).await.unwrap().swept, 0, "swept once");
    let mut restarted = Compactor::new(lake.clone(), config);
    assert_eq!(restarted.pass(&Crasher::default()).await.unwrap().swept, 0, "the marker is read on start");
}

#[test]
fn groups_pack_small_files_up_to_the_target() {
    let files = vec![file("c", 40), file("a", 50), file("b", 50), file("big", 100), file("d", 30), file("e", 10)];
    // Path order a, b, big (left out: at the target), c, d, e.
    assert_eq!(names(&plan_groups(files, 100)), [vec!["a", "b"], vec!["c", "d", "e"]]);
}

#[test]
fn an_hour_compacted_already_yields_nothing() {
    assert!(plan_groups(vec![file("a", 100), file("b", 100)], 100).is_empty());
    assert!(plan_groups(vec![file("a", 60), file("b", 60)], 100).is_empty(), "no two fit together");
    assert!(plan_groups(vec![file("a", 5)], 100).is_empty());
    assert_eq!(names(&plan_groups(vec![file("a", 90), file("b", 5), file("c", 5)], 100)), [vec!["a", "b", "c"]]);
}

#[test]
fn outputs_record_what_their_inputs_did() {
    let t = |h: i64| Some(chrono::DateTime::<Utc>::from_timestamp(1_800_000_000 + h, 0).unwrap());
    let mut a = file("a", 3);
    (a.min_time, a.max_time, a.repositories) = (t(5), t(9), Some(vec!["r2".into(), "r1".into()]));
    let mut b = file("b", 4);
    (b.min_time, b.max_time, b.repositories) = (t(1), t(7), Some(vec!["r3".into()]));
    let hour = HourPartition { date: a.date, hour: 4 };
    let out = merged_entry(hour, 7, 1, &[a.clone(), b.clone()]);
    assert_eq!(out.path, "results/date=2026-11-27/hour=04/compacted_00000000000000000007_0001.parquet");
    assert_eq!((out.rows, out.min_time, out.max_time), (7, t(1), t(9)));
    assert_eq!(out.repositories, Some(vec!["r1".into(), "r2".into(), "r3".into()]));
    b.repositories = None;
    assert_eq!(merged_entry(hour, 7, 1, &[a, b]).repositories, None, "unknown when any input's is");
}
