//! Materializing one day of trends (`trends_hourly` and `trends_daily`: the SQL of
//! `compute/src/trends.rs`, sorted zstd Parquet out) over N results of that day, against DuckDB
//! (the Python package) running the equivalent SQL over the same Parquet files with `COPY … TO`
//! in the same run, twice: as the textbook grouping by test and commit, and in testlake's own
//! formulation (failing pairs joined with the passes once for both intervals, the four
//! percentiles from one aggregate), so that the ratio, against DuckDB's faster, compares engines
//! and not only plans. Both get two threads. Also checks all wrote the same run and hourly
//! flaky-test totals and the same hourly p95s.
//!
//! Then adds 1 % of the day again as copies of events and measures the day counted once.
//!
//! `cargo bench -p testlake-benches --bench trends_vs_duckdb [-- EVENTS]` (default 20,000,000;
//! installs the `duckdb` Python package with pip when it is missing).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use chrono::{Duration, NaiveDate, Timelike};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_compute::trends::{Interval, materialize_date};
use testlake_schemas::Lake;
use testlake_schemas::files::{encode_parquet, put_create};
use testlake_schemas::tables::{Lineage, ResultsBuilder};

const DUCKDB: &str = r#"
import sys, time, duckdb
files, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET enable_progress_bar = false")
# DuckDB's fastest UTC bucketing: integer arithmetic on the epoch (its date_trunc and time_bucket
# convert through the time zone, as DataFusion's date_trunc does; testlake uses date_bin).
WIDTH = {"hour": 3_600_000_000, "day": 86_400_000_000}
def bucket(unit, column):
    return f"make_timestamp((epoch_us({column}) // {WIDTH[unit]}) * {WIDTH[unit]})"
def trends(unit):
    return f"""
    WITH r AS (
        SELECT {bucket(unit, 'finished_at')} AS bucket_start, repository, branch, suite, test_id, commit_sha, status,
               CASE WHEN status <> 'skipped' THEN duration_ms END AS d
        FROM read_parquet('{files}')
    ),
    flaky AS (
        SELECT bucket_start, repository, branch, suite, count(DISTINCT test_id) AS flaky_tests FROM (
            SELECT bucket_start, repository, branch, suite, test_id, commit_sha FROM r
            GROUP BY ALL HAVING bool_or(status = 'passed') AND bool_or(status IN ('failed', 'error'))
        ) GROUP BY ALL
    ),
    agg AS (
        SELECT bucket_start, repository, branch, suite, count(*) AS runs,
            count(*) FILTER (WHERE status = 'passed') AS passed,
            count(*) FILTER (WHERE status IN ('failed', 'error')) AS failed,
            count(*) FILTER (WHERE status = 'skipped') AS skipped,
            avg(d) AS duration_avg_ms, quantile_cont(d, 0.5) AS duration_p50_ms, quantile_cont(d, 0.9) AS duration_p90_ms,
            quantile_cont(d, 0.95) AS duration_p95_ms, quantile_cont(d, 0.99) AS duration_p99_ms, max(d) AS duration_max_ms,
            count(DISTINCT test_id) AS tests
        FROM r GROUP BY ALL
    )
    SELECT a.*, CASE WHEN a.passed + a.failed = 0 THEN NULL ELSE a.passed / (a.passed + a.failed) END AS pass_rate,
           coalesce(f.flaky_tests, 0) AS flaky_tests
    FROM agg a LEFT JOIN flaky f USING (bucket_start, repository, branch, suite)
    ORDER BY bucket_start, repository, branch, suite
    """
# testlake's formulation: the failing (test, commit) pairs joined with the passes once for both
# intervals, and the percentiles from one aggregate (see compute/src/trends.rs), so that the
# comparison is not only of plans.
MATCHES = f"""
    CREATE OR REPLACE TEMP TABLE m AS
    WITH f AS (
        SELECT DISTINCT {bucket('hour', 'finished_at')} AS hour, repository, branch, suite, test_id, commit_sha
        FROM read_parquet('{files}') WHERE status IN ('failed', 'error')
    ),
    p AS (
        SELECT {bucket('hour', 'finished_at')} AS hour, repository, branch, suite, test_id, commit_sha
        FROM read_parquet('{files}') WHERE status = 'passed'
    )
    SELECT p.hour, f.repository, f.branch, f.suite, f.test_id,
        bool_or(p.hour = f.hour) AS same_hour, bool_or({bucket('day', 'p.hour')} = {bucket('day', 'f.hour')}) AS same_day
    FROM f JOIN p USING (test_id, commit_sha, repository, branch, suite)
    GROUP BY ALL
"""
def trends_joined(unit):
    flaky = f"""flaky AS (
        SELECT {bucket(unit, 'hour')} AS bucket_start, repository, branch, suite, count(DISTINCT test_id) AS flaky_tests
        FROM m WHERE same_{unit} GROUP BY ALL
    ),"""
    query = trends(unit)
    start = query.index("flaky AS (")
    query = query[:start] + flaky + query[query.index("agg AS ("):]
    # And its four percentiles from one aggregate, as testlake's duration_percentiles does.
    for i, p in enumerate(("0.5", "0.9", "0.95", "0.99")):
        query = query.replace(f"quantile_cont(d, {p})", f"quantile_cont(d, [0.5, 0.9, 0.95, 0.99])[{i + 1}]")
    return query
