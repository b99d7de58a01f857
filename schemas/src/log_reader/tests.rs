use super::*;
use crate::log::entry_path;

#[test]
fn entry_paths_round_trip() {
    let p = entry_path("ci", 3, 7, EntryObject::Outcome);
    assert_eq!(p, "_log/ci/p00003/00000000000000000007.outcome.json");
    let name = p.rsplit('/').next().unwrap();
    assert_eq!(parse_entry_name(name), Some((7, EntryObject::Outcome)));
    assert_eq!(parse_entry_name("00000000000000000007.intent.json"), Some((7, EntryObject::Intent)));
    assert_eq!(parse_entry_name("7.intent.json"), None);
    assert_eq!(parse_entry_name("00000000000000000007.json"), None);
}

/// Writes entry `seq` of partition `p` of topic `ci`: an intent listing one `results` file of
/// `date`, and the outcome when given.
async fn entry(lake: &crate::Lake, p: i32, seq: u64, date: NaiveDate, outcome: Option<Outcome>) {
    let at = DateTime::<Utc>::UNIX_EPOCH;
    let file = EntryFile {
        path: format!("results/date={date}/hour=00/p{p}-{seq}.parquet"),
        table: crate::Table::Results,
        date,
        hour: 0,
        rows: 1,
        min_time: None,
        max_time: None,
        repositories: None,
        bytes: None,
    };
    let intent = Intent {
        seq,
        topic: "ci".into(),
        partition: p,
        from_offset: seq as i64,
        next_offset: seq as i64 + 1,
        writer: "w".into(),
        files: vec![file],
        created_at: at,
    };
    let put = |path: String, json: Vec<u8>| async move {
        crate::files::put_create(lake, &path, json.into()).await.unwrap();
    };
    put(entry_path("ci", p, seq, EntryObject::Intent), serde_json::to_vec(&intent).unwrap()).await;
    if let Some(outcome) = outcome {
        let record = OutcomeRecord { seq, outcome, writer: "w".into(), at };
        put(entry_path("ci", p, seq, EntryObject::Outcome), serde_json::to_vec(&record).unwrap()).await;
    }
}

/// Writes compaction `seq` of `results` (inputs and outputs named by path), decided or not.
async fn compaction(lake: &crate::Lake, seq: u64, inputs: &[&str], outputs: &[&str], outcome: Option<Outcome>) {
    let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let file = |name: &&str| EntryFile {
        path: format!("results/date={date}/hour=00/{name}.parquet"),
        table: crate::Table::Results,
        date,
        hour: 0,
        rows: 1,
        min_time: None,
        max_time: None,
        repositories: None,
        bytes: None,
    };
    let at = DateTime::<Utc>::UNIX_EPOCH;
    let intent = CompactionIntent {
        seq,
        table: crate::Table::Results,
        kind: Default::default(),
        date,
        hour: 0,
        writer: "c".into(),
        inputs: inputs.iter().map(file).collect(),
        outputs: outputs.iter().map(file).collect(),
        created_at: at,
    };
    let dir = compaction_dir(crate::Table::Results);
    let put = |path: String, json: Vec<u8>| async move {
        crate::files::put_create(lake, &path, json.into()).await.unwrap();
    };
    put(entry_path_in(&dir, seq, EntryObject::Intent), serde_json::to_vec(&intent).unwrap()).await;
    if let Some(outcome) = outcome {
        let record = OutcomeRecord { seq, outcome, writer: "c".into(), at };
        put(entry_path_in(&dir, seq, EntryObject::Outcome), serde_json::to_vec(&record).unwrap()).await;
    }
}

