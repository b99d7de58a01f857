use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::*;
use crate::log::{EntryObject, Intent, Outcome, OutcomeRecord, entry_path};

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

fn file(name: &str) -> EntryFile {
    EntryFile {
        path: format!("results/date={}/hour=07/{name}.parquet", date()),
        table: Table::Results,
        date: date(),
        hour: 7,
        rows: 10,
        min_time: Some(Utc::now()),
        max_time: Some(Utc::now()),
        repositories: None,
        bytes: Some(1000),
    }
}

fn lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    (dir, lake)
}

/// The newest version's files, by name, as a fresh reader sees them.
async fn names(lake: &Lake) -> BTreeSet<String> {
    let files = results_files(lake).await.unwrap().expect("a Delta table");
    files.iter().map(|p| p.rsplit('/').next().unwrap().trim_end_matches(".parquet").to_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

const DIR: &str = "_log/ci/p00000";

#[tokio::test]
async fn flushes_are_published_once_and_in_order() {
    let (_dir, lake) = lake();
    assert_eq!(results_files(&lake).await.unwrap(), None, "no table before the first publication");
    let first = [(0, vec![file("a"), file("b")])];
    let published = lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &first)])).await;
    assert!(matches!(published.unwrap(), Published::Committed(_)));
    let again = lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &first)])).await;
    assert_eq!(again.unwrap(), Published::Already);

    // Entries 0 (again) and 2 together (1 was aborted): only 2 is new.
    let both = [(0, vec![file("a"), file("b")]), (2, vec![file("c")])];
    let published = lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &both)])).await;
    assert!(matches!(published.unwrap(), Published::Committed(_)));
    assert_eq!(names(&lake).await, set(&["a", "b", "c"]));
    assert_eq!(lake.delta().published_seq(&lake, DIR).await.unwrap(), Some(2));
    assert_eq!(lake.delta().published_seq(&lake, "_log/ci/p00001").await.unwrap(), None);

    // Another partition's folder has its own sequence.
    let other = [(0, vec![file("d")])];
    let other = [FolderEntries::new("_log/ci/p00001", &other)];
    let published = lake.delta().publish(&lake, Publication::Flushes(&other)).await;
    assert!(matches!(published.unwrap(), Published::Committed(_)));
    assert_eq!(names(&lake).await, set(&["a", "b", "c", "d"]));
}

/// Two processes (two handles on one lake) publishing the same entries at once: each entry is
/// in the table once, whoever wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_show_each_entry_once() {
    let (dir, lake) = lake();
    let other = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let entries: Vec<(u64, Vec<EntryFile>)> = (0..20).map(|seq| (seq, vec![file(&format!("f{seq}"))])).collect();
    let run = |lake: Lake, entries: Vec<(u64, Vec<EntryFile>)>| {
        tokio::spawn(async move {
            let mut committed = 0;
            for i in 0..entries.len() {
                let upto = [FolderEntries::new(DIR, &entries[..=i])];
                let published = lake.delta().publish(&lake, Publication::Flushes(&upto)).await;
                if matches!(published.unwrap(), Published::Committed(_)) {
                    committed += 1;
                }
            }
            committed
        })
    };
    let (a, b) = (run(lake.clone(), entries.clone()), run(other, entries.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a + b >= 1, "someone committed");
    let want: BTreeSet<String> = (0..20).map(|s| format!("f{s}")).collect();
    assert_eq!(names(&lake).await, want);
    // Every add in the log is a distinct file: no entry was added twice in any version.
    let log = dir.path().join("results/_delta_log");
    let mut added = Vec::new();
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(path) = action["add"]["path"].as_str() {
                    added.push(path.to_owned());
                }
            }
        }
    }
    let distinct: BTreeSet<&String> = added.iter().collect();
    assert_eq!(distinct.len(), added.len(), "a file added twice: {added:?}");
    assert_eq!(added.len(), 20);
}

