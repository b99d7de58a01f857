//! Fuzzing the decoder: valid messages mutated (truncated, bytes flipped, values swapped for huge
//! numbers, deep nesting, odd unicode, wrong types, oversized fields, odd timestamps) and pure
//! random bytes must each be accepted as an event within every limit, or rejected with a reason,
//! and either must go into its Arrow table and Parquet as the ingest writes it — never a panic.
//!
//! Each test runs for `TESTLAKE_FUZZ_SECONDS` (default 2) from `TESTLAKE_FUZZ_SEED` (default
//! fixed); a failure prints the seed and the case, so `TESTLAKE_FUZZ_SEED=<seed>` replays it.
//! The longer run: `TESTLAKE_FUZZ_SECONDS=600 cargo nextest run -p testlake-schemas fuzz`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::*;
use crate::tables::{Lineage, RejectedBuilder, ResultsBuilder};

/// How long to run, and the first seed.
fn budget() -> (Duration, u64) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    (Duration::from_secs(var("TESTLAKE_FUZZ_SECONDS").unwrap_or(2)), var("TESTLAKE_FUZZ_SEED").unwrap_or(0x5eed))
}

/// Values put in place of a field's: numbers past every range, wrong types, nesting past any
/// recursion limit, odd unicode, strings at and past their limits, odd timestamps.
fn odd_value(rng: &mut XorShift) -> String {
    const FIXED: &[&str] = &[
        "1e309",
        "-1e309",
        "1e-400",
        "-0",
        "-1",
        "0",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890.5",
        "6.048e8",
        "604800000.0000001",
        "0.1e1",
        "1E2",
        "NaN",
        "Infinity",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        "[1]",
        "{\"a\":\"b\"}",
        "\"\"",
        "\"1\"",
        "\"passed\"",
        "\"\\ud800\"",
        "\"\\udfff\\ud800\"",
        "\"\\u0000\"",
        "\"\\uFFFF\"",
        "\"\u{feff}\"",
        "\"\u{202e}\u{10ffff}\"",
        "\"2000-01-01T00:00:00Z\"",
        "\"1999-12-31T23:59:59.999999999Z\"",
        "\"9999-12-31T23:59:59Z\"",
        "\"+275760-09-13T00:00:00Z\"",
        "\"2026-11-27T23:59:60Z\"",
        "\"2026-11-27T24:00:00Z\"",
        "\"2026-02-29T00:00:00Z\"",
        "\"2026-11-27T12:00:00.1234567890Z\"",
        "\"2026-11-27t12:00:00z\"",
        "\"2026-11-27 12:00:00+23:59\"",
        "\"2026-11-27T12:00:00-99:99\"",
        "\"0000-01-01T00:00:00Z\"",
        "\"00000000-0000-0000-0000-000000000000\"",
        "\"{0b6b1c1e-4a44-4f0e-9f5e-0d6c2f1f6a01}\"",
    ];
    let long = |unit: &str, bytes: usize| format!("\"{}\"", unit.repeat(bytes / unit.len()));
    match rng.below(9) {
        0 => {
            let depth = 1 + rng.below(200_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        }
        1 => format!("{}1{}", "{\"a\":".repeat(1 + rng.below(5_000)), "}".repeat(1 + rng.below(5_000))),
        2 => {
            // Strings at a limit, one over it, and multi-byte characters across the cut.
            let limit =
                [MAX_ID_BYTES, MAX_TEST_NAME_BYTES, MAX_FAILURE_MESSAGE_BYTES, MAX_TAG_VALUE_BYTES][rng.below(4)];
            let unit = ["a", "é", "€", "😀", "e\u{301}", "\\n"][rng.below(6)];
            long(unit, limit + rng.below(8) - 3)
        }
        3 => {
            let tags: Vec<String> = (0..rng.below(2 * MAX_TAGS)).map(|i| format!("\"k{i}\":\"v\"")).collect();
            format!("{{{}}}", tags.join(","))
        }
        4 => format!("{{\"{}\":\"v\"}}", "k".repeat(MAX_TAG_KEY_BYTES + rng.below(3) - 1)),
        5 => format!("{}{}", rng.below(10), "0".repeat(rng.below(400))),
        6 => {
            // Doubles with all their digits, as a producer's JSON writer prints them.
            let fraction = (rng.below(usize::MAX) >> 11) as f64 / (1u64 << 53) as f64;
            serde_json::to_string(&(fraction * 10f64.powi(rng.below(12) as i32))).expect("finite")
        }
        _ => FIXED[rng.below(FIXED.len())].to_owned(),
    }
}

/// Replaces the value of `field` in a message that is a JSON object by `value` (the raw text: it
/// need not be JSON), or adds the field when the message has none.
fn set_field(message: &str, field: &str, value: &str) -> String {
    let mut v: Value = serde_json::from_str(message).expect("a seed message is JSON");
    v[field] = Value::String("\u{1}PLACEHOLDER".into());
    v.to_string().replacen("\"\\u0001PLACEHOLDER\"", value, 1)
}

/// One mutation of `message`. Field values are the likeliest (they keep the rest of the event
/// valid), then bytes.
fn mutate(rng: &mut XorShift, message: Vec<u8>) -> Vec<u8> {
    let mut m = message;
    let at = |rng: &mut XorShift, m: &Vec<u8>| rng.below(m.len() + 1);
    match rng.below(14).saturating_sub(5) {
        0 => {
            match std::str::from_utf8(&m).ok().filter(|t| serde_json::from_str::<Value>(t).is_ok_and(|v| v.is_object()))
            {
                // A field given an odd value, or a field the event does not know.
                Some(text) => {
                    let fields: Vec<&str> = scan::field_names().chain(["unknown"]).collect();
                    let field = fields[rng.below(fields.len())];
                    m = set_field(text, field, &odd_value(rng)).into_bytes();
                }
                None => m.extend_from_slice(odd_value(rng).as_bytes()),
            }
        }
        1 if !m.is_empty() => {
            let i = rng.below(m.len());
            m[i] ^= 1 << rng.below(8);
        }
        2 if !m.is_empty() => {
            let i = rng.below(m.len());
            m[i] = rng.below(256) as u8;
        }
        3 => {
            let i = at(rng, &m);
            let piece: &[u8] =
                [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\0", b"\\", b"\"", b","][rng.below(8)];
            m.splice(i..i, piece.iter().copied());
        }
        4 => {
            let cut = at(rng, &m);
            m.truncate(cut);
        }
        5 => {
            // A field repeated, or the message repeated or wrapped.
            let wrapped = match rng.below(4) {
                0 => format!("[{}]", String::from_utf8_lossy(&m)),
                1 => format!("{}{}", String::from_utf8_lossy(&m), String::from_utf8_lossy(&m)),
                2 => format!("\u{feff}{}", String::from_utf8_lossy(&m)),
                _ => String::from_utf8_lossy(&m).replacen('{', "{\"status\":\"passed\",", 1),
            };
            m = wrapped.into_bytes();
        }
        6 if m.len() > 1 => {
            // A slice moved elsewhere.
            let (a, b) = (rng.below(m.len()), rng.below(m.len()));
            let (from, to) = (a.min(b), a.max(b));
            let piece: Vec<u8> = m.drain(from..to).collect();
            let i = at(rng, &m);
            m.splice(i..i, piece);
        }
        7 => {
            let i = at(rng, &m);
            m.splice(i..i, (0..1 + rng.below(16)).map(|_| rng.below(256) as u8));
        }
        _ => m = (0..rng.below(512)).map(|_| rng.below(256) as u8).collect(),
    }
    m
}

/// What the tests tally.
#[derive(Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    reasons: BTreeMap<&'static str, usize>,
}

