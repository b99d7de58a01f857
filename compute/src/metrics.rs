//! What compute reports: Prometheus counters, and the health of its periodic cycle.
//!
//! Health, from the last rounds of work — periodic cycles and notice-driven recomputes alike (a
//! compute busy with notices is working, not stalled, even when its next cycle waits): `healthy`
//! when the last round succeeded within the interval (with five seconds of slack for the rounds'
//! own run time), `degraded` when the last round had failed tasks but something succeeded since,
//! `unhealthy` when nothing succeeded for twice the interval. Before the first round, `starting`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::trends::Interval;

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

#[derive(Debug, Default)]
struct State {
    /// (status, count): "success", "partial", "failed".
    cycles: [u64; 3],
    tasks: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    rows_persisted: std::collections::BTreeMap<&'static str, u64>,
    flaky_tests: u64,
    cycle_seconds: (f64, u64),
    task_seconds: std::collections::BTreeMap<&'static str, (f64, u64)>,
    last_cycle: Option<(Instant, bool)>,
    last_success: Option<Instant>,
    notice_failures: u64,
    /// (succeeded, failed) reconciliations.
    reconciliations: (u64, u64),
    reconciled_dates: u64,
    fenced: std::collections::BTreeMap<&'static str, u64>,
}

/// Shared by the scheduler (writes) and `/metrics`, `/healthz` (read).
#[derive(Debug)]
pub struct ComputeMetrics {
    state: Mutex<State>,
    interval: Duration,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl ComputeMetrics {
    pub fn new(interval: Duration) -> Self {
        Self { state: Mutex::default(), interval, started: Instant::now() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("compute metrics lock")
    }

    /// A task (`trends_hourly`, `trends_daily`, `flaky_scores`) ended.
    pub fn task(&self, kind: &'static str, outcome: TaskOutcome, elapsed: Duration) {
        let mut s = self.state();
        *s.tasks.entry((kind, outcome.as_str())).or_default() += 1;
        let t = s.task_seconds.entry(kind).or_default();
        t.0 += elapsed.as_secs_f64();
        t.1 += 1;
    }

    pub fn persisted(&self, interval: Interval, rows: usize) {
        let name = interval.table().name();
        *self.state().rows_persisted.entry(name).or_default() += rows as u64;
    }

    /// A notice-driven recompute failed before its tasks (listing the dates' files); its dates
    /// are retried.
    pub fn notice_failed(&self) {
        self.state().notice_failures += 1;
    }

    /// A reconciliation ran and found `stale` dates.
    pub fn reconciled(&self, stale: usize) {
        let mut s = self.state();
        s.reconciliations.0 += 1;
        s.reconciled_dates += stale as u64;
    }

    pub fn reconcile_failed(&self) {
        self.state().reconciliations.1 += 1;
    }

    /// A write of `table` was refused: a later lease generation had written the file.
    pub fn fenced(&self, table: testlake_schemas::Table) {
        *self.state().fenced.entry(table.name()).or_default() += 1;
    }

    pub fn flaky_tests(&self, n: u64) {
        self.state().flaky_tests = n;
    }

    /// A periodic cycle ended with this many failed and completed tasks.
    pub fn cycle(&self, failed: usize, completed: usize, elapsed: Duration) {
        let status = match (failed, completed) {
            (0, _) => 0,
            (_, 0) => 2,
            _ => 1,
        };
        {
            let mut s = self.state();
            s.cycles[status] += 1;
            s.cycle_seconds.0 += elapsed.as_secs_f64();
            s.cycle_seconds.1 += 1;
        }
        self.worked(failed);
    }

    /// A round of work ended (a cycle, or a recompute on notices), `failed` of its tasks failed.
    pub fn worked(&self, failed: usize) {
        let mut s = self.state();
        let now = Instant::now();
        s.last_cycle = Some((now, failed == 0));
        if failed == 0 {
            s.last_success = Some(now);
        }
    }

    pub fn health(&self) -> Health {
        self.health_of(&self.state())
    }

    fn health_of(&self, s: &State) -> Health {
        let slack = Duration::from_secs(5);
        let since_success = s.last_success.map_or(self.started.elapsed(), |t| t.elapsed());
        match s.last_cycle {
            None if self.started.elapsed() < 2 * self.interval + slack => Health::Starting,
            _ if since_success > 2 * self.interval + slack => Health::Unhealthy,
            Some((_, false)) => Health::Degraded,
            Some((at, true)) if at.elapsed() <= self.interval + slack => Health::Healthy,
            _ => Health::Degraded,
        }
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let s = self.state();
        let _ = writeln!(
            out,
            "# HELP testlake_compute_cycles_total Periodic cycles by status.\n# TYPE testlake_compute_cycles_total counter"
        );
        for (status, n) in ["success", "partial", "failed"].iter().zip(s.cycles) {
            let _ = writeln!(out, "testlake_compute_cycles_total{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP testlake_compute_tasks_total Tasks by kind and outcome.\n# TYPE testlake_compute_tasks_total counter"
        );
        for ((kind, outcome), n) in &s.tasks {
            let _ = writeln!(out, "testlake_compute_tasks_total{{task=\"{kind}\",outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP testlake_compute_rows_persisted_total Trend rows written, by table.\n# TYPE testlake_compute_rows_persisted_total counter"
        );
        for (table, n) in &s.rows_persisted {
            let _ = writeln!(out, "testlake_compute_rows_persisted_total{{table=\"{table}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP testlake_compute_flaky_tests Tests in the flaky state in the latest snapshot.\n\
             # TYPE testlake_compute_flaky_tests gauge\ntestlake_compute_flaky_tests {}",
            s.flaky_tests
        );
        let _ = writeln!(
            out,
            "# HELP testlake_compute_cycle_seconds Duration of periodic cycles.\n# TYPE testlake_compute_cycle_seconds summary\n\
             testlake_compute_cycle_seconds_sum {}\ntestlake_compute_cycle_seconds_count {}",
            s.cycle_seconds.0, s.cycle_seconds.1
        );
        let _ = writeln!(
            out,
            "# HELP testlake_compute_task_seconds Duration of tasks by kind.\n# TYPE testlake_compute_task_seconds summary"
        );
        for (kind, (sum, count)) in &s.task_seconds {
            let _ = writeln!(
                out,
                "testlake_compute_task_seconds_sum{{task=\"{kind}\"}} {sum}\ntestlake_compute_task_seconds_count{{task=\"{kind}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP testlake_compute_notice_failures_total Notice-driven recomputes that failed before their tasks (retried).\n\
             # TYPE testlake_compute_notice_failures_total counter\ntestlake_compute_notice_failures_total {}",
            s.notice_failures
        );
        let _ = writeln!(
            out,
            "# HELP testlake_compute_reconciliations_total Reconciliations of computed files against the commit log, by status.\n\
             # TYPE testlake_compute_reconciliations_total counter\n\
             testlake_compute_reconciliations_total{{status=\"success\"}} {}\n\
             testlake_compute_reconciliations_total{{status=\"failed\"}} {}",
            s.reconciliations.0, s.reconciliations.1
        );
        let _ = writeln!(
            out,
            "# HELP testlake_compute_reconciled_dates_total Dates reconciliation found built from other inputs than the committed ones.\n\
             # TYPE testlake_compute_reconciled_dates_total counter\ntestlake_compute_reconciled_dates_total {}",
            s.reconciled_dates
        );
        let _ = writeln!(
            out,
            "# HELP testlake_compute_fenced_writes_total Writes refused because a later lease generation wrote the file.\n\
             # TYPE testlake_compute_fenced_writes_total counter"
        );
        for (table, n) in &s.fenced {
            let _ = writeln!(out, "testlake_compute_fenced_writes_total{{table=\"{table}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP testlake_compute_healthy 1 when compute is healthy.\n# TYPE testlake_compute_healthy gauge\n\
             testlake_compute_healthy{{status=\"{}\"}} {}",
            self.health_of(&s).as_str(),
            u8::from(self.health_of(&s) == Health::Healthy)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recompute on notices counts for health as a cycle does: compute busy with notices (its
    /// next cycle waiting) is healthy, and one with failed tasks is degraded.
    #[test]
    fn recomputes_on_notices_count_for_health_like_cycles() {
        let metrics = ComputeMetrics::new(Duration::from_secs(3600));
        assert_eq!(metrics.health(), Health::Starting);
        metrics.worked(0);
        assert_eq!(metrics.health(), Health::Healthy);
        metrics.worked(1);
        assert_eq!(metrics.health(), Health::Degraded);
        metrics.worked(0);
        assert_eq!(metrics.health(), Health::Healthy);
        let mut page = String::new();
        metrics.render(&mut page);
        assert!(page.contains("testlake_compute_cycles_total{status=\"success\"} 0"), "not counted as cycles: {page}");
    }
}
