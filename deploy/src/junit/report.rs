//! JUnit XML reports → test events, one per execution, keeping retry evidence.
//!
//! Reads the flavours CI tools write: Maven surefire/failsafe, pytest, jest-junit and
//! go-junit-report (`<testsuites>` or a bare `<testsuite>`, nested suites included).
//!
//! Attempts of one test in one report:
//! - surefire's `<flakyFailure>`/`<flakyError>` inside a passing `<testcase>` are earlier failed
//!   attempts; the test's own result is the last attempt;
//! - surefire's `<rerunFailure>`/`<rerunError>` inside a failing `<testcase>` are later attempts
//!   after its first `<failure>`/`<error>`;
//! - a `<testcase>` repeated with the same classname and name (rerun plugins, Gradle retry) is
//!   the next attempt each time it appears.
//!
//! The event id is a UUID v5 of (run, job, test, attempt), so converting the same report twice
//! yields the same events, which the lake's deduplication key then recognises.
//!
//! Every event is checked as the ingest will check it: a testcase whose events it would reject
//! (finished outside the accepted window, a name over its limit) fails the report at its line
//! ([`JunitError::Invalid`]) instead of landing in the dead-letter table.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use uuid::Uuid;

use testlake_schemas::event::{
    MAX_DURATION_MS, MAX_FAILURE_MESSAGE_BYTES, SCHEMA_VERSION, Status, TestEvent, default_name,
};

/// Where the events came from: what a JUnit file does not say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunContext {
    pub repository: String,
    pub branch: String,
    pub commit_sha: String,
    pub run_id: String,
    pub job_id: Option<String>,
    pub ci_provider: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JunitError {
    #[error("{file}:{line}: malformed XML: {message}")]
    Malformed { file: String, line: usize, message: String },
    #[error("{file}: no <testcase> elements: not a JUnit report")]
    Empty { file: String },
    /// A `<testcase>` whose events the ingest would reject (a finish time outside the accepted
    /// window, a name over its limit): the report fails here rather than feed the dead-letter table.
    #[error("{file}:{line}: testcase {test_id}: {message}")]
    Invalid { file: String, line: usize, test_id: String, message: String },
}

/// Namespace for v5 event ids of converted reports.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e58_a0c4_1d2e_3f40_5a6b);

#[derive(Debug, Default, Clone)]
struct Suite {
    name: Option<String>,
    timestamp: Option<DateTime<Utc>>,
    elapsed_ms: f64,
}

#[derive(Debug, Default)]
struct Case {
    /// Where its element starts in the document (its line is counted only for an error).
    at: u64,
    classname: Option<String>,
    name: String,
    time_ms: f64,
    /// The test's own result: `failure`, `error` or `skipped`, with its message.
    result: Option<(Status, String)>,
    /// Earlier failed attempts (`flakyFailure`/`flakyError`).
    flaky: Vec<(Status, String, Option<f64>)>,
    /// Later failed attempts (`rerunFailure`/`rerunError`).
    reruns: Vec<(Status, String, Option<f64>)>,
}

/// Which child element's text is being collected, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Collecting {
    Result,
    Flaky,
    Rerun,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().and_then(|a| a.unescape_value().ok()).map(|v| v.into_owned())
}

fn seconds_ms(value: Option<String>) -> Option<f64> {
    value
        .and_then(|v| v.replace(',', "").trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s * 1000.0)
}

