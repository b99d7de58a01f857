//! `testlake junit` against a real broker: a surefire report with a flaky retry becomes one
//! event per attempt in the lake, and a report produced twice counts once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use testlake_ingest::{FlushPolicy, Ingest, IngestConfig, IngestMetrics};
use testlake_schemas::Lake;
use testlake_tests::{Broker, testlake_binary, unique_topic};
use tokio_util::sync::CancellationToken;

const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.acme.InvoiceTest" tests="2" timestamp="2026-11-27T10:00:00">
  <testcase classname="com.acme.InvoiceTest" name="total" time="0.25">
    <flakyFailure message="expected:&lt;3&gt; but was:&lt;4&gt;" type="java.lang.AssertionError"/>
  </testcase>
  <testcase classname="com.acme.InvoiceTest" name="tax" time="0.5">
    <failure message="boom" type="java.lang.IllegalStateException">at Invoice.tax</failure>
    <rerunFailure message="boom again" type="java.lang.IllegalStateException"/>
  </testcase>
</testsuite>"#;

/// Converts and produces `report` with `testlake junit`, as a CI job's last step does.
fn produce_report(broker: &Broker, topic: &str, report: &std::path::Path) {
    let out = std::process::Command::new(testlake_binary())
        .args(["junit", "--brokers", &broker.bootstrap(), "--topic", topic, "--create-topics"])
        .args(["--repository", "acme/billing", "--branch", "main", "--commit", "abc123", "--run-id", "42"])
        .arg(report)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `testlake sql` over `lake`, answered as CSV.
fn testlake_sql(lake: &std::path::Path, statement: &str) -> String {
    let out = std::process::Command::new(testlake_binary())
        .args(["sql", "--lake", lake.to_str().unwrap(), "--format", "csv", statement])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_reports_land_with_every_attempt_and_a_report_sent_twice_counts_once() {
    let broker = Broker::start();
    let topic = unique_topic("junit");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("TEST-com.acme.InvoiceTest.xml");
    std::fs::write(&report, REPORT).unwrap();
    // The job is re-run, or its upload step retried: the same report is produced again.
    produce_report(&broker, &topic, &report);
    produce_report(&broker, &topic, &report);

    let lake_dir = dir.path().join("lake");
    let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let mut config = IngestConfig::new(broker.bootstrap(), &topic);
    config.group_id = unique_topic("g");
    config.flush = FlushPolicy { max_age: Duration::from_millis(100), ..FlushPolicy::default() };
    let ingest = Ingest::new(config, lake.clone(), None, Arc::new(IngestMetrics::default())).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(ingest.run(shutdown.clone()));

    // The folders hold both copies of each attempt; every reader through testlake sees one.
    let sql = "SELECT DISTINCT test_id, attempt, status, failure_message FROM results ORDER BY test_id, attempt";
    let deadline = Instant::now() + Duration::from_secs(60);
    let batches: Vec<RecordBatch> = loop {
        let ctx = testlake_compute::catalog::lake_session(&lake).await.unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let landed: i64 = ctx.sql("SELECT count(*) FROM results").await.unwrap().collect().await.unwrap()[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0);
        if landed >= 8 || Instant::now() > deadline {
            break batches;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            rows.push((
                b.column(0).as_string::<i32>().value(i).to_owned(),
                b.column(1).as_primitive::<Int32Type>().value(i),
                b.column(2).as_string::<i32>().value(i).to_owned(),
                b.column(3).as_string_opt::<i32>().filter(|c| !c.is_null(i)).map(|c| c.value(i).to_owned()),
            ));
        }
    }
    let tax = "com.acme.InvoiceTest.tax".to_owned();
    let total = "com.acme.InvoiceTest.total".to_owned();
    assert_eq!(
        rows,
        vec![
            (tax.clone(), 1, "failed".into(), Some("boom\nat Invoice.tax".into())),
            (tax, 2, "failed".into(), Some("boom again".into())),
            (total.clone(), 1, "failed".into(), Some("expected:<3> but was:<4>".into())),
            (total, 2, "passed".into(), None),
        ]
    );
    assert_eq!(
        testlake_sql(&lake_dir, "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM results"),
        "n,ids\n4,4\n"
    );
    assert_eq!(
        testlake_sql(
            &lake_dir,
            "SELECT count(*) AS copies, count(*) FILTER (WHERE conflict) AS conflicts FROM duplicates"
        ),
        "copies,conflicts\n4,0\n"
    );
}