#[tokio::test]
async fn a_compaction_swaps_its_inputs_for_its_outputs_once() {
    let (_dir, lake) = lake();
    let entries = [(0, vec![file("a"), file("b"), file("c")])];
    lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &entries)])).await.unwrap();

    let (inputs, outputs) = ([file("a"), file("b")], [file("ab")]);
    let compaction =
        Publication::Compaction { seq: 0, kind: CompactionKind::Merge, inputs: &inputs, outputs: &outputs };
    assert!(matches!(lake.delta().publish(&lake, compaction).await.unwrap(), Published::Committed(_)));
    assert_eq!(names(&lake).await, set(&["ab", "c"]));
    assert_eq!(lake.delta().publish(&lake, compaction).await.unwrap(), Published::Already);

    // A chain: the output compacted again.
    let (inputs, outputs) = ([file("ab"), file("c")], [file("abc")]);
    let chained = Publication::Compaction { seq: 1, kind: CompactionKind::Merge, inputs: &inputs, outputs: &outputs };
    assert!(matches!(lake.delta().publish(&lake, chained).await.unwrap(), Published::Committed(_)));
    assert_eq!(names(&lake).await, set(&["abc"]));

    // Inputs partly gone: never a half-applied compaction.
    let more = [(1, vec![file("d")])];
    lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &more)])).await.unwrap();
    let (inputs, outputs) = ([file("abc"), file("zz")], [file("x")]);
    let bad = Publication::Compaction { seq: 2, kind: CompactionKind::Merge, inputs: &inputs, outputs: &outputs };
    let refused = lake.delta().publish(&lake, bad).await.unwrap_err();
    assert!(matches!(refused, DeltaError::Inconsistent { seq: 2, .. }), "{refused}");
    assert_eq!(names(&lake).await, set(&["abc", "d"]));
}

/// An expiry removes its files as a data change (an outside reader's change feed sees the rows
/// leave), recorded as a DELETE of the date.
#[tokio::test]
async fn an_expiry_removes_its_files_as_a_delete() {
    let (dir, lake) = lake();
    let entries = [(0, vec![file("a"), file("b"), file("c")])];
    lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &entries)])).await.unwrap();
    let inputs = [file("a"), file("b")];
    let expiry = Publication::Compaction { seq: 0, kind: CompactionKind::Expire, inputs: &inputs, outputs: &[] };
    let Published::Committed(version) = lake.delta().publish(&lake, expiry).await.unwrap() else {
        panic!("the expiry was not committed");
    };
    assert_eq!(names(&lake).await, set(&["c"]));
    assert_eq!(lake.delta().publish(&lake, expiry).await.unwrap(), Published::Already);

    let commit = dir.path().join(format!("results/_delta_log/{version:020}.json"));
    let actions: Vec<serde_json::Value> =
        std::fs::read_to_string(commit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let removes: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("remove")).collect();
    assert_eq!(removes.len(), 2);
    assert!(removes.iter().all(|r| r["dataChange"] == true), "{removes:?}");
    let info = actions.iter().find_map(|a| a.get("commitInfo")).expect("commitInfo");
    assert_eq!(info["operation"], "DELETE");
    assert_eq!(info["operationParameters"]["predicate"], "date IN ('2026-11-01')");
}

/// A lake written before it had a Delta table: the table starts from what the commit logs
/// committed (not the pending entry's file), with each folder's newest committed entry as its
/// transaction version.
#[tokio::test]
async fn a_lake_with_commit_logs_gets_a_table_of_its_committed_files() {
    let (_dir, lake) = lake();
    for (seq, name, outcome) in [(0, "a", Some(Outcome::Committed)), (1, "b", Some(Outcome::Committed)), (2, "c", None)]
    {
        let mut f = file(name);
        f.bytes = None; // written before sizes were recorded: asked of the store
        crate::files::put_create(&lake, &f.path, vec![0; 77].into()).await.unwrap();
        write_entry(&lake, seq, f, outcome).await;
    }
    assert_eq!(lake.delta().published_seq(&lake, DIR).await.unwrap(), Some(1));
    assert_eq!(names(&lake).await, set(&["a", "b"]));
    let log = std::fs::read_to_string(_dir.path().join("results/_delta_log/00000000000000000000.json")).unwrap();
    assert!(log.contains("\"size\":77"), "sizes from the store: {log}");
}

/// Writes entry `seq` of partition 0's log, with `file`, decided as `outcome`.
async fn write_entry(lake: &Lake, seq: u64, file: EntryFile, outcome: Option<Outcome>) {
    let at = Utc::now();
    let intent = Intent {
        seq,
        topic: "ci".into(),
        partition: 0,
        from_offset: seq as i64,
        next_offset: seq as i64 + 1,
        writer: "w".into(),
        files: vec![file],
        created_at: at,
    };
    let put =
        |path: String, json: Vec<u8>| async move { crate::files::put_create(lake, &path, json.into()).await.unwrap() };
    put(entry_path("ci", 0, seq, EntryObject::Intent), serde_json::to_vec(&intent).unwrap()).await;
    if let Some(outcome) = outcome {
        let record = OutcomeRecord { seq, outcome, writer: "w".into(), at };
        put(entry_path("ci", 0, seq, EntryObject::Outcome), serde_json::to_vec(&record).unwrap()).await;
    }
}

