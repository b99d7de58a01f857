//! What the endpoints share for building and reading answers: DataFusion expressions and reads
//! over the lake's tables, and the encodings of a batch. Depends on no handler, nor on the cache
//! or the rendering, so every one of those can use it.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::json::writer::{JsonArray, WriterBuilder};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use serde_json::{Map, Value, json};
use testlake_schemas::log_reader::CommittedFiles;
use testlake_schemas::{Lake, Table};

use crate::error::ApiError;
use crate::params::{Filters, Range};

/// A UTC timestamp literal, as the tables store them.
pub fn ts(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into())))
}

/// A date as its partition folder is named.
pub fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The date partitions a range touches.
pub fn dates(range: Range) -> std::ops::RangeInclusive<NaiveDate> {
    let last = (range.to - chrono::Duration::microseconds(1)).date_naive();
    range.from.date_naive()..=last.max(range.from.date_naive())
}

/// Every row of `df`, in one batch.
pub async fn collect(df: DataFrame) -> Result<RecordBatch, ApiError> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Every row of `df` in one batch, unless there are more than `max_rows`: then a 400, having
/// held no more than `max_rows + 1` of them (a sort under the limit keeps only its top rows).
pub async fn collect_at_most(df: DataFrame, max_rows: usize) -> Result<RecordBatch, ApiError> {
    let batch = collect(df.limit(0, Some(max_rows.saturating_add(1)))?).await?;
    if batch.num_rows() > max_rows {
        return Err(ApiError::AnswerTooLarge(max_rows));
    }
    Ok(batch)
}

/// Rows of a trends table whose bucket starts in the range and that match the filters. The
/// `date` partition column prunes files before any is opened.
pub async fn filtered(
    ctx: &SessionContext,
    table: Table,
    range: Range,
    filters: &Filters,
) -> Result<DataFrame, ApiError> {
    let days = dates(range);
    let mut df = ctx
        .table(table.name())
        .await?
        .filter(col("date").gt_eq(lit(date_text(*days.start()))).and(col("date").lt_eq(lit(date_text(*days.end())))))?
        .filter(col("bucket_start").gt_eq(ts(range.from)).and(col("bucket_start").lt(ts(range.to))))?;
    for (column, value) in filters.dimensions() {
        df = df.filter(col(column).eq(lit(value)))?;
    }
    Ok(df)
}

/// The head of a ranged answer: the range and the dimension filters.
pub fn head(range: Range, filters: &Filters) -> Map<String, Value> {
    let Value::Object(head) = json!({
        "from": range.from,
        "to": range.to,
        "filters": { "repository": filters.repository, "branch": filters.branch, "suite": filters.suite },
    }) else {
        unreachable!()
    };
    head
}

/// Registers `name` as the committed `results` files of the dates `range` touches (never a
/// folder listing, which may hold a crashed flush's files until recovery).
pub async fn register_committed(
    lake: &Lake,
    committed: &tokio::sync::Mutex<CommittedFiles>,
    ctx: &SessionContext,
    name: &str,
    range: Range,
) -> Result<(), ApiError> {
    let files: Vec<String> = {
        let mut committed = committed.lock().await;
        committed.refresh(lake).await?;
        let days = dates(range);
        days.start().iter_days().take_while(|d| d <= days.end()).flat_map(|d| committed.results_for(d)).collect()
    };
    register_results(ctx, lake, name, &files).await?;
    Ok(())
}

/// Registers `name` as exactly these `results` files, each event counted once (the later copies
/// of an `event_id` left out: `testlake_compute::dedup`), and returns those copies. An empty
/// table when there are no files.
pub async fn register_results(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    files: &[String],
) -> Result<Vec<testlake_compute::dedup::LaterCopy>, ApiError> {
    if files.is_empty() {
        let empty =
            datafusion::datasource::MemTable::try_new(testlake_schemas::tables::results_schema(), vec![vec![]])?;
        ctx.register_table(name, Arc::new(empty))?;
        return Ok(Vec::new());
    }
    let strings = testlake_compute::catalog::Strings::Utf8;
    Ok(testlake_compute::catalog::register_results_once(ctx, lake, name, files, strings).await?)
}

