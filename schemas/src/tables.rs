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

/// Column names of the `results` table, shared by every stage that reads it.
pub mod col {
    pub const EVENT_ID: &str = "event_id";
    pub const REPOSITORY: &str = "repository";
    pub const BRANCH: &str = "branch";
    pub const COMMIT_SHA: &str = "commit_sha";
    pub const RUN_ID: &str = "run_id";
    pub const SUITE: &str = "suite";
    pub const TEST_ID: &str = "test_id";
    pub const STATUS: &str = "status";
    pub const DURATION_MS: &str = "duration_ms";
    pub const FINISHED_AT: &str = "finished_at";
    pub const BUCKET_START: &str = "bucket_start";
}

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

static RESULTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = timestamp_type;
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("repository", DataType::Utf8, false),
        Field::new("branch", DataType::Utf8, false),
        Field::new("commit_sha", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("suite", DataType::Utf8, false),
        Field::new("test_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("started_at", ts(), true),
        Field::new("finished_at", ts(), false),
        Field::new("ci_provider", DataType::Utf8, true),
        Field::new("host", DataType::Utf8, true),
        Field::new("failure_message", DataType::Utf8, true),
        Field::new("tags", tags_type(), true),
        Field::new("schema_version", DataType::Int32, false),
        // Lineage: where the row came from.
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("ingested_at", ts(), false),
    ]))
});

static REJECTED: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("reason_code", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("ingested_at", timestamp_type(), false),
    ]))
});

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

/// Accumulates `results` rows.
pub struct ResultsBuilder {
    event_id: StringBuilder,
    repository: StringBuilder,
    branch: StringBuilder,
    commit_sha: StringBuilder,
    run_id: StringBuilder,
    job_id: StringBuilder,
    suite: StringBuilder,
    test_id: StringBuilder,
    name: StringBuilder,
    status: StringBuilder,
    attempt: Int32Builder,
    duration_ms: Float64Builder,
    started_at: TimestampMicrosecondBuilder,
    finished_at: TimestampMicrosecondBuilder,
    ci_provider: StringBuilder,
    host: StringBuilder,
    failure_message: StringBuilder,
    tags: MapBuilder<StringBuilder, StringBuilder>,
    schema_version: Int32Builder,
    kafka_topic: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
    rows: usize,
}

impl Default for ResultsBuilder {
    fn default() -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Self {
            event_id: StringBuilder::new(),
            repository: StringBuilder::new(),
            branch: StringBuilder::new(),
            commit_sha: StringBuilder::new(),
            run_id: StringBuilder::new(),
            job_id: StringBuilder::new(),
            suite: StringBuilder::new(),
            test_id: StringBuilder::new(),
            name: StringBuilder::new(),
            status: StringBuilder::new(),
            attempt: Int32Builder::new(),
            duration_ms: Float64Builder::new(),
            started_at: ts(),
            finished_at: ts(),
            ci_provider: StringBuilder::new(),
            host: StringBuilder::new(),
            failure_message: StringBuilder::new(),
            tags: MapBuilder::new(Some(tags_field_names()), StringBuilder::new(), StringBuilder::new())
                .with_values_field(Field::new("value", DataType::Utf8, true)),
            schema_version: Int32Builder::new(),
            kafka_topic: StringBuilder::new(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            ingested_at: ts(),
            rows: 0,
        }
    }
}

impl ResultsBuilder {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, e: &TestEvent, from: Lineage<'_>) {
        self.append_view(&e.view(), from);
    }

    /// Appends one decoded event (the ingest's path: no owned copy of the event in between).
    pub fn append_view(&mut self, e: &EventView<'_>, from: Lineage<'_>) {
        let mut uuid = uuid::Uuid::encode_buffer();
        self.event_id.append_value(e.event_id.hyphenated().encode_lower(&mut uuid));
        self.repository.append_value(&e.repository);
        self.branch.append_value(&e.branch);
        self.commit_sha.append_value(&e.commit_sha);
        self.run_id.append_value(&e.run_id);
        self.job_id.append_option(e.job_id.as_deref());
        self.suite.append_value(&e.suite);
        self.test_id.append_value(&e.test_id);
        self.name.append_value(&e.name);
        self.status.append_value(e.status.as_str());
        self.attempt.append_value(e.attempt.min(i32::MAX as u32) as i32);
        self.duration_ms.append_value(e.duration_ms);
        self.started_at.append_option(e.started_at.map(|t| t.timestamp_micros()));
        self.finished_at.append_value(e.finished_at.timestamp_micros());
        self.ci_provider.append_option(e.ci_provider.as_deref());
        self.host.append_option(e.host.as_deref());
        self.failure_message.append_option(e.failure_message.as_deref());
        for (k, v) in &e.tags {
            self.tags.keys().append_value(k);
            self.tags.values().append_value(v);
        }
        self.tags.append(true).expect("keys and values appended in pairs");
        self.schema_version.append_value(crate::event::SCHEMA_VERSION as i32);
        self.kafka_topic.append_value(from.topic);
        self.kafka_partition.append_value(from.partition);
        self.kafka_offset.append_value(from.offset);
        self.ingested_at.append_value(from.ingested_at.timestamp_micros());
        self.rows += 1;
    }

    /// Takes the rows accumulated so far as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.repository.finish()),
            Arc::new(self.branch.finish()),
            Arc::new(self.commit_sha.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.job_id.finish()),
            Arc::new(self.suite.finish()),
            Arc::new(self.test_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.finished_at.finish()),
            Arc::new(self.ci_provider.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.failure_message.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.kafka_topic.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.ingested_at.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(results_schema(), columns)
    }
}

/// Accumulates `rejected` rows.
pub struct RejectedBuilder {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    key: BinaryBuilder,
    payload: BinaryBuilder,
    reason_code: StringBuilder,
    reason: StringBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    rows: usize,
}

impl Default for RejectedBuilder {
    fn default() -> Self {
        Self {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            key: BinaryBuilder::new(),
            payload: BinaryBuilder::new(),
            reason_code: StringBuilder::new(),
            reason: StringBuilder::new(),
            ingested_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            rows: 0,
        }
    }
}

impl RejectedBuilder {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>, why: &Rejection, from: Lineage<'_>) {
        self.topic.append_value(from.topic);
        self.partition.append_value(from.partition);
        self.offset.append_value(from.offset);
        self.key.append_option(key);
        self.payload.append_option(payload);
        self.reason_code.append_value(why.code());
        self.reason.append_value(why.to_string());
        self.ingested_at.append_value(from.ingested_at.timestamp_micros());
        self.rows += 1;
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.reason_code.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.ingested_at.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(rejected_schema(), columns)
    }
}

#[cfg(test)]
mod tests;
