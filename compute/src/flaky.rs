//! `flaky_scores`: per (repository, test_id), how flaky a test is over a window, and whether it
//! is `flaky`, `broken` or `healthy` — definition version [`DEFINITION_VERSION`], written down in
//! `compute/FLAKY_SCORES.md`.
//!
//! DataFusion does the set work (the window, skipped executions out, outage runs found and
//! marked, executions sorted per test); [`score_test`] then walks each test's executions in
//! order, because the weighted flip rate and the recovery rule are sequential by nature. It is a
//! pure function, unit-tested on hand-made histories.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, AsArray, BooleanArray, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use testlake_schemas::Lake;
use testlake_schemas::tables::flaky_scores_schema;

use crate::Result;
use crate::catalog::Strings;

/// Bumped whenever a definition below changes meaning; every row records the version behind it.
pub const DEFINITION_VERSION: i32 = 1;

/// The weight of the newest flip in the weighted flip rate (Apple's flip-rate method uses 0.1).
/// Part of the definition, not configuration.
pub const EWMA_ALPHA: f64 = 0.1;

/// Thresholds of the flaky state. The defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct FlakyConfig {
    /// How far back from `as_of` executions count.
    pub window: Duration,
    /// A flip at which the weighted flip rate exceeds this is a flake ...
    pub flip_threshold: f64,
    /// ... once the test has at least this many executions.
    pub min_executions: u64,
    /// A flaky test recovers after this long without a flake ...
    pub recovery_time: Duration,
    /// ... or this many executions without a flake.
    pub recovery_executions: u64,
    /// A run in which at least this share of its tests failed is an outage; its executions are
    /// left out of every score.
    pub outage_failure_share: f64,
    /// A trailing streak of failures is a regression (`broken`) once it spans this many runs.
    pub broken_min_runs: u64,
}

impl Default for FlakyConfig {
    fn default() -> Self {
        Self {
            window: Duration::days(30),
            flip_threshold: 0.2,
            min_executions: 10,
            recovery_time: Duration::days(7),
            recovery_executions: 100,
            outage_failure_share: 0.8,
            broken_min_runs: 2,
        }
    }
}

/// The state of a test at `as_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlakyState {
    Flaky,
    Broken,
    Healthy,
}

impl FlakyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flaky => "flaky",
            Self::Broken => "broken",
            Self::Healthy => "healthy",
        }
    }
}

/// One counted execution of a test, in `finished_at` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub commit_sha: String,
    pub run_id: String,
    pub failed: bool,
    /// Microseconds since the epoch, UTC.
    pub finished_at: i64,
}

/// A test's scores at `as_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub state: FlakyState,
    pub score: f64,
    pub executions: u64,
    pub failures: u64,
    pub failure_rate: f64,
    pub same_commit_flakes: u64,
    pub flips: u64,
    pub flip_rate: Option<f64>,
    pub ewma_flip_rate: f64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_flake_at: Option<i64>,
}

/// Scores one test from its counted executions (outage runs already removed), ordered by
/// `finished_at`. `None` when there are none.
pub fn score_test(executions: &[Execution], as_of: DateTime<Utc>, config: &FlakyConfig) -> Option<Score> {
    let first = executions.first()?;
    let last = executions.last()?;
    // Per commit: (seen a pass, seen a failure).
    let mut commits: HashMap<&str, (bool, bool)> = HashMap::new();
    let (mut flips, mut failures, mut ewma) = (0u64, 0u64, 0.0f64);
    let mut last_flake: Option<(usize, i64)> = None;
    for (i, e) in executions.iter().enumerate() {
        failures += u64::from(e.failed);
        let seen = commits.entry(&e.commit_sha).or_default();
        // A flake: the opposite outcome of one already seen on the same commit ...
        let mut flake = if e.failed { seen.0 } else { seen.1 };
        if e.failed {
            seen.1 = true
        } else {
            seen.0 = true
        }
        if i > 0 {
            let flip = e.failed != executions[i - 1].failed;
            flips += u64::from(flip);
            ewma = EWMA_ALPHA * f64::from(u8::from(flip)) + (1.0 - EWMA_ALPHA) * ewma;
            // ... or a flip that lifts the weighted flip rate over the threshold on enough history.
            flake |= flip && ewma > config.flip_threshold && (i as u64 + 1) >= config.min_executions;
        }
        if flake {
            last_flake = Some((i, e.finished_at));
        }
    }
    let n = executions.len() as u64;
    let same_commit_flakes = commits.values().filter(|&&(pass, fail)| pass && fail).count() as u64;

    // The trailing streak of failures, if it is a regression: spans enough runs and no commit in
    // it ever passed.
    let streak_start = executions.iter().rposition(|e| !e.failed).map_or(0, |i| i + 1);
    let streak = &executions[streak_start..];
    let streak_runs = streak.iter().map(|e| e.run_id.as_str()).collect::<std::collections::HashSet<_>>().len();
    let broken = !streak.is_empty()
        && streak_runs as u64 >= config.broken_min_runs
        && streak.iter().all(|e| !commits[e.commit_sha.as_str()].0);

    let recent_flake = last_flake.is_some_and(|(i, at)| {
        let since = (n - 1) - i as u64;
        since < config.recovery_executions
            && as_of.timestamp_micros() - at < config.recovery_time.num_microseconds().unwrap_or(i64::MAX)
    });
    let state = if broken {
        FlakyState::Broken
    } else if recent_flake {
        FlakyState::Flaky
    } else {
        FlakyState::Healthy
    };
    let flakiness = ewma.max(same_commit_flakes as f64 / commits.len() as f64);
    Some(Score {
        state,
        score: if state == FlakyState::Flaky { flakiness } else { 0.0 },
        executions: n,
        failures,
        failure_rate: failures as f64 / n as f64,
        same_commit_flakes,
        flips,
        flip_rate: (n > 1).then(|| flips as f64 / (n - 1) as f64),
        ewma_flip_rate: ewma,
        first_seen: first.finished_at,
        last_seen: last.finished_at,
        last_flake_at: last_flake.map(|(_, at)| at),
    })
}

