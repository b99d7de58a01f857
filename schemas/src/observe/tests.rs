use std::time::{SystemTime, UNIX_EPOCH};

use super::process::{parse_boot_time, parse_max_fds, parse_rss, parse_stat};
use super::*;

/// The value of the sample `line_start` (name and labels, as printed) in OpenMetrics text.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn stat_fields_are_counted_after_the_command_name() {
    // A command name with spaces and parentheses; fields 14, 15 and 22 are 7, 3 and 4242.
    let line =
        "1234 (tl (x) y) S 1 1234 1234 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 9 0 4242 1000 250 18446744073709551615";
    assert_eq!(parse_stat(line), Some(process::Stat { utime: 7, stime: 3, starttime: 4242 }));
    assert_eq!(parse_stat("1234 (no fields) S 1"), None);
    assert_eq!(parse_stat(""), None);
}

#[test]
fn rss_limits_and_boot_time_parse() {
    assert_eq!(parse_rss("Name:\tx\nVmRSS:\t   2048 kB\nVmData: 1 kB\n"), Some(2048 * 1024));
    assert_eq!(parse_rss("Name:\tx\n"), None);
    assert_eq!(parse_rss("VmRSS: lots kB\n"), None);
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max processes             63469                63469                processes\n\
                  Max open files            1024                 524288               files\n";
    assert_eq!(parse_max_fds(limits), Some(1024));
    assert_eq!(parse_max_fds("Max open files            unlimited            unlimited            files\n"), None);
    assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
    assert_eq!(parse_boot_time("cpu 1\n"), None);
}

#[test]
fn the_status_is_the_worst_component() {
    use Health::*;
    let status = |c: &[Health]| HealthReport::of(c.iter().map(|h| ("c", *h)).collect()).status;
    assert_eq!(status(&[]), Healthy, "no component: nothing is wrong");
    assert_eq!(status(&[Healthy, Healthy]), Healthy);
    assert_eq!(status(&[Healthy, Starting]), Starting);
    assert_eq!(status(&[Starting, Degraded, Healthy]), Degraded);
    assert_eq!(status(&[Degraded, Unhealthy, Starting]), Unhealthy);
    for (h, code) in [(Starting, 200), (Healthy, 200), (Degraded, 200), (Unhealthy, 503)] {
        assert_eq!(HealthReport::of(vec![("c", h)]).http_status(), code, "{h:?}");
    }
    let report = HealthReport::of(vec![("ingest", Degraded), ("serve", Healthy)]);
    assert_eq!(
        report.to_json(),
        serde_json::json!({"status": "degraded", "components": {"ingest": "degraded", "serve": "healthy"}})
    );
}

#[test]
fn component_health_is_one_for_the_current_state_only() {
    let mut telemetry = Telemetry::new();
    let state = Arc::new(std::sync::Mutex::new(Health::Starting));
    let now = Arc::clone(&state);
    telemetry.add_component("ingest", move || *now.lock().unwrap());
    telemetry.add_component("serve", || Health::Healthy);
    for current in Health::ALL {
        *state.lock().unwrap() = current;
        let text = telemetry.encode();
        for s in Health::ALL {
            let line = format!("{COMPONENT_HEALTH}{{component=\"ingest\",state=\"{}\"}}", s.as_str());
            assert_eq!(sample(&text, &line), Some(f64::from(u8::from(s == current))), "{line} in\n{text}");
        }
        assert_eq!(sample(&text, "testlake_component_health{component=\"serve\",state=\"healthy\"}"), Some(1.0));
        assert_eq!(telemetry.health().status, if current == Health::Healthy { Health::Healthy } else { current });
        assert!(text.ends_with("# EOF\n"), "one exposition: {text}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_describe_this_process() {
    let before = Telemetry::new().encode();
    let open_before = sample(&before, "process_open_fds").expect("open fds");
    let files: Vec<_> = (0..5).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
    let text = Telemetry::new().encode();
    drop(files);
    // Other test threads open and close files too: at least the five held here are counted.
    assert!(sample(&text, "process_open_fds").unwrap() >= open_before + 5.0 - 2.0, "{before}\n{text}");
    assert!(sample(&text, "process_max_fds").unwrap() >= 64.0);
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6, "{text}");
    assert!(sample(&text, "process_cpu_seconds_total").unwrap() >= 0.0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = sample(&text, "process_start_time_seconds").unwrap();
    // This test binary started before this test and less than an hour ago (ticks: 10 ms).
    assert!(started <= now + 0.02 && started > now - 3600.0, "started {started}, now {now}");
    assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
}

#[tokio::test]
async fn a_lake_watch_says_whether_the_lake_answers() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let watch = LakeWatch::with_timeout(Duration::from_millis(500));
    assert_eq!(watch.health(), Health::Starting);
    watch.check(&lake).await;
    assert_eq!(watch.health(), Health::Healthy);
    // An S3 lake on a port nothing listens on: the listing does not answer in time.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options: Vec<(String, String)> = [
        ("endpoint", format!("http://127.0.0.1:{port}")),
        ("allow_http", "true".into()),
        ("region", "us-east-1".into()),
        ("access_key_id", "k".into()),
        ("secret_access_key", "s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let broken = Lake::open_with("s3://bucket/lake", &options).unwrap();
    assert!(lake_answers(&broken, Duration::from_millis(500)).await.is_err());
    watch.check(&broken).await;
    assert_eq!(watch.health(), Health::Unhealthy);
    watch.check(&lake).await;
    assert_eq!(watch.health(), Health::Healthy);
}