/// The background publisher shows what it is handed, reads from the log the committed entries
/// it was not handed (an earlier owner's), and a drain answers once they are in the table.
#[tokio::test]
async fn the_background_publisher_fills_gaps_from_the_log() {
    let (_dir, lake) = lake();
    write_entry(&lake, 0, file("a"), Some(Outcome::Committed)).await;
    lake.delta().committed(&lake, DIR, 0, vec![file("a")]);
    lake.delta().drain(&lake).await.unwrap();
    assert_eq!(names(&lake).await, set(&["a"]));

    // Another owner aborted 1 and committed 2 without publishing; this one committed 3.
    write_entry(&lake, 1, file("b"), Some(Outcome::Aborted)).await;
    write_entry(&lake, 2, file("c"), Some(Outcome::Committed)).await;
    write_entry(&lake, 3, file("d"), Some(Outcome::Committed)).await;
    lake.delta().committed(&lake, DIR, 3, vec![file("d")]);
    lake.delta().drain(&lake).await.unwrap();
    assert_eq!(names(&lake).await, set(&["a", "c", "d"]));
    assert_eq!(lake.delta().published_seq(&lake, DIR).await.unwrap(), Some(3));

    // Entries handed in an unbroken run are published as handed: 4 and 5 are not in the log.
    lake.delta().committed(&lake, DIR, 4, vec![file("e")]);
    lake.delta().committed(&lake, DIR, 5, vec![file("f")]);
    lake.delta().drain(&lake).await.unwrap();
    assert_eq!(names(&lake).await, set(&["a", "c", "d", "e", "f"]));

    // A recovered partition with nothing new: no new version.
    let version =
        |lake: Lake| async move { DeltaTableState::try_new(log_store(&lake).as_ref(), None).await.unwrap().version() };
    let before = version(lake.clone()).await;
    lake.delta().committed_through(&lake, DIR, 5);
    lake.delta().drain(&lake).await.unwrap();
    assert_eq!(version(lake.clone()).await, before);

    // An entry committed by an owner that died, in a partition no message comes to: published
    // when a member joins the group (every folder read above what the table shows).
    write_entry(&lake, 4, file("e"), Some(Outcome::Committed)).await;
    write_entry(&lake, 5, file("f"), Some(Outcome::Committed)).await;
    write_entry(&lake, 6, file("g"), Some(Outcome::Committed)).await;
    lake.delta().publish_all_committed(&lake);
    lake.delta().drain(&lake).await.unwrap();
    assert_eq!(names(&lake).await, set(&["a", "c", "d", "e", "f", "g"]));
    assert_eq!(lake.delta().published_seq(&lake, DIR).await.unwrap(), Some(6));
}

/// A publisher whose task ended is started again on the next hand-off and reads every folder:
/// what the dead one held is published all the same.
#[tokio::test]
async fn a_publisher_that_stopped_is_started_again_and_loses_nothing() {
    let (_dir, lake) = lake();
    write_entry(&lake, 0, file("a"), Some(Outcome::Committed)).await;
    lake.delta().committed(&lake, DIR, 0, vec![file("a")]);
    lake.delta().hand(&lake, publisher::Job::Panic);
    write_entry(&lake, 1, file("b"), Some(Outcome::Committed)).await;
    lake.delta().committed(&lake, DIR, 1, vec![file("b")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // A drain handed to the dying task is answered with an error; the next starts another.
    while lake.delta().drain(&lake).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no publisher was started again");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(names(&lake).await, set(&["a", "b"]));
}

/// Past [`CHECKPOINT_INTERVAL`] versions the log has a checkpoint, and a fresh reader sees the
/// same files through it.
#[tokio::test]
async fn the_log_is_checkpointed() {
    let (dir, lake) = lake();
    for seq in 0..CHECKPOINT_INTERVAL + 5 {
        let entries = [(seq, vec![file(&format!("f{seq}"))])];
        lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &entries)])).await.unwrap();
    }
    let checkpoint = format!("results/_delta_log/{:020}.checkpoint.parquet", CHECKPOINT_INTERVAL - 1);
    assert!(dir.path().join(&checkpoint).exists(), "{checkpoint}");
    assert_eq!(names(&lake).await.len() as u64, CHECKPOINT_INTERVAL + 5);
}

