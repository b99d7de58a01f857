//! `trends_hourly` and `trends_daily`: one row per UTC bucket of `finished_at` and
//! (repository, branch, suite), with every number the brief defines.
//!
//! A date partition of both tables depends only on the same date of `results`, so a date is the
//! unit of recompute: it is rebuilt whole, from the files the ingest commit log says are
//! committed (never from a folder listing, which can hold a crashed flush's files until
//! recovery), and replaced by one Delta commit that swaps its single file (`schedule::fence`).
//!
//! Buckets are `date_bin(INTERVAL '1 hour'|'1 day', finished_at)`: whole UTC hours and days counted
//! from the epoch, by integer arithmetic on the timestamp. (`date_trunc` gives the same buckets but
//! converts every value through the column's time zone: a third of the computation's time.)
//!
//! Definitions (see the README's "Numbers" section):
//! - `runs` counts every execution (all attempts); `failed` counts `failed` and `error`.
//! - `pass_rate = passed / (passed + failed)`, null when both are zero.
//! - durations are over non-skipped executions; percentiles are exact: the order statistic at rank
//!   `p·(n−1)`, interpolated linearly between the two nearest (as PostgreSQL's `percentile_cont`
//!   and DuckDB's `quantile_cont`), all four from one aggregate (`crate::percentiles`).
//! - `tests` counts distinct `test_id`; `flaky_tests` counts tests that, on one commit within the
//!   bucket, both passed and failed.

use std::sync::Arc;

use crate::schedule::fence::{Inputs, Put, Stamp, write_fenced};
use arrow::array::RecordBatch;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use chrono::NaiveDate;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use testlake_schemas::tables::trends_schema;
use testlake_schemas::{Lake, Table};

use crate::catalog::Strings;
use crate::{Error, Result};

/// The bucket width of a trends table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    Hourly,
    Daily,
}

impl Interval {
    pub const ALL: [Interval; 2] = [Interval::Hourly, Interval::Daily];

    pub fn table(self) -> Table {
        match self {
            Self::Hourly => Table::TrendsHourly,
            Self::Daily => Table::TrendsDaily,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Hourly => "hour",
            Self::Daily => "day",
        }
    }
}

/// The SQL that finds, in `table` (a set of `results` files), every test that passed and failed on
/// one commit: one row per (hour of the pass, repository, branch, suite, test_id) with whether a
/// failure on the same commit fell in the same hour and in the same day. Both intervals' `flaky_tests`
/// are counted from these few rows, so the day is scanned for them once, not once per interval.
///
/// Failures are few (about 5 % of results): their distinct (hour, test, commit) are the build side of
/// a hash join the passes probe. Cheaper than grouping every row by test and commit, and than a
/// semi-join per interval (a day of 5M results, both tables, alternating runs: 4.1–5.1 s against
/// 6.8–7.6 s for the semi-joins).
pub fn flaky_matches_sql(table: &str) -> String {
    format!(
        "WITH f AS (
            SELECT DISTINCT date_bin(INTERVAL '1 hour', finished_at) AS hour, repository, branch, suite, test_id, commit_sha
            FROM {table} WHERE status IN ('failed', 'error')
        ),
        p AS (
            SELECT date_bin(INTERVAL '1 hour', finished_at) AS hour, repository, branch, suite, test_id, commit_sha
            FROM {table} WHERE status = 'passed'
        )
        SELECT p.hour, f.repository, f.branch, f.suite, f.test_id,
            bool_or(p.hour = f.hour) AS same_hour,
            bool_or(date_bin(INTERVAL '1 day', p.hour) = date_bin(INTERVAL '1 day', f.hour)) AS same_day
        FROM f JOIN p
            ON f.test_id = p.test_id AND f.commit_sha = p.commit_sha AND f.repository = p.repository
            AND f.branch = p.branch AND f.suite = p.suite
        GROUP BY p.hour, f.repository, f.branch, f.suite, f.test_id"
    )
}

