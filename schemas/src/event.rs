//! The test event, schema version 1: one JSON object per Kafka message, one per test execution.
//!
//! [`TestEvent::decode`] turns message bytes into a validated event or a typed [`Rejection`]
//! naming exactly what is wrong, so the ingest can dead-letter it with its reason.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest identifier field (`repository`, `branch`, `commit_sha`, `run_id`, `job_id`,
/// `ci_provider`, `host`), in bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Largest `suite`, `test_id` or `name`, in bytes.
pub const MAX_TEST_NAME_BYTES: usize = 4096;
/// `failure_message` is kept up to this many bytes (cut at a character boundary), never rejected.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 4096;
/// Most tags on one event, and the largest tag key and value in bytes.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_KEY_BYTES: usize = 128;
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// Longest execution accepted: seven days.
pub const MAX_DURATION_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;
/// How far in the future (relative to ingest time) a timestamp may lie, to absorb clock skew.
pub const MAX_FUTURE_SKEW_SECS: i64 = 24 * 3600;

/// Earliest timestamp accepted: 2000-01-01T00:00:00Z.
static EARLIEST: LazyLock<DateTime<Utc>> =
    LazyLock::new(|| Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("valid constant date"));

/// Outcome of one execution. `error` counts as a failure in every number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Error,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }

    /// `failed` and `error` both count as failures.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Error)
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "passed" => Self::Passed,
            "failed" => Self::Failed,
            "error" => Self::Error,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated test execution event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestEvent {
    pub schema_version: u32,
    pub event_id: Uuid,
    pub repository: String,
    pub branch: String,
    pub commit_sha: String,
    pub run_id: String,
    pub job_id: Option<String>,
    pub suite: String,
    pub test_id: String,
    pub name: String,
    pub status: Status,
    pub attempt: u32,
    pub duration_ms: f64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub ci_provider: Option<String>,
    pub host: Option<String>,
    pub failure_message: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Why a message was rejected. Every variant names the offending field where there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("message is {size} bytes, over the {max} byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("message is not valid UTF-8 at byte {valid_up_to}")]
    NotUtf8 { valid_up_to: usize },
    #[error("message is not a JSON object: {message}")]
    InvalidJson { message: String },
    #[error("required field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` has the wrong type: {message}")]
    WrongType { field: String, message: String },
    #[error("unknown schema_version {version} (this build reads {SCHEMA_VERSION})")]
    UnknownSchemaVersion { version: u64 },
    #[error("field `{field}` is {size} bytes, over the {max} byte limit")]
    FieldTooLarge { field: String, size: usize, max: usize },
    #[error("field `{field}` is invalid: {message}")]
    InvalidValue { field: &'static str, message: String },
    #[error("field `{field}` = {value} is outside the accepted window [{earliest}, ingest time + 1 day]")]
    TimestampOutOfRange { field: &'static str, value: DateTime<Utc>, earliest: DateTime<Utc> },
    #[error("finished_at = {value} falls on a date past the lake's retention of {days} days (dates before {earliest})")]
    PastRetention { value: DateTime<Utc>, days: u32, earliest: NaiveDate },
}

impl Rejection {
    /// A short stable code for metrics labels and the `rejected` table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::InvalidJson { .. } => "invalid_json",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::UnknownSchemaVersion { .. } => "unknown_schema_version",
            Self::FieldTooLarge { .. } => "field_too_large",
            Self::InvalidValue { .. } => "invalid_value",
            Self::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            Self::PastRetention { .. } => "past_retention",
        }
    }
}

/// The wire form: every field optional and borrowed where possible, so that a missing field is a
/// typed rejection rather than a serde message, and decoding does not copy unescaped strings.
#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct WireEvent<'a> {
    schema_version: Option<u64>,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    repository: Option<Cow<'a, str>>,
    #[serde(borrow)]
    branch: Option<Cow<'a, str>>,
    #[serde(borrow)]
    commit_sha: Option<Cow<'a, str>>,
    #[serde(borrow)]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    job_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    suite: Option<Cow<'a, str>>,
    #[serde(borrow)]
    test_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    attempt: Option<u64>,
    duration_ms: Option<f64>,
    #[serde(borrow)]
    started_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    finished_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ci_provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    failure_message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tags: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

impl TestEvent {
    /// Decodes and validates one message. `now` is the ingest time, used for the timestamp window.
    pub fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        EventView::decode(bytes, now).map(EventView::into_owned)
    }

    /// The event as a view, for code that takes either.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            event_id: self.event_id,
            repository: Cow::Borrowed(&self.repository),
            branch: Cow::Borrowed(&self.branch),
            commit_sha: Cow::Borrowed(&self.commit_sha),
            run_id: Cow::Borrowed(&self.run_id),
            job_id: self.job_id.as_deref().map(Cow::Borrowed),
            suite: Cow::Borrowed(&self.suite),
            test_id: Cow::Borrowed(&self.test_id),
            name: Cow::Borrowed(&self.name),
            status: self.status,
            attempt: self.attempt,
            duration_ms: self.duration_ms,
            started_at: self.started_at,
            finished_at: self.finished_at,
            ci_provider: self.ci_provider.as_deref().map(Cow::Borrowed),
            host: self.host.as_deref().map(Cow::Borrowed),
            failure_message: self.failure_message.as_deref().map(Cow::Borrowed),
            tags: self.tags.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str()))).collect(),
        }
    }

    /// Encodes the event as the JSON message a producer sends.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a TestEvent always serializes")
    }
}

