//! The configuration file, through the real binary: a file runs a whole stack (the CI
//! environment: no compute stage, no cache refresh, JSON logs) with a variable over it; the
//! persistence switches reach compute; `config show` and a refused key at the command line.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::Lake;
use testlake_tests::{Broker, Running, free_port, land_committed, landed_ids, testlake_binary, unique_topic};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

/// The value of a metric without labels in Prometheus or OpenMetrics text.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// Files under `dir/table` (recursively), ignoring the lake's own bookkeeping.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                usize::from(e.path().extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

/// `testlake --config ci.toml all`: the file's settings run the process — the fleet produces,
/// results land — while a variable wins over the file (`TESTLAKE_LISTEN`); the CI environment's
/// switches hold: no compute stage (no trends written, none in `/healthz`), nothing cached, and
/// every log line is a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_runs_the_ci_environment_and_a_variable_wins_over_it() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (file_port, env_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "ci.toml",
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
landed_topic = "{landed}"
create_topics = true

[lake]
url = "{lake}"

[ingest]
group = "{group}"
flush_age = "200ms"

[compact]
every = "0s"

[compute]
enabled = false

[serve]
listen = "127.0.0.1:{file_port}"
refresh_caches = false

[fleet]
rate = 300

[log]
format = "json"
level = "info,datafusion=warn"
"#,
            brokers = broker.bootstrap(),
            topic = unique_topic("config"),
            landed = unique_topic("landed"),
            lake = lake.display(),
            group = unique_topic("group"),
        ),
    );
    let log = dir.path().join("all.log");
    let _process = Running(
        Command::new(testlake_binary())
            .args(["--config", config.to_str().unwrap(), "all"])
            .env("TESTLAKE_LISTEN", format!("127.0.0.1:{env_port}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{env_port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while landed_ids(&lake).await.len() < 500 {
        assert!(Instant::now() < deadline, "nothing landed in 60 s; log:\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let health: Value = client.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
    assert!(health["components"].get("compute").is_none(), "a compute stage runs: {health}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", file_port)).is_err(), "listening on the file's port");

    // Nothing cached: asking twice reads the lake twice.
    for _ in 0..2 {
        let dashboard = client.get(format!("{base}/api/v1/dashboard")).send().await.unwrap();
        assert_eq!(dashboard.status(), 200);
    }
    let page = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&page, "testlake_query_cache_hits_total"), Some(0.0), "{page}");
    assert_eq!(metric(&page, "testlake_query_cache_bytes"), Some(0.0), "{page}");

    // A few more flushes, and still no trends: no compute stage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for table in ["trends_hourly", "trends_daily", "flaky_scores"] {
        assert_eq!(files_under(&lake.join(table)), 0, "{table} written with compute disabled");
    }

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 3, "{text}");
    for line in &lines {
        let json: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json["level"].is_string() && json["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"message\":\"testlake is running\"")), "no start-up line in\n{text}");
}

/// `--persist-daily-trends=false` (here by its variable) computes and writes `trends_hourly`
/// only; by default both.
#[tokio::test]
async fn persistence_switches_choose_the_trend_tables() {
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let events: Vec<_> = fleet.run(Utc::now() - TimeDelta::hours(2));
    for (daily, expect_daily) in [("false", false), ("true", true)] {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        land_committed(&lake, "ci", 0, 0, &events).await;
        let status = Command::new(testlake_binary())
            .args(["compute", "--once", "--lake", dir.path().to_str().unwrap()])
            .env("TESTLAKE_PERSIST_DAILY_TRENDS", daily)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert!(files_under(&dir.path().join("trends_hourly")) > 0, "daily={daily}: no hourly trends");
        assert_eq!(files_under(&dir.path().join("trends_daily")) > 0, expect_daily, "daily={daily}");
    }
}

/// `config show` at the command line: the file, a variable and a flag each named as the source
/// of its value; a mistyped key stops the process with the file, line and key.
#[test]
fn config_show_and_a_refused_key_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[ingest]\nflush_rows = 5000\nflush_bytes = 1000\n");
    let out = Command::new(testlake_binary())
        .args(["--config", good.to_str().unwrap(), "config", "show", "ingest", "--flush-bytes", "2000"])
        .env("TESTLAKE_FLUSH_AGE", "3s")
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{shown}{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains(&format!("flush_rows = 5000  # file {}:2", good.display())), "{shown}");
    assert!(shown.contains("flush_bytes = 2000  # flag"), "{shown}");
    assert!(shown.contains("flush_age = \"3s\"  # env TESTLAKE_FLUSH_AGE"), "{shown}");
    assert!(shown.contains("group = \"testlake-ingest\"  # default"), "{shown}");

    let bad = write(dir.path(), "bad.toml", "[ingest]\nflush_rows = 5000\n\n[compute]\nintervall = \"1h\"\n");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("TESTLAKE_CONFIG={} {} serve", bad.display(), testlake_binary().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:5: unknown key `compute.intervall`", bad.display())), "{stderr}");
}
