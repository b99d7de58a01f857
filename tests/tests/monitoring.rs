//! `deploy/monitoring/` against the real tools (Debian's `prometheus` package, installed by
//! `deploy/scripts/setup.sh`): `promtool` checks the alert rules and the compose stack's
//! Prometheus configuration and runs the rules' unit tests, which cover every alert firing and
//! not firing; then a real Prometheus on 127.0.0.1 scrapes a running `testlake all` (its
//! synthetic fleet producing, a few malformed messages among them, the API asked) every second,
//! every query of the Grafana dashboard returns data once data has landed and compute has cycled,
//! and the alert rules, loaded into that Prometheus, evaluate healthy and silent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testlake_tests::{Broker, Running, free_port, landed_ids, testlake_binary, unique_topic};

/// `deploy/monitoring/`.
fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// Runs a tool of Debian's `prometheus` package, failing with how to install it when missing.
fn prom_tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).current_dir(monitoring()).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): run deploy/scripts/setup.sh (it installs Debian's prometheus package)")
    })
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The alerts `alerts.yml` defines, by their `- alert: Name` lines.
fn alert_names() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_owned()).collect()
}

/// For each alert of `alerts.test.yml`'s evaluations: whether a case expects it silent
/// (`exp_alerts: []`) and whether one expects it firing.
fn alert_cases() -> BTreeMap<String, (bool, bool)> {
    let tests = std::fs::read_to_string(monitoring().join("alerts.test.yml")).unwrap();
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let (Some(rest), Some(name)) = (line.strip_prefix("exp_alerts:"), current.take()) {
            let case = cases.entry(name).or_default();
            if rest.trim() == "[]" {
                case.0 = true;
            } else {
                case.1 = true;
            }
        }
    }
    cases
}

/// `promtool check rules`, `check config` (the compose stack's prometheus.yml, which loads the
/// rules) and `test rules`: every alert is tested both silent and firing.
#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let names = alert_names();
    assert!(names.len() >= 6, "alerts.yml defines {names:?}");

    let check = prom_tool("promtool", &["check", "rules", "alerts.yml"]);
    assert!(check.status.success(), "promtool check rules:\n{}", text(&check));
    let found = format!("SUCCESS: {} rules found", names.len());
    assert!(text(&check).contains(&found), "expected {found:?}:\n{}", text(&check));

    let config = prom_tool("promtool", &["check", "config", "prometheus.yml"]);
    assert!(config.status.success(), "promtool check config:\n{}", text(&config));

    let cases = alert_cases();
    for name in &names {
        assert_eq!(
            cases.get(name),
            Some(&(true, true)),
            "{name}: alerts.test.yml must evaluate it both silent (exp_alerts: []) and firing; cases: {cases:?}"
        );
    }
    // The lag alert's threshold is where the ingest reports itself degraded.
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    let threshold = rules
        .lines()
        .find_map(|l| l.trim().strip_prefix("expr: sum by (job, instance) (testlake_ingest_consumer_lag) > "))
        .expect("the lag alert's expression");
    let mut show = Command::new(testlake_binary());
    show.args(["config", "show", "ingest"]);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TESTLAKE_")) {
        show.env_remove(name);
    }
    let shown = text(&show.output().unwrap());
    let degraded = shown
        .lines()
        .find_map(|l| l.strip_prefix("lag_degraded = "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no lag_degraded in `testlake config show ingest`:\n{shown}"));
    assert_eq!(threshold, degraded, "TestlakeIngestLagHigh's threshold is not [ingest] lag_degraded's default");

    let unit = prom_tool("promtool", &["test", "rules", "alerts.test.yml"]);
    assert!(unit.status.success(), "promtool test rules:\n{}", text(&unit));
    assert!(text(&unit).contains("SUCCESS"), "{}", text(&unit));
}

/// Every query of the dashboard, with Grafana's interval variables replaced by `30s`, each
/// with its panel's title; checks every target reads the dashboard's data-source variable.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "the dashboard has no `datasource` variable of Prometheus data sources: {variables:?}"
    );
    let mut panels: Vec<&Value> = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        panels.push(panel);
    }
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}: {target}");
            assert_eq!(target["datasource"]["type"], "prometheus", "{title}: {target}");
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            let expr = expr.replace("$__rate_interval", "30s").replace("$__interval", "30s").replace("$__range", "30s");
            assert!(!expr.contains('$'), "{title}: a variable the test does not know in {expr}");
            queries.push((title.to_owned(), expr));
        }
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    assert!(queries.len() >= 20, "{} queries", queries.len());
    queries
}

