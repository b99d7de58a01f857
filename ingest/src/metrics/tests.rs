use super::*;

fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

fn encoded(metrics: &IngestMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    testlake_schemas::observe::encode(&registry)
}

fn observed(
    joined: bool,
    broker_down: Option<u64>,
    store_failing: Option<u64>,
    lag: &[(i32, u64)],
) -> (Observed, Instant) {
    let now = Instant::now() + Duration::from_secs(3600);
    let ago = |s: Option<u64>| s.map(|s| now - Duration::from_secs(s));
    let seen = Observed {
        joined,
        broker_down_since: ago(broker_down),
        store_failing_since: ago(store_failing),
        lag: lag.iter().copied().collect(),
    };
    (seen, now)
}

#[test]
fn health_follows_the_rule_in_each_state() {
    let rule = HealthRule { lag_degraded: 100, unhealthy_after: Duration::from_secs(30) };
    let health = |joined, broker, store, lag: &[(i32, u64)]| {
        let (seen, now) = observed(joined, broker, store, lag);
        rule.health(&seen, now)
    };
    assert_eq!(health(false, None, None, &[]), Health::Starting);
    assert_eq!(health(false, Some(29), None, &[]), Health::Starting, "not reachable yet, not for long");
    assert_eq!(health(true, None, None, &[(0, 60), (1, 40)]), Health::Healthy, "100 behind is not past 100");
    assert_eq!(health(true, None, None, &[(0, 60), (1, 41)]), Health::Degraded, "the sum over partitions");
    assert_eq!(health(true, Some(5), None, &[]), Health::Degraded, "the broker unreachable briefly");
    assert_eq!(health(true, None, Some(29), &[]), Health::Degraded, "the store failing briefly");
    assert_eq!(health(true, Some(30), None, &[]), Health::Unhealthy);
    assert_eq!(health(true, None, Some(30), &[]), Health::Unhealthy);
    assert_eq!(health(false, Some(31), None, &[]), Health::Unhealthy, "never reached a broker");
}

#[test]
fn observations_drive_health_and_readiness() {
    let metrics = IngestMetrics::default();
    let rule = HealthRule { lag_degraded: 10, unhealthy_after: Duration::from_secs(30) };
    assert_eq!(metrics.health(&rule), Health::Starting);
    assert!(metrics.ready().is_err());
    metrics.joined();
    assert_eq!(metrics.health(&rule), Health::Healthy, "joined before any statistics: a broker answered");
    let metrics = IngestMetrics::default();
    metrics.consumer_statistics(true, BTreeMap::new());
    assert!(metrics.ready().is_err(), "not joined yet");
    metrics.joined();
    assert_eq!(metrics.health(&rule), Health::Healthy);
    assert_eq!(metrics.ready(), Ok(()));
    metrics.consumer_statistics(true, [(0, 11)].into());
    assert_eq!(metrics.health(&rule), Health::Degraded);
    metrics.revoked([0]);
    assert_eq!(metrics.health(&rule), Health::Healthy, "a revoked partition's lag is not this member's");
    metrics.flush_failed();
    assert_eq!(metrics.health(&rule), Health::Degraded);
    metrics.committed(Duration::from_millis(3));
    assert_eq!(metrics.health(&rule), Health::Healthy);
    metrics.consumer_statistics(false, BTreeMap::new());
    assert_eq!(metrics.health(&rule), Health::Degraded);
    assert!(metrics.ready().is_err());
    let zero = HealthRule { unhealthy_after: Duration::ZERO, ..rule };
    assert_eq!(metrics.health(&zero), Health::Unhealthy);
}

#[test]
fn lag_gauges_are_kept_for_assigned_partitions_only() {
    let metrics = IngestMetrics::default();
    metrics.consumer_statistics(true, [(0, 5), (1, 7)].into());
    let text = encoded(&metrics);
    assert_eq!(sample(&text, "testlake_ingest_consumer_lag{partition=\"0\"}"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "testlake_ingest_consumer_lag{partition=\"1\"}"), Some(7.0));
    metrics.consumer_statistics(true, [(1, 2)].into());
    let text = encoded(&metrics);
    assert!(!text.contains("partition=\"0\""), "no longer assigned: {text}");
    metrics.revoked([1]);
    assert!(!encoded(&metrics).contains("testlake_ingest_consumer_lag{"));
}

