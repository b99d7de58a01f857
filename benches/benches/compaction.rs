//! What compacting a busy closed hour costs: one hour of results landed as ingest files of 25,000
//! rows each (a flush at high volume), merged by `Compactor::pass` into files of up to
//! `--compact-rows` (1,000,000) rows — time, rows per second, peak memory of the pass, files and
//! bytes per event before and after. Baseline, in the same run, on the same files: DataFusion
//! reading them, sorting by the same keys and writing one zstd Parquet file (what an operator
//! would otherwise script with `COPY … TO`), without the log, the checks or the switch.
//!
//! `cargo bench -p testlake-benches --bench compaction [-- EVENTS [ROWS_PER_FILE]]` (default
//! 1,000,000 events in files of 25,000 rows; `-- 100000 10` is an hour of sub-second flushes at
//! low volume: 10,000 files of 10 rows)

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_ingest::compact::{CompactConfig, Compactor};
use testlake_ingest::crash::Crasher;
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{HourPartition, Lake, Table, TestEvent};

/// Resets this process's peak RSS (Linux `clear_refs`), so the next reading is the peak since.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM`: the peak; `VmRSS`: now).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the field is there");
    kib / 1024.0
}

fn folder_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let events = args.first().copied().unwrap_or(1_000_000);
    let file_rows = args.get(1).copied().unwrap_or(25_000).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().to_str().expect("utf-8 path")).expect("lake");
    let hour = HourPartition::of(Utc::now() - TimeDelta::hours(3));

    // Land the hour 50,000 events at a time (one log entry per file), so the bench never holds
    // the whole hour's events.
    let mut fleet = Fleet::new(FleetConfig { seed: 5, ..FleetConfig::default() });
    let (mut landed, mut offset, mut k) = (0, 0, 0);
    let mut pending: Vec<TestEvent> = Vec::new();
    while landed < events {
        while pending.len() < 50_000.min(events - landed) {
            let at = hour.start() + TimeDelta::seconds((k * 37) % 3000);
            k += 1;
            pending.extend(fleet.run(at).into_iter().filter(|e| HourPartition::of(e.finished_at) == hour));
        }
        pending.truncate(50_000.min(events - landed));
        landed += pending.len();
        offset = testlake_tests::land_committed_chunks(&lake, "bench", 0, offset, pending.chunks(file_rows)).await;
        pending.clear();
    }
    let folder = dir.path().join(format!("{}/{hour}", Table::Results));
    let (files_before, bytes_before) =
        (std::fs::read_dir(&folder).expect("hour folder").count(), folder_bytes(&folder));

    // Baseline: DataFusion reads the same files, sorts, writes one file.
    let mut committed = CommittedFiles::default();
    committed.refresh(&lake).await.expect("refresh");
    let inputs: Vec<String> = committed.results_files().map(|f| f.path.clone()).collect();
    let ctx = SessionContext::new();
    ctx.register_object_store(&lake.store_url(), std::sync::Arc::clone(lake.store()));
    testlake_compute::catalog::register_files(&ctx, &lake, "inputs", Table::Results, &inputs).expect("register");
    let out = tempfile::tempdir().expect("tempdir");
    let baseline_path = out.path().join("baseline.parquet");
    let mut options = datafusion::config::TableParquetOptions::default();
    options.global.compression = Some("zstd(1)".into());
    let (rss_before, started) = (status_mib("VmRSS"), Instant::now());
    reset_peak();
    ctx.sql("SELECT * FROM inputs ORDER BY repository, test_id, finished_at")
        .await
        .expect("plan")
        .write_parquet(
            baseline_path.to_str().expect("utf-8 path"),
            DataFrameWriteOptions::new().with_single_file_output(true),
            Some(options),
        )
        .await
        .expect("baseline writes");
    let baseline = started.elapsed();
    let baseline_peak = status_mib("VmHWM") - rss_before;
    let baseline_bytes = std::fs::metadata(&baseline_path).map(|m| m.len()).unwrap_or(0);
    drop(ctx);

    // The compactor.
    let config = CompactConfig { closed_after: Duration::ZERO, grace: Duration::ZERO, ..CompactConfig::default() };
    let mut compactor = Compactor::new(lake.clone(), config);
    let (rss_before, started) = (status_mib("VmRSS"), Instant::now());
    reset_peak();
    let pass = compactor.pass(&Crasher::default()).await.expect("pass");
    let elapsed = started.elapsed();
    let peak = status_mib("VmHWM") - rss_before;
    assert_eq!((pass.committed, pass.inputs, pass.rows), (1, files_before, landed as u64), "{pass:?}");
    let (files_after, bytes_after) = (std::fs::read_dir(&folder).expect("hour folder").count(), folder_bytes(&folder));

    let n = landed as f64;
    println!("compaction of one closed hour: {landed} events in {files_before} files of {file_rows} rows");
    report("compactor: time", elapsed.as_secs_f64(), "s");
    report("compactor: rows per second", n / elapsed.as_secs_f64(), "rows/s");
    report("compactor: peak memory above its start", peak, "MiB");
    report("files before / after", files_before as f64, &format!("/ {files_after}"));
    report("Parquet bytes per event before", bytes_before as f64 / n, "B");
    report("Parquet bytes per event after", bytes_after as f64 / n, "B");
    report("baseline (DataFusion sort + write): time", baseline.as_secs_f64(), "s");
    report("baseline: peak memory above its start", baseline_peak, "MiB");
    report("baseline: Parquet bytes per event", baseline_bytes as f64 / n, "B");
    report("compactor time / baseline time", elapsed.as_secs_f64() / baseline.as_secs_f64(), "x");
}