/// The date of the latest `flaky_scores` snapshot, if any.
pub async fn latest_snapshot(ctx: &SessionContext) -> Result<Option<String>, ApiError> {
    let latest = collect(ctx.sql("SELECT max(date) FROM flaky_scores").await?).await?;
    Ok(latest.column(0).as_string_opt::<i32>().filter(|a| a.len() == 1 && !a.is_null(0)).map(|a| a.value(0).to_owned()))
}

/// The first row of `batch` as a JSON object (empty when there is none).
pub fn first_row(batch: &RecordBatch) -> Result<Map<String, Value>, ApiError> {
    let rows: Vec<Map<String, Value>> =
        serde_json::from_slice(&json_rows(batch)?).expect("the JSON writer writes JSON");
    Ok(rows.into_iter().next().unwrap_or_default())
}

/// The batch as an Arrow IPC stream: the `arrow` format, and what an answer's version hashes.
pub fn arrow_ipc(batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The batch as CSV with a header line, every text cell (and column name) that a spreadsheet
/// would run as a formula defused (see [`defuse`]).
pub fn csv(batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
    writer.write(&defused(batch)?)?;
    Ok(writer.into_inner())
}

/// A text cell as a spreadsheet may show it: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'` (OWASP's advice on CSV injection), so that a test name or
/// failure message such as `=HYPERLINK(…)` is shown, not run.
pub fn defuse(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}").into() } else { text.into() }
}

/// `batch` with [`defuse`] applied to its text columns and its column names.
fn defused(batch: &RecordBatch) -> Result<RecordBatch, ApiError> {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let text = matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let column = if text {
            let strings = arrow::compute::cast(column, &DataType::Utf8)?;
            let defused: arrow::array::StringArray = strings.as_string::<i32>().iter().map(|v| v.map(defuse)).collect();
            Arc::new(defused) as arrow::array::ArrayRef
        } else {
            Arc::clone(column)
        };
        fields.push(Field::new(defuse(field.name()), column.data_type().clone(), true));
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Rows as a JSON array of objects, nulls included.
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    /// An answer over its row limit is refused with a 400 rather than held in memory.
    #[tokio::test]
    async fn answers_over_the_row_limit_are_refused() {
        let ctx = SessionContext::new();
        let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        ctx.register_batch("t", RecordBatch::try_from_iter([("n", n)]).unwrap()).unwrap();
        let sorted = || async { ctx.table("t").await.unwrap().sort(vec![col("n").sort(false, false)]).unwrap() };
        let batch = collect_at_most(sorted().await, 10_000).await.unwrap();
        assert_eq!(batch.num_rows(), 10_000);
        let Err(e) = collect_at_most(sorted().await, 9_999).await else { panic!("answered over the limit") };
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "the answer has more than 9999 rows: narrow the range or add filters");
    }

    /// Test names and failure messages are written so that no spreadsheet runs them.
    #[test]
    fn csv_cells_that_look_like_formulas_are_defused() {
        let names: ArrayRef = Arc::new(StringArray::from(vec![
            Some("=HYPERLINK(\"http://evil\",\"x\")"),
            Some("+1"),
            Some("-2"),
            Some("@SUM(A1)"),
            Some("\tx"),
            Some("\rx"),
            Some("plain = fine"),
            None,
        ]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![-1, 2, 3, 4, 5, 6, 7, 8]));
        let batch = RecordBatch::try_from_iter([("name", names), ("=n", n)]).unwrap();
        let text = String::from_utf8(csv(&batch).unwrap()).unwrap();
        let rows: Vec<&str> = text.split('\n').collect();
        assert_eq!(rows[0], "name,'=n");
        assert_eq!(rows[1], "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",-1", "numbers stay numbers");
        assert_eq!(&rows[2..5], ["'+1,2", "'-2,3", "'@SUM(A1),4"]);
        assert!(rows[5].starts_with("'\tx"), "{:?}", rows[5]);
        assert!(text.contains("\"'\rx\""), "{text:?}");
        assert!(text.contains("\nplain = fine,7\n,8\n"), "{text:?}");
    }
}