def timed(run):
    best = None
    for attempt in range(2):
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best
def grouping():
    for unit in ("hour", "day"):
        con.execute(f"COPY ({trends(unit)}) TO '{out}/{unit}.parquet' (FORMAT parquet, COMPRESSION zstd)")
def joined():
    con.execute(MATCHES)
    for unit in ("hour", "day"):
        con.execute(f"COPY ({trends_joined(unit)}) TO '{out}/{unit}.parquet' (FORMAT parquet, COMPRESSION zstd)")
for name, run in (("grouping", grouping), ("joined", joined)):
    seconds = timed(run)
    runs = con.execute(f"SELECT sum(runs) FROM read_parquet('{out}/day.parquet')").fetchone()[0]
    flaky, p95 = con.execute(f"SELECT sum(flaky_tests), sum(duration_p95_ms) FROM read_parquet('{out}/hour.parquet')").fetchone()
    print(f"RESULT {name} {seconds} {runs} {flaky} {p95!r}")
"#;

/// The one float a query over testlake's output in `lake` returns.
async fn total(lake: &Lake, sql: &str) -> f64 {
    let ctx = testlake_compute::catalog::lake_session(lake).await.expect("session");
    let batches = ctx.sql(sql).await.expect("sql").collect().await.expect("collect");
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(batches[0].column(0)).value(0)
}

