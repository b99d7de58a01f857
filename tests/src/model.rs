//! The numbers of the brief computed directly from produced events, in plain Rust, sharing no
//! code with compute or query: what the lake's tables and the API are checked against.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use testlake_schemas::{Status, TestEvent};

/// A bucket key: (bucket start, repository, branch, suite).
pub type Key = (DateTime<Utc>, String, String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub runs: i64,
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub pass_rate: Option<f64>,
    pub duration_avg_ms: Option<f64>,
    pub duration_p50_ms: Option<f64>,
    pub duration_p90_ms: Option<f64>,
    pub duration_p95_ms: Option<f64>,
    pub duration_p99_ms: Option<f64>,
    pub duration_max_ms: Option<f64>,
    pub tests: i64,
    pub flaky_tests: i64,
}

/// Linear interpolation between the two nearest ranks of sorted values (PostgreSQL's
/// `percentile_cont`).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Trend rows per bucket of width `width` (one hour or one day).
pub fn trends(events: &[TestEvent], width: TimeDelta) -> BTreeMap<Key, Trend> {
    let mut groups: BTreeMap<Key, Vec<&TestEvent>> = BTreeMap::new();
    for e in events {
        let start = e.finished_at.duration_trunc(width).expect("truncate");
        groups.entry((start, e.repository.clone(), e.branch.clone(), e.suite.clone())).or_default().push(e);
    }
    groups
        .into_iter()
        .map(|(key, es)| {
            let count = |f: &dyn Fn(Status) -> bool| es.iter().filter(|e| f(e.status)).count() as i64;
            let passed = count(&|s| s == Status::Passed);
            let failed = count(&|s| s.is_failure());
            let skipped = count(&|s| s == Status::Skipped);
            let mut durations: Vec<f64> =
                es.iter().filter(|e| e.status != Status::Skipped).map(|e| e.duration_ms).collect();
            durations.sort_by(f64::total_cmp);
            let tests: BTreeSet<&str> = es.iter().map(|e| e.test_id.as_str()).collect();
            let mut outcomes: BTreeMap<(&str, &str), (bool, bool)> = BTreeMap::new();
            for e in &es {
                let o = outcomes.entry((e.test_id.as_str(), e.commit_sha.as_str())).or_default();
                o.0 |= e.status == Status::Passed;
                o.1 |= e.status.is_failure();
            }
            let flaky: BTreeSet<&str> = outcomes.iter().filter(|(_, (p, f))| *p && *f).map(|((t, _), _)| *t).collect();
            let trend = Trend {
                runs: es.len() as i64,
                passed,
                failed,
                skipped,
                pass_rate: (passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64),
                duration_avg_ms: (!durations.is_empty())
                    .then(|| durations.iter().sum::<f64>() / durations.len() as f64),
                duration_p50_ms: percentile(&durations, 0.5),
                duration_p90_ms: percentile(&durations, 0.9),
                duration_p95_ms: percentile(&durations, 0.95),
                duration_p99_ms: percentile(&durations, 0.99),
                duration_max_ms: durations.last().copied(),
                tests: tests.len() as i64,
                flaky_tests: flaky.len() as i64,
            };
            (key, trend)
        })
        .collect()
}

/// Totals over events in `[from, to)` matching an optional repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub runs: i64,
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub pass_rate: Option<f64>,
    pub duration_avg_ms: Option<f64>,
    pub duration_max_ms: Option<f64>,
    pub repositories: i64,
}

pub fn summary(events: &[TestEvent], repository: Option<&str>) -> Summary {
    let es: Vec<&TestEvent> = events.iter().filter(|e| repository.is_none_or(|r| e.repository == r)).collect();
    let passed = es.iter().filter(|e| e.status == Status::Passed).count() as i64;
    let failed = es.iter().filter(|e| e.status.is_failure()).count() as i64;
    let durations: Vec<f64> = es.iter().filter(|e| e.status != Status::Skipped).map(|e| e.duration_ms).collect();
    Summary {
        runs: es.len() as i64,
        passed,
        failed,
        skipped: es.iter().filter(|e| e.status == Status::Skipped).count() as i64,
        pass_rate: (passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64),
        duration_avg_ms: (!durations.is_empty()).then(|| durations.iter().sum::<f64>() / durations.len() as f64),
        duration_max_ms: durations.iter().copied().reduce(f64::max),
        repositories: es.iter().map(|e| e.repository.as_str()).collect::<BTreeSet<_>>().len() as i64,
    }
}

/// The numbers of a flaky score (the state is checked against the fleet's ground truth instead).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlakyNumbers {
    pub executions: i64,
    pub failures: i64,
    pub same_commit_flakes: i64,
    pub flips: i64,
    pub ewma_flip_rate: f64,
    pub outage_executions: i64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// Flaky-score numbers per (repository, test_id) over `[from, to)`: skipped executions out,
/// executions of runs in which at least `outage_share` of the tests never passed set aside.
pub fn flaky_numbers(
    events: &[TestEvent],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    outage_share: f64,
) -> BTreeMap<(String, String), FlakyNumbers> {
    let mut es: Vec<&TestEvent> =
        events.iter().filter(|e| e.status != Status::Skipped && e.finished_at >= from && e.finished_at < to).collect();
    // Per run, per test: did any attempt pass?
    let mut runs: BTreeMap<(&str, &str), BTreeMap<&str, bool>> = BTreeMap::new();
    for e in &es {
        *runs.entry((&e.repository, &e.run_id)).or_default().entry(&e.test_id).or_default() |= !e.status.is_failure();
    }
    let outages: BTreeSet<(&str, &str)> = runs
        .iter()
        .filter(|(_, tests)| {
            let failed = tests.values().filter(|passed| !**passed).count();
            failed as f64 >= outage_share * tests.len() as f64
        })
        .map(|(run, _)| *run)
        .collect();
    es.sort_by_key(|e| (e.finished_at, e.attempt, e.event_id));
    let mut out: BTreeMap<(String, String), FlakyNumbers> = BTreeMap::new();
    let mut previous: BTreeMap<(String, String), bool> = BTreeMap::new();
    // Per test: the commits it passed on, and those it failed on.
    type Commits<'a> = (BTreeSet<&'a str>, BTreeSet<&'a str>);
    let mut commits: BTreeMap<(String, String), Commits> = BTreeMap::new();
    for e in es {
        let key = (e.repository.clone(), e.test_id.clone());
        let n = out.entry(key.clone()).or_default();
        if outages.contains(&(e.repository.as_str(), e.run_id.as_str())) {
            n.outage_executions += 1;
            continue;
        }
        let failed = e.status.is_failure();
        n.executions += 1;
        n.failures += i64::from(failed);
        n.first_seen = n.first_seen.or(Some(e.finished_at));
        n.last_seen = Some(e.finished_at);
        if let Some(before) = previous.insert(key.clone(), failed) {
            let flip = before != failed;
            n.flips += i64::from(flip);
            n.ewma_flip_rate = 0.9 * n.ewma_flip_rate + if flip { 0.1 } else { 0.0 };
        }
        let (passed_on, failed_on) = commits.entry(key).or_default();
        if failed {
            failed_on.insert(&e.commit_sha)
        } else {
            passed_on.insert(&e.commit_sha)
        };
    }
    for (key, (passed_on, failed_on)) in commits {
        out.get_mut(&key).expect("counted").same_commit_flakes = passed_on.intersection(&failed_on).count() as i64;
    }
    out.retain(|_, n| n.executions > 0);
    out
}

/// Whether two optional floats agree to a relative 1e-9.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert!(close(percentile(&v, 0.9), Some(3.7)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
