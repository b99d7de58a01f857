use super::*;
use chrono::TimeZone;

fn ctx() -> RunContext {
    RunContext {
        repository: "acme/billing".into(),
        branch: "main".into(),
        commit_sha: "abc".into(),
        run_id: "run-9".into(),
        job_id: Some("unit".into()),
        ..RunContext::default()
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn parse_ok(xml: &str) -> Vec<TestEvent> {
    parse("report.xml", xml, &ctx(), now()).unwrap()
}

fn summary(events: &[TestEvent]) -> Vec<(String, u32, Status)> {
    events.iter().map(|e| (e.test_id.clone(), e.attempt, e.status)).collect()
}

#[test]
fn surefire_flaky_failures_are_earlier_attempts() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.acme.InvoiceTest" time="1.5" tests="2" timestamp="2026-11-27T10:00:00">
  <testcase name="total" classname="com.acme.InvoiceTest" time="0.5">
    <flakyFailure message="expected 3" type="java.lang.AssertionError"><stackTrace>at com.acme...</stackTrace></flakyFailure>
    <flakyError message="timeout" type="java.net.SocketTimeoutException"/>
  </testcase>
  <testcase name="tax" classname="com.acme.InvoiceTest" time="1.0"/>
</testsuite>"#;
    let events = parse_ok(xml);
    let t = |n: &str| format!("com.acme.InvoiceTest.{n}");
    assert_eq!(
        summary(&events),
        vec![
            (t("total"), 1, Status::Failed),
            (t("total"), 2, Status::Error),
            (t("total"), 3, Status::Passed),
            (t("tax"), 1, Status::Passed)
        ]
    );
    assert_eq!(events[0].failure_message.as_deref(), Some("expected 3\nat com.acme..."));
    assert_eq!(events[0].suite, "com.acme.InvoiceTest");
    assert_eq!(events[2].name, "total");
    // Finish times: the suite timestamp plus the time of the cases so far; attempts in order.
    assert_eq!(
        events[2].finished_at,
        Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap() + Duration::milliseconds(500)
    );
    assert!(events[0].finished_at < events[1].finished_at && events[1].finished_at < events[2].finished_at);
    assert_eq!(events[3].duration_ms, 1000.0);
}

#[test]
fn surefire_reruns_are_later_attempts() {
    let xml = r#"<testsuite name="S"><testcase classname="C" name="t" time="0.2">
        <failure message="boom" type="E">trace</failure>
        <rerunFailure message="boom again" type="E"/>
        <rerunError message="crash" type="E"/>
    </testcase></testsuite>"#;
    let statuses: Vec<_> = parse_ok(xml).iter().map(|e| (e.attempt, e.status)).collect();
    assert_eq!(statuses, vec![(1, Status::Failed), (2, Status::Failed), (3, Status::Error)]);
}

#[test]
fn pytest_reports() {
    let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1"
        skipped="1" tests="4" time="0.2" timestamp="2026-11-27T09:00:00.123456+01:00" hostname="h">
      <testcase classname="tests.test_api" name="test_ok" file="tests/test_api.py" line="3" time="0.010" />
      <testcase classname="tests.test_api" name="test_bad[1-2]" time="0.020">
        <failure message="assert 1 == 2">def test_bad(): &gt; assert 1 == 2</failure></testcase>
      <testcase classname="tests.test_api" name="test_skip" time="0.000">
        <skipped type="pytest.skip" message="not on linux">skip</skipped></testcase>
      <testcase classname="tests.test_api" name="test_err" time="0.001"><error message="fixture failed"/></testcase>
    </testsuite></testsuites>"#;
    let events = parse_ok(xml);
    let statuses: Vec<_> = events.iter().map(|e| (e.name.as_str(), e.status)).collect();
    assert_eq!(
        statuses,
        vec![
            ("test_ok", Status::Passed),
            ("test_bad[1-2]", Status::Failed),
            ("test_skip", Status::Skipped),
            ("test_err", Status::Error)
        ]
    );
    assert_eq!(events[1].failure_message.as_deref(), Some("assert 1 == 2\ndef test_bad(): > assert 1 == 2"));
    assert_eq!(events[2].failure_message, None, "a skip is not a failure");
    assert_eq!(events[0].suite, "pytest");
    assert_eq!(
        events[0].finished_at,
        Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap() + Duration::microseconds(123_456 + 10_000)
    );
}

#[test]
fn jest_and_go_reports() {
    let jest = r#"<testsuites name="jest tests" tests="2"><testsuite name="Math" tests="2" time="0.01">
        <testcase classname="Math adds" name="Math adds" time="0.003"></testcase>
        <testcase classname="Math divides" name="Math divides" time="0.004"><failure>Error: expected 2</failure></testcase>
      </testsuite></testsuites>"#;
    let events = parse_ok(jest);
    assert_eq!(
        summary(&events),
        vec![
            ("Math adds.Math adds".into(), 1, Status::Passed),
            ("Math divides.Math divides".into(), 1, Status::Failed)
        ]
    );
    assert_eq!(events[1].failure_message.as_deref(), Some("Error: expected 2"));

    let go = r#"<testsuites><testsuite tests="2" failures="1" time="0.02" name="github.com/acme/pkg" timestamp="2026-11-27T08:00:00Z">
        <properties><property name="go.version" value="go1.23"></property></properties>
        <testcase classname="github.com/acme/pkg" name="TestA" time="0.010"></testcase>
        <testcase classname="github.com/acme/pkg" name="TestB" time="0.010"><failure message="Failed" type="">b_test.go:9: nope</failure></testcase>
      </testsuite></testsuites>"#;
    let events = parse_ok(go);
    assert_eq!(events[1].test_id, "github.com/acme/pkg.TestB");
    assert_eq!(events[1].name, "TestB");
    assert_eq!(events[1].duration_ms, 10.0);
}

#[test]
fn repeated_testcases_are_successive_attempts_with_stable_ids() {
    let xml = r#"<testsuite name="S">
        <testcase classname="C" name="t" time="0.1"><failure message="x"/></testcase>
        <testcase classname="C" name="u" time="0.1"/>
        <testcase classname="C" name="t" time="0.1"/>
    </testsuite>"#;
    let events = parse_ok(xml);
    assert_eq!(
        summary(&events),
        vec![("C.t".into(), 1, Status::Failed), ("C.u".into(), 1, Status::Passed), ("C.t".into(), 2, Status::Passed)]
    );
    let again = parse_ok(xml);
    let ids = |es: &[TestEvent]| es.iter().map(|e| e.event_id).collect::<Vec<_>>();
    assert_eq!(ids(&events), ids(&again), "converting twice gives the same event ids");
    let unique: std::collections::BTreeSet<_> = ids(&events).into_iter().collect();
    assert_eq!(unique.len(), 3);
    for e in &events {
        // Every converted event is a valid event of the contract.
        let json = e.to_json();
        assert_eq!(&TestEvent::decode(json.as_bytes(), now()).unwrap(), e);
    }
}

#[test]
fn malformed_reports_name_the_file_and_line() {
    let xml = "<testsuite name=\"S\">\n  <testcase name=\"a\">\n  </testsuite>\n";
    let err = parse("reports/unit.xml", xml, &ctx(), now()).unwrap_err();
    let JunitError::Malformed { file, line, .. } = &err else { panic!("{err}") };
    assert_eq!(file, "reports/unit.xml");
    assert_eq!(*line, 3, "{err}");
    assert!(err.to_string().starts_with("reports/unit.xml:3: malformed XML"), "{err}");

    let truncated = "<testsuite name=\"S\">\n<testcase name=\"a\" time=\"1\">";
    assert!(matches!(parse("t.xml", truncated, &ctx(), now()), Err(JunitError::Malformed { .. })));
    assert_eq!(parse("e.xml", "<testsuites/>", &ctx(), now()), Err(JunitError::Empty { file: "e.xml".into() }));
}

/// A duration no execution can have is an error naming the file and line, not a panic.
#[test]
fn an_impossible_time_is_an_error_at_its_line() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let xml = "<testsuite name=\"s\" timestamp=\"2026-11-27T10:00:00\">\n<testcase classname=\"c\" name=\"ok\" time=\"1\"/>\n<testcase classname=\"c\" name=\"t\" time=\"1e13\"/>\n</testsuite>";
    let err = parse("report.xml", xml, &ctx(), now).unwrap_err().to_string();
    assert!(err.starts_with("report.xml:3: malformed XML: time=\"1e13\" is over"), "{err}");
    let rerun = "<testsuite name=\"s\">\n<testcase classname=\"c\" name=\"t\" time=\"1\">\n<failure message=\"x\"/>\n<rerunFailure message=\"y\" time=\"1e13\"/>\n</testcase>\n</testsuite>";
    let err = parse("report.xml", rerun, &ctx(), now).unwrap_err().to_string();
    assert!(err.starts_with("report.xml:4: "), "{err}");
}