/// With the table's retention set to nothing (a lake older than its retention), a checkpoint
/// drops the tombstones of compacted files and the commits before it are deleted: what a fresh
/// reader opens no longer grows with the history.
#[tokio::test]
async fn past_its_retention_the_table_keeps_a_checkpoint_and_the_commits_after() {
    let (dir, lake) = lake();
    let first = [(0, vec![file("f0")])];
    lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &first)])).await.unwrap();
    set_retention(&lake, TimeDelta::zero()).await.unwrap();
    let (inputs, outputs) = ([file("f0")], [file("g0")]);
    let compaction =
        Publication::Compaction { seq: 0, kind: CompactionKind::Merge, inputs: &inputs, outputs: &outputs };
    assert!(matches!(lake.delta().publish(&lake, compaction).await.unwrap(), Published::Committed(_)));
    for seq in 1..CHECKPOINT_INTERVAL + 5 {
        let entries = [(seq, vec![file(&format!("f{seq}"))])];
        lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &entries)])).await.unwrap();
    }
    let log = dir.path().join("results/_delta_log");
    let checkpoint = log.join(format!("{:020}.checkpoint.parquet", CHECKPOINT_INTERVAL - 1));
    let commits: BTreeSet<u64> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    assert!(commits.iter().all(|v| *v >= CHECKPOINT_INTERVAL - 10), "commits before the checkpoint kept: {commits:?}");
    assert!(commits.contains(&(CHECKPOINT_INTERVAL + 3)), "later commits kept: {commits:?}");

    let reader = std::fs::File::open(&checkpoint).unwrap();
    let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(reader, 1024).unwrap();
    let (mut adds, mut removes) = (0, 0);
    for batch in batches {
        let batch = batch.unwrap();
        let present = |column: &str| batch.column_by_name(column).map_or(0, |c| c.len() - c.null_count());
        (adds, removes) = (adds + present("add"), removes + present("remove"));
    }
    assert_eq!(removes, 0, "the compacted file's tombstone expired");
    // Versions 0 (created), 1 (f0), 2 (the retention), 3 (f0 → g0), then f1, f2, …: the
    // checkpoint at version 99 holds g0 and f1..=f96.
    assert_eq!(adds as u64, CHECKPOINT_INTERVAL - 3, "g0 and f1..=f96");
    let mut want: BTreeSet<String> = (1..CHECKPOINT_INTERVAL + 5).map(|s| format!("f{s}")).collect();
    want.insert("g0".into());
    assert_eq!(names(&lake).await, want);
}

