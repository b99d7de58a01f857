//! What landing one hour of results costs compute: the recompute a landed notice triggers, on a
//! 30-day lake and — the baseline, in the same run — on a 1-day lake with the same daily volume.
//! Equal figures mean the cost follows what landed, not the size of the lake. The unit of
//! recompute is the landed hour's date (daily percentiles and distinct counts are exact, so a day
//! is recomputed whole); today holds a full day's volume before the hour lands, so the figure is
//! that of a busy day, not of a lone hour. Also the full recompute of all 30 days, for scale.
//!
//! `cargo bench -p testlake-benches --bench incremental_compute [-- EVENTS_PER_DAY]` (default 100,000)

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{Duration, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::report;
use testlake_compute::{ComputeConfig, Scheduler};
use testlake_schemas::{Lake, TestEvent};

/// `days` days of results ending yesterday, `per_day` a day, landed committed hour by hour.
async fn lake_of(dir: &std::path::Path, days: i64, per_day: usize, fleet: &mut Fleet) -> (Lake, i64) {
    let lake = Lake::open(dir.to_str().expect("utf-8 path")).expect("lake");
    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut next = 0;
    for d in (1..=days).rev() {
        let start = today - Duration::days(d);
        let mut events: Vec<TestEvent> = Vec::with_capacity(per_day);
        let mut at = start;
        while events.len() < per_day {
            events.extend(fleet.run(at).into_iter().filter(|e| e.finished_at < start + Duration::days(1)));
            at += Duration::seconds(60);
        }
        events.truncate(per_day);
        next = testlake_tests::land_committed(&lake, "bench", 0, next, &events).await;
    }
    (lake, next)
}

/// Today's other 23 hours' worth of results, landed; then one hour's worth in the current hour,
/// landed, and the notice-driven recompute it triggers. (A date is compute's unit: the landing
/// recomputes the whole of today, so today holds a day's volume, not just the new hour.)
async fn land_an_hour(lake: &Lake, next: i64, per_day: usize, fleet: &mut Fleet) -> f64 {
    let now = Utc::now();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let hour = now - Duration::minutes(30);
    let (mut earlier, mut at) = (Vec::new(), midnight);
    while earlier.len() < per_day / 24 * 23 {
        earlier.extend(fleet.run(at.min(hour)));
        at += Duration::seconds(60);
    }
    let next = testlake_tests::land_committed(lake, "bench", 0, next, &earlier).await;
    let mut events = Vec::new();
    while events.len() < per_day / 24 {
        events.extend(fleet.run(hour));
    }
    testlake_tests::land_committed(lake, "bench", 0, next, &events).await;
    let mut scheduler = Scheduler::new(lake.clone(), ComputeConfig::default(), None);
    // A running process has read the commit log before: warm it by recomputing yesterday, which
    // reads the whole log once (the 30-day lake's 720 entries); the landing then reads only its own.
    let yesterday = (hour - Duration::days(1)).date_naive();
    scheduler.on_notices(&[yesterday].into()).await.expect("warm");
    let started = Instant::now();
    let tally = scheduler.on_notices(&[hour.date_naive()].into()).await.expect("recompute");
    assert_eq!(tally.failed, 0);
    started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_day: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let mut fleet = Fleet::new(FleetConfig {
        repositories: 4,
        suites_per_repository: 10,
        tests_per_suite: 25,
        ..Default::default()
    });

    let big_dir = tempfile::tempdir().expect("tempdir");
    let built = Instant::now();
    let (big, big_next) = lake_of(big_dir.path(), 30, per_day, &mut fleet).await;
    report("30-day lake: results", (30 * per_day) as f64, "events");
    report("30-day lake: building it", built.elapsed().as_secs_f64(), "s");
    let small_dir = tempfile::tempdir().expect("tempdir");
    let (small, small_next) = lake_of(small_dir.path(), 1, per_day, &mut fleet).await;

    let small_hour = land_an_hour(&small, small_next, per_day, &mut fleet).await;
    let big_hour = land_an_hour(&big, big_next, per_day, &mut fleet).await;
    report("1-hour landing, recompute on a 1-day lake", small_hour * 1e3, "ms");
    report("1-hour landing, recompute on a 30-day lake", big_hour * 1e3, "ms");
    report("ratio 30-day / 1-day lake", big_hour / small_hour, "x");

    let mut scheduler = Scheduler::new(big.clone(), ComputeConfig::default(), None);
    let all: BTreeSet<_> = (0..=30).map(|d| (Utc::now() - Duration::days(d)).date_naive()).collect();
    let started = Instant::now();
    scheduler.on_notices(&all).await.expect("full");
    report("full recompute of the 30-day lake", started.elapsed().as_secs_f64() * 1e3, "ms");
    println!("target: the 1-hour landing costs the same on both lakes (ratio ~1)");
}