/// A committed compaction replaces its inputs by its outputs — also for a reader that meets
/// the compaction before the ingest entry of one of its inputs; aborted and undecided ones
/// change nothing; a compaction of a compaction's output chains.
#[tokio::test]
async fn compactions_replace_their_inputs_in_any_reading_order() {
    let lake = crate::Lake::in_memory();
    let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let names = |files: Vec<String>| files.iter().map(|f| f.rsplit('/').next().unwrap().to_owned()).collect::<Vec<_>>();
    for seq in 0..3 {
        entry(&lake, 0, seq, d, Some(Outcome::Committed)).await;
    }
    let mut early = CommittedFiles::default();
    early.refresh(&lake).await.unwrap();
    assert_eq!(names(early.results_for(d)), ["p0-0.parquet", "p0-1.parquet", "p0-2.parquet"]);

    compaction(&lake, 0, &["p0-0", "p0-1"], &["c0"], Some(Outcome::Committed)).await;
    compaction(&lake, 1, &["p0-2", "c0"], &["c1-x"], Some(Outcome::Aborted)).await;
    compaction(&lake, 2, &["p0-2"], &["c2-pending"], None).await;
    early.refresh(&lake).await.unwrap();
    assert_eq!(names(early.results_for(d)), ["c0.parquet", "p0-2.parquet"]);
    let mut fresh = CommittedFiles::default();
    fresh.refresh(&lake).await.unwrap();
    assert_eq!(names(fresh.results_for(d)), ["c0.parquet", "p0-2.parquet"], "a fresh reader agrees");

    // The reading order a slow reader can meet: the compaction, then its input's entry.
    let mut reader = CommittedFiles::default();
    let dir = compaction_dir(crate::Table::Results);
    let compaction0: CompactionIntent = read_entry(&lake, &entry_path_in(&dir, 0, EntryObject::Intent)).await.unwrap();
    reader.apply(compaction0.clone());
    let input: Intent = read_entry(&lake, &entry_path("ci", 0, 1, EntryObject::Intent)).await.unwrap();
    input.files.into_iter().for_each(|f| reader.add(f));
    assert_eq!(names(reader.results_for(d)), ["c0.parquet"], "a superseded input never comes back");
    reader.apply(compaction0);
    assert_eq!(names(reader.results_for(d)), ["c0.parquet"], "applying twice changes nothing");

    compaction(&lake, 3, &["c0", "p0-2"], &["c3"], Some(Outcome::Committed)).await;
    early.refresh(&lake).await.unwrap();
    assert_eq!(names(early.results_for(d)), ["c3.parquet"]);
    assert_eq!(early.results_files().map(|f| f.rows).sum::<u64>(), 1);
}

/// Refreshes see exactly the committed entries, pick up entries decided later (also out of
/// order), and list each folder only from where they left off; on both stores the lake runs on.
#[tokio::test]
async fn committed_files_follow_the_log_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let local = crate::Lake::open(dir.path().to_str().unwrap()).unwrap();
    for lake in [crate::Lake::in_memory(), local] {
        let d1 = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let mut committed = CommittedFiles::default();
        committed.refresh(&lake).await.unwrap();
        assert!(committed.dates().is_empty(), "an empty lake has no log yet");

        entry(&lake, 0, 0, d1, Some(Outcome::Committed)).await;
        entry(&lake, 0, 1, d1, Some(Outcome::Aborted)).await;
        entry(&lake, 0, 2, d1, None).await;
        entry(&lake, 0, 3, d2, Some(Outcome::Committed)).await;
        entry(&lake, 7, 0, d2, Some(Outcome::Committed)).await;
        committed.refresh(&lake).await.unwrap();
        let names =
            |files: Vec<String>| files.iter().map(|f| f.rsplit('/').next().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(committed.results_for(d1)), ["p0-0.parquet"]);
        assert_eq!(names(committed.results_for(d2)), ["p0-3.parquet", "p7-0.parquet"]);
        assert_eq!(committed.next["_log/ci/p00000"], 2, "stops at the undecided entry");
        assert_eq!(committed.next["_log/ci/p00007"], 1);

        // Entry 2 decided late, entry 4 new: both read, nothing read twice.
        let record =
            OutcomeRecord { seq: 2, outcome: Outcome::Committed, writer: "w".into(), at: DateTime::<Utc>::UNIX_EPOCH };
        let path = entry_path("ci", 0, 2, EntryObject::Outcome);
        crate::files::put_create(&lake, &path, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
        entry(&lake, 0, 4, d2, Some(Outcome::Committed)).await;
        committed.refresh(&lake).await.unwrap();
        assert_eq!(names(committed.results_for(d1)), ["p0-0.parquet", "p0-2.parquet"]);
        assert_eq!(names(committed.results_for(d2)), ["p0-3.parquet", "p0-4.parquet", "p7-0.parquet"]);
        assert_eq!(committed.next["_log/ci/p00000"], 5);
        assert!(committed.read.is_empty(), "entries past a gap are forgotten once the gap closes");
    }
}