fn ensure_duckdb() {
    let has = |_: ()| Command::new("python3").args(["-c", "import duckdb"]).status().is_ok_and(|s| s.success());
    if !has(()) {
        eprintln!("installing the duckdb Python package (pip)");
        let ok =
            Command::new("python3").args(["-m", "pip", "install", "-q", "duckdb"]).status().is_ok_and(|s| s.success());
        assert!(ok && has(()), "the duckdb Python package is needed: python3 -m pip install duckdb");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20_000_000);
    ensure_duckdb();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().to_str().expect("utf-8 path")).expect("lake");
    let date = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    let day_start = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();

    // One day of results in its hour folders, as ingest lands them: files of at most a million
    // rows, an hour's written once the fleet's runs are two hours past it, never all in memory.
    let generated = Instant::now();
    let mut fleet = Fleet::new(fleet_config());
    let per_run = 8 * 10 * 50 / 8;
    let runs = events / per_run + 1;
    let step = Duration::microseconds(86_400_000_000 / runs as i64);
    let (mut files, mut written, mut run) = (Vec::new(), 0usize, 0i64);
    let mut hours: BTreeMap<u32, ResultsBuilder> = BTreeMap::new();
    while written < events {
        for e in fleet.run(day_start + step * run as i32) {
            if e.finished_at.date_naive() == date && written < events {
                let from = Lineage { topic: "bench", partition: 0, offset: written as i64, ingested_at: e.finished_at };
                let hour = hours.entry(e.finished_at.hour()).or_default();
                hour.append(&e, from);
                written += 1;
                if hour.len() >= 1_000_000 {
                    files.push(write_hour(&lake, date, e.finished_at.hour(), files.len(), hour).await);
                }
            }
        }
        run += 1;
        let now = (day_start + step * run as i32).hour();
        while let Some(mut done) = hours.first_entry().filter(|h| *h.key() + 2 <= now) {
            files.push(write_hour(&lake, date, *done.key(), files.len(), done.get_mut()).await);
            done.remove();
        }
    }
    for (hour, mut builder) in hours {
        files.push(write_hour(&lake, date, hour, files.len(), &mut builder).await);
    }
    report("results in the day", written as f64, "events");
    report("files", files.len() as f64, "");
    report("generating and writing them", generated.elapsed().as_secs_f64(), "s");

    // testlake: both tables of the date, best of two, each as a fresh process (no event ids
    // known): finding the day's copies of events is part of the cost.
    let mut ours = f64::INFINITY;
    for _ in 0..2 {
        testlake_compute::dedup::forget(&lake);
        let ctx = testlake_compute::catalog::lake_session(&lake).await.expect("session");
        let started = Instant::now();
        materialize_date(&ctx, &lake, date, &files, &Interval::ALL).await.expect("materialize");
        ours = ours.min(started.elapsed().as_secs_f64());
    }
    testlake_compute::dedup::forget(&lake);
    let started = Instant::now();
    let copies = testlake_compute::dedup::later_copies(&lake, &files).await.expect("copies");
    assert!(copies.is_empty(), "the day holds no copies");
    let finding = started.elapsed().as_secs_f64();
    let ours_runs = total(&lake, "SELECT CAST(sum(runs) AS DOUBLE) FROM trends_daily").await as usize;
    let ours_p95 = total(&lake, "SELECT sum(duration_p95_ms) FROM trends_hourly").await;
    let ours_flaky = total(&lake, "SELECT CAST(sum(flaky_tests) AS DOUBLE) FROM trends_hourly").await as i64;
    assert_eq!(ours_runs, written, "testlake's daily trends count every result");
    report("testlake (DataFusion): one day, both tables", ours, "s");
    report("  of which finding copies of events (event ids read, none found)", finding, "s");

    // DuckDB over the same files, in the same run.
    let out = tempfile::tempdir().expect("tempdir");
    let glob = format!("{}/results/date={date}/hour=*/*.parquet", dir.path().display());
    let duck = Command::new("python3")
        .args(["-c", DUCKDB, &glob, out.path().to_str().expect("utf-8 path")])
        .output()
        .expect("python3");
    assert!(duck.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&duck.stderr));
    let stdout = String::from_utf8_lossy(&duck.stdout);
    let mut duck_best = f64::INFINITY;
    for line in stdout.lines().filter(|l| l.starts_with("RESULT ")) {
        let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        let [name, seconds, runs, flaky, p95] = fields[..] else { panic!("unexpected DuckDB line: {line}") };
        let p95: f64 = p95.parse().expect("duckdb p95");
        assert!((p95 - ours_p95).abs() <= 1e-9 * ours_p95.abs(), "DuckDB ({name}) hourly p95s: {p95} vs {ours_p95}");
        let seconds: f64 = seconds.parse().expect("duckdb time");
        assert_eq!(runs.parse::<f64>().expect("duckdb runs") as usize, written, "DuckDB ({name}) counts every result");
        assert_eq!(
            flaky.parse::<f64>().expect("duckdb flaky") as i64,
            ours_flaky,
            "DuckDB ({name}) hourly flaky_tests"
        );
        report(&format!("DuckDB, the SQL {name}: same files, same output"), seconds, "s");
        duck_best = duck_best.min(seconds);
    }
    assert!(duck_best.is_finite(), "no result from DuckDB: {stdout}");
    report("ratio testlake / DuckDB's faster", ours / duck_best, "x");
    println!("target: ratio <= 1.0");

    // The same day with 1 % of its events landed a second time, later, from another partition:
    // every copy is found, read whole and left out.
    let mut fleet = Fleet::new(fleet_config());
    let mut copies: BTreeMap<u32, ResultsBuilder> = BTreeMap::new();
    let (mut seen, mut run, mut copied) = (0usize, 0i64, 0usize);
    while seen < written {
        for e in fleet.run(day_start + step * run as i32) {
            if e.finished_at.date_naive() == date && seen < written {
                if seen % 100 == 0 {
                    let later = e.finished_at + Duration::hours(1);
                    let from = Lineage { topic: "bench", partition: 1, offset: seen as i64, ingested_at: later };
                    copies.entry(e.finished_at.hour()).or_default().append(&e, from);
                    copied += 1;
                }
                seen += 1;
            }
        }
        run += 1;
    }
    for (hour, mut builder) in copies {
        files.push(write_hour(&lake, date, hour, files.len(), &mut builder).await);
    }
    testlake_compute::dedup::forget(&lake);
    let ctx = testlake_compute::catalog::lake_session(&lake).await.expect("session");
    let started = Instant::now();
    materialize_date(&ctx, &lake, date, &files, &Interval::ALL).await.expect("materialize");
    let with_copies = started.elapsed().as_secs_f64();
    let runs = total(&lake, "SELECT CAST(sum(runs) AS DOUBLE) FROM trends_daily").await as usize;
    assert_eq!(runs, written, "with {copied} copies, every result counted once");
    testlake_compute::dedup::forget(&lake);
    let started = Instant::now();
    let found = testlake_compute::dedup::later_copies(&lake, &files).await.expect("copies");
    assert_eq!(found.len(), copied, "every copy found");
    let finding = started.elapsed().as_secs_f64();
    report("copies added (1 % of the day)", copied as f64, "events");
    report("testlake: the day with its copies, both tables", with_copies, "s");
    report("  of which finding the copies (ids read, copies' rows read and compared)", finding, "s");
    report("ratio with copies / without", with_copies / ours, "x");
}

/// Writes `builder`'s rows as file `n` of `hour`'s folder; returns its path.
async fn write_hour(lake: &Lake, date: NaiveDate, hour: u32, n: usize, builder: &mut ResultsBuilder) -> String {
    let path = format!("results/date={date}/hour={hour:02}/bench_{n:05}.parquet");
    let batch = builder.finish().expect("batch");
    put_create(lake, &path, encode_parquet(&batch, &path).expect("encode")).await.expect("put");
    path
}

fn fleet_config() -> FleetConfig {
    FleetConfig { repositories: 8, suites_per_repository: 10, tests_per_suite: 50, ..Default::default() }
}