/// Decodes `message` as the ingest does and checks the answer; appends it to its table.
fn check(message: &[u8], results: &mut ResultsBuilder, rejected: &mut RejectedBuilder, tally: &mut Tally) {
    let from = Lineage { topic: "fuzz", partition: 0, offset: tally.cases as i64, ingested_at: now() };
    tally.cases += 1;
    match EventView::decode(message, now()) {
        Ok(event) => {
            tally.accepted += 1;
            results.append_view(&event, from);
            let owned = event.into_owned();
            within_limits(&owned);
            // An accepted event, written back as JSON, reads as the same event.
            assert_eq!(TestEvent::decode(owned.to_json().as_bytes(), now()).as_ref(), Ok(&owned));
        }
        Err(why) => {
            assert!(!why.to_string().is_empty() && !why.code().is_empty());
            // A reason's figures say what is wrong (a long tag key was once reported against
            // the value's limit: "200 bytes, over the 1024 byte limit").
            if let Rejection::TooLarge { size, max } | Rejection::FieldTooLarge { size, max, .. } = &why {
                assert!(size > max, "{why}");
            }
            *tally.reasons.entry(why.code()).or_default() += 1;
            rejected.append(None, Some(message), &why, from);
        }
    }
}

fn within_limits(e: &TestEvent) {
    let earliest = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let latest = now() + chrono::Duration::seconds(MAX_FUTURE_SKEW_SECS);
    for t in std::iter::once(e.finished_at).chain(e.started_at) {
        assert!(earliest <= t && t <= latest, "{t}");
    }
    assert!((0.0..=MAX_DURATION_MS).contains(&e.duration_ms), "{}", e.duration_ms);
    assert!(e.attempt >= 1);
    let required = [&e.repository, &e.branch, &e.commit_sha, &e.run_id, &e.suite, &e.test_id, &e.name];
    assert!(required.iter().all(|s| !s.is_empty()));
    let ids = [&e.repository, &e.branch, &e.commit_sha, &e.run_id].into_iter().chain(&e.job_id);
    assert!(ids.chain(&e.ci_provider).chain(&e.host).all(|s| s.len() <= MAX_ID_BYTES));
    assert!([&e.suite, &e.test_id, &e.name].iter().all(|s| s.len() <= MAX_TEST_NAME_BYTES));
    assert!(e.failure_message.as_ref().is_none_or(|m| m.len() <= MAX_FAILURE_MESSAGE_BYTES));
    assert!(e.tags.len() <= MAX_TAGS);
    assert!(e.tags.iter().all(|(k, v)| k.len() <= MAX_TAG_KEY_BYTES && v.len() <= MAX_TAG_VALUE_BYTES));
}

