//! Compaction of closed hours on real object stores — the local filesystem, and S3 servers (moto
//! for two compactors racing: its conditional writes are atomic; s3s-fs, file-backed, for a
//! compactor killed at each step): readers that follow the lake's logs see every row exactly once
//! before, during and after compactions — two compactors at once, late events landing into
//! compacted hours, a compactor killed at each step — and once the replaced files are deleted, so
//! do readers that only list the folders.
//!
//! No broker: compaction reads and writes only the lake. Files are landed through the ingest's
//! own commit log (`land_committed`), as `testlake ingest` lands them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{TimeDelta, Utc};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_ingest::compact::{CompactConfig, Compactor};
use testlake_ingest::crash::Crasher;
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{HourPartition, Lake, TestEvent};
use testlake_tests::delta::{DeltaFollower, delta_ids, delta_versions};
use testlake_tests::s3::parquet_files;
use testlake_tests::{Backend, TestLake, land_committed, landed_ids_in, testlake_binary};

/// Fleet runs every 10 minutes over the three hours that ended at least an hour ago.
fn events(seed: u64) -> Vec<TestEvent> {
    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 2, ..FleetConfig::default() });
    let first = HourPartition::of(Utc::now() - TimeDelta::hours(4)).start();
    let mut events: Vec<TestEvent> = (0..18).flat_map(|i| fleet.run(first + TimeDelta::minutes(10 * i + 3))).collect();
    events.retain(|e| e.finished_at < first + TimeDelta::hours(3));
    events
}

/// Lands `events` in chunks of `chunk` through partition `p`'s commit log: many small files per hour.
async fn land_in_chunks(lake: &Lake, p: i32, first_offset: i64, events: &[TestEvent], chunk: usize) -> i64 {
    let mut offset = first_offset;
    for piece in events.chunks(chunk) {
        offset = land_committed(lake, "ci", p, offset, piece).await;
    }
    offset
}

/// The rows of the file at `path`, read from the store.
async fn read_file(lake: &Lake, path: &str) -> std::io::Result<Vec<RecordBatch>> {
    let got = async { lake.store().get(&lake.path(path)).await?.bytes().await };
    let bytes = got.await.map_err(std::io::Error::other)?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(std::io::Error::other)?;
    reader.collect::<Result<_, _>>().map_err(std::io::Error::other)
}

fn ids(batches: &[RecordBatch]) -> impl Iterator<Item = String> + '_ {
    batches.iter().flat_map(|b| {
        b.column_by_name("event_id").unwrap().as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>()
    })
}

/// The `results` files the logs say are committed now.
async fn committed_results(lake: &Lake) -> Vec<String> {
    let mut committed = CommittedFiles::default();
    committed.refresh(lake).await.expect("refresh");
    committed.results_files().map(|f| f.path.clone()).collect()
}

/// What a reader following the logs sees now: every visible file's event ids, counted.
async fn visible(lake: &Lake) -> (BTreeMap<String, usize>, Vec<String>) {
    let files = committed_results(lake).await;
    let mut seen = BTreeMap::new();
    for path in &files {
        for id in ids(&read_file(lake, path).await.unwrap_or_else(|e| panic!("{path}: {e}"))) {
            *seen.entry(id).or_default() += 1;
        }
    }
    (seen, files)
}

