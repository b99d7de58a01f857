//! Fuzzing the JUnit converter: reports of every flavour mutated (truncated, bytes flipped,
//! attributes given huge or negative times and odd timestamps, deep nesting, odd unicode, huge
//! names, stray elements and entities) and random tag soup must each convert into events the
//! ingest accepts, or fail with an error naming the file — never a panic.
//!
//! Each test runs for `TESTLAKE_FUZZ_SECONDS` (default 2) from `TESTLAKE_FUZZ_SEED` (default
//! fixed); a failure prints the seed and the report, so `TESTLAKE_FUZZ_SEED=<seed>` replays it.
//! The longer run: `TESTLAKE_FUZZ_SECONDS=600 cargo nextest run -p testlake junit::report::tests::fuzz`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

const FILE: &str = "fuzz.xml";

/// How long to run, and the seed.
fn budget() -> (Duration, u64) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    (Duration::from_secs(var("TESTLAKE_FUZZ_SECONDS").unwrap_or(2)), var("TESTLAKE_FUZZ_SEED").unwrap_or(0x5eed))
}

/// Reports as surefire, pytest, jest and go-junit-report write them.
const SEEDS: &[&str] = &[
    r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.acme.InvoiceTest" time="1.5" tests="2" timestamp="2026-11-27T10:00:00">
  <testcase name="total" classname="com.acme.InvoiceTest" time="0.5">
    <flakyFailure message="expected 3" type="java.lang.AssertionError"><stackTrace>at com.acme</stackTrace></flakyFailure>
    <flakyError message="timeout" type="java.net.SocketTimeoutException"/>
  </testcase>
  <testcase name="tax" classname="com.acme.InvoiceTest" time="1.0">
    <failure message="boom" type="E">trace</failure><rerunFailure message="again" time="0.2"/><rerunError message="crash"/>
  </testcase>
</testsuite>"#,
    r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1"
        skipped="1" tests="4" time="0.2" timestamp="2026-11-27T09:00:00.123456+01:00" hostname="h">
      <testcase classname="tests.test_api" name="test_ok" file="tests/test_api.py" line="3" time="0.010" />
      <testcase classname="tests.test_api" name="test_bad[1-2]" time="0.020">
        <failure message="assert 1 == 2">def test_bad(): &gt; assert 1 == 2 &#x1F600; <![CDATA[<raw> & é]]></failure></testcase>
      <testcase classname="tests.test_api" name="test_skip" time="0.000">
        <skipped type="pytest.skip" message="not on linux">skip</skipped></testcase>
      <testcase classname="tests.test_api" name="test_err" time="0.001"><error message="fixture failed"/></testcase>
    </testsuite></testsuites>"#,
    r#"<testsuites name="jest tests" tests="2"><testsuite name="Math" tests="2" time="0.01">
        <testsuite name="nested"><testcase classname="Math adds" name="Math adds" time="0.003"></testcase></testsuite>
        <testcase classname="Math divides" name="Math divides" time="0.004"><failure>Error: expected 2</failure></testcase>
        <testcase classname="Math divides" name="Math divides" time="0.004"/>
      </testsuite></testsuites>"#,
    r#"<testsuites><testsuite tests="2" failures="1" time="0.02" name="github.com/acme/pkg" timestamp="2026-11-27T08:00:00Z">
        <properties><property name="go.version" value="go1.23"></property></properties>
        <testcase classname="github.com/acme/pkg" name="TestA" time="0.010"></testcase>
        <testcase classname="" name="" time="1,000.5"><failure message="Failed" type="">b_test.go:9: nope</failure></testcase>
      </testsuite></testsuites>"#,
];

/// Values for an attribute: times past every range, timestamps at chrono's ends, odd unicode,
/// names past the event's limits, entities.
fn odd_value(rng: &mut SmallRng) -> String {
    const FIXED: &[&str] = &[
        "1e13",
        "1e308",
        "1e309",
        "-1",
        "-0",
        "NaN",
        "inf",
        "-inf",
        "0x10",
        "604800",
        "604800.001",
        "1e-400",
        "9999999999999999999",
        "1,5",
        "",
        " 1 ",
        "+262143-12-31T23:59:59",
        "-262143-01-01T00:00:00",
        "+262142-12-31T23:59:59",
        "9999-12-31T23:59:59.999999999Z",
        "0000-01-01T00:00:00",
        "1970-01-01T00:00:00",
        "2026-11-27T12:00:00+23:59",
        "2026-11-27T12:00:00-23:59",
        "2026-02-30T00:00:00",
        "2026-11-27T23:59:60",
        "&amp;&lt;&#0;&#x110000;&#xD800;&bogus;",
        "\u{202e}\u{feff}\u{10ffff}",
        "e\u{301}\u{301}\u{301}",
        "😀",
    ];
    match rng.random_range(0..4) {
        0 => ["a", "é", "😀", "&amp;", "."][rng.random_range(0..5)].repeat(rng.random_range(1000..6000)),
        1 => format!("{}", rng.random::<f64>() * 10f64.powi(rng.random_range(-5..20))),
        _ => FIXED[rng.random_range(0..FIXED.len())].to_owned(),
    }
}