/// A validated event whose strings borrow from the message they were decoded from wherever the
/// JSON had no escapes: what the ingest appends to its Arrow builders without first copying every
/// field into a `String`. Same fields and meaning as [`TestEvent`] (schema version 1).
#[derive(Debug, Clone, PartialEq)]
pub struct EventView<'a> {
    pub event_id: Uuid,
    pub repository: Cow<'a, str>,
    pub branch: Cow<'a, str>,
    pub commit_sha: Cow<'a, str>,
    pub run_id: Cow<'a, str>,
    pub job_id: Option<Cow<'a, str>>,
    pub suite: Cow<'a, str>,
    pub test_id: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub status: Status,
    pub attempt: u32,
    pub duration_ms: f64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub ci_provider: Option<Cow<'a, str>>,
    pub host: Option<Cow<'a, str>>,
    pub failure_message: Option<Cow<'a, str>>,
    pub tags: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

impl<'a> EventView<'a> {
    /// Decodes and validates one message, or says exactly what is wrong with it. `now` is the
    /// ingest time, used for the timestamp window.
    pub fn decode(bytes: &'a [u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Rejection::TooLarge { size: bytes.len(), max: MAX_MESSAGE_BYTES });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| Rejection::NotUtf8 { valid_up_to: e.valid_up_to() })?;
        // Serde would also read a struct from a JSON array (by position): only objects are events.
        if !text.trim_start().starts_with('{') {
            return Err(Rejection::InvalidJson { message: "expected a JSON object".into() });
        }
        // Plain messages, nearly all of them, are read by a reader made for the event's shape;
        // anything else goes to serde_json, which decides.
        if let Some(wire) = scan::scan(text) {
            return wire.validate(now);
        }
        // serde_json parses without tracking where it is; only a message that fails to parse is
        // parsed again, tracking the path, to name the field at fault. (simd-json was tried here: no
        // faster on ~560-byte events once it has copied each message to parse in place, 1.34 and
        // 1.98 µs in two runs against serde_json's 1.34–1.56; and it turns a lone surrogate
        // escape, "\ud800", into a NUL where serde_json refuses the message.)
        let mut de = serde_json::Deserializer::from_str(text);
        match WireEvent::deserialize(&mut de).and_then(|wire| de.end().map(|()| wire)) {
            Ok(wire) => wire.validate(now),
            Err(_) => Err(Self::explain(text)),
        }
    }

    /// The rejection of a message that does not parse, naming the field where it went wrong.
    fn explain(text: &str) -> Rejection {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, WireEvent<'_>>(&mut de) {
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_data() && path != "." {
                    Rejection::WrongType { field: path, message: inner.to_string() }
                } else {
                    Rejection::InvalidJson { message: inner.to_string() }
                }
            }
            Ok(_) => match de.end() {
                Err(e) => Rejection::InvalidJson { message: e.to_string() },
                Ok(()) => Rejection::InvalidJson { message: "the message does not parse".into() },
            },
        }
    }

    pub fn into_owned(self) -> TestEvent {
        TestEvent {
            schema_version: SCHEMA_VERSION,
            event_id: self.event_id,
            repository: self.repository.into_owned(),
            branch: self.branch.into_owned(),
            commit_sha: self.commit_sha.into_owned(),
            run_id: self.run_id.into_owned(),
            job_id: self.job_id.map(Cow::into_owned),
            suite: self.suite.into_owned(),
            test_id: self.test_id.into_owned(),
            name: self.name.into_owned(),
            status: self.status,
            attempt: self.attempt,
            duration_ms: self.duration_ms,
            started_at: self.started_at,
            finished_at: self.finished_at,
            ci_provider: self.ci_provider.map(Cow::into_owned),
            host: self.host.map(Cow::into_owned),
            failure_message: self.failure_message.map(Cow::into_owned),
            tags: self.tags.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        }
    }
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, Rejection> {
    value.ok_or(Rejection::MissingField { field })
}

fn bounded<'a>(value: Cow<'a, str>, field: &'static str, max: usize) -> Result<Cow<'a, str>, Rejection> {
    if value.len() > max {
        return Err(Rejection::FieldTooLarge { field: field.to_owned(), size: value.len(), max });
    }
    Ok(value)
}

fn required_text<'a>(value: Option<Cow<'a, str>>, field: &'static str, max: usize) -> Result<Cow<'a, str>, Rejection> {
    let value = required(value, field)?;
    if value.is_empty() {
        return Err(Rejection::InvalidValue { field, message: "must not be empty".into() });
    }
    bounded(value, field, max)
}

fn optional_text<'a>(
    value: Option<Cow<'a, str>>,
    field: &'static str,
    max: usize,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    value.map(|v| bounded(v, field, max)).transpose()
}

