use super::*;

fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

/// A recompute on notices counts for health as a cycle does: compute busy with notices (its
/// next cycle waiting) is healthy, and one with failed tasks is degraded.
#[test]
fn recomputes_on_notices_count_for_health_like_cycles() {
    let metrics = ComputeMetrics::new(Duration::from_secs(3600));
    assert_eq!(metrics.health(), Health::Starting);
    metrics.round(2, 0);
    assert_eq!(metrics.health(), Health::Healthy);
    metrics.round(1, 1);
    assert_eq!(metrics.health(), Health::Degraded);
    metrics.round(2, 0);
    assert_eq!(metrics.health(), Health::Healthy);
    let page = metrics.encode();
    assert_eq!(sample(&page, "testlake_compute_cycles_total{status=\"success\"}"), Some(0.0), "not cycles: {page}");
}

/// With the periodic cycle off, compute works on notices only: idle is healthy, however long.
#[test]
fn without_a_cycle_idleness_is_healthy_and_failing_rounds_are_not() {
    let metrics = ComputeMetrics::new(Duration::ZERO);
    assert_eq!(metrics.health(), Health::Healthy, "idle from the start");
    metrics.round(0, 2);
    assert_eq!(metrics.health(), Health::Degraded);
    metrics.notice_failed();
    assert_eq!(metrics.health(), Health::Degraded, "two rounds in a row failed");
    metrics.round(0, 1);
    assert_eq!(metrics.health(), Health::Unhealthy, "three rounds in a row");
    metrics.round(1, 1);
    assert_eq!(metrics.health(), Health::Degraded, "something succeeded: no longer unhealthy");
    metrics.round(3, 0);
    assert_eq!(metrics.health(), Health::Healthy);
}

#[test]
fn newly_flaky_tests_are_counted_against_the_previous_snapshot() {
    let metrics = ComputeMetrics::new(Duration::ZERO);
    let set = |tests: &[&str]| tests.iter().map(|t| ("acme/app".to_owned(), (*t).to_owned())).collect();
    assert_eq!(metrics.flaky_snapshot(set(&["a", "b"])), 2, "the first snapshot compares with none");
    assert_eq!(metrics.flaky_snapshot(set(&["b", "c"])), 1, "c is new; a recovered");
    assert_eq!(metrics.flaky_snapshot(set(&["b", "c"])), 0);
    assert_eq!(metrics.flaky_snapshot(set(&["a", "b", "c"])), 1, "a flaky again");
    let page = metrics.encode();
    assert_eq!(sample(&page, "testlake_compute_flaky_tests_detected_total"), Some(4.0), "{page}");
    assert_eq!(sample(&page, "testlake_compute_flaky_tests"), Some(3.0));
}

#[test]
fn tasks_cycles_and_durations_are_counted() {
    let metrics = ComputeMetrics::new(Duration::from_secs(60));
    metrics.trends_task(&Interval::ALL, TaskOutcome::Completed, Duration::from_millis(30));
    metrics.trends_task(&[Interval::Daily], TaskOutcome::Failed, Duration::from_millis(5));
    metrics.trends_unchanged(Interval::Hourly);
    metrics.flaky_task(TaskOutcome::Completed, Duration::from_millis(20));
    metrics.persisted(Interval::Hourly, 24);
    metrics.persisted(Interval::Hourly, 1);
    metrics.persisted(Interval::Daily, 3);
    metrics.cycle(0, 3, Duration::from_millis(50));
    metrics.cycle(1, 2, Duration::from_millis(50));
    metrics.cycle(1, 0, Duration::ZERO);
    metrics.fenced(Table::TrendsDaily);
    metrics.reconciled(2);
    metrics.reconcile_failed();
    let page = metrics.encode();
    let expect = [
        ("testlake_compute_cycles_total{status=\"success\"}", 1.0),
        ("testlake_compute_cycles_total{status=\"partial\"}", 1.0),
        ("testlake_compute_cycles_total{status=\"failed\"}", 1.0),
        ("testlake_compute_cycle_duration_seconds_count", 3.0),
        ("testlake_compute_tasks_total{task=\"trends_hourly\",outcome=\"completed\"}", 1.0),
        ("testlake_compute_tasks_total{task=\"trends_hourly\",outcome=\"skipped\"}", 1.0),
        ("testlake_compute_tasks_total{task=\"trends_daily\",outcome=\"failed\"}", 1.0),
        ("testlake_compute_tasks_total{task=\"flaky_scores\",outcome=\"completed\"}", 1.0),
        ("testlake_compute_trends_persisted_total{interval=\"hourly\"}", 25.0),
        ("testlake_compute_trends_persisted_total{interval=\"daily\"}", 3.0),
        ("testlake_compute_trend_calculation_duration_seconds_count{interval=\"hourly\"}", 1.0),
        ("testlake_compute_trend_calculation_duration_seconds_count{interval=\"daily\"}", 2.0),
        ("testlake_compute_flaky_analysis_duration_seconds_count", 1.0),
        ("testlake_compute_fenced_writes_total{table=\"trends_daily\"}", 1.0),
        ("testlake_compute_reconciliations_total{status=\"success\"}", 1.0),
        ("testlake_compute_reconciliations_total{status=\"failed\"}", 1.0),
        ("testlake_compute_reconciled_dates_total", 2.0),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&page, line), Some(value), "{line} in\n{page}");
    }
    assert_eq!(metrics.health(), Health::Degraded, "the last cycle failed, one succeeded within the interval");
}