/// The SQL that lists a window's counted executions, sorted per test, each marked whether its
/// run was an outage. `table` holds the `results` files of the window's dates.
pub fn executions_sql(table: &str, from: DateTime<Utc>, to: DateTime<Utc>, outage_share: f64) -> String {
    let ts = |t: DateTime<Utc>| format!("to_timestamp_micros({})", t.timestamp_micros());
    let (from, to) = (ts(from), ts(to));
    format!(
        "WITH r AS (
            SELECT repository, run_id, test_id, suite, commit_sha, finished_at, attempt, event_id,
                   status IN ('failed', 'error') AS failed
            FROM {table}
            WHERE status <> 'skipped' AND finished_at >= {from} AND finished_at < {to}
        ),
        test_in_run AS (
            SELECT repository, run_id, test_id, bool_and(failed) AS failed
            FROM r GROUP BY repository, run_id, test_id
        ),
        outages AS (
            SELECT repository, run_id FROM test_in_run GROUP BY repository, run_id
            HAVING CAST(count(*) FILTER (WHERE failed) AS DOUBLE) >= {outage_share} * CAST(count(*) AS DOUBLE)
        )
        SELECT r.repository, r.test_id, r.suite, r.commit_sha, r.run_id, r.finished_at, r.failed,
               o.run_id IS NOT NULL AS outage
        FROM r LEFT JOIN outages o ON r.repository = o.repository AND r.run_id = o.run_id
        ORDER BY r.repository, r.test_id, r.finished_at, r.attempt, r.event_id"
    )
}

/// The window of a snapshot as of `as_of`: `[as_of − window, as_of)`.
pub fn window(as_of: DateTime<Utc>, config: &FlakyConfig) -> (DateTime<Utc>, DateTime<Utc>) {
    (as_of - config.window, as_of)
}

/// The dates whose `results` a snapshot as of `as_of` reads.
pub fn window_dates(as_of: DateTime<Utc>, config: &FlakyConfig) -> Vec<NaiveDate> {
    let (from, to) = window(as_of, config);
    let last = (to - Duration::microseconds(1)).date_naive();
    from.date_naive().iter_days().take_while(|d| *d <= last).collect()
}

/// Accumulates `flaky_scores` rows.
struct ScoresBuilder {
    as_of: i64,
    window_start: i64,
    version: Int32Builder,
    repository: StringBuilder,
    test_id: StringBuilder,
    suite: StringBuilder,
    state: StringBuilder,
    score: Float64Builder,
    executions: Int64Builder,
    failures: Int64Builder,
    failure_rate: Float64Builder,
    same_commit_flakes: Int64Builder,
    flips: Int64Builder,
    flip_rate: Float64Builder,
    ewma: Float64Builder,
    first_seen: TimestampMicrosecondBuilder,
    last_seen: TimestampMicrosecondBuilder,
    last_flake_at: TimestampMicrosecondBuilder,
    outage_executions: Int64Builder,
}

/// One test being gathered from the sorted stream.
#[derive(Default)]
struct Current {
    repository: String,
    test_id: String,
    suite: String,
    executions: Vec<Execution>,
    outage_executions: u64,
}

