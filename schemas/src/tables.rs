//! Arrow schemas of every lake table, and builders that turn decoded events into batches.
//!
//! Timestamps are microseconds in UTC, which Spark, Trino and DuckDB read without surprises.
//! Schemas evolve only by adding nullable columns at the end.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use crate::event::{EventView, Rejection, TestEvent};

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn tags_field_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

fn tags_type() -> DataType {
    let names = tags_field_names();
    let entries = Field::new(
        names.entry,
        DataType::Struct(
            vec![Field::new(names.key, DataType::Utf8, false), Field::new(names.value, DataType::Utf8, true)].into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

static TRENDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("bucket_start", timestamp_type(), false),
        Field::new("repository", DataType::Utf8, false),
        Field::new("branch", DataType::Utf8, false),
        Field::new("suite", DataType::Utf8, false),
    ];
    for name in ["runs", "passed", "failed", "skipped"] {
        fields.push(Field::new(name, DataType::Int64, false));
    }
    for name in [
        "pass_rate",
        "duration_avg_ms",
        "duration_p50_ms",
        "duration_p90_ms",
        "duration_p95_ms",
        "duration_p99_ms",
        "duration_max_ms",
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    fields.push(Field::new("tests", DataType::Int64, false));
    fields.push(Field::new("flaky_tests", DataType::Int64, false));
    Arc::new(Schema::new(fields))
});

static FLAKY_SCORES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let int = |name| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new("as_of", timestamp_type(), false),
        Field::new("window_start", timestamp_type(), false),
        Field::new("definition_version", DataType::Int32, false),
        Field::new("repository", DataType::Utf8, false),
        Field::new("test_id", DataType::Utf8, false),
        Field::new("suite", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        int("executions"),
        int("failures"),
        Field::new("failure_rate", DataType::Float64, false),
        int("same_commit_flakes"),
        int("flips"),
        Field::new("flip_rate", DataType::Float64, true),
        Field::new("ewma_flip_rate", DataType::Float64, false),
        Field::new("first_seen", timestamp_type(), false),
        Field::new("last_seen", timestamp_type(), false),
        Field::new("last_flake_at", timestamp_type(), true),
        int("outage_executions"),
    ]))
});

/// Schema of `flaky_scores` (hive column `date`, the day of `as_of`, comes from the path).
pub fn flaky_scores_schema() -> SchemaRef {
    Arc::clone(&FLAKY_SCORES)
}

/// Schema of the `results` table as stored in each file (hive columns `date`, `hour` come from the path).
pub fn results_schema() -> SchemaRef {
    Arc::clone(&RESULTS)
}

/// Schema of the `rejected` table (the dead-letter path).
pub fn rejected_schema() -> SchemaRef {
    Arc::clone(&REJECTED)
}

/// Schema of `trends_hourly` and `trends_daily` (hive column `date` comes from the path).
pub fn trends_schema() -> SchemaRef {
    Arc::clone(&TRENDS)
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at: DateTime<Utc>,
}