fn timestamp(value: &str, field: &'static str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Rejection> {
    let parsed = match scan::rfc3339(value) {
        Some(parsed) => parsed,
        None => DateTime::parse_from_rfc3339(value)
            .map_err(|e| Rejection::InvalidValue { field, message: format!("not RFC 3339 ({e}): {value:?}") })?
            .with_timezone(&Utc),
    };
    let earliest = *EARLIEST;
    // The window's far end is computed only for the rare timestamp past `now`.
    if parsed < earliest || (parsed > now && parsed > now + chrono::Duration::seconds(MAX_FUTURE_SKEW_SECS)) {
        return Err(Rejection::TimestampOutOfRange { field, value: parsed, earliest });
    }
    Ok(parsed)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..cut]),
        Cow::Owned(mut s) => {
            s.truncate(cut);
            Cow::Owned(s)
        }
    }
}

/// The display name a test gets when the event has none: the last part of `test_id` after `::`,
/// `.`, `/` or `#`, ignoring separators inside a parameter list (`[...]` or `(...)`).
pub fn default_name(test_id: &str) -> &str {
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in test_id.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            '.' | '/' | '#' | ':' if depth == 0 && i + 1 < test_id.len() => start = i + 1,
            _ => {}
        }
    }
    &test_id[start..]
}

impl<'a> WireEvent<'a> {
    fn validate(self, now: DateTime<Utc>) -> Result<EventView<'a>, Rejection> {
        let version = required(self.schema_version, "schema_version")?;
        if version != u64::from(SCHEMA_VERSION) {
            return Err(Rejection::UnknownSchemaVersion { version });
        }
        let event_id = required(self.event_id, "event_id")?;
        let event_id = Uuid::parse_str(&event_id)
            .map_err(|e| Rejection::InvalidValue { field: "event_id", message: format!("not a UUID ({e})") })?;
        let status = required(self.status, "status")?;
        let status = Status::parse(&status).ok_or_else(|| Rejection::InvalidValue {
            field: "status",
            message: format!("{status:?} is not one of passed, failed, error, skipped"),
        })?;
        let attempt = self.attempt.unwrap_or(1);
        if attempt == 0 || attempt > u64::from(u32::MAX) {
            return Err(Rejection::InvalidValue { field: "attempt", message: format!("{attempt} is not ≥ 1") });
        }
        let duration_ms = required(self.duration_ms, "duration_ms")?;
        if !(0.0..=MAX_DURATION_MS).contains(&duration_ms) {
            return Err(Rejection::InvalidValue {
                field: "duration_ms",
                message: format!("{duration_ms} is outside [0, {MAX_DURATION_MS}]"),
            });
        }
        let finished_at = timestamp(&required(self.finished_at, "finished_at")?, "finished_at", now)?;
        let started_at = self.started_at.map(|s| timestamp(&s, "started_at", now)).transpose()?;
        let test_id = required_text(self.test_id, "test_id", MAX_TEST_NAME_BYTES)?;
        let name = match optional_text(self.name, "name", MAX_TEST_NAME_BYTES)? {
            Some(name) if !name.is_empty() => name,
            _ => match &test_id {
                Cow::Borrowed(id) => Cow::Borrowed(default_name(id)),
                Cow::Owned(id) => Cow::Owned(default_name(id).to_owned()),
            },
        };
        let tags = self.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS {
            return Err(Rejection::InvalidValue {
                field: "tags",
                message: format!("{} tags, over {MAX_TAGS}", tags.len()),
            });
        }
        for (key, value) in &tags {
            for (size, max) in [(key.len(), MAX_TAG_KEY_BYTES), (value.len(), MAX_TAG_VALUE_BYTES)] {
                if size > max {
                    // The key names the field, cut to its limit: it may be the oversized part.
                    let key = truncate_utf8(Cow::Borrowed(key.as_ref()), MAX_TAG_KEY_BYTES);
                    return Err(Rejection::FieldTooLarge { field: format!("tags.{key}"), size, max });
                }
            }
        }
        Ok(EventView {
            event_id,
            repository: required_text(self.repository, "repository", MAX_ID_BYTES)?,
            branch: required_text(self.branch, "branch", MAX_ID_BYTES)?,
            commit_sha: required_text(self.commit_sha, "commit_sha", MAX_ID_BYTES)?,
            run_id: required_text(self.run_id, "run_id", MAX_ID_BYTES)?,
            job_id: optional_text(self.job_id, "job_id", MAX_ID_BYTES)?,
            suite: required_text(self.suite, "suite", MAX_TEST_NAME_BYTES)?,
            test_id,
            name,
            status,
            attempt: attempt as u32,
            duration_ms,
            started_at,
            finished_at,
            ci_provider: optional_text(self.ci_provider, "ci_provider", MAX_ID_BYTES)?,
            host: optional_text(self.host, "host", MAX_ID_BYTES)?,
            failure_message: self.failure_message.map(|m| truncate_utf8(m, MAX_FAILURE_MESSAGE_BYTES)),
            tags,
        })
    }
}

mod scan;

#[cfg(test)]
mod tests;
