use super::*;
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn valid() -> Value {
    json!({
        "schema_version": 1,
        "event_id": "0b6b1c1e-4a44-4f0e-9f5e-0d6c2f1f6a01",
        "repository": "acme/billing",
        "branch": "main",
        "commit_sha": "abc123",
        "run_id": "run-1",
        "suite": "billing.invoices",
        "test_id": "billing.invoices.InvoiceTest.test_total",
        "status": "failed",
        "duration_ms": 12.5,
        "finished_at": "2026-11-27T10:15:00+01:00",
        "tags": {"os": "linux"},
        "unknown_extra": [1, 2, 3]
    })
}

fn decode(v: &Value) -> Result<TestEvent, Rejection> {
    TestEvent::decode(v.to_string().as_bytes(), now())
}

fn with(field: &str, value: Value) -> Value {
    let mut v = valid();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = valid();
    v.as_object_mut().unwrap().remove(field);
    v
}

#[test]
fn decodes_a_valid_event_with_defaults() {
    let e = decode(&valid()).unwrap();
    assert_eq!(e.attempt, 1);
    assert_eq!(e.name, "test_total");
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.finished_at, Utc.with_ymd_and_hms(2026, 11, 27, 9, 15, 0).unwrap());
    assert_eq!(e.tags.get("os").map(String::as_str), Some("linux"));
    assert_eq!(e.job_id, None);
}

#[test]
fn round_trips_through_json() {
    let e = decode(&valid()).unwrap();
    let again = TestEvent::decode(e.to_json().as_bytes(), now()).unwrap();
    assert_eq!(e, again);
}

#[test]
fn every_required_field_is_named_when_missing() {
    for field in [
        "schema_version",
        "event_id",
        "repository",
        "branch",
        "commit_sha",
        "run_id",
        "suite",
        "test_id",
        "status",
        "duration_ms",
        "finished_at",
    ] {
        assert_eq!(decode(&without(field)), Err(Rejection::MissingField { field }), "{field}");
    }
}

#[test]
fn rejections_are_typed() {
    let cases: Vec<(Value, &str)> = vec![
        (with("duration_ms", json!("slow")), "wrong_type"),
        (with("tags", json!({"os": 3})), "wrong_type"),
        (with("schema_version", json!(2)), "unknown_schema_version"),
        (with("event_id", json!("not-a-uuid")), "invalid_value"),
        (with("status", json!("flaky")), "invalid_value"),
        (with("attempt", json!(0)), "invalid_value"),
        (with("duration_ms", json!(-1)), "invalid_value"),
        (with("repository", json!("")), "invalid_value"),
        (with("finished_at", json!("yesterday")), "invalid_value"),
        (with("finished_at", json!("1999-12-31T23:59:59Z")), "timestamp_out_of_range"),
        (with("finished_at", json!("2026-11-29T12:00:00Z")), "timestamp_out_of_range"),
        (with("branch", json!("b".repeat(MAX_ID_BYTES + 1))), "field_too_large"),
    ];
    for (v, code) in cases {
        let err = decode(&v).unwrap_err();
        assert_eq!(err.code(), code, "{v}: {err}");
    }
    let err = decode(&with("duration_ms", json!("slow"))).unwrap_err();
    assert!(matches!(err, Rejection::WrongType { ref field, .. } if field == "duration_ms"), "{err}");
}

#[test]
fn non_json_is_rejected_not_panicked() {
    for bytes in [&b""[..], b"{", b"[1,2]", b"null", b"{\"a\":1} trailing", b"\xff\xfe", b"42"] {
        let err = TestEvent::decode(bytes, now()).unwrap_err();
        assert!(matches!(err.code(), "invalid_json" | "not_utf8"), "{bytes:?}: {err}");
    }
    let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert_eq!(TestEvent::decode(&huge, now()).unwrap_err().code(), "too_large");
}

#[test]
fn failure_message_is_truncated_at_a_char_boundary() {
    let long = "é".repeat(MAX_FAILURE_MESSAGE_BYTES);
    let e = decode(&with("failure_message", json!(long))).unwrap();
    let kept = e.failure_message.unwrap();
    assert!(kept.len() <= MAX_FAILURE_MESSAGE_BYTES && kept.len() >= MAX_FAILURE_MESSAGE_BYTES - 1);
    assert!(kept.chars().all(|c| c == 'é'));
}

#[test]
fn default_names() {
    assert_eq!(default_name("a.b.C.test_x"), "test_x");
    assert_eq!(default_name("tests/test_a.py::test_b[1.5-x/y]"), "test_b[1.5-x/y]");
    assert_eq!(default_name("pkg#method"), "method");
    assert_eq!(default_name("plain"), "plain");
    assert_eq!(default_name("trailing."), "trailing.");
}