fn timestamp(value: Option<String>) -> Option<DateTime<Utc>> {
    let v = value?;
    DateTime::parse_from_rfc3339(&v)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

/// What an event keeps of a failure message: at most its limit, cut at a character boundary (a
/// longer `message` attribute was sent whole and cut by the ingest).
fn keep_message(mut message: String) -> String {
    let mut cut = message.len().min(MAX_FAILURE_MESSAGE_BYTES);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message
}

/// Appends an element's text to its `message` attribute, on a new line; keeps at most what an
/// event can carry.
fn push_message(message: &mut String, text: &str) {
    let text = text.trim();
    if text.is_empty() || message.len() >= MAX_FAILURE_MESSAGE_BYTES {
        return;
    }
    if !message.is_empty() {
        message.push('\n');
    }
    let mut cut = text.len().min(MAX_FAILURE_MESSAGE_BYTES - message.len().min(MAX_FAILURE_MESSAGE_BYTES));
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    message.push_str(&text[..cut]);
}

fn line_of(xml: &str, byte: u64) -> usize {
    let end = (byte as usize).min(xml.len());
    xml.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Converts one JUnit XML document (named `file` in errors) into events. `now` stands in for
/// the finish time when a suite has no `timestamp`.
pub fn parse(file: &str, xml: &str, context: &RunContext, now: DateTime<Utc>) -> Result<Vec<TestEvent>, JunitError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut suites: Vec<Suite> = Vec::new();
    let mut case: Option<Case> = None;
    let mut collecting: Option<Collecting> = None;
    let mut body = String::new();
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut events = Vec::new();
    let mut cases = 0;
    let malformed = |reader: &Reader<&[u8]>, message: String| JunitError::Malformed {
        file: file.to_owned(),
        line: line_of(xml, reader.error_position().max(reader.buffer_position().saturating_sub(1))),
        message,
    };
    // A `time` past what an event may hold is an error here, at its line: converted, it would
    // overflow the timestamp arithmetic below (time="1e13" panicked).
    let duration = |reader: &Reader<&[u8]>, e: &BytesStart<'_>| match seconds_ms(attr(e, "time")) {
        Some(ms) if ms > MAX_DURATION_MS => Err(malformed(
            reader,
            format!(
                "time=\"{}\" is over the {} s an execution may take",
                attr(e, "time").unwrap_or_default(),
                MAX_DURATION_MS / 1000.0
            ),
        )),
        ms => Ok(ms),
    };
    let invalid = |(at, test_id, message): (u64, String, String)| JunitError::Invalid {
        file: file.to_owned(),
        line: line_of(xml, at),
        test_id,
        message,
    };
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, e.to_string()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => match e.local_name().as_ref() {
                b"testsuite" => {
                    let parent = suites.last().cloned().unwrap_or_default();
                    let suite = Suite {
                        name: attr(e, "name").or(parent.name),
                        timestamp: timestamp(attr(e, "timestamp")).or(parent.timestamp),
                        elapsed_ms: 0.0,
                    };
                    if !empty {
                        suites.push(suite);
                    }
                }
                b"testcase" => {
                    let c = Case {
                        at: reader.buffer_position(),
                        classname: attr(e, "classname").filter(|c| !c.is_empty()),
                        name: attr(e, "name").unwrap_or_default(),
                        time_ms: duration(&reader, e)?.unwrap_or(0.0),
                        ..Case::default()
                    };
                    cases += 1;
                    if empty {
                        emit(c, suites.last_mut(), context, now, &mut attempts, &mut events).map_err(invalid)?;
                    } else {
                        case = Some(c);
                    }
                }
                child @ (b"failure" | b"error" | b"skipped" | b"flakyFailure" | b"flakyError" | b"rerunFailure"
                | b"rerunError") => {
                    let Some(c) = case.as_mut() else { continue };
                    let status = match child {
                        b"skipped" => Status::Skipped,
                        b"error" | b"flakyError" | b"rerunError" => Status::Error,
                        _ => Status::Failed,
                    };
                    let message = keep_message(attr(e, "message").unwrap_or_default());
                    let time = duration(&reader, e)?;
                    let target = match child {
                        b"flakyFailure" | b"flakyError" => {
                            c.flaky.push((status, message, time));
                            Collecting::Flaky
                        }
                        b"rerunFailure" | b"rerunError" => {
                            c.reruns.push((status, message, time));
                            Collecting::Rerun
                        }
                        _ => {
                            // A failure outranks a skip if a report carries both.
                            if c.result.as_ref().is_none_or(|(s, _)| *s == Status::Skipped) {
                                c.result = Some((status, message));
                            }
                            Collecting::Result
                        }
                    };
                    if !empty {
                        collecting = Some(target);
                        body.clear();
                    }
                }
                _ => {}
            },
            Event::Text(ref t) if collecting.is_some() => {
                body.push_str(&t.decode().map_err(|e| malformed(&reader, e.to_string()))?);
            }
            Event::CData(ref t) if collecting.is_some() => {
                body.push_str(&t.decode().map_err(|e| malformed(&reader, e.to_string()))?);
            }
            Event::GeneralRef(ref r) if collecting.is_some() => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match r.as_ref() {
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"amp" => "&".into(),
                        b"quot" => "\"".into(),
                        b"apos" => "'".into(),
                        _ => String::new(),
                    },
                };
                body.push_str(&resolved);
            }
            Event::End(ref e) => match e.local_name().as_ref() {
                b"testsuite" => {
                    suites.pop();
                }
                b"testcase" => {
                    if let Some(c) = case.take() {
                        emit(c, suites.last_mut(), context, now, &mut attempts, &mut events).map_err(invalid)?;
                    }
                }
                b"failure" | b"error" | b"skipped" | b"flakyFailure" | b"flakyError" | b"rerunFailure"
                | b"rerunError" => {
                    if let Some(message) = target_message(&mut case, collecting.take()) {
                        push_message(message, &body);
                    }
                    body.clear();
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if case.is_some() || !suites.is_empty() {
        return Err(JunitError::Malformed {
            file: file.to_owned(),
            line: line_of(xml, xml.len() as u64),
            message: "the document ends inside an open element".into(),
        });
    }
    if cases == 0 {
        return Err(JunitError::Empty { file: file.to_owned() });
    }
    Ok(events)
}

fn target_message(case: &mut Option<Case>, collecting: Option<Collecting>) -> Option<&mut String> {
    let c = case.as_mut()?;
    match collecting? {
        Collecting::Result => c.result.as_mut().map(|(_, m)| m),
        Collecting::Flaky => c.flaky.last_mut().map(|(_, m, _)| m),
        Collecting::Rerun => c.reruns.last_mut().map(|(_, m, _)| m),
    }
}

/// Turns one `<testcase>` into its attempts, each checked as the ingest will check it; or says
/// why it cannot: (where the testcase starts, its test id, the reason).
fn emit(
    case: Case,
    suite: Option<&mut Suite>,
    context: &RunContext,
    now: DateTime<Utc>,
    attempts: &mut HashMap<String, u32>,
    events: &mut Vec<TestEvent>,
) -> Result<(), (u64, String, String)> {
    let mut fallback = Suite::default();
    let suite = suite.unwrap_or(&mut fallback);
    let suite_name = suite.name.clone().or_else(|| case.classname.clone()).unwrap_or_else(|| "default".into());
    let test_id = match &case.classname {
        Some(class) => format!("{class}.{}", case.name),
        None => format!("{suite_name}.{}", case.name),
    };
    suite.elapsed_ms += case.time_ms;
    let out_of_range = || (case.at, test_id.clone(), "its time is out of the range of timestamps".to_owned());
    let end = match suite.timestamp {
        Some(t) => t.checked_add_signed(micros(suite.elapsed_ms)).ok_or_else(out_of_range)?,
        None => now,
    };

    let (own_status, own_message) = case.result.unwrap_or((Status::Passed, String::new()));
    let mut runs: Vec<(Status, String, f64)> = Vec::new();
    for (status, message, time) in case.flaky {
        runs.push((status, message, time.unwrap_or(case.time_ms)));
    }
    runs.push((own_status, own_message, case.time_ms));
    for (status, message, time) in case.reruns {
        runs.push((status, message, time.unwrap_or(case.time_ms)));
    }

    let count = runs.len() as i64;
    for (i, (status, message, duration_ms)) in runs.into_iter().enumerate() {
        let attempt = attempts.entry(test_id.clone()).or_insert(0);
        *attempt += 1;
        let key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            context.run_id,
            context.job_id.as_deref().unwrap_or(""),
            test_id,
            attempt
        );
        // Attempts of one testcase finish in order, a microsecond apart, the last at `end`.
        let finished_at =
            end.checked_sub_signed(Duration::microseconds(count - 1 - i as i64)).ok_or_else(out_of_range)?;
        let started_at = finished_at.checked_sub_signed(micros(duration_ms)).ok_or_else(out_of_range)?;
        let event = TestEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::new_v5(&EVENT_NAMESPACE, key.as_bytes()),
            repository: context.repository.clone(),
            branch: context.branch.clone(),
            commit_sha: context.commit_sha.clone(),
            run_id: context.run_id.clone(),
            job_id: context.job_id.clone(),
            suite: suite_name.clone(),
            test_id: test_id.clone(),
            name: if case.name.is_empty() { default_name(&test_id).to_owned() } else { case.name.clone() },
            status,
            attempt: *attempt,
            duration_ms: if status == Status::Skipped { 0.0 } else { duration_ms },
            started_at: Some(started_at),
            finished_at,
            ci_provider: context.ci_provider.clone(),
            host: context.host.clone(),
            failure_message: (status.is_failure() && !message.is_empty()).then_some(message),
            tags: Default::default(),
        };
        if let Err(why) = TestEvent::decode(event.to_json().as_bytes(), now) {
            return Err((case.at, test_id, why.to_string()));
        }
        events.push(event);
    }
    Ok(())
}

/// A span of milliseconds (at most an execution's seven days, or a suite's sum of them) in
/// whole microseconds.
fn micros(ms: f64) -> Duration {
    Duration::microseconds((ms * 1000.0) as i64)
}

#[cfg(test)]
mod tests;
