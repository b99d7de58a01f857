//! schemathesis (PyPI, installed by `deploy/scripts/setup.sh` into its own virtual environment)
//! against the service's own OpenAPI document: `testlake serve` over a lake with three days of a
//! fleet's results, trends and flaky scores, fuzzed without a token, and with a token configured
//! both with and without presenting it. Every response must conform to the document, no request
//! may get a 5xx, and the process must still be serving afterwards.
//!
//! Bounded: `MAX_EXAMPLES` per operation and phase, about a minute for the three runs. A longer
//! run: `TESTLAKE_SCHEMATHESIS_EXAMPLES=1000`. Not checked: that every schema-valid request is
//! accepted (`positive_data_acceptance`: a random statement is rarely valid SQL, and `from` must
//! come before `to`), and `/api/v1/events` (a stream that does not end; see `tests/tests/live.rs`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::Lake;
use testlake_tests::{Running, free_port, land_committed, testlake_binary};

const MAX_EXAMPLES: &str = "30";
const TOKEN: &str = "schemathesis-token";

/// The schemathesis executable: `$TESTLAKE_VENV/bin`, the set-up script's default environment,
/// or `PATH`. Missing, the test fails (never skips): run `deploy/scripts/setup.sh`.
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("TESTLAKE_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/testlake/venv")));
    if let Some(bin) = venv.map(|v| v.join("bin/schemathesis")).filter(|b| b.is_file()) {
        return bin;
    }
    let on_path = Command::new("schemathesis").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        on_path.is_ok_and(|s| s.success()),
        "schemathesis is missing: run deploy/scripts/setup.sh (it installs it into $TESTLAKE_VENV, \
         default ~/.cache/testlake/venv)"
    );
    PathBuf::from("schemathesis")
}

/// A lake with three days of one repository's runs, their trends and today's flaky scores.
async fn lake_with_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let events: Vec<_> =
        (0..3).flat_map(|d| fleet.run(Utc::now() - TimeDelta::days(d) - TimeDelta::minutes(10))).collect();
    land_committed(&lake, "ci", 0, 0, &events).await;
    testlake_compute::schedule::run_once(&lake, &testlake_compute::ComputeConfig::default()).await.unwrap();
    dir
}

/// `testlake serve` over `lake` on a free port (with `token`, if any), once it answers.
async fn serve(lake: &std::path::Path, token: Option<&str>) -> (Running, String) {
    let base = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(testlake_binary());
    cmd.args(["serve", "--lake", lake.to_str().unwrap(), "--listen", base.trim_start_matches("http://")])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(token) = token {
        cmd.env("TESTLAKE_API_TOKEN", token);
    }
    let server = Running(cmd.spawn().expect("spawn testlake serve"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "testlake serve did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (server, base)
}

/// The service's OpenAPI document, saved to a file (it is behind the token when one is set).
async fn document(base: &str, dir: &std::path::Path) -> PathBuf {
    let doc = reqwest::Client::new().get(format!("{base}/api/v1/openapi.json")).bearer_auth(TOKEN).send().await;
    let path = dir.join("openapi.json");
    std::fs::write(&path, doc.unwrap().error_for_status().unwrap().bytes().await.unwrap()).unwrap();
    path
}

/// Runs schemathesis against `base` with its `document` and `headers`; panics with its report
/// on failure.
fn fuzz(base: &str, document: &std::path::Path, headers: &[&str], what: &str) {
    let examples = std::env::var("TESTLAKE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    let mut cmd = Command::new(schemathesis());
    // In the document's folder: schemathesis keeps a `.schemathesis` cache where it runs.
    cmd.current_dir(document.parent().expect("a folder"))
        .arg("run")
        .arg(document)
        .args(["--url", base])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", &examples, "--workers", "2", "--request-timeout", "20"])
        .args(["--exclude-path", "/api/v1/events", "--no-color"]);
    for header in headers {
        cmd.args(["--header", header]);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis {what}: {:?}, {}",
        started.elapsed(),
        report.lines().rev().find(|l| l.contains("generated")).unwrap_or("")
    );
    assert!(
        out.status.success(),
        "schemathesis {what} found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The process is still serving after the fuzzing: nothing crashed it.
async fn still_serving(server: &mut Running, base: &str) {
    assert!(matches!(server.try_wait(), Ok(None)), "testlake serve exited: {:?}", server.try_wait());
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_with_and_without_auth() {
    let lake = lake_with_data().await;

    let (mut open, base) = serve(lake.path(), None).await;
    let work = tempfile::tempdir().unwrap();
    let document = document(&base, work.path()).await;
    fuzz(&base, &document, &[], "without a token");
    still_serving(&mut open, &base).await;
    drop(open);

    let (mut guarded, base) = serve(lake.path(), Some(TOKEN)).await;
    fuzz(&base, &document, &[&format!("Authorization: Bearer {TOKEN}")], "with the token");
    fuzz(&base, &document, &[], "with a token configured, none presented");
    still_serving(&mut guarded, &base).await;
}
