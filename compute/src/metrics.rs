//! What compute reports: its metrics (registered into the process's registry, see
//! [`testlake_schemas::observe`]) and its health.
//!
//! Health, from the last rounds of work — periodic cycles and notice-driven recomputes alike (a
//! compute busy with notices is working, not stalled, even when its next cycle waits):
//! - with the periodic cycle on: `healthy` when the last round succeeded within the interval
//!   (with five seconds of slack for the rounds' own run time), `degraded` when the last round
//!   had failed tasks but something succeeded since, `unhealthy` when nothing succeeded for twice
//!   the interval; before the first round, `starting` (for twice the interval);
//! - with the cycle off (`interval` zero: compute works on notices only), idleness is not a
//!   fault: `healthy` until a round fails, `degraded` after a round with failed tasks,
//!   `unhealthy` after [`FAILED_ROUNDS_UNHEALTHY`] rounds in a row in which nothing succeeded.
//!
//! `testlake_compute_flaky_tests_detected_total` counts tests *newly* flaky in today's snapshot:
//! flaky in a snapshot and not in the previous one this process computed. A process's first
//! snapshot compares with none, so after a restart it counts every flaky test once more.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use testlake_schemas::Table;
pub use testlake_schemas::observe::Health;
use testlake_schemas::observe::Registry;

use crate::trends::Interval;

/// With the periodic cycle off: rounds in a row with nothing succeeding that make compute unhealthy.
pub const FAILED_ROUNDS_UNHEALTHY: u32 = 3;

/// How a task of a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskOutcome {
    Completed,
    Skipped,
    Failed,
}

impl TaskOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

