//! Compute's schedule on a real (local filesystem) lake holding committed results: the periodic
//! cycle's lookbacks, batch size and skips, notices for old dates, metrics and health; the
//! backfill command; two compute processes sharing a lake through leases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{NaiveDate, TimeDelta, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_compute::{ComputeConfig, Scheduler};
use testlake_schemas::{Lake, TestEvent};
use testlake_tests::{land_committed, model};

/// Daily runs per date in `trends_daily`. A read racing compute's atomic replace of a file can
/// fail (the listed size no longer matches); it is read again, as the query service does.
async fn daily_runs(lake: &Lake) -> BTreeMap<String, i64> {
    let mut attempt = 0;
    let batches = loop {
        let ctx = testlake_compute::catalog::lake_session(lake).unwrap();
        let sql = "SELECT date, CAST(sum(runs) AS BIGINT) FROM trends_daily GROUP BY date ORDER BY date";
        match ctx.sql(sql).await.unwrap().collect().await {
            Ok(batches) => break batches,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("read raced a replace, again: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut out = BTreeMap::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.insert(
                b.column(0).as_string::<i32>().value(row).to_owned(),
                b.column(1).as_primitive::<Int64Type>().value(row),
            );
        }
    }
    out
}

async fn dates_of(lake: &Lake, table: &str) -> BTreeSet<String> {
    let ctx = testlake_compute::catalog::lake_session(lake).unwrap();
    let batches = ctx.sql(&format!("SELECT DISTINCT date FROM {table}")).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn runs_by_date(events: &[TestEvent]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for ((start, ..), trend) in model::trends(events, TimeDelta::days(1)) {
        *out.entry(start.date_naive().to_string()).or_default() += trend.runs;
    }
    out
}

/// One fleet run ending ten minutes before `days` days ago, for each of `days`.
fn events_on(fleet: &mut Fleet, days: &[i64]) -> Vec<TestEvent> {
    days.iter().flat_map(|d| fleet.run(Utc::now() - TimeDelta::days(*d) - TimeDelta::minutes(10))).collect()
}

#[tokio::test]
async fn the_cycle_recomputes_changed_dates_within_its_lookbacks_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let mut events = events_on(&mut fleet, &[4, 3, 2, 1, 0]);
    let mut next = land_committed(&lake, "ci", 0, 0, &events).await;
    let config = ComputeConfig {
        interval: Duration::from_secs(3600),
        hourly_lookback: Duration::from_secs(2 * 86_400),
        daily_lookback: Duration::from_secs(3 * 86_400),
        batch_size: 2,
        flaky_refresh: Duration::from_secs(3600),
        ..ComputeConfig::default()
    };
    let mut scheduler = Scheduler::new(lake.clone(), config, None);
    let day = |d: i64| (Utc::now() - TimeDelta::days(d) - TimeDelta::minutes(10)).date_naive().to_string();

    // Cycle 1: the two newest of the four dates in the daily lookback, and the flaky snapshot.
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (3, 0, 0), "{t:?}");
    assert_eq!(dates_of(&lake, "trends_daily").await, [day(1), day(0)].into());
    // Cycle 2: the other two; the first two are unchanged (two tables each).
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (2, 4, 0), "{t:?}");
    // Cycle 3: nothing changed: 3 hourly + 4 daily partitions skipped.
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (0, 7, 0), "{t:?}");
    assert_eq!(dates_of(&lake, "trends_daily").await, [day(3), day(2), day(1), day(0)].into());
    assert_eq!(dates_of(&lake, "trends_hourly").await, [day(2), day(1), day(0)].into(), "hourly lookback is 2 days");

    // A notice reaches past the lookback: late data for an old date.
    let t = scheduler.on_notices(&[NaiveDate::parse_from_str(&day(4), "%Y-%m-%d").unwrap()].into()).await.unwrap();
    assert_eq!((t.completed, t.failed), (1, 0));
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));

    // New data for today: only today is recomputed.
    let more = events_on(&mut fleet, &[0]);
    next = land_committed(&lake, "ci", 0, next, &more).await;
    assert!(next > 0);
    events.extend(more);
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (1, 5, 0), "{t:?}");
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));

    let metrics = scheduler.metrics();
    assert_eq!(metrics.health().as_str(), "healthy");
    let mut text = String::new();
    metrics.render(&mut text);
    for line in [
        "testlake_compute_cycles_total{status=\"success\"} 4",
        "testlake_compute_cycles_total{status=\"failed\"} 0",
        "testlake_compute_tasks_total{task=\"trends_daily\",outcome=\"skipped\"} 9",
        "testlake_compute_tasks_total{task=\"flaky_scores\",outcome=\"completed\"} 1",
        "testlake_compute_healthy{status=\"healthy\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn backfill_recomputes_a_range_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let events = events_on(&mut fleet, &[5, 4, 3]);
    land_committed(&lake, "ci", 0, 0, &events).await;
    let day = |d: i64| (Utc::now() - TimeDelta::days(d) - TimeDelta::minutes(10)).date_naive().to_string();
    let output = std::process::Command::new(testlake_tests::testlake_binary())
        .args(["compute", "--lake", dir.path().to_str().unwrap(), "backfill", "--from", &day(5), "--to", &day(3)])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("] 3/3 ") && stderr.contains("completed 6 skipped 0 failed 0"), "{stderr}");
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));
    assert_eq!(dates_of(&lake, "flaky_scores").await, [day(5), day(4), day(3)].into());
    let bad = std::process::Command::new(testlake_tests::testlake_binary())
        .args(["compute", "--lake", dir.path().to_str().unwrap(), "backfill", "--from", &day(3), "--to", &day(5)])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must not be after"));
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (date, start, end) of every trends task a compute log shows.
fn task_spans(log: &str) -> Vec<(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)> {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let mut open: BTreeMap<String, chrono::DateTime<Utc>> = BTreeMap::new();
    let mut spans = Vec::new();
    for line in log.lines().filter(|l| l.contains("task=\"trends\"")) {
        let Some(at) = line.split_whitespace().next().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
            continue;
        };
        let date = field(line, "date").expect("a date");
        if line.contains(" started ") || line.ends_with(" started") || line.contains(": started") {
            open.insert(date, at.to_utc());
        } else if line.contains("outcome=\"completed\"") || line.contains("outcome=\"failed\"") {
            let start = open.remove(&date).unwrap_or_else(|| panic!("an end without a start: {line}"));
            spans.push((date, start, at.to_utc()));
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compute_processes_never_recompute_a_partition_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, tests_per_suite: 10, ..FleetConfig::default() });
    let mut events = events_on(&mut fleet, &[3, 2, 1, 0]);
    let mut next = land_committed(&lake, "ci", 0, 0, &events).await;
    let probe_port = testlake_tests::free_port();
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        Child(
            std::process::Command::new(testlake_tests::testlake_binary())
                .args(["compute", "--lake", dir.path().to_str().unwrap(), "--compute-interval", "150ms"])
                .args(["--hourly-lookback", "10days", "--daily-lookback", "10days", "--flaky-refresh", "1h"])
                .args(if name == "a" {
                    vec!["--compute-listen".to_owned(), format!("127.0.0.1:{probe_port}")]
                } else {
                    vec![]
                })
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info,datafusion=warn")
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let (a, b) = (spawn("a"), spawn("b"));
    // Data keeps landing on every date while both run, so both keep finding work.
    for round in 0..12 {
        let more = events_on(&mut fleet, &[round % 4]);
        next = land_committed(&lake, "ci", 0, next, &more).await;
        events.extend(more);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let want = runs_by_date(&events);
    let started = std::time::Instant::now();
    while daily_runs(&lake).await != want {
        assert!(started.elapsed() < Duration::from_secs(60), "compute never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A standalone compute process reports its health and metrics.
    let health: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{probe_port}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{probe_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("testlake_compute_cycles_total{status=\"success\"}"), "{metrics}");
    drop((a, b));

    let logs: Vec<String> =
        ["a", "b"].iter().map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap()).collect();
    let spans: Vec<_> = logs.iter().map(|l| task_spans(l)).collect();
    assert!(
        spans.iter().all(|s| !s.is_empty()),
        "both processes recomputed something: {:?}",
        spans.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut overlaps = 0;
    for (date, start, end) in &spans[0] {
        for (other_date, other_start, other_end) in &spans[1] {
            if date == other_date && start < other_end && other_start < end {
                overlaps += 1;
                eprintln!("overlap on {date}: a {start}..{end}, b {other_start}..{other_end}");
            }
        }
    }
    assert_eq!(overlaps, 0, "no partition recomputed by both at once");
    let held = logs.iter().map(|l| l.matches("another process holds the lease").count()).sum::<usize>();
    println!("tasks: a {}, b {}; skipped because the other held the lease: {held}", spans[0].len(), spans[1].len());
}
