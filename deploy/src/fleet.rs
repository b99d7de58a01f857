//! A synthetic CI fleet: repositories with suites of tests that are stable, flaky (fail at random
//! and usually pass on retry), broken (pass until a commit breaks them, then always fail) or
//! skipped, run by CI pipelines on `main` and feature branches, with realistic durations. Now and
//! then a run is an outage (the runners' infrastructure fails and takes every test down with it).
//!
//! Deterministic for a seed, so tests can regenerate what was produced.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testlake_schemas::{Status, TestEvent};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub repositories: usize,
    pub suites_per_repository: usize,
    pub tests_per_suite: usize,
    /// Share of tests that fail at random.
    pub flaky_share: f64,
    /// Share of tests that break at some commit and stay broken.
    pub broken_share: f64,
    /// Share of tests that are always skipped.
    pub skipped_share: f64,
    /// Attempts a failing test gets inside one run (1 = no retries).
    pub max_attempts: u32,
    /// Share of runs that are outages: every test that runs fails with an infrastructure error.
    pub outage_share: f64,
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            repositories: 3,
            suites_per_repository: 4,
            tests_per_suite: 25,
            flaky_share: 0.08,
            broken_share: 0.03,
            skipped_share: 0.03,
            max_attempts: 3,
            outage_share: 0.02,
            seed: 42,
        }
    }
}

/// How a test behaves, the ground truth that flaky scoring is measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Stable,
    Flaky {
        fail_probability: f64,
    },
    /// A regression: fails on every run of the `from_commit`-th commit of its repository and later.
    Broken {
        from_commit: u64,
    },
    Skipped,
}

#[derive(Debug, Clone)]
pub struct TestSpec {
    pub repository: String,
    pub suite: String,
    pub test_id: String,
    pub behaviour: Behaviour,
    /// Typical duration; executions vary around it.
    pub median_ms: f64,
}

pub struct Fleet {
    config: FleetConfig,
    rng: SmallRng,
    tests: Vec<TestSpec>,
    runs: BTreeMap<String, u64>,
    next_repository: usize,
}

