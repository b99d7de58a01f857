//! The dashboard page in a real headless browser (Chromium driven over WebDriver by
//! `chromedriver`, both installed by the set-up script), against the all-in-one stack on a real
//! broker: the page shows the API's numbers, drills down into a flaky test's history, and
//! updates itself when new data lands — pushed over Server-Sent Events, no reload.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_compute::ComputeConfig;
use testlake_schemas::TestEvent;
use testlake_tests::{Broker, TestStack, free_port, produce_events};

/// A chromedriver process and one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        // Its own process group, so that dropping it ends the browsers it started too: killing
        // chromedriver alone left every Chromium of the session running, one set per test run.
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (deploy/scripts/setup.sh installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"] } } } });
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        Self { driver, base, session, http }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let answer: Value = self.http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// Runs `script` in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Polls `script` until `want` accepts its value; panics with the last value after `timeout`.
    async fn wait_until(&self, what: &str, timeout: Duration, script: &str, want: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script).await;
            if want(&value) {
                return value;
            }
            assert!(started.elapsed() < timeout, "{what}: still {value} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_shows_drills_down_and_updates_live() {
    let broker = Broker::start();
    let compute = ComputeConfig { flaky_refresh: Duration::from_millis(300), ..ComputeConfig::default() };
    let stack = TestStack::start(&broker, "page", compute).await;
    let (base, topic) = (stack.base.clone(), stack.topic.clone());

    let mut fleet = Fleet::new(FleetConfig { seed: 5, repositories: 2, outage_share: 0.0, ..FleetConfig::default() });
    let now = Utc::now();
    let events: Vec<TestEvent> = (0..12).flat_map(|i| fleet.run(now - TimeDelta::minutes(90 - 5 * i))).collect();
    produce_events(&broker.bootstrap(), &topic, &events).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let flaky = loop {
        let dashboard: Value = http.get(format!("{base}/api/v1/dashboard")).send().await.unwrap().json().await.unwrap();
        let flaky: Value = http.get(format!("{base}/api/v1/flaky")).send().await.unwrap().json().await.unwrap();
        if dashboard["runs"].as_i64() == Some(events.len() as i64) && flaky["total"].as_u64().is_some_and(|t| t > 0) {
            break flaky;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the stack never caught up: {dashboard}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let page = http.get(&base).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");

    let browser = Browser::start().await;
    browser.open(&base).await;
    browser
        .wait_until(
            "the event stream connects",
            Duration::from_secs(30),
            "return document.getElementById('status').textContent",
            |v| v == "live",
        )
        .await;
    let runs = thousands(events.len() as i64);
    browser
        .wait_until(
            "the summary shows every run",
            Duration::from_secs(30),
            "return document.getElementById('runs').textContent",
            |v| *v == json!(runs),
        )
        .await;
    let total = flaky["total"].as_u64().unwrap();
    browser
        .wait_until(
            "the flaky list",
            Duration::from_secs(30),
            "return document.querySelectorAll('#flaky tr').length",
            |v| v.as_u64() == Some(total.min(50)),
        )
        .await;
    assert_eq!(
        browser.eval("return document.getElementById('flaky-count').textContent").await,
        json!(format!("{total} flaky"))
    );
    let bars = browser.eval("return document.querySelectorAll('#chart rect').length").await;
    assert!(bars.as_u64().is_some_and(|n| n >= 1), "the chart has bars: {bars}");
    let csv = browser.eval("return document.getElementById('export-csv').href").await;
    assert!(csv.as_str().is_some_and(|h| h.contains("format=csv")), "{csv}");

    // Drill down: the first flaky test's executions, as the API lists them.
    let first = &flaky["rows"][0];
    let history: Value = http
        .get(format!("{base}/api/v1/tests/history"))
        .query(&[
            ("repository", first["repository"].as_str().unwrap()),
            ("test_id", first["test_id"].as_str().unwrap()),
            ("size", "200"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    browser.eval("document.querySelector('#flaky tr').click(); return true").await;
    browser
        .wait_until(
            "the history table",
            Duration::from_secs(30),
            "return document.querySelectorAll('#history tr').length",
            |v| v.as_u64() == Some(history["total"].as_u64().unwrap().min(200)),
        )
        .await;

    // New data lands: the page updates itself.
    let more = fleet.run(Utc::now() - TimeDelta::seconds(1));
    produce_events(&broker.bootstrap(), &topic, &more).await;
    let runs = thousands((events.len() + more.len()) as i64);
    browser
        .wait_until(
            "the pushed update",
            Duration::from_secs(30),
            "return document.getElementById('runs').textContent",
            |v| *v == json!(runs),
        )
        .await;
    assert_eq!(browser.eval("return document.getElementById('error').textContent").await, json!(""));

    drop(browser);
    stack.stop().await;
}