fn interval_label(interval: Interval) -> &'static str {
    match interval {
        Interval::Hourly => "hourly",
        Interval::Daily => "daily",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntervalLabel {
    interval: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

/// 10 ms to 164 s, ×2.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// The rounds of work health is decided from.
#[derive(Debug, Default)]
struct Rounds {
    /// When the last round ended, and whether all its tasks succeeded.
    last: Option<(Instant, bool)>,
    last_success: Option<Instant>,
    /// Rounds in a row in which nothing succeeded.
    failed_in_a_row: u32,
    /// The flaky tests of the previous snapshot of today, as (repository, test_id).
    flaky: Option<BTreeSet<(String, String)>>,
}

/// Shared by the scheduler (writes) and `/metrics`, `/healthz` (read).
#[derive(Debug)]
pub struct ComputeMetrics {
    cycles: Family<StatusLabel, Counter>,
    tasks: Family<TaskLabels, Counter>,
    trends_persisted: Family<IntervalLabel, Counter>,
    flaky_detected: Counter,
    flaky_tests: Gauge,
    cycle_duration: Histogram,
    trend_duration: Family<IntervalLabel, Histogram, fn() -> Histogram>,
    flaky_duration: Histogram,
    notice_failures: Counter,
    reconciliations: Family<StatusLabel, Counter>,
    reconciled_dates: Counter,
    fenced: Family<TableLabel, Counter>,
    rounds: Mutex<Rounds>,
    /// The periodic cycle's interval; zero when it is off.
    interval: Duration,
    started: Instant,
}

impl ComputeMetrics {
    /// Metrics of a compute whose periodic cycle runs every `interval` (zero: no cycle).
    pub fn new(interval: Duration) -> Self {
        let metrics = Self {
            cycles: Family::default(),
            tasks: Family::default(),
            trends_persisted: Family::default(),
            flaky_detected: Counter::default(),
            flaky_tests: Gauge::default(),
            cycle_duration: duration_histogram(),
            trend_duration: Family::new_with_constructor(duration_histogram),
            flaky_duration: duration_histogram(),
            notice_failures: Counter::default(),
            reconciliations: Family::default(),
            reconciled_dates: Counter::default(),
            fenced: Family::default(),
            rounds: Mutex::default(),
            interval,
            started: Instant::now(),
        };
        // Every status shows from the start, at 0, so rates and alerts see the series.
        for status in ["success", "partial", "failed"] {
            let _ = metrics.cycles.get_or_create(&StatusLabel { status });
        }
        for status in ["success", "failed"] {
            let _ = metrics.reconciliations.get_or_create(&StatusLabel { status });
        }
        for interval in Interval::ALL {
            let _ = metrics.trends_persisted.get_or_create(&IntervalLabel { interval: interval_label(interval) });
        }
        metrics
    }

    /// Registers every metric into the process's `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "testlake_compute_cycles",
            "Periodic cycles by status: success (no task failed), partial, failed (nothing succeeded)",
            self.cycles.clone(),
        );
        r.register("testlake_compute_tasks", "Tasks by kind and outcome", self.tasks.clone());
        r.register(
            "testlake_compute_trends_persisted",
            "Trend rows written, by interval (hourly, daily)",
            self.trends_persisted.clone(),
        );
        r.register(
            "testlake_compute_flaky_tests_detected",
            "Tests newly flaky in today's snapshot: flaky, and not in the previous snapshot this process computed",
            self.flaky_detected.clone(),
        );
        r.register(
            "testlake_compute_flaky_tests",
            "Tests in the flaky state in today's latest snapshot",
            self.flaky_tests.clone(),
        );
        r.register(
            "testlake_compute_cycle_duration_seconds",
            "Duration of periodic cycles",
            self.cycle_duration.clone(),
        );
        r.register(
            "testlake_compute_trend_calculation_duration_seconds",
            "Duration of a date's trend calculation (the tables computed together), by interval",
            self.trend_duration.clone(),
        );
        r.register(
            "testlake_compute_flaky_analysis_duration_seconds",
            "Duration of a flaky-score snapshot's analysis",
            self.flaky_duration.clone(),
        );
        r.register(
            "testlake_compute_notice_failures",
            "Notice-driven recomputes that failed before their tasks (retried)",
            self.notice_failures.clone(),
        );
        r.register(
            "testlake_compute_reconciliations",
            "Reconciliations of computed files against the commit log, by status",
            self.reconciliations.clone(),
        );
        r.register(
            "testlake_compute_reconciled_dates",
            "Dates reconciliation found built from other inputs than the committed ones",
            self.reconciled_dates.clone(),
        );
        r.register(
            "testlake_compute_fenced_writes",
            "Writes refused because a later lease generation wrote the file",
            self.fenced.clone(),
        );
    }

    /// This process's metrics alone, as OpenMetrics text (for tests and tools).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        testlake_schemas::observe::encode(&registry)
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().expect("compute metrics lock")
    }

    /// A trends task for `intervals` ended after `elapsed` (the intervals are computed together).
    pub fn trends_task(&self, intervals: &[Interval], outcome: TaskOutcome, elapsed: Duration) {
        for &interval in intervals {
            self.tasks.get_or_create(&TaskLabels { task: interval.table().name(), outcome: outcome.as_str() }).inc();
            if outcome != TaskOutcome::Skipped {
                let label = IntervalLabel { interval: interval_label(interval) };
                self.trend_duration.get_or_create(&label).observe(elapsed.as_secs_f64());
            }
        }
    }

    /// A trends task for `interval` was skipped without running (its date unchanged).
    pub fn trends_unchanged(&self, interval: Interval) {
        self.trends_task(&[interval], TaskOutcome::Skipped, Duration::ZERO);
    }

    /// A flaky-score task ended after `elapsed`.
    pub fn flaky_task(&self, outcome: TaskOutcome, elapsed: Duration) {
        let task = Table::FlakyScores.name();
        self.tasks.get_or_create(&TaskLabels { task, outcome: outcome.as_str() }).inc();
        if outcome != TaskOutcome::Skipped {
            self.flaky_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// `rows` trend rows of `interval` were written.
    pub fn persisted(&self, interval: Interval, rows: usize) {
        self.trends_persisted.get_or_create(&IntervalLabel { interval: interval_label(interval) }).inc_by(rows as u64);
    }

    /// Today's snapshot was written with these flaky tests (repository, test_id); returns how
    /// many are newly flaky (see the module's documentation).
    pub fn flaky_snapshot(&self, flaky: BTreeSet<(String, String)>) -> usize {
        self.flaky_tests.set(flaky.len() as i64);
        let mut rounds = self.rounds();
        let new = rounds.flaky.as_ref().map_or(flaky.len(), |before| flaky.difference(before).count());
        self.flaky_detected.inc_by(new as u64);
        rounds.flaky = Some(flaky);
        new
    }

    /// A notice-driven recompute failed before its tasks (listing the dates' files); its dates
    /// are retried.
    pub fn notice_failed(&self) {
        self.notice_failures.inc();
        self.round(0, 1);
    }

    /// A reconciliation ran and found `stale` dates.
    pub fn reconciled(&self, stale: usize) {
        self.reconciliations.get_or_create(&StatusLabel { status: "success" }).inc();
        self.reconciled_dates.inc_by(stale as u64);
    }

    pub fn reconcile_failed(&self) {
        self.reconciliations.get_or_create(&StatusLabel { status: "failed" }).inc();
    }

    /// A write of `table` was refused: a later lease generation had written the file.
    pub fn fenced(&self, table: Table) {
        self.fenced.get_or_create(&TableLabel { table: table.name() }).inc();
    }

    /// A periodic cycle ended with this many failed and succeeded (completed or skipped) tasks.
    pub fn cycle(&self, failed: usize, succeeded: usize, elapsed: Duration) {
        let status = match (failed, succeeded) {
            (0, _) => "success",
            (_, 0) => "failed",
            _ => "partial",
        };
        self.cycles.get_or_create(&StatusLabel { status }).inc();
        self.cycle_duration.observe(elapsed.as_secs_f64());
        self.round(succeeded, failed);
    }

    /// A round of work ended (a cycle, or a recompute on notices): `succeeded` of its tasks
    /// completed or were skipped, `failed` failed.
    pub fn round(&self, succeeded: usize, failed: usize) {
        let mut rounds = self.rounds();
        let now = Instant::now();
        rounds.last = Some((now, failed == 0));
        if failed == 0 {
            rounds.last_success = Some(now);
        }
        rounds.failed_in_a_row = if failed > 0 && succeeded == 0 { rounds.failed_in_a_row + 1 } else { 0 };
    }

    pub fn health(&self) -> Health {
        let rounds = self.rounds();
        if self.interval.is_zero() {
            return match rounds.last {
                _ if rounds.failed_in_a_row >= FAILED_ROUNDS_UNHEALTHY => Health::Unhealthy,
                Some((_, false)) => Health::Degraded,
                _ => Health::Healthy,
            };
        }
        let slack = Duration::from_secs(5);
        let since_success = rounds.last_success.map_or(self.started.elapsed(), |t| t.elapsed());
        match rounds.last {
            None if self.started.elapsed() < 2 * self.interval + slack => Health::Starting,
            _ if since_success > 2 * self.interval + slack => Health::Unhealthy,
            Some((_, false)) => Health::Degraded,
            Some((at, true)) if at.elapsed() <= self.interval + slack => Health::Healthy,
            _ => Health::Degraded,
        }
    }
}

#[cfg(test)]
mod tests;