fn repository_name(i: usize) -> String {
    const NAMES: [&str; 8] = ["billing", "checkout", "search", "identity", "payments", "catalog", "mobile", "infra"];
    format!(
        "acme/{}{}",
        NAMES[i % NAMES.len()],
        if i >= NAMES.len() { format!("-{}", i / NAMES.len()) } else { String::new() }
    )
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut tests = Vec::new();
        for r in 0..config.repositories {
            let repository = repository_name(r);
            for s in 0..config.suites_per_repository {
                let suite = format!("{}.suite{s:02}", repository.trim_start_matches("acme/"));
                for t in 0..config.tests_per_suite {
                    let roll: f64 = rng.random();
                    let behaviour = if roll < config.flaky_share {
                        Behaviour::Flaky { fail_probability: rng.random_range(0.1..0.4) }
                    } else if roll < config.flaky_share + config.broken_share {
                        Behaviour::Broken { from_commit: rng.random_range(2..20) }
                    } else if roll < config.flaky_share + config.broken_share + config.skipped_share {
                        Behaviour::Skipped
                    } else {
                        Behaviour::Stable
                    };
                    tests.push(TestSpec {
                        repository: repository.clone(),
                        suite: suite.clone(),
                        test_id: format!("{suite}.Test{t:03}.test_case_{t}"),
                        behaviour,
                        median_ms: 5.0 * f64::powf(200.0, rng.random::<f64>()),
                    });
                }
            }
        }
        Self { config, rng, tests, runs: BTreeMap::new(), next_repository: 0 }
    }

    pub fn tests(&self) -> &[TestSpec] {
        &self.tests
    }

    /// Events of one CI run of the next repository (round robin), finishing around `at`.
    pub fn run(&mut self, at: DateTime<Utc>) -> Vec<TestEvent> {
        let repository = repository_name(self.next_repository % self.config.repositories.max(1));
        self.next_repository += 1;
        let run_no = {
            let n = self.runs.entry(repository.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let branch = if self.rng.random_bool(0.75) { "main".to_owned() } else { format!("feature-{}", run_no % 5) };
        // Every commit is run twice, so same-commit reruns happen as in real CI.
        let commit = run_no / 2;
        let commit_sha = format!("{:040x}", commit.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.config.seed);
        let outage = self.rng.random_bool(self.config.outage_share.clamp(0.0, 1.0));
        let run_id = format!("{repository}#{run_no}");
        let mut events = Vec::new();
        let mut clock = at;
        let specs: Vec<TestSpec> = self.tests.iter().filter(|t| t.repository == repository).cloned().collect();
        for spec in specs {
            for attempt in 1..=self.config.max_attempts.max(1) {
                let status = match spec.behaviour {
                    Behaviour::Skipped => Status::Skipped,
                    _ if outage => Status::Error,
                    Behaviour::Stable => Status::Passed,
                    Behaviour::Broken { from_commit } if commit >= from_commit => Status::Failed,
                    Behaviour::Broken { .. } => Status::Passed,
                    Behaviour::Flaky { fail_probability } => {
                        if !self.rng.random_bool(fail_probability) {
                            Status::Passed
                        } else if self.rng.random_bool(0.2) {
                            Status::Error
                        } else {
                            Status::Failed
                        }
                    }
                };
                let duration_ms = if status == Status::Skipped {
                    0.0
                } else {
                    (spec.median_ms * self.rng.random_range(0.5..2.0) * 1000.0).round() / 1000.0
                };
                clock += Duration::microseconds((duration_ms * 1000.0) as i64 + 1000);
                events.push(TestEvent {
                    schema_version: testlake_schemas::event::SCHEMA_VERSION,
                    event_id: Uuid::from_u128(self.rng.random()),
                    repository: repository.clone(),
                    branch: branch.clone(),
                    commit_sha: commit_sha.clone(),
                    run_id: run_id.clone(),
                    job_id: Some(format!("shard-{}", events.len() % 4)),
                    suite: spec.suite.clone(),
                    test_id: spec.test_id.clone(),
                    name: testlake_schemas::event::default_name(&spec.test_id).to_owned(),
                    status,
                    attempt,
                    duration_ms,
                    started_at: Some(clock - Duration::microseconds((duration_ms * 1000.0) as i64)),
                    finished_at: clock,
                    ci_provider: Some("github-actions".into()),
                    host: Some(format!("runner-{:03}", self.rng.random_range(0..200))),
                    failure_message: status.is_failure().then(|| {
                        if outage {
                            "infrastructure: runner lost connection".to_owned()
                        } else {
                            format!("AssertionError in {}", spec.test_id)
                        }
                    }),
                    tags: [("os".to_owned(), "linux".to_owned())].into(),
                });
                if !status.is_failure() {
                    break;
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_retries_only_failures() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").unwrap().with_timezone(&Utc);
        let mut a = Fleet::new(FleetConfig::default());
        let mut b = Fleet::new(FleetConfig::default());
        let (ra, rb) = (a.run(at), b.run(at));
        assert_eq!(ra, rb);
        let per_repo = FleetConfig::default().suites_per_repository * FleetConfig::default().tests_per_suite;
        let first_attempts = ra.iter().filter(|e| e.attempt == 1).count();
        assert_eq!(first_attempts, per_repo, "every test runs once per run");
        for e in ra.iter().filter(|e| e.attempt > 1) {
            let previous = ra.iter().find(|p| p.test_id == e.test_id && p.attempt == e.attempt - 1).unwrap();
            assert!(previous.status.is_failure(), "a retry follows a failure");
        }
        for e in &ra {
            let again = TestEvent::decode(e.to_json().as_bytes(), at + Duration::hours(1)).unwrap();
            assert_eq!(&again, e);
        }
    }
}
