use super::*;

const HOUR: i64 = 3_600_000_000;

fn at(hours: i64) -> i64 {
    // 2026-11-01T00:00:00Z plus `hours`.
    1_793_491_200_000_000 + hours * HOUR
}

/// Executions from a compact history: (commit, run, failed), one hour apart.
fn history(steps: &[(&str, &str, bool)]) -> Vec<Execution> {
    steps
        .iter()
        .enumerate()
        .map(|(i, &(commit, run, failed))| Execution {
            commit_sha: commit.into(),
            run_id: run.into(),
            failed,
            finished_at: at(i as i64),
        })
        .collect()
}

fn now_after(executions: &[Execution], hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(executions.last().unwrap().finished_at + hours * HOUR).unwrap()
}

fn score(steps: &[(&str, &str, bool)]) -> Score {
    let e = history(steps);
    score_test(&e, now_after(&e, 1), &FlakyConfig::default()).unwrap()
}

#[test]
fn no_executions_no_score() {
    assert_eq!(score_test(&[], Utc::now(), &FlakyConfig::default()), None);
}

#[test]
fn a_pass_and_a_failure_on_one_commit_is_a_flake() {
    let s = score(&[("a", "r1", false), ("b", "r2", false), ("b", "r2", true), ("c", "r3", false)]);
    assert_eq!(s.state, FlakyState::Flaky);
    assert_eq!(s.same_commit_flakes, 1);
    assert_eq!(s.last_flake_at, Some(at(2)));
    assert_eq!((s.executions, s.failures, s.flips), (4, 1, 2));
    assert_eq!(s.failure_rate, 0.25);
    assert_eq!(s.flip_rate, Some(2.0 / 3.0));
    // No flip, then two: 0 → 0.1 → 0.1 + 0.9 × 0.1.
    assert!((s.ewma_flip_rate - 0.19).abs() < 1e-12, "{}", s.ewma_flip_rate);
    // Score: the larger of the weighted flip rate and the share of commits that flaked (1 of 3).
    assert!((s.score - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((s.first_seen, s.last_seen), (at(0), at(3)));
}

#[test]
fn a_regression_across_runs_is_broken_and_ranks_below_flakes() {
    let s = score(&[
        ("a", "r1", false),
        ("b", "r2", false),
        ("c", "r3", true),
        ("c", "r3", true),
        ("d", "r4", true),
        ("d", "r4", true),
    ]);
    assert_eq!(s.state, FlakyState::Broken);
    assert_eq!(s.same_commit_flakes, 0);
    assert_eq!(s.flips, 1);
    assert_eq!(s.score, 0.0);
}

#[test]
fn one_failing_run_is_not_yet_a_regression() {
    let s = score(&[("a", "r1", false), ("b", "r2", false), ("c", "r3", true), ("c", "r3", true)]);
    assert_eq!(s.state, FlakyState::Healthy);
    assert_eq!(s.last_flake_at, None);
}

#[test]
fn failing_from_a_commit_that_once_passed_is_a_flake_not_a_regression() {
    let s = score(&[("a", "r1", false), ("b", "r2", false), ("b", "r3", true), ("c", "r4", true)]);
    assert_eq!(s.state, FlakyState::Flaky);
}

#[test]
fn a_test_that_fixed_its_regression_is_healthy() {
    let s = score(&[("a", "r1", false), ("b", "r2", true), ("c", "r3", true), ("d", "r4", false)]);
    assert_eq!(s.state, FlakyState::Healthy);
}

#[test]
fn a_flaky_test_recovers_after_seven_days_without_a_flake() {
    let e = history(&[("a", "r1", false), ("a", "r2", true), ("b", "r3", false)]);
    let config = FlakyConfig::default();
    let flake = DateTime::from_timestamp_micros(at(1)).unwrap();
    let just_before = flake + Duration::days(7) - Duration::microseconds(1);
    assert_eq!(score_test(&e, just_before, &config).unwrap().state, FlakyState::Flaky);
    assert_eq!(score_test(&e, flake + Duration::days(7), &config).unwrap().state, FlakyState::Healthy);
}

#[test]
fn a_flaky_test_recovers_after_a_hundred_executions_without_a_flake() {
    let mut steps = vec![("a", "r0", false), ("a", "r0", true)];
    let passes: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    for commit in &passes[..99] {
        steps.push((commit, "r", false));
    }
    assert_eq!(score(&steps).state, FlakyState::Flaky, "99 executions since the flake");
    steps.push((&passes[99], "r", false));
    assert_eq!(score(&steps).state, FlakyState::Healthy, "100 executions since the flake");
}

#[test]
fn flipping_on_distinct_commits_is_flaky_only_with_enough_executions() {
    let commits: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let steps: Vec<(&str, &str, bool)> =
        commits.iter().enumerate().map(|(i, c)| (c.as_str(), "r", i % 2 == 1)).collect();
    let nine = score(&steps[..9]);
    assert_eq!(nine.same_commit_flakes, 0);
    assert_eq!(nine.state, FlakyState::Healthy, "9 executions are below the minimum sample");
    let ten = score(&steps);
    assert_eq!(ten.flips, 9);
    assert_eq!(ten.flip_rate, Some(1.0));
    assert!((ten.ewma_flip_rate - (1.0 - 0.9f64.powi(9))).abs() < 1e-12);
    assert_eq!(ten.state, FlakyState::Flaky);
    assert_eq!(ten.last_flake_at, Some(at(9)));
}

#[test]
fn a_single_execution_has_no_flip_rate() {
    let s = score(&[("a", "r1", true)]);
    assert_eq!(s.flip_rate, None);
    assert_eq!(s.failure_rate, 1.0);
    assert_eq!(s.state, FlakyState::Healthy, "one failing run is not a regression yet");
}

#[test]
fn window_dates_cover_the_window() {
    let config = FlakyConfig { window: Duration::days(2), ..Default::default() };
    let as_of = DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z").unwrap().to_utc();
    let dates = window_dates(as_of, &config);
    assert_eq!(dates.iter().map(ToString::to_string).collect::<Vec<_>>(), ["2026-11-25", "2026-11-26"]);
    let as_of = as_of + Duration::minutes(5);
    assert_eq!(window_dates(as_of, &config).len(), 3);
    let date = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    assert_eq!(super::as_of(date, as_of), DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z").unwrap());
    assert_eq!(super::as_of(date + Duration::days(1), as_of), as_of);
}