#[test]
fn timestamp_statistics_are_widened_to_whole_milliseconds() {
    let mut f = file("a");
    f.min_time = DateTime::from_timestamp_micros(1_700_000_000_123_456);
    f.max_time = DateTime::from_timestamp_micros(1_700_000_000_987_654);
    let stats: serde_json::Value = serde_json::from_str(&stats(&f)).unwrap();
    assert_eq!(stats["numRecords"], 10);
    assert_eq!(stats["minValues"]["finished_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(stats["maxValues"]["finished_at"], "2023-11-14T22:13:20.988Z");
}

/// A reader started from the table reads only what the table does not cover — entries committed
/// after its newest `txn`, and the compaction log — and sees what a reader of the whole logs sees.
#[tokio::test]
async fn a_reader_started_from_the_table_reads_only_what_it_does_not_cover() {
    use crate::log::{CompactionIntent, compaction_dir, entry_path_in};
    use crate::log_reader::CommittedFiles;
    let (dir, lake) = lake();
    let names_of = |files: &CommittedFiles| -> BTreeSet<String> {
        files.results_files().map(|f| f.path.rsplit('/').next().unwrap().trim_end_matches(".parquet").into()).collect()
    };
    // Entries 0 and 1 committed and published, 2 committed and not published, 3 pending.
    write_entry(&lake, 0, file("a"), Some(Outcome::Committed)).await;
    write_entry(&lake, 1, file("b"), Some(Outcome::Committed)).await;
    let published = [(0, vec![file("a")]), (1, vec![file("b")])];
    lake.delta().publish(&lake, Publication::Flushes(&[FolderEntries::new(DIR, &published)])).await.unwrap();
    write_entry(&lake, 2, file("c"), Some(Outcome::Committed)).await;
    write_entry(&lake, 3, file("d"), None).await;
    // A compaction of a and b into ab, committed and published.
    let (inputs, outputs) = (vec![file("a"), file("b")], vec![file("ab")]);
    let compaction = CompactionIntent {
        seq: 0,
        table: Table::Results,
        kind: CompactionKind::Merge,
        date: date(),
        hour: 7,
        writer: "c".into(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        created_at: Utc::now(),
    };
    let compactions = compaction_dir(Table::Results);
    let put = |path: String, json: Vec<u8>| {
        let lake = lake.clone();
        async move { crate::files::put_create(&lake, &path, json.into()).await.unwrap() }
    };
    put(entry_path_in(&compactions, 0, EntryObject::Intent), serde_json::to_vec(&compaction).unwrap()).await;
    let decided = OutcomeRecord { seq: 0, outcome: Outcome::Committed, writer: "c".into(), at: Utc::now() };
    put(entry_path_in(&compactions, 0, EntryObject::Outcome), serde_json::to_vec(&decided).unwrap()).await;
    let merge = Publication::Compaction { seq: 0, kind: CompactionKind::Merge, inputs: &inputs, outputs: &outputs };
    lake.delta().publish(&lake, merge).await.unwrap();

    let mut whole = CommittedFiles::default();
    whole.refresh(&lake).await.unwrap();
    assert_eq!(names_of(&whole), set(&["ab", "c"]));
    // The entries the table covers are not read: with entry 0's intent unreadable, a reader of
    // the whole logs fails, one started from the table sees the same files as before.
    std::fs::write(dir.path().join(entry_path("ci", 0, 0, EntryObject::Intent)), b"{not json").unwrap();
    let mut whole = CommittedFiles::default();
    assert!(matches!(whole.refresh(&lake).await, Err(LogReadError::Corrupt { .. })));
    let mut seeded = CommittedFiles::from_delta();
    seeded.refresh(&lake).await.unwrap();
    assert_eq!(names_of(&seeded), set(&["ab", "c"]));
    assert_eq!(seeded.committed_through().collect::<Vec<_>>(), vec![(DIR, 2)]);
    // From then on it follows the logs as ever: entry 3 commits.
    let committed = OutcomeRecord { seq: 3, outcome: Outcome::Committed, writer: "w".into(), at: Utc::now() };
    put(entry_path("ci", 0, 3, EntryObject::Outcome), serde_json::to_vec(&committed).unwrap()).await;
    seeded.refresh(&lake).await.unwrap();
    assert_eq!(names_of(&seeded), set(&["ab", "c", "d"]));
}

/// One publication of several folders is one table version, with each folder's `txn`; another
/// process's handle, holding an older version, learns both from that commit alone.
#[tokio::test]
async fn folders_published_together_are_one_version() {
    let (dir, lake) = lake();
    let other = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let first = [(0, vec![file("a")])];
    let first = [FolderEntries::new(DIR, &first)];
    let Published::Committed(before) = other.delta().publish(&other, Publication::Flushes(&first)).await.unwrap()
    else {
        panic!("nothing published");
    };
    assert_eq!(other.delta().published_seq(&other, DIR).await.unwrap(), Some(0), "its own commit");

    let (a, b) = ([(0, vec![file("a")]), (1, vec![file("b")])], [(4, vec![file("c")])]);
    let together = [FolderEntries::new(DIR, &a), FolderEntries::new("_log/ci/p00001", &b)];
    let Published::Committed(version) = lake.delta().publish(&lake, Publication::Flushes(&together)).await.unwrap()
    else {
        panic!("nothing published");
    };
    assert_eq!(version, before + 1, "both folders in the version after the first");
    assert_eq!(names(&lake).await, set(&["a", "b", "c"]));
    assert_eq!(other.delta().published_seq(&other, DIR).await.unwrap(), Some(1));
    assert_eq!(other.delta().published_seq(&other, "_log/ci/p00001").await.unwrap(), Some(4));
    let again = other.delta().publish(&other, Publication::Flushes(&together)).await.unwrap();
    assert_eq!(again, Published::Already, "the other handle sees both published");
}

#[test]
fn a_commit_whose_line_is_not_json_gives_no_txns() {
    let commit = br#"{"commitInfo":{"timestamp":1}}
{"txn":{"appId":"_log/ci/p00000","version":7,"lastUpdated":1}}
{"add":{"path":"x"}}
"#;
    let txns = commit_txns(commit).expect("every line JSON");
    assert_eq!(txns.iter().map(|t| (t.app_id.as_str(), t.version)).collect::<Vec<_>>(), [("_log/ci/p00000", 7)]);
    assert!(commit_txns(b"{\"txn\":{\"appId\":\"a\",\"version\":1}}\n{\"add\":").is_none());
}