/// Found by the fuzz test: a suite whose testcases' times add up past the day of clock skew the
/// ingest allows converted into events the ingest dead-letters; now the report fails at the
/// testcase, with the ingest's reason.
#[test]
fn a_testcase_the_ingest_would_reject_is_an_error_at_its_line() {
    let xml = "<testsuite name=\"s\" timestamp=\"2026-11-27T10:00:00\">\n<testcase classname=\"c\" name=\"t\" time=\"604800\"/>\n<testcase classname=\"c\" name=\"u\" time=\"1\"/>\n</testsuite>";
    let err = parse("report.xml", xml, &ctx(), now()).unwrap_err().to_string();
    assert!(err.starts_with("report.xml:2: testcase c.t: field `finished_at` = 2026-12-04"), "{err}");
    let long_name =
        format!("<testsuite name=\"s\">\n<testcase classname=\"c\" name=\"{}\"/></testsuite>", "n".repeat(5000));
    let err = parse("report.xml", &long_name, &ctx(), now()).unwrap_err().to_string();
    assert!(err.starts_with("report.xml:2: testcase c.nnn") && err.ends_with("over the 4096 byte limit"), "{err}");
}

/// A suite timestamp at either end of what chrono can hold (`%Y` reads six-digit years), plus or
/// minus a testcase's time, overflowed the timestamp arithmetic: a panic; now an error.
#[test]
fn a_timestamp_at_the_end_of_time_is_an_error_not_a_panic() {
    let xml = "<testsuite name=\"s\" timestamp=\"+262142-12-31T23:59:59\">\n<testcase classname=\"c\" name=\"t\" time=\"86400\"/>\n</testsuite>";
    let err = parse("report.xml", xml, &ctx(), now()).unwrap_err().to_string();
    assert_eq!(err, "report.xml:2: testcase c.t: its time is out of the range of timestamps");
    let xml = "<testsuite name=\"s\" timestamp=\"-262143-01-01T00:00:00\">\n<testcase classname=\"c\" name=\"t\" time=\"0\"><flakyFailure/></testcase>\n</testsuite>";
    let err = parse("report.xml", xml, &ctx(), now()).unwrap_err().to_string();
    assert!(err.starts_with("report.xml:2: testcase c.t: "), "{err}");
}

/// Found by the fuzz test: a `message` attribute longer than an event keeps was sent whole (the
/// ingest then cut it); now it is cut, at a character boundary, as the ingest would.
#[test]
fn a_long_failure_message_is_cut_as_the_ingest_cuts_it() {
    let xml = format!(
        "<testsuite name=\"s\"><testcase classname=\"c\" name=\"t\"><failure message=\"{}\">trace</failure></testcase></testsuite>",
        "😀".repeat(1100)
    );
    let events = parse_ok(&xml);
    let message = events[0].failure_message.as_deref().unwrap();
    assert_eq!(message.len(), 4096);
    assert_eq!(&TestEvent::decode(events[0].to_json().as_bytes(), now()).unwrap(), &events[0]);
}

mod fuzz;
