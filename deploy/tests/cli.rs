//! The `testlake` binary's command line: help, and clear errors for bad invocations.
//! (Building these tests also builds the binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn testlake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testlake"))
}

#[test]
fn help_lists_every_stage() {
    let out = testlake().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["ingest", "compute", "serve", "all", "produce", "junit"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn produce_needs_a_source() {
    let out = testlake().args(["produce", "--brokers", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--file FILE or --synthetic"), "{stderr}");
}

#[test]
fn a_bad_crash_spec_is_a_configuration_error() {
    let lake = tempfile::tempdir().unwrap();
    let out = testlake()
        .args(["ingest", "--brokers", "127.0.0.1:1", "--lake", lake.path().to_str().unwrap()])
        .env("TESTLAKE_CRASH_AT", "nowhere:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown crash point"), "{stderr}");
}

#[test]
fn a_bad_lake_location_is_reported() {
    let out = testlake().args(["compute", "--once", "--lake", "nosuchscheme://x/y"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nosuchscheme"), "{stderr}");
}

const SUREFIRE: &str = r#"<testsuite name="com.acme.T" timestamp="2026-11-27T10:00:00">
  <testcase classname="com.acme.T" name="flaky" time="0.5"><flakyFailure message="nope"/></testcase>
  <testcase classname="com.acme.T" name="ok" time="0.1"/>
</testsuite>"#;

#[test]
fn junit_dry_run_prints_one_event_per_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("TEST-com.acme.T.xml");
    std::fs::write(&report, SUREFIRE).unwrap();
    let out = testlake()
        .args(["junit", "--dry-run", "--repository", "acme/r", "--branch", "main", "--commit", "abc", "--run-id", "7"])
        .arg(&report)
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let attempts: Vec<(&str, u64, &str)> = lines
        .iter()
        .map(|e| (e["test_id"].as_str().unwrap(), e["attempt"].as_u64().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        attempts,
        vec![("com.acme.T.flaky", 1, "failed"), ("com.acme.T.flaky", 2, "passed"), ("com.acme.T.ok", 1, "passed")]
    );
    assert!(lines.iter().all(|e| e["repository"] == "acme/r" && e["run_id"] == "7"));
}

#[test]
fn junit_names_the_malformed_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("broken.xml");
    std::fs::write(&report, "<testsuite name=\"S\">\n<testcase name=\"a\">\n</testsuite>\n").unwrap();
    let out = testlake()
        .args(["junit", "--dry-run", "--repository", "r", "--branch", "b", "--commit", "c", "--run-id", "1"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:3: malformed XML", report.display())), "{stderr}");
}

#[test]
fn sigterm_stops_the_service_and_exits_cleanly() {
    use std::io::{BufRead, BufReader};

    let lake = tempfile::tempdir().unwrap();
    let mut child = testlake()
        .args(["serve", "--lake", lake.path().to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map(Result::unwrap);
    assert!(lines.by_ref().any(|line| line.contains("serving")), "the service did not start");
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let rest: Vec<String> = lines.collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:#?}");
    let said = |what: &str| rest.iter().position(|l| l.contains(what) && l.contains("serve"));
    assert!(said("stopping") < said("stopped") && said("stopping").is_some(), "{rest:#?}");
}

#[test]
fn every_kafka_command_documents_the_client_flags_and_its_help_shows_no_secret() {
    for command in ["ingest", "compute", "serve", "all", "produce", "junit"] {
        let out = testlake()
            .args([command, "--help"])
            .env("TESTLAKE_KAFKA_SASL_PASSWORD", "hunter2-help")
            .env("TESTLAKE_KAFKA_PROPERTIES", "/etc/testlake/kafka.properties")
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in
            ["--kafka-property <KEY=VALUE>", "--kafka-properties <FILE>", "--create-topics", "--replication-factor"]
        {
            assert!(help.contains(flag), "{command}: {flag} missing from:\n{help}");
        }
        assert!(!help.contains("hunter2-help"), "{command} --help shows a secret:\n{help}");
    }
}
