//! What opening the lake costs as its commit log grows. A reader that has read nothing yet
//! (`testlake sql`, a restarted compute or query process) finds the committed `results` files and
//! plans `SELECT count(*) FROM results`, in lakes of 10, 1,000 and 10,000 flushes (one small file
//! each, over 4 partitions and 24 closed hours, every hour then compacted as the compactor does).
//! Two readers in the same run, on the same lakes: one replaying every entry of the commit logs
//! (how testlake's readers opened the lake before they started from the Delta table), and one
//! starting from the Delta table's checkpoint (`CommittedFiles::from_delta`: what `testlake sql`,
//! compute and the query service do). Both must find the same files. A third figure is the Delta
//! table alone, as a reader outside testlake opens it (its last checkpoint and the commits after:
//! `testlake_schemas::delta::results_files`), which must list the same files too. Figures: the
//! best of 5 opens, and each reader's ratio to its own open of the smallest lake.
//!
//! `cargo bench -p testlake-benches --bench lake_open [-- FLUSHES...]`

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_ingest::compact::{CompactConfig, Compactor};
use testlake_ingest::crash::Crasher;
use testlake_query::sql::{SqlLimits, session};
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{HourPartition, Lake, TestEvent};

const PARTITIONS: i32 = 4;
const OPENS: usize = 5;

/// A lake of `flushes` one-event flushes over 4 partitions and the 24 hours of the day before
/// yesterday, each hour compacted (its inputs deleted) and the Delta table caught up.
async fn build(dir: &std::path::Path, flushes: usize) -> Lake {
    let lake = Lake::open(dir.to_str().expect("utf-8 path")).expect("lake");
    let day = HourPartition::of(Utc::now() - TimeDelta::days(2)).date;
    let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut fleet = Fleet::new(FleetConfig { seed: 9, ..FleetConfig::default() });
    let mut events: Vec<TestEvent> = Vec::with_capacity(flushes);
    let mut k = 0i64;
    while events.len() < flushes {
        let at = start + TimeDelta::seconds((k * 611) % 86_000);
        k += 1;
        events.extend(fleet.run(at).into_iter().filter(|e| e.finished_at.date_naive() == day));
    }
    events.truncate(flushes);
    let per = events.len().div_ceil(PARTITIONS as usize);
    for (p, part) in events.chunks(per).enumerate() {
        testlake_tests::land_committed_chunks(&lake, "bench", p as i32, 0, part.chunks(1)).await;
    }
    lake.delta().drain(&lake).await.expect("every flush in the Delta table");
    let config = CompactConfig { closed_after: Duration::ZERO, grace: Duration::ZERO, ..CompactConfig::default() };
    let report = Compactor::new(lake.clone(), config).pass(&Crasher::default()).await.expect("compaction");
    assert_eq!(report.failed, 0, "{report:?}");
    lake
}

/// Opens the lake afresh as a reader that has read nothing, and plans the count; returns the
/// files found, by path.
async fn open(root: &std::path::Path, from_delta: bool) -> Vec<String> {
    let lake = Lake::open(root.to_str().expect("utf-8 path")).expect("lake");
    let mut committed = if from_delta { CommittedFiles::from_delta() } else { CommittedFiles::default() };
    let ctx = session(&lake, &mut committed, &SqlLimits::default()).await.expect("session");
    let plan = ctx.sql("SELECT count(*) FROM results").await.expect("plan");
    plan.create_physical_plan().await.expect("physical plan");
    let mut files: Vec<String> = committed.results_files().map(|f| f.path.clone()).collect();
    files.sort();
    files
}

/// Opens the Delta table alone afresh (no testlake log read): its newest version's files.
async fn open_table(root: &std::path::Path) -> Vec<String> {
    let lake = Lake::open(root.to_str().expect("utf-8 path")).expect("lake");
    let files = testlake_schemas::delta::results_files(&lake).await.expect("the Delta table").expect("a table");
    let mut files: Vec<String> = files.into_iter().collect();
    files.sort();
    files
}

/// The best of [`OPENS`] runs of `open` (after one more, discarded), and what the first found.
async fn best_of<F, Fut>(open: F) -> (Duration, Vec<String>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let files = open().await;
    let mut best = Duration::MAX;
    for _ in 0..OPENS {
        let start = Instant::now();
        std::hint::black_box(open().await);
        best = best.min(start.elapsed());
    }
    (best, files)
}

/// The best of [`OPENS`] opens (after one more, discarded).
async fn best_open(root: &std::path::Path, from_delta: bool) -> (Duration, Vec<String>) {
    best_of(|| open(root, from_delta)).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![10, 1_000, 10_000];
    }
    let mut first: Option<(Duration, Duration, Duration)> = None;
    for flushes in counts {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = Instant::now();
        build(dir.path(), flushes).await;
        eprintln!("{flushes} flushes landed and compacted in {:.1} s", built.elapsed().as_secs_f64());
        let (whole, whole_files) = best_open(dir.path(), false).await;
        let (delta, delta_files) = best_open(dir.path(), true).await;
        assert_eq!(whole_files, delta_files, "both readers find the same files");
        let (table, table_files) = best_of(|| open_table(dir.path())).await;
        assert_eq!(table_files, delta_files, "the Delta table alone lists the same files");
        let (whole_ms, delta_ms) = (whole.as_secs_f64() * 1e3, delta.as_secs_f64() * 1e3);
        report(&format!("{flushes} flushes: files after compaction"), whole_files.len() as f64, "files");
        report(&format!("{flushes} flushes: open, replaying the logs"), whole_ms, "ms");
        report(&format!("{flushes} flushes: open, from the Delta table"), delta_ms, "ms");
        report(&format!("{flushes} flushes: from the Delta table / replaying"), delta_ms / whole_ms, "x");
        report(&format!("{flushes} flushes: the Delta table alone"), table.as_secs_f64() * 1e3, "ms");
        let (whole_0, delta_0, table_0) = *first.get_or_insert((whole, delta, table));
        report(
            &format!("{flushes} flushes: replaying, against the smallest lake"),
            whole.div_duration_f64(whole_0),
            "x",
        );
        report(
            &format!("{flushes} flushes: from the Delta table, against the smallest lake"),
            delta.div_duration_f64(delta_0),
            "x",
        );
        report(
            &format!("{flushes} flushes: the Delta table alone, against the smallest lake"),
            table.div_duration_f64(table_0),
            "x",
        );
    }
}