/// Sorts and encodes what was appended, as a flush does.
fn write(results: &mut ResultsBuilder, rejected: &mut RejectedBuilder) {
    for (batch, sort) in
        [(results.finish().unwrap(), crate::files::RESULTS_SORT), (rejected.finish().unwrap(), &[][..])]
    {
        let sorted = crate::files::sort_batch(&batch, sort).unwrap();
        crate::files::encode_parquet(&sorted, "fuzz.parquet").unwrap();
    }
}

/// Runs `case` (which makes a message from a random source) until the budget is spent, checking
/// each message; a panic names the seed and the message.
fn fuzz(name: &str, mut case: impl FnMut(&mut XorShift) -> Vec<u8>) -> Tally {
    let (time, seed) = budget();
    let start = Instant::now();
    let mut tally = Tally::default();
    let (mut results, mut rejected) = (ResultsBuilder::default(), RejectedBuilder::default());
    let mut rng = XorShift(seed.max(1));
    while start.elapsed() < time {
        let message = case(&mut rng);
        let checked = catch_unwind(AssertUnwindSafe(|| check(&message, &mut results, &mut rejected, &mut tally)));
        if checked.is_err() {
            panic!("{name}, seed {seed}, case {}: {:?}", tally.cases, String::from_utf8_lossy(&message));
        }
        if tally.cases.is_multiple_of(2_000) {
            write(&mut results, &mut rejected);
        }
    }
    write(&mut results, &mut rejected);
    eprintln!(
        "{name}: {} cases in {:?}, {} accepted, rejected: {:?}",
        tally.cases, time, tally.accepted, tally.reasons
    );
    tally
}

#[test]
fn mutated_events_are_accepted_within_limits_or_rejected_with_a_reason() {
    let seeds: Vec<Vec<u8>> =
        plain_messages().into_iter().chain([valid().to_string()]).map(String::into_bytes).collect();
    let tally = fuzz("mutated events", |rng| {
        let mut message = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(2) {
            message = mutate(rng, message);
        }
        message
    });
    assert!(tally.cases >= 1_000, "only {} cases", tally.cases);
    assert!(tally.accepted > tally.cases / 50, "mutations must keep some events valid: {}", tally.accepted);
    for reason in ["invalid_json", "wrong_type", "invalid_value", "field_too_large", "not_utf8", "missing_field"] {
        assert!(tally.reasons.contains_key(reason), "no case was rejected as {reason}: {:?}", tally.reasons);
    }
}

#[test]
fn random_bytes_are_rejected_with_a_reason() {
    let tokens = ["{", "}", "[", "]", ":", ",", "\"", "1", "-", ".", "e", "null", "true", "\"status\"", "\\", " ", "é"];
    let tally = fuzz("random bytes", |rng| match rng.below(2) {
        0 => (0..rng.below(256)).map(|_| rng.below(256) as u8).collect(),
        _ => (0..rng.below(64)).map(|_| tokens[rng.below(tokens.len())]).collect::<String>().into_bytes(),
    });
    assert!(tally.cases >= 1_000, "only {} cases", tally.cases);
}