fn assert_once(what: &str, want: &[TestEvent], seen: &BTreeMap<String, usize>) {
    let want: BTreeSet<String> = want.iter().map(|e| e.event_id.to_string()).collect();
    let got: BTreeSet<String> = seen.keys().cloned().collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(3).collect();
    assert!(
        got == want && twice.is_empty(),
        "{what}: {} missing, {} unexpected, twice: {twice:?}",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
}

/// Every `.parquet` file under `results/`, relative to the lake root, as the store lists them.
async fn files_in_store(lake: &Lake) -> BTreeSet<String> {
    parquet_files(lake, "results").await
}

fn config(grace: Duration) -> CompactConfig {
    CompactConfig {
        every: Duration::from_secs(1),
        closed_after: Duration::ZERO,
        target_rows: 100_000,
        grace,
        stale_after: Duration::from_secs(600),
        retention_days: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_readers_see_every_row_once_through_concurrent_compactions_and_late_events() {
    concurrent_compactions_and_late_events(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_readers_see_every_row_once_through_concurrent_compactions_and_late_events_on_s3() {
    concurrent_compactions_and_late_events(Backend::Moto).await;
}

async fn concurrent_compactions_and_late_events(backend: Backend) {
    let test_lake = TestLake::start(backend);
    let lake = test_lake.lake.clone();
    let mut all = events(11);
    let half = all.len() / 2;
    land_in_chunks(&lake, 0, 0, &all[..half], 25).await;
    let p1_next = land_in_chunks(&lake, 1, 0, &all[half..], 25).await;
    let before = files_in_store(&lake).await;
    let hours: BTreeSet<HourPartition> = all.iter().map(|e| HourPartition::of(e.finished_at)).collect();
    assert!(before.len() > 20 && hours.len() >= 3, "{} files over {} hours", before.len(), hours.len());

    // A reader checks every snapshot while two compactors race over the same hours.
    let stop = Arc::new(AtomicBool::new(false));
    let (snapshots, compacted_seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (lake, want) = (lake.clone(), all.clone());
        let (stop, snapshots, compacted_seen) = (stop.clone(), snapshots.clone(), compacted_seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (seen, files) = visible(&lake).await;
                assert_once("a snapshot during compaction", &want, &seen);
                snapshots.fetch_add(1, Ordering::SeqCst);
                if files.iter().any(|f| f.contains("/compacted_")) {
                    compacted_seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // So does an independent reader of the Delta table, at each version as it appears.
    let follower = DeltaFollower::start(&test_lake);
    let race = |lake: Lake| async move {
        let mut compactor = Compactor::new(lake, config(Duration::from_secs(2)));
        compactor.pass(&Crasher::default()).await.expect("pass")
    };
    // Rounds of two concurrent passes until one round commits nothing.
    let (mut committed, mut rounds) = (0, 0);
    loop {
        let (a, b) = tokio::join!(race(lake.clone()), race(lake.clone()));
        eprintln!("round {rounds}: {a:?} {b:?}");
        assert_eq!(a.failed + b.failed, 0);
        committed += a.committed + b.committed;
        rounds += 1;
        if a.committed + b.committed == 0 || rounds == 8 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("every snapshot held every row once");
    let versions = follower.stop();
    let newest = versions.last().expect("the follower read a version");
    for v in &versions {
        match &v.error {
            // Time travel reaches only as far as the grace keeps replaced files.
            Some(error) => assert!(v.version < newest.version, "the newest version unreadable: {error}"),
            None => assert_eq!(
                (v.rows, v.distinct),
                (all.len(), all.len()),
                "Delta version {} ({:?}) holds every event once",
                v.version,
                v.operation
            ),
        }
    }
    assert!(newest.error.is_none(), "{newest:?}");
    assert!(versions.iter().any(|v| v.operation.as_deref() == Some("OPTIMIZE")), "a compaction was read: {versions:?}");
    eprintln!("the Delta follower read {} versions", versions.len());
    eprintln!("{rounds} rounds, {} snapshots", snapshots.load(Ordering::SeqCst));
    assert_eq!(committed, hours.len(), "each hour compacted once");
    assert!(compacted_seen.load(Ordering::SeqCst) > 0, "the reader saw the compacted side too");

    // One file per hour now; the replaced files are gone, so a folder listing agrees.
    let (seen, files) = visible(&lake).await;
    assert_once("after compaction", &all, &seen);
    assert_eq!(files.len(), hours.len(), "{files:?}");
    assert!(files.iter().all(|f| f.contains("/compacted_")), "{files:?}");
    assert_eq!(files_in_store(&lake).await, files.iter().cloned().collect(), "no replaced or orphan file left");
    assert_once("a folder listing after compaction", &all, &landed_ids_in(&lake).await);

    // Each output is sorted by repository, test, time (checked here, not by the sorting code).
    for path in &files {
        let batches = read_file(&lake, path).await.unwrap();
        let mut keys = Vec::new();
        for b in &batches {
            let repo = b.column_by_name("repository").unwrap().as_string::<i32>();
            let test = b.column_by_name("test_id").unwrap().as_string::<i32>();
            let at = b.column_by_name("finished_at").unwrap().as_primitive::<TimestampMicrosecondType>();
            for row in 0..b.num_rows() {
                keys.push((repo.value(row).to_owned(), test.value(row).to_owned(), at.value(row)));
            }
        }
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{path} is sorted");
    }

    // Late events for a compacted hour land beside its file; the next pass merges them in.
    let late_hour = *hours.iter().next().unwrap();
    let mut fleet = Fleet::new(FleetConfig { seed: 12, repositories: 2, ..FleetConfig::default() });
    let late: Vec<TestEvent> = fleet
        .run(late_hour.start() + TimeDelta::minutes(5))
        .into_iter()
        .filter(|e| HourPartition::of(e.finished_at) == late_hour)
        .take(40)
        .collect();
    assert_eq!(late.len(), 40);
    land_in_chunks(&lake, 1, p1_next, &late, 20).await;
    all.extend(late);
    let (seen, files) = visible(&lake).await;
    assert_once("late events beside a compacted file", &all, &seen);
    assert_eq!(files.len(), hours.len() + 2);
    let report = race(lake.clone()).await;
    assert_eq!((report.committed, report.inputs, report.outputs), (1, 3, 1), "{report:?}");
    let (seen, files) = visible(&lake).await;
    assert_once("after compacting the late events in", &all, &seen);
    assert_eq!(files.len(), hours.len());
    assert_once("a folder listing at the end", &all, &landed_ids_in(&lake).await);
    assert_eq!(race(lake.clone()).await.committed, 0, "nothing left to compact");
    assert_once("the newest Delta version at the end", &all, &delta_ids(&test_lake));
}

/// `testlake compact --once` aborted (like `kill -9`) at each step, then run again: readers
/// following the logs never see a row twice or miss one; once the next pass has aborted the
/// stale entry or deleted the replaced files, folder listings agree and no file is left over.
#[tokio::test]
async fn a_compactor_killed_at_each_step_loses_and_duplicates_nothing() {
    killed_at_each_step(Backend::Local).await;
}

#[tokio::test]
async fn a_compactor_killed_at_each_step_loses_and_duplicates_nothing_on_s3() {
    killed_at_each_step(Backend::S3sFs).await;
}

async fn killed_at_each_step(backend: Backend) {
    for point in ["compact_after_intent", "compact_mid_output", "compact_after_outcome"] {
        let test_lake = TestLake::start(backend);
        let lake = test_lake.lake.clone();
        let all = events(21);
        // Fewer, larger files on S3, where every request costs milliseconds.
        land_in_chunks(&lake, 0, 0, &all, if backend == Backend::Local { 30 } else { 100 }).await;
        let compact = |crash: Option<&str>, stale_after: &str| {
            let mut cmd = std::process::Command::new(testlake_binary());
            test_lake
                .apply(cmd.args(["compact", "--once"]))
                .args(["--compact-closed-after", "0s", "--compact-grace", "0s", "--compact-rows", "400"])
                .args(["--compact-stale-after", stale_after])
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if let Some(spec) = crash {
                cmd.env("TESTLAKE_CRASH_AT", spec);
            }
            cmd.status().expect("run testlake compact")
        };
        // The first hour's first step; with 400 rows per output mid_output leaves one of its
        // outputs written and one not.
        assert!(
            !compact(Some(&format!("{point}:1")), "10min").success(),
            "{point}: the injected crash stops the process"
        );
        let (seen, _) = visible(&lake).await;
        assert_once(&format!("{point}: right after the crash"), &all, &seen);

        // A pass that takes the crashed entry for a live compactor's leaves its hour alone.
        assert!(compact(None, "10min").success(), "{point}: a pass after the crash");
        let (seen, _) = visible(&lake).await;
        assert_once(&format!("{point}: after a pass"), &all, &seen);

        // Once the entry is stale it is aborted and cleaned up, and the hour compacted.
        assert!(compact(None, "0s").success(), "{point}: a pass treating the entry as stale");
        let (seen, files) = visible(&lake).await;
        assert_once(&format!("{point}: at the end"), &all, &seen);
        let hours: BTreeSet<HourPartition> = all.iter().map(|e| HourPartition::of(e.finished_at)).collect();
        let outputs = files.iter().filter(|f| f.contains("/compacted_")).count();
        assert!(outputs >= hours.len(), "{point}: every hour compacted: {files:?}");
        assert_eq!(files_in_store(&lake).await, files.iter().cloned().collect(), "{point}: nothing left over");
        assert_once(&format!("{point}: a folder listing at the end"), &all, &landed_ids_in(&lake).await);
    }
}

/// A compactor told to stop while it waits out the grace stops at once, leaving the replaced
/// files; the next pass (another process's, here a fresh compactor) deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_stops_without_waiting_out_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let all = events(31);
    land_in_chunks(&lake, 0, 0, &all, 40).await;
    let hours: BTreeSet<HourPartition> = all.iter().map(|e| HourPartition::of(e.finished_at)).collect();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let slow = CompactConfig { every: Duration::from_secs(3600), ..config(Duration::from_secs(600)) };
    let running = tokio::spawn(Compactor::new(lake.clone(), slow).run(shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, files) = visible(&lake).await;
        if files.len() == hours.len() && files.iter().all(|f| f.contains("/compacted_")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the hours were compacted: {files:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops without the 600 s grace").unwrap();
    eprintln!("stopped in {:?}", stopping.elapsed());
    let (seen, files) = visible(&lake).await;
    assert_once("after stopping", &all, &seen);
    let replaced = files_in_store(&lake).await.len() - files.len();
    assert!(replaced > 0, "the replaced files are still there");

    let report = Compactor::new(lake.clone(), config(Duration::ZERO)).pass(&Crasher::default()).await.unwrap();
    assert_eq!((report.committed, report.deleted), (0, replaced), "{report:?}");
    assert_eq!(files_in_store(&lake).await, files.iter().cloned().collect(), "the next pass deleted them");
    assert_once("a folder listing at the end", &all, &landed_ids_in(&lake).await);
}

/// What `results` readers count (every event once) in the lake's committed files now: rows, and
/// the Kafka partitions the counted rows came from.
async fn counted(lake: &Lake) -> (usize, BTreeSet<i32>, usize) {
    let files = committed_results(lake).await;
    let ctx = testlake_compute::catalog::lake_session(lake).await.unwrap();
    let strings = testlake_compute::catalog::Strings::Utf8;
    let copies = testlake_compute::catalog::register_results_once(&ctx, lake, "once", &files, strings).await.unwrap();
    let batches = ctx.sql("SELECT kafka_partition FROM once").await.unwrap().collect().await.unwrap();
    let partitions = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec())
        .collect::<Vec<_>>();
    (partitions.len(), partitions.into_iter().collect(), copies.len())
}

/// Copies of events landed through other partitions, before and after their hours are compacted,
/// count once — the copy that landed first — whether they sit in ingest files, in the compacted
/// file that merged them, or in files landed into a compacted hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_count_once_before_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let events = events(31);
    land_in_chunks(&lake, 0, 0, &events, 40).await;
    let resent: Vec<TestEvent> = events.iter().step_by(10).cloned().collect();
    land_in_chunks(&lake, 1, 0, &resent, 25).await;
    let want = (events.len(), BTreeSet::from([0]), resent.len());
    assert_eq!(counted(&lake).await, want, "before compaction");

    let mut compactor = Compactor::new(lake.clone(), config(Duration::ZERO));
    let report = compactor.pass(&Crasher::default()).await.unwrap();
    assert!(report.committed >= 3, "every hour compacted: {report:?}");
    assert_eq!(counted(&lake).await, want, "after compaction");

    let late: Vec<TestEvent> = events.iter().skip(5).step_by(50).cloned().collect();
    land_in_chunks(&lake, 2, 0, &late, 1000).await;
    let want = (events.len(), BTreeSet::from([0]), resent.len() + late.len());
    assert_eq!(counted(&lake).await, want, "copies landed into compacted hours");
}

/// The operation of every commit in the `results` table's log, oldest first.
async fn delta_operations(lake: &Lake) -> Vec<String> {
    use futures::TryStreamExt;
    let listed: Vec<_> =
        lake.store().list(Some(&lake.path("results/_delta_log"))).try_collect().await.expect("list the Delta log");
    let mut commits: Vec<String> =
        listed.iter().map(|o| o.location.to_string()).filter(|p| p.ends_with(".json")).collect();
    commits.sort();
    let mut operations = Vec::new();
    for commit in commits {
        let bytes = lake.store().get(&commit.as_str().into()).await.unwrap().bytes().await.unwrap();
        let info = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|a| a["commitInfo"]["operation"].as_str().map(str::to_owned));
        operations.push(info.unwrap_or_default());
    }
    operations
}

/// Fleet runs every 10 minutes over three hours of the UTC date `days_ago` days before today.
fn events_of_day(seed: u64, days_ago: i64) -> Vec<TestEvent> {
    let date = (Utc::now() - TimeDelta::days(days_ago)).date_naive();
    let first = date.and_hms_opt(9, 0, 0).unwrap().and_utc();
    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 2, ..FleetConfig::default() });
    let mut events: Vec<TestEvent> = (0..18).flat_map(|i| fleet.run(first + TimeDelta::minutes(10 * i + 3))).collect();
    events.retain(|e| e.finished_at.date_naive() == date);
    events
}

/// A retention of two days drops the dates wholly older — from the logs' view at once, from the
/// Delta table in one DELETE version (read by the independent reader), and from the store after
/// the grace — and leaves the kept dates' rows exactly as they were; a file landed later into a
/// dropped date (an ingest without the retention) is dropped by the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_drops_old_dates_from_every_view() {
    let test_lake = TestLake::start(Backend::Local);
    let lake = test_lake.lake.clone();
    let (five, three, kept) = (events_of_day(41, 5), events_of_day(42, 3), events(43));
    let next = land_in_chunks(&lake, 0, 0, &five, 150).await;
    land_in_chunks(&lake, 1, 0, &three, 150).await;
    land_in_chunks(&lake, 2, 0, &kept, 150).await;
    let all: Vec<TestEvent> = five.iter().chain(&three).chain(&kept).cloned().collect();
    assert_once("before the retention", &all, &visible(&lake).await.0);
    let in_dates = |events: &[TestEvent], files: BTreeSet<String>| -> BTreeSet<String> {
        let dates: BTreeSet<String> = events.iter().map(|e| format!("date={}/", e.finished_at.date_naive())).collect();
        files.into_iter().filter(|f| dates.iter().any(|d| f.contains(d.as_str()))).collect()
    };
    let kept_files = in_dates(&kept, files_in_store(&lake).await);
    let old_files = files_in_store(&lake).await.len() - kept_files.len();
    assert!(!kept_files.is_empty() && old_files >= 2, "{old_files} old files");

    // target_rows 1: no hour is worth merging, so the retention is all this pass does.
    let retention = CompactConfig { retention_days: 2, target_rows: 1, ..config(Duration::from_secs(1)) };
    let report = Compactor::new(lake.clone(), retention.clone()).pass(&Crasher::default()).await.unwrap();
    assert_eq!((report.expired_dates, report.expired_files, report.committed), (2, old_files, 0), "{report:?}");
    assert_eq!(report.deleted, old_files, "the dropped files deleted after the grace");
    let (seen, files) = visible(&lake).await;
    assert_once("the logs' view after the retention", &kept, &seen);
    assert_eq!(files.into_iter().collect::<BTreeSet<_>>(), kept_files, "the kept dates' files untouched");
    assert_eq!(files_in_store(&lake).await, kept_files, "no file of a dropped date left");
    assert_once("a folder listing after the retention", &kept, &landed_ids_in(&lake).await);

    // The versions before the DELETEs are unreadable now (their files deleted): the operations
    // are read from the table's log itself.
    assert_eq!(delta_operations(&lake).await.iter().filter(|o| *o == "DELETE").count(), 2, "one per dropped date");
    let newest = delta_versions(&test_lake).pop().unwrap();
    assert_eq!((newest.operation.as_deref(), newest.rows, newest.distinct), (Some("DELETE"), kept.len(), kept.len()));
    assert_once("the newest Delta version", &kept, &delta_ids(&test_lake));

    // A file landed into a dropped date later (by an ingest not told the retention).
    let late: Vec<TestEvent> = events_of_day(44, 5).into_iter().take(7).collect();
    land_in_chunks(&lake, 0, next, &late, 100).await;
    let late_files = in_dates(&late, files_in_store(&lake).await).len();
    assert!(late_files >= 1);
    let report = Compactor::new(lake.clone(), retention.clone()).pass(&Crasher::default()).await.unwrap();
    assert_eq!((report.expired_dates, report.expired_files), (1, late_files), "{report:?}");
    assert_once("after dropping the late file", &kept, &visible(&lake).await.0);
    assert_once("the newest Delta version at the end", &kept, &delta_ids(&test_lake));
    assert_eq!(files_in_store(&lake).await, kept_files);
    let report = Compactor::new(lake.clone(), retention).pass(&Crasher::default()).await.unwrap();
    assert_eq!(report, Default::default(), "nothing left to drop");
}