/// Pieces put anywhere in a report.
const PIECES: &[&str] = &[
    "<testcase name=\"x\"/>",
    "<testcase classname=\"c\" name=\"x\" time=\"1\">",
    "</testcase>",
    "<testsuite>",
    "<testsuite timestamp=\"+262142-12-31T23:59:59\">",
    "</testsuite>",
    "<failure message=\"m\">",
    "</failure>",
    "<flakyFailure time=\"1e300\"/>",
    "<rerunError/>",
    "<skipped/>",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "&#0;",
    "&#x110000;",
    "&unknown;",
    "&amp",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE x [<!ENTITY a \"b\">]>",
    "<",
    ">",
    "\"",
    "'",
    "=",
    "\u{0}",
    "\u{feff}",
    "\u{fffe}",
];

/// One mutation of a report.
fn mutate(rng: &mut SmallRng, report: String) -> String {
    let at = |rng: &mut SmallRng, s: &str| {
        let mut i = rng.random_range(0..=s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut r = report;
    match rng.random_range(0..9) {
        0 | 1 => {
            // An attribute's value replaced.
            let attrs: Vec<usize> = r.match_indices("=\"").map(|(i, _)| i + 2).collect();
            if let Some(&start) = attrs.get(rng.random_range(0..attrs.len().max(1))) {
                let end = start + r[start..].find('"').unwrap_or(0);
                let value = odd_value(rng).replace('"', "&quot;").replace('<', "&lt;");
                r.replace_range(start..end, &value);
            }
        }
        2 => {
            let i = at(rng, &r);
            r.insert_str(i, PIECES[rng.random_range(0..PIECES.len())]);
        }
        3 => {
            let i = at(rng, &r);
            r.truncate(i);
        }
        4 => {
            // A byte flipped, the text then read as UTF-8 again (a report is read as text).
            let mut bytes = r.into_bytes();
            if !bytes.is_empty() {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            r = String::from_utf8_lossy(&bytes).into_owned();
        }
        5 => {
            // Suites nested deep, or a testcase repeated many times (attempts counted up).
            let n = rng.random_range(1..3_000);
            r = match rng.random_bool(0.5) {
                true => format!("{}{r}{}", "<testsuite name=\"n\">".repeat(n), "</testsuite>".repeat(n)),
                false => format!(
                    "<testsuite name=\"s\" timestamp=\"2026-11-27T10:00:00\">{}</testsuite>",
                    "<testcase classname=\"c\" name=\"t\" time=\"604800\"/>".repeat(n)
                ),
            };
        }
        6 if !r.is_empty() => {
            let (a, b) = (at(rng, &r), at(rng, &r));
            let piece = r[a.min(b)..a.max(b)].to_owned();
            let i = at(rng, &r);
            r.insert_str(i, &piece);
        }
        7 => {
            let i = at(rng, &r);
            let end = (i + rng.random_range(0..64)).min(r.len());
            let end = (end..=r.len()).find(|&e| r.is_char_boundary(e)).unwrap_or(r.len());
            r.replace_range(i..end, "");
        }
        _ => {
            r = (0..rng.random_range(0..64)).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
        }
    }
    r
}

#[derive(Default)]
struct Tally {
    reports: usize,
    converted: usize,
    events: usize,
    errors: usize,
}

/// Converts a report and checks the answer: events the ingest accepts as they are, or an error
/// that names the file.
fn check(xml: &str, tally: &mut Tally) {
    tally.reports += 1;
    match parse(FILE, xml, &ctx(), now()) {
        Ok(events) => {
            tally.converted += 1;
            tally.events += events.len();
            assert!(!events.is_empty());
            for e in &events {
                let decoded = TestEvent::decode(e.to_json().as_bytes(), now());
                assert_eq!(
                    differences(e, decoded.as_ref()),
                    "",
                    "a converted event the ingest would not take as it is"
                );
            }
        }
        Err(e) => {
            tally.errors += 1;
            assert!(e.to_string().starts_with(FILE), "{e}");
        }
    }
}

/// How the ingest's reading of a converted event differs from it: each differing field with both
/// values, or the rejection.
fn differences(sent: &TestEvent, read: Result<&TestEvent, &testlake_schemas::Rejection>) -> String {
    let read = match read {
        Ok(read) => serde_json::to_value(read).expect("json"),
        Err(why) => return why.to_string(),
    };
    let sent = serde_json::to_value(sent).expect("json");
    let fields = sent.as_object().expect("an object").iter();
    fields
        .filter(|(k, v)| read.get(k.as_str()) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} read as {}; ", read[k]))
        .collect()
}

fn fuzz(name: &str, mut case: impl FnMut(&mut SmallRng) -> String) -> Tally {
    let (time, seed) = budget();
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    while start.elapsed() < time {
        let xml = case(&mut rng);
        if catch_unwind(AssertUnwindSafe(|| check(&xml, &mut tally))).is_err() {
            let shown: String = xml.chars().take(4000).collect();
            panic!("{name}, seed {seed}, report {}: {shown:?}", tally.reports);
        }
    }
    eprintln!(
        "{name}: {} reports in {time:?}: {} converted ({} events), {} errors",
        tally.reports, tally.converted, tally.events, tally.errors
    );
    tally
}

#[test]
fn mutated_reports_convert_to_valid_events_or_fail_naming_the_file() {
    let tally = fuzz("mutated reports", |rng| {
        let mut report = SEEDS[rng.random_range(0..SEEDS.len())].to_owned();
        for _ in 0..rng.random_range(1..=3) {
            report = mutate(rng, report);
        }
        report
    });
    assert!(tally.reports >= 500, "only {} reports", tally.reports);
    assert!(tally.converted > tally.reports / 10 && tally.errors > tally.reports / 10, "both sides exercised");
}

#[test]
fn random_tag_soup_fails_naming_the_file_or_converts() {
    let tally = fuzz("random tag soup", |rng| {
        let bytes: Vec<u8> = (0..rng.random_range(0..256)).map(|_| rng.random()).collect();
        match rng.random_bool(0.3) {
            true => String::from_utf8_lossy(&bytes).into_owned(),
            false => (0..rng.random_range(0..48)).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect(),
        }
    });
    assert!(tally.reports >= 500, "only {} reports", tally.reports);
}