/// A Prometheus process on a free port of 127.0.0.1, its data in a temp dir, killed on drop.
struct Prometheus {
    base: String,
    _process: Running,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `testlake-all` and evaluates `alerts.yml` every second.
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let rules = monitoring().join("alerts.yml").canonicalize().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: testlake-all\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let process = Running(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start prometheus ({e}): run deploy/scripts/setup.sh (it installs Debian's prometheus \
                         package)"
                    )
                }),
        );
        Self { base: format!("http://127.0.0.1:{port}"), _process: process, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `data` of an API answer, or `None` before Prometheus answers.
    async fn api(&self, client: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let answer = client.get(format!("{}{path}", self.base)).query(query).send().await.ok()?;
        let status = answer.status();
        let body: Value = answer.json().await.ok()?;
        assert!(status.is_success() && body["status"] == "success", "{path} {query:?}: {status} {body}");
        Some(body["data"].clone())
    }

    /// How many series or samples an instant query returns.
    async fn results(&self, client: &reqwest::Client, expr: &str) -> usize {
        self.api(client, "/api/v1/query", &[("query", expr)])
            .await
            .and_then(|data| data["result"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

/// Waits for `done` (polled every 500 ms), failing with `what` and the logs after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, logs: impl Fn() -> String, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_testlake_and_every_dashboard_query_has_data() {
    let queries = dashboard_queries();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let topic = unique_topic("monitoring");
    let port = free_port();
    let testlake_log = dir.path().join("testlake.log");
    let _testlake = Running(
        Command::new(testlake_binary())
            .arg("all")
            .args(["--brokers", &broker.bootstrap(), "--topic", &topic])
            .args(["--landed-topic", &unique_topic("landed"), "--group", &unique_topic("group")])
            .args(["--lake", lake.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .args(["--fleet-rate", "300", "--flush-age", "200ms", "--compute-interval", "2s"])
            .args(["--log-level", "info,datafusion=warn"])
            .env_remove("TESTLAKE_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&testlake_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let testlake_logs = || format!("testlake log:\n{}", std::fs::read_to_string(&testlake_log).unwrap_or_default());
    testlake_tests::broker::wait_for_port(port, "testlake all");

    let prometheus = Prometheus::start(&format!("127.0.0.1:{port}"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let all_logs = || format!("{}\nprometheus log:\n{}", testlake_logs(), prometheus.log());
    wait_for(Duration::from_secs(30), "Prometheus did not become ready", &all_logs, || async {
        client.get(format!("{}/-/ready", prometheus.base)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;

    // Malformed messages among the fleet's: rejections with their reasons.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "not json\n{\"schema_version\": 1}\n{\"schema_version\": 99}\n").unwrap();
    let produced = Command::new(testlake_binary())
        .args(["produce", "--file", bad.to_str().unwrap(), "--brokers", &broker.bootstrap(), "--topic", &topic])
        .args(["--rate", "0"])
        .env_remove("TESTLAKE_CONFIG")
        .output()
        .unwrap();
    assert!(produced.status.success(), "testlake produce: {}", text(&produced));

    wait_for(Duration::from_secs(60), "nothing landed", &all_logs, || async { !landed_ids(&lake).await.is_empty() })
        .await;
    wait_for(Duration::from_secs(60), "no successful compute cycle scraped", &all_logs, || async {
        prometheus.results(&client, r#"testlake_compute_cycles_total{status="success"} > 0"#).await > 0
    })
    .await;

    // Every query answers with data; the API is asked meanwhile, so that request rates, latencies
    // and cache hits have something to show.
    let api = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut empty: Vec<&(String, String)> = queries.iter().collect();
    while !empty.is_empty() && started.elapsed() < Duration::from_secs(90) {
        for path in ["/api/v1/dashboard", "/api/v1/flaky", "/api/v1/dashboard"] {
            let answer = client.get(format!("{api}{path}")).send().await.expect("the API answers");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
        }
        let mut still = Vec::new();
        for query in empty {
            if prometheus.results(&client, &query.1).await == 0 {
                still.push(query);
            }
        }
        empty = still;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !empty.is_empty() {
        let names = prometheus.api(&client, "/api/v1/label/__name__/values", &[]).await.unwrap_or_default();
        let listed: Vec<String> = empty.iter().map(|(title, expr)| format!("  {title}: {expr}")).collect();
        panic!(
            "{} of {} dashboard queries returned no data after {:?}:\n{}\nmetrics Prometheus has: {names}",
            empty.len(),
            queries.len(),
            started.elapsed(),
            listed.join("\n")
        );
    }

    // The alert rules loaded, every one evaluated without error, none firing on a working stack.
    let names = alert_names();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules: Vec<Value> = loop {
        let data = prometheus.api(&client, "/api/v1/rules", &[("type", "alert")]).await.unwrap_or_default();
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() == names.len() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "the alert rules were not all evaluated healthy in 30 s: {rules:?}\n{}",
            all_logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let loaded: BTreeSet<String> = rules.iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(loaded, names, "rules loaded");
    for rule in &rules {
        if rule["state"] != "inactive" {
            eprintln!("{} is {} (alerts: {})", rule["name"], rule["state"], rule["alerts"]);
        }
        assert_eq!(rule["lastError"].as_str().unwrap_or(""), "", "{rule}");
        assert_ne!(rule["state"], "firing", "an alert fires on a working stack: {rule}");
    }
}
