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