impl ScoresBuilder {
    fn new(window_start: DateTime<Utc>, as_of: DateTime<Utc>) -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Self {
            as_of: as_of.timestamp_micros(),
            window_start: window_start.timestamp_micros(),
            version: Int32Builder::new(),
            repository: StringBuilder::new(),
            test_id: StringBuilder::new(),
            suite: StringBuilder::new(),
            state: StringBuilder::new(),
            score: Float64Builder::new(),
            executions: Int64Builder::new(),
            failures: Int64Builder::new(),
            failure_rate: Float64Builder::new(),
            same_commit_flakes: Int64Builder::new(),
            flips: Int64Builder::new(),
            flip_rate: Float64Builder::new(),
            ewma: Float64Builder::new(),
            first_seen: ts(),
            last_seen: ts(),
            last_flake_at: ts(),
            outage_executions: Int64Builder::new(),
        }
    }

    fn push(&mut self, test: &Current, as_of: DateTime<Utc>, config: &FlakyConfig) {
        let Some(s) = score_test(&test.executions, as_of, config) else {
            return;
        };
        self.version.append_value(DEFINITION_VERSION);
        self.repository.append_value(&test.repository);
        self.test_id.append_value(&test.test_id);
        self.suite.append_value(&test.suite);
        self.state.append_value(s.state.as_str());
        self.score.append_value(s.score);
        self.executions.append_value(s.executions as i64);
        self.failures.append_value(s.failures as i64);
        self.failure_rate.append_value(s.failure_rate);
        self.same_commit_flakes.append_value(s.same_commit_flakes as i64);
        self.flips.append_value(s.flips as i64);
        self.flip_rate.append_option(s.flip_rate);
        self.ewma.append_value(s.ewma_flip_rate);
        self.first_seen.append_value(s.first_seen);
        self.last_seen.append_value(s.last_seen);
        self.last_flake_at.append_option(s.last_flake_at);
        self.outage_executions.append_value(test.outage_executions as i64);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let rows = self.version.len();
        let ts = |v: i64| {
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![v; rows]).with_timezone("UTC"))
                as arrow::array::ArrayRef
        };
        Ok(RecordBatch::try_new(
            flaky_scores_schema(),
            vec![
                ts(self.as_of),
                ts(self.window_start),
                Arc::new(self.version.finish()),
                Arc::new(self.repository.finish()),
                Arc::new(self.test_id.finish()),
                Arc::new(self.suite.finish()),
                Arc::new(self.state.finish()),
                Arc::new(self.score.finish()),
                Arc::new(self.executions.finish()),
                Arc::new(self.failures.finish()),
                Arc::new(self.failure_rate.finish()),
                Arc::new(self.same_commit_flakes.finish()),
                Arc::new(self.flips.finish()),
                Arc::new(self.flip_rate.finish()),
                Arc::new(self.ewma.finish()),
                Arc::new(self.first_seen.finish()),
                Arc::new(self.last_seen.finish()),
                Arc::new(self.last_flake_at.finish()),
                Arc::new(self.outage_executions.finish()),
            ],
        )?)
    }
}

/// The name under which a snapshot's `results` files are registered.
const WINDOW_FILES: &str = "results_of_window";

fn strings(batch: &RecordBatch, i: usize) -> Result<StringArray> {
    Ok(cast(batch.column(i), &DataType::Utf8)?.as_string::<i32>().clone())
}

/// Computes the scores of every test as of `as_of` from the given `results` files (paths
/// relative to the lake root, covering the window's dates).
pub async fn compute_scores(
    ctx: &SessionContext,
    lake: &Lake,
    files: &[String],
    as_of: DateTime<Utc>,
    config: &FlakyConfig,
) -> Result<RecordBatch> {
    let (from, to) = window(as_of, config);
    let mut out = ScoresBuilder::new(from, as_of);
    if files.is_empty() {
        return out.finish();
    }
    crate::catalog::register_results_once(ctx, lake, WINDOW_FILES, files, Strings::Utf8).await?;
    let sql = executions_sql(WINDOW_FILES, from, to, config.outage_failure_share);
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut current = Current::default();
    while let Some(batch) = stream.try_next().await? {
        let (repository, test_id, suite) = (strings(&batch, 0)?, strings(&batch, 1)?, strings(&batch, 2)?);
        let (commit, run) = (strings(&batch, 3)?, strings(&batch, 4)?);
        let finished = batch.column(5).as_primitive::<TimestampMicrosecondType>();
        let failed: &BooleanArray = batch.column(6).as_boolean();
        let outage: &BooleanArray = batch.column(7).as_boolean();
        for row in 0..batch.num_rows() {
            if current.test_id != test_id.value(row) || current.repository != repository.value(row) {
                out.push(&current, as_of, config);
                current = Current {
                    repository: repository.value(row).to_owned(),
                    test_id: test_id.value(row).to_owned(),
                    ..Default::default()
                };
            }
            if suite.value(row) != current.suite {
                suite.value(row).clone_into(&mut current.suite);
            }
            if outage.value(row) {
                current.outage_executions += 1;
                continue;
            }
            current.executions.push(Execution {
                commit_sha: commit.value(row).to_owned(),
                run_id: run.value(row).to_owned(),
                failed: failed.value(row),
                finished_at: finished.value(row),
            });
        }
    }
    out.push(&current, as_of, config);
    out.finish()
}

/// The moment the snapshot of `date` describes: the end of that day, or `now` while it lasts.
pub fn as_of(date: NaiveDate, now: DateTime<Utc>) -> DateTime<Utc> {
    let end = (date + Duration::days(1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    end.map_or(now, |end| end.min(now))
}

#[cfg(test)]
mod tests;