/// The SQL that computes a trends table from `table`, a set of `results` files, and `matches`, the
/// output of [`flaky_matches_sql`] over the same files.
pub fn trends_sql(interval: Interval, table: &str, matches: &str) -> String {
    let unit = interval.unit();
    format!(
        "WITH r AS (
            SELECT date_bin(INTERVAL '1 {unit}', finished_at) AS bucket_start, repository, branch, suite, test_id, status,
                   CASE WHEN status <> 'skipped' THEN duration_ms END AS d
            FROM {table}
        ),
        flaky AS (
            SELECT date_bin(INTERVAL '1 {unit}', hour) AS bucket_start, repository, branch, suite,
                count(DISTINCT test_id) AS flaky_tests
            FROM {matches} WHERE same_{unit}
            GROUP BY date_bin(INTERVAL '1 {unit}', hour), repository, branch, suite
        ),
        agg AS (
            SELECT bucket_start, repository, branch, suite,
                count(*) AS runs,
                count(*) FILTER (WHERE status = 'passed') AS passed,
                count(*) FILTER (WHERE status IN ('failed', 'error')) AS failed,
                count(*) FILTER (WHERE status = 'skipped') AS skipped,
                avg(d) AS duration_avg_ms,
                duration_percentiles(d) AS p,
                max(d) AS duration_max_ms,
                count(DISTINCT test_id) AS tests
            FROM r
            GROUP BY bucket_start, repository, branch, suite
        )
        SELECT a.bucket_start, a.repository, a.branch, a.suite, a.runs, a.passed, a.failed, a.skipped,
            CASE WHEN a.passed + a.failed = 0 THEN NULL
                 ELSE CAST(a.passed AS DOUBLE) / CAST(a.passed + a.failed AS DOUBLE) END AS pass_rate,
            a.duration_avg_ms, get_field(a.p, 'p50') AS duration_p50_ms, get_field(a.p, 'p90') AS duration_p90_ms,
            get_field(a.p, 'p95') AS duration_p95_ms, get_field(a.p, 'p99') AS duration_p99_ms,
            a.duration_max_ms, a.tests, coalesce(f.flaky_tests, 0) AS flaky_tests
        FROM agg a LEFT JOIN flaky f
            ON a.bucket_start = f.bucket_start AND a.repository = f.repository
            AND a.branch = f.branch AND a.suite = f.suite
        ORDER BY a.bucket_start, a.repository, a.branch, a.suite"
    )
}

/// Puts a query result into the documented trends schema, matching columns by name: a column
/// the schema names that the query did not produce, or produced with another type, is an error
/// (never a silent cast). The only conversions are the ones that change a column's encoding and
/// not its values: string views (how `results` is read) to strings, a timestamp's unit within
/// one time zone (`date_bin` answers in nanoseconds), and nullability.
fn conform(batch: &RecordBatch) -> Result<RecordBatch> {
    conform_to(&trends_schema(), batch)
}

pub(crate) fn conform_to(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let mismatch = |message: String| Error::Arrow(ArrowError::SchemaError(message));
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| mismatch(format!("the trends query produced no column `{}`", field.name())))?;
            match (column.data_type(), field.data_type()) {
                (found, wanted) if found == wanted => Ok(Arc::clone(column)),
                (DataType::Utf8View | DataType::LargeUtf8, DataType::Utf8) => Ok(cast(column, field.data_type())?),
                // `date_bin` answers in nanoseconds; bucket starts are whole hours, exact in µs.
                (DataType::Timestamp(_, found), DataType::Timestamp(_, wanted)) if found == wanted => {
                    Ok(cast(column, field.data_type())?)
                }
                (found, wanted) => Err(mismatch(format!(
                    "the trends query produced `{}` as {found}, the schema says {wanted}",
                    field.name()
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The table names under which one date's committed `results` files, and the flaky matches found in
/// them, are registered.
const DATE_FILES: &str = "results_of_date";
const FLAKY_MATCHES: &str = "flaky_matches_of_date";

/// Computes the given trends tables from the given `results` files (paths relative to the lake
/// root), in the order given.
pub async fn compute_files(
    ctx: &SessionContext,
    lake: &Lake,
    files: &[String],
    intervals: &[Interval],
) -> Result<Vec<RecordBatch>> {
    if files.is_empty() {
        return Ok(intervals.iter().map(|_| RecordBatch::new_empty(trends_schema())).collect());
    }
    crate::catalog::register_results_once(ctx, lake, DATE_FILES, files, Strings::Views).await?;
    ctx.register_udaf(crate::percentiles::duration_percentiles());
    let matches = ctx.sql(&flaky_matches_sql(DATE_FILES)).await?;
    let schema = Arc::new(matches.schema().as_arrow().clone());
    let matches = MemTable::try_new(schema, vec![matches.collect().await?])?;
    ctx.deregister_table(FLAKY_MATCHES)?;
    ctx.register_table(FLAKY_MATCHES, Arc::new(matches))?;
    let mut computed = Vec::with_capacity(intervals.len());
    for &interval in intervals {
        let batches = ctx.sql(&trends_sql(interval, DATE_FILES, FLAKY_MATCHES)).await?.collect().await?;
        let conformed = batches.iter().map(conform).collect::<Result<Vec<_>>>()?;
        computed.push(concat_batches(&trends_schema(), &conformed)?);
    }
    Ok(computed)
}

/// Recomputes one date of the given trends tables from that date's committed `results` files and
/// replaces their files (committed to each table's Delta log under lease generation 0: for tools
/// and benchmarks on a lake no compute process writes). Returns rows written per interval.
pub async fn materialize_date(
    ctx: &SessionContext,
    lake: &Lake,
    date: NaiveDate,
    files: &[String],
    intervals: &[Interval],
) -> Result<Vec<(Interval, usize)>> {
    let mut written = Vec::new();
    for (&interval, batch) in intervals.iter().zip(compute_files(ctx, lake, files, intervals).await?) {
        let stamp = Stamp { generation: 0, inputs: Inputs::of(files) };
        if let Put::Fenced { by } = write_fenced(lake, interval.table(), date, &batch, &stamp).await? {
            tracing::warn!(table = interval.table().name(), %date, by, "not written: compute holds the date under a lease");
        }
        written.push((interval, batch.num_rows()));
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