/// Declares a table written row by row, once: each line names a column (the Rust field is the
/// column name), its Arrow builder, type and nullability, and how one row fills it. The schema,
/// the builder struct, its `Default`, the append method and `finish` are all generated from that
/// one list and in its order, so no two copies of the column list can disagree — adding a column
/// is one line here (plus, for `results`, the decoder rule that produces its value).
macro_rules! row_table {
    (
        $(#[$doc:meta])*
        pub struct $builder:ident, schema $schema:ident;
        $(#[$append_doc:meta])*
        pub fn $append:ident(&mut self, $($arg:ident: $arg_ty:ty),* $(,)?);
        $( $column:ident: $column_builder:ty = $new:expr, $data_type:expr, $nullable:literal,
           |$b:ident| $fill:expr; )*
    ) => {
        static $schema: LazyLock<SchemaRef> = LazyLock::new(|| {
            Arc::new(Schema::new(vec![$( Field::new(stringify!($column), $data_type, $nullable) ),*]))
        });

        $(#[$doc])*
        pub struct $builder {
            $( $column: $column_builder, )*
            rows: usize,
        }

        impl Default for $builder {
            fn default() -> Self {
                Self { $( $column: $new, )* rows: 0 }
            }
        }

        impl $builder {
            pub fn len(&self) -> usize {
                self.rows
            }

            pub fn is_empty(&self) -> bool {
                self.rows == 0
            }

            $(#[$append_doc])*
            pub fn $append(&mut self, $($arg: $arg_ty),*) {
                $( { let $b = &mut self.$column; $fill; } )*
                self.rows += 1;
            }

            /// Takes the rows accumulated so far as a batch, leaving the builder empty.
            pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
                self.rows = 0;
                let columns: Vec<ArrayRef> = vec![$( Arc::new(self.$column.finish()) ),*];
                RecordBatch::try_new(Arc::clone(&$schema), columns)
            }
        }
    };
}

fn string() -> StringBuilder {
    StringBuilder::new()
}

fn timestamps() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn tags_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(Some(tags_field_names()), StringBuilder::new(), StringBuilder::new()).with_values_field(Field::new(
        "value",
        DataType::Utf8,
        true,
    ))
}

row_table! {
    /// Accumulates `results` rows: one per valid test execution, with its lineage.
    pub struct ResultsBuilder, schema RESULTS;
    /// Appends one decoded event (the ingest's path: no owned copy of the event in between).
    pub fn append_view(&mut self, e: &EventView<'_>, from: Lineage<'_>);
    event_id: StringBuilder = string(), DataType::Utf8, false,
        |b| b.append_value(e.event_id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    repository: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.repository);
    branch: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.branch);
    commit_sha: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.commit_sha);
    run_id: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.run_id);
    job_id: StringBuilder = string(), DataType::Utf8, true, |b| b.append_option(e.job_id.as_deref());
    suite: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.suite);
    test_id: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.test_id);
    name: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(&e.name);
    status: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(e.status.as_str());
    attempt: Int32Builder = Int32Builder::new(), DataType::Int32, false,
        |b| b.append_value(e.attempt.min(i32::MAX as u32) as i32);
    duration_ms: Float64Builder = Float64Builder::new(), DataType::Float64, false, |b| b.append_value(e.duration_ms);
    started_at: TimestampMicrosecondBuilder = timestamps(), timestamp_type(), true,
        |b| b.append_option(e.started_at.map(|t| t.timestamp_micros()));
    finished_at: TimestampMicrosecondBuilder = timestamps(), timestamp_type(), false,
        |b| b.append_value(e.finished_at.timestamp_micros());
    ci_provider: StringBuilder = string(), DataType::Utf8, true, |b| b.append_option(e.ci_provider.as_deref());
    host: StringBuilder = string(), DataType::Utf8, true, |b| b.append_option(e.host.as_deref());
    failure_message: StringBuilder = string(), DataType::Utf8, true,
        |b| b.append_option(e.failure_message.as_deref());
    tags: MapBuilder<StringBuilder, StringBuilder> = tags_builder(), tags_type(), true, |b| {
        for (k, v) in &e.tags {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
        b.append(true).expect("keys and values appended in pairs")
    };
    schema_version: Int32Builder = Int32Builder::new(), DataType::Int32, false,
        |b| b.append_value(crate::event::SCHEMA_VERSION as i32);
    // Lineage: where the row came from.
    kafka_topic: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(from.topic);
    kafka_partition: Int32Builder = Int32Builder::new(), DataType::Int32, false, |b| b.append_value(from.partition);
    kafka_offset: Int64Builder = Int64Builder::new(), DataType::Int64, false, |b| b.append_value(from.offset);
    ingested_at: TimestampMicrosecondBuilder = timestamps(), timestamp_type(), false,
        |b| b.append_value(from.ingested_at.timestamp_micros());
}

impl ResultsBuilder {
    pub fn append(&mut self, e: &TestEvent, from: Lineage<'_>) {
        self.append_view(&e.view(), from);
    }
}

row_table! {
    /// Accumulates `rejected` rows: one per message the decoder refused, with the reason.
    pub struct RejectedBuilder, schema REJECTED;
    pub fn append(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>, why: &Rejection, from: Lineage<'_>);
    kafka_topic: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(from.topic);
    kafka_partition: Int32Builder = Int32Builder::new(), DataType::Int32, false, |b| b.append_value(from.partition);
    kafka_offset: Int64Builder = Int64Builder::new(), DataType::Int64, false, |b| b.append_value(from.offset);
    kafka_key: BinaryBuilder = BinaryBuilder::new(), DataType::Binary, true, |b| b.append_option(key);
    payload: BinaryBuilder = BinaryBuilder::new(), DataType::Binary, true, |b| b.append_option(payload);
    reason_code: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(why.code());
    reason: StringBuilder = string(), DataType::Utf8, false, |b| b.append_value(why.to_string());
    ingested_at: TimestampMicrosecondBuilder = timestamps(), timestamp_type(), false,
        |b| b.append_value(from.ingested_at.timestamp_micros());
}

#[cfg(test)]
mod tests;
