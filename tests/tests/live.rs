//! Freshness on real parts: a dashboard connected to `/api/v1/events` is pushed an update when
//! the data it shows changes, a cached answer is never served stale after that update, and a
//! repository whose pass rate drops below the threshold raises an alert.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use testlake::fleet::{Fleet, FleetConfig};
use testlake_compute::ComputeConfig;
use testlake_schemas::{Status, TestEvent};
use testlake_tests::{Broker, SseClient, TestStack, model, produce_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_are_pushed_fresh_numbers_and_alerts() {
    let broker = Broker::start();
    let compute = ComputeConfig { interval: Duration::from_secs(3600), ..ComputeConfig::default() };
    let stack = TestStack::start(&broker, "live", compute).await;
    let (base, topic) = (stack.base.clone(), stack.topic.clone());
    let http = reqwest::Client::new();
    let dashboard = || async {
        let r = http.get(format!("{base}/api/v1/dashboard")).send().await.unwrap();
        let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
        (r.json::<Value>().await.unwrap(), cache)
    };

    let mut sse = SseClient::connect(&format!("{base}/api/v1/events?tables=trends_hourly")).await;
    let (name, _) = sse.next().await.unwrap();
    assert_eq!(name, "ready");
    // Before anything landed: an empty dashboard, cached.
    assert_eq!(dashboard().await.0["runs"], 0);
    assert_eq!(dashboard().await.1, "hit");

    let mut fleet = Fleet::new(FleetConfig { seed: 11, repositories: 2, outage_share: 0.0, ..FleetConfig::default() });
    let mut produced = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..3 {
        let events = fleet.run(Utc::now() - TimeDelta::seconds(1));
        produced.extend(events.clone());
        let started = Instant::now();
        produce_events(&broker.bootstrap(), &topic, &events).await;
        // Updates may come in several notices; wait until the dashboard shows every event.
        let want = model::summary(&produced, None);
        let mut seen = None;
        while started.elapsed() < Duration::from_secs(60) {
            let update = sse.wait_for(Duration::from_secs(60), |name, _| name == "update").await;
            assert!(update.is_some(), "round {round}: no update pushed");
            let (got, _) = dashboard().await;
            if got["runs"].as_i64() == Some(want.runs) {
                seen = Some(got);
                latencies.push(started.elapsed());
                break;
            }
        }
        let got = seen.unwrap_or_else(|| panic!("round {round}: the dashboard never showed {} runs", want.runs));
        assert_eq!(got["passed"].as_i64(), Some(want.passed));
        assert_eq!(got["failed"].as_i64(), Some(want.failed));
        assert!(model::close(got["pass_rate"].as_f64(), want.pass_rate));
        // Later notices of the same landing (another partition's flush, a second recompute) may
        // invalidate it again, but never back to older numbers.
        let (again, _) = dashboard().await;
        assert_eq!(again["runs"].as_i64(), Some(want.runs));
    }
    println!("produce → pushed update → fresh dashboard: {latencies:?}");

    // A repository whose runs today mostly fail raises one alert.
    let mut alerts = SseClient::connect(&format!("{base}/api/v1/events?repository=acme/alerting")).await;
    assert_eq!(alerts.next().await.unwrap().0, "ready");
    let failing: Vec<TestEvent> = produced[..40]
        .iter()
        .map(|e| TestEvent {
            event_id: uuid::Uuid::new_v4(),
            repository: "acme/alerting".into(),
            status: Status::Failed,
            finished_at: Utc::now(),
            ..e.clone()
        })
        .collect();
    produce_events(&broker.bootstrap(), &topic, &failing).await;
    let (_, alert) = alerts
        .wait_for(Duration::from_secs(60), |name, _| name == "alert")
        .await
        .expect("a pass-rate alert for acme/alerting");
    assert_eq!(alert["repository"], "acme/alerting");
    assert_eq!(alert["pass_rate"].as_f64(), Some(0.0));
    // It fires as soon as enough executions have landed to judge (`min_executions`), which can be
    // before all 40 have: they span both Kafka partitions and may land in several flushes.
    let executions = alert["executions"].as_i64().expect("executions");
    let enough = testlake_query::live::AlertConfig::default().min_executions;
    assert!((enough..=40).contains(&executions), "alert on {executions} executions: {alert}");

    stack.stop().await;
}