#[test]
fn counters_and_histograms_count_what_happened() {
    let metrics = IngestMetrics::default();
    for _ in 0..3 {
        metrics.message_accepted();
    }
    metrics.message_rejected("invalid_json");
    metrics.message_rejected("invalid_json");
    metrics.message_rejected("missing_field");
    metrics.landed(6, 3, 2, 1000, Duration::from_millis(30));
    metrics.landed(4, 0, 1, 10, Duration::from_millis(3));
    metrics.committed(Duration::from_millis(2));
    metrics.consumption_paused(Duration::from_millis(1500));
    let text = encoded(&metrics);
    let expect = [
        ("testlake_ingest_messages_total", 6.0),
        ("testlake_ingest_events_total", 3.0),
        ("testlake_ingest_rejected_total{reason=\"invalid_json\"}", 2.0),
        ("testlake_ingest_rejected_total{reason=\"missing_field\"}", 1.0),
        ("testlake_ingest_flushes_total", 2.0),
        ("testlake_ingest_files_written_total", 3.0),
        ("testlake_ingest_parquet_bytes_total", 1010.0),
        ("testlake_ingest_flush_rows_count", 2.0),
        ("testlake_ingest_flush_rows_sum", 10.0),
        ("testlake_ingest_flush_rows_bucket{le=\"10.0\"}", 2.0),
        ("testlake_ingest_flush_duration_seconds_count", 2.0),
        ("testlake_ingest_flush_duration_seconds_bucket{le=\"0.005\"}", 1.0),
        ("testlake_ingest_commit_duration_seconds_count", 1.0),
        ("testlake_ingest_paused_seconds_total", 1.5),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
    assert_eq!(metrics.rejected(), 3);
    let landed = sample(&text, "testlake_ingest_last_landed_timestamp_seconds").unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(landed > now - 60.0 && landed <= now, "{landed} vs {now}");
}

#[test]
fn statistics_give_reachability_and_the_lag_of_assigned_partitions() {
    // The shape librdkafka writes (trimmed): a bootstrap and a learned broker, the internal
    // partition -1, an assigned partition with messages handed out, one before any, one not
    // assigned, and one whose watermarks are not known yet.
    let json = r#"{
      "name": "rdkafka#consumer-1", "type": "consumer", "ts": 1,
      "brokers": {
        "127.0.0.1:9092/bootstrap": {"name": "127.0.0.1:9092/bootstrap", "nodeid": -1, "state": "UP"},
        "localhost:9092/1": {"name": "localhost:9092/1", "nodeid": 1, "state": "DOWN"}
      },
      "topics": {"events": {"topic": "events", "partitions": {
        "-1": {"partition": -1, "desired": false, "fetch_state": "none", "hi_offset": -1001},
        "0": {"partition": 0, "desired": true, "fetch_state": "active", "app_offset": 40,
              "committed_offset": 30, "lo_offset": 0, "hi_offset": 120, "ls_offset": 100},
        "1": {"partition": 1, "desired": true, "fetch_state": "active", "app_offset": -1001,
              "committed_offset": 10, "lo_offset": 0, "hi_offset": 50, "ls_offset": -1001},
        "2": {"partition": 2, "desired": false, "fetch_state": "none", "app_offset": 1, "hi_offset": 9, "ls_offset": 9},
        "3": {"partition": 3, "desired": true, "fetch_state": "offset-query", "app_offset": -1001,
              "committed_offset": -1001, "lo_offset": -1001, "hi_offset": -1001, "ls_offset": -1001}
      }}}
    }"#;
    let stats: ConsumerStatistics = serde_json::from_str(json).unwrap();
    assert!(stats.broker_up());
    assert_eq!(stats.lag("events"), BTreeMap::from([(0, 60), (1, 40)]));
    assert_eq!(stats.lag("other"), BTreeMap::new());
    let down: ConsumerStatistics =
        serde_json::from_str(r#"{"brokers": {"b/1": {"state": "CONNECT"}, "b/2": {"state": "DOWN"}}}"#).unwrap();
    assert!(!down.broker_up());
    assert!(serde_json::from_str::<ConsumerStatistics>("{}").is_ok_and(|s| !s.broker_up()));
}
