//! Compute's schedule on a real (local filesystem) lake holding committed results: the periodic
//! cycle's lookbacks, batch size and skips, notices for old dates, metrics and health; the
//! backfill command; two compute processes sharing a lake through leases (also on S3: moto).
//! Faults that must not stop or mislead compute: a listing error during a notice-driven
//! recompute, a notice that was never sent (reconciliation), a lease holder that outlived its
//! lease (the fence; also on S3).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{NaiveDate, TimeDelta, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_compute::{ComputeConfig, Scheduler};
use testlake_schemas::{Lake, TestEvent};
use testlake_tests::{Backend, TestLake, land_committed, model};

/// Daily runs per date in `trends_daily`. A read racing compute's atomic replace of a file can
/// fail (the listed size no longer matches); it is read again, as the query service does.
async fn daily_runs(lake: &Lake) -> BTreeMap<String, i64> {
    let mut attempt = 0;
    let batches = loop {
        let ctx = testlake_compute::catalog::lake_session(lake).await.unwrap();
        let sql = "SELECT date, CAST(sum(runs) AS BIGINT) FROM trends_daily GROUP BY date ORDER BY date";
        match ctx.sql(sql).await.unwrap().collect().await {
            Ok(batches) => break batches,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("read raced a replace, again: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut out = BTreeMap::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.insert(
                b.column(0).as_string::<i32>().value(row).to_owned(),
                b.column(1).as_primitive::<Int64Type>().value(row),
            );
        }
    }
    out
}

async fn dates_of(lake: &Lake, table: &str) -> BTreeSet<String> {
    let ctx = testlake_compute::catalog::lake_session(lake).await.unwrap();
    let batches = ctx.sql(&format!("SELECT DISTINCT date FROM {table}")).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn runs_by_date(events: &[TestEvent]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for ((start, ..), trend) in model::trends(events, TimeDelta::days(1)) {
        *out.entry(start.date_naive().to_string()).or_default() += trend.runs;
    }
    out
}

/// One fleet run ending ten minutes before `days` days ago, for each of `days`.
fn events_on(fleet: &mut Fleet, days: &[i64]) -> Vec<TestEvent> {
    days.iter().flat_map(|d| fleet.run(Utc::now() - TimeDelta::days(*d) - TimeDelta::minutes(10))).collect()
}

#[tokio::test]
async fn the_cycle_recomputes_changed_dates_within_its_lookbacks_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let mut events = events_on(&mut fleet, &[4, 3, 2, 1, 0]);
    let mut next = land_committed(&lake, "ci", 0, 0, &events).await;
    let config = ComputeConfig {
        interval: Duration::from_secs(3600),
        hourly_lookback: Duration::from_secs(2 * 86_400),
        daily_lookback: Duration::from_secs(3 * 86_400),
        batch_size: 2,
        flaky_refresh: Duration::from_secs(3600),
        ..ComputeConfig::default()
    };
    let mut scheduler = Scheduler::new(lake.clone(), config, None);
    let day = |d: i64| (Utc::now() - TimeDelta::days(d) - TimeDelta::minutes(10)).date_naive().to_string();

    // Cycle 1: the two newest of the four dates in the daily lookback, and the flaky snapshot.
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (3, 0, 0), "{t:?}");
    assert_eq!(dates_of(&lake, "trends_daily").await, [day(1), day(0)].into());
    // Cycle 2: the other two; the first two are unchanged (two tables each).
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (2, 4, 0), "{t:?}");
    // Cycle 3: nothing changed: 3 hourly + 4 daily partitions skipped.
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (0, 7, 0), "{t:?}");
    assert_eq!(dates_of(&lake, "trends_daily").await, [day(3), day(2), day(1), day(0)].into());
    assert_eq!(dates_of(&lake, "trends_hourly").await, [day(2), day(1), day(0)].into(), "hourly lookback is 2 days");

    // A notice reaches past the lookback: late data for an old date.
    let t = scheduler.on_notices(&[NaiveDate::parse_from_str(&day(4), "%Y-%m-%d").unwrap()].into()).await.unwrap();
    assert_eq!((t.completed, t.failed), (1, 0));
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));
    // The same numbers as an independent Delta reader (PyPI deltalake and polars) sees the table.
    let location = dir.path().to_str().unwrap();
    assert_eq!(testlake_tests::delta::delta_sums(location, &[], "trends_daily", "runs"), runs_by_date(&events));

    // New data for today: only today is recomputed.
    let more = events_on(&mut fleet, &[0]);
    next = land_committed(&lake, "ci", 0, next, &more).await;
    assert!(next > 0);
    events.extend(more);
    let t = scheduler.cycle().await.unwrap();
    assert_eq!((t.completed, t.skipped, t.failed), (1, 5, 0), "{t:?}");
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));

    let metrics = scheduler.metrics();
    assert_eq!(metrics.health().as_str(), "healthy");
    let text = metrics.encode();
    for line in [
        "testlake_compute_cycles_total{status=\"success\"} 4",
        "testlake_compute_cycles_total{status=\"failed\"} 0",
        "testlake_compute_tasks_total{task=\"trends_daily\",outcome=\"skipped\"} 9",
        "testlake_compute_tasks_total{task=\"flaky_scores\",outcome=\"completed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn backfill_recomputes_a_range_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let events = events_on(&mut fleet, &[5, 4, 3]);
    land_committed(&lake, "ci", 0, 0, &events).await;
    let day = |d: i64| (Utc::now() - TimeDelta::days(d) - TimeDelta::minutes(10)).date_naive().to_string();
    let output = std::process::Command::new(testlake_tests::testlake_binary())
        .args(["compute", "--lake", dir.path().to_str().unwrap(), "backfill", "--from", &day(5), "--to", &day(3)])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("] 3/3 ") && stderr.contains("completed 6 skipped 0 failed 0"), "{stderr}");
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));
    assert_eq!(dates_of(&lake, "flaky_scores").await, [day(5), day(4), day(3)].into());
    let bad = std::process::Command::new(testlake_tests::testlake_binary())
        .args(["compute", "--lake", dir.path().to_str().unwrap(), "backfill", "--from", &day(3), "--to", &day(5)])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must not be after"));
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (date, start, end) of every trends task a compute log shows.
fn task_spans(log: &str) -> Vec<(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)> {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let mut open: BTreeMap<String, chrono::DateTime<Utc>> = BTreeMap::new();
    let mut spans = Vec::new();
    for line in log.lines().filter(|l| l.contains("task=\"trends\"")) {
        let Some(at) = line.split_whitespace().next().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
            continue;
        };
        let date = field(line, "date").expect("a date");
        if line.contains(" started ") || line.ends_with(" started") || line.contains(": started") {
            open.insert(date, at.to_utc());
        } else if line.contains("outcome=\"completed\"") || line.contains("outcome=\"failed\"") {
            let start = open.remove(&date).unwrap_or_else(|| panic!("an end without a start: {line}"));
            spans.push((date, start, at.to_utc()));
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compute_processes_never_recompute_a_partition_at_once() {
    two_compute_processes(Backend::Local).await;
}

/// On moto: the leases' create-only puts race for real (`If-None-Match: *`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compute_processes_never_recompute_a_partition_at_once_on_s3() {
    two_compute_processes(Backend::Moto).await;
}

async fn two_compute_processes(backend: Backend) {
    let test_lake = TestLake::start(backend);
    let (lake, dir) = (&test_lake.lake, test_lake.scratch());
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, tests_per_suite: 10, ..FleetConfig::default() });
    let mut events = events_on(&mut fleet, &[3, 2, 1, 0]);
    let mut next = land_committed(lake, "ci", 0, 0, &events).await;
    let probe_port = testlake_tests::free_port();
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        Child(
            test_lake
                .apply(std::process::Command::new(testlake_tests::testlake_binary()).arg("compute"))
                .args(["--compute-interval", "150ms"])
                .args(["--hourly-lookback", "10days", "--daily-lookback", "10days", "--flaky-refresh", "1h"])
                .args(if name == "a" {
                    vec!["--compute-listen".to_owned(), format!("127.0.0.1:{probe_port}")]
                } else {
                    vec![]
                })
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info,datafusion=warn")
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let (a, b) = (spawn("a"), spawn("b"));
    // Data keeps landing on every date while both run, so both keep finding work.
    for round in 0..12 {
        let more = events_on(&mut fleet, &[round % 4]);
        next = land_committed(lake, "ci", 0, next, &more).await;
        events.extend(more);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let want = runs_by_date(&events);
    let started = std::time::Instant::now();
    while daily_runs(lake).await != want {
        assert!(started.elapsed() < Duration::from_secs(60), "compute never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A standalone compute process reports its health and metrics.
    let health: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{probe_port}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{probe_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("testlake_compute_cycles_total{status=\"success\"}"), "{metrics}");
    drop((a, b));

    let logs: Vec<String> =
        ["a", "b"].iter().map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap()).collect();
    let spans: Vec<_> = logs.iter().map(|l| task_spans(l)).collect();
    assert!(
        spans.iter().all(|s| !s.is_empty()),
        "both processes recomputed something: {:?}",
        spans.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut overlaps = 0;
    for (date, start, end) in &spans[0] {
        for (other_date, other_start, other_end) in &spans[1] {
            if date == other_date && start < other_end && other_start < end {
                overlaps += 1;
                eprintln!("overlap on {date}: a {start}..{end}, b {other_start}..{other_end}");
            }
        }
    }
    assert_eq!(overlaps, 0, "no partition recomputed by both at once");
    let held = logs.iter().map(|l| l.matches("another process holds the lease").count()).sum::<usize>();
    println!("tasks: a {}, b {}; skipped because the other held the lease: {held}", spans[0].len(), spans[1].len());
}

/// A store that fails every listing while `fail_lists` is set, and holds the puts of computed
/// files (`trends_…`) while `hold` is set.
#[derive(Debug)]
struct Controlled {
    inner: Arc<dyn object_store::ObjectStore>,
    fail_lists: AtomicBool,
    hold: tokio::sync::watch::Sender<bool>,
    held: AtomicU64,
}

impl Controlled {
    fn new(inner: Arc<dyn object_store::ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_lists: AtomicBool::new(false),
            hold: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
        })
    }

    fn list_fault(&self) -> object_store::Error {
        object_store::Error::Generic { store: "controlled", source: "injected fault: list failed".into() }
    }

    /// Waits until a put is being held.
    async fn wait_held(&self) {
        let started = std::time::Instant::now();
        while self.held.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(60), "no put of a computed file came");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl std::fmt::Display for Controlled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Controlled({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Controlled {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if location.as_ref().contains("trends_") && *self.hold.borrow() {
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = self.hold.subscribe().wait_for(|hold| !*hold).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        if self.fail_lists.load(Ordering::SeqCst) {
            return futures::stream::once(std::future::ready(Err(self.list_fault()))).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        if self.fail_lists.load(Ordering::SeqCst) {
            return Err(self.list_fault());
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn date_of(day: i64) -> NaiveDate {
    (Utc::now() - TimeDelta::days(day) - TimeDelta::minutes(10)).date_naive()
}

fn results_notice(date: NaiveDate) -> testlake_schemas::Landed {
    let partition = testlake_schemas::HourPartition { date, hour: 0 };
    testlake_schemas::Landed::new(testlake_schemas::Table::Results, partition, vec![], 1)
}

/// The value of the unlabelled metric `name` in compute's metrics.
fn metric(metrics: &testlake_compute::metrics::ComputeMetrics, line: &str) -> Option<f64> {
    let text = metrics.encode();
    text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// Waits (up to a minute) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listing that fails while dates named by notices are recomputed used to end compute (and
/// `testlake all` with it) through a `?`. Now it is logged and counted, and the dates are
/// recomputed with the next notice once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_error_during_a_notice_recompute_is_retried_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let store = Controlled::new(Arc::new(object_store::local::LocalFileSystem::new()));
    let lake = Lake::with_store(url::Url::from_directory_path(dir.path()).unwrap(), store.clone());
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let events = events_on(&mut fleet, &[20, 19]);
    land_committed(&plain, "ci", 0, 0, &events).await;

    // Notices alone drive this compute: no periodic cycle, no reconciliation.
    let config = ComputeConfig {
        interval: Duration::ZERO,
        reconcile_interval: Duration::ZERO,
        debounce: Duration::from_millis(20),
        ..ComputeConfig::default()
    };
    let scheduler = Scheduler::new(lake, config, None);
    let metrics = scheduler.metrics();
    let (tx, rx) = tokio::sync::broadcast::channel(16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(testlake_compute::run(scheduler, Some(rx), shutdown.clone()));

    store.fail_lists.store(true, Ordering::SeqCst);
    tx.send(results_notice(date_of(20))).unwrap();
    let failures = "testlake_compute_notice_failures_total ";
    eventually("the failed recompute is counted", || async { metric(&metrics, failures) >= Some(1.0) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished(), "compute ended: {:?}", running.await);

    // The store answers again; the next notice (another date) brings the failed one along.
    store.fail_lists.store(false, Ordering::SeqCst);
    tx.send(results_notice(date_of(19))).unwrap();
    let want = runs_by_date(&events);
    eventually("both dates computed", || async { daily_runs(&plain).await == want }).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();
}

/// A file whose notice was never sent, on a date far past both lookbacks, is found by the
/// reconciliation of a freshly started compute within one interval: its trends match the model
/// and the rewrite is announced (what invalidates the query service's cache). A date whose
/// inputs did not change is not recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_landed_without_a_notice_is_reconciled_within_an_interval_at_any_age() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
    let (old, recent) = (date_of(40), date_of(1));
    let mut events = events_on(&mut fleet, &[40, 1]);
    let next = land_committed(&lake, "ci", 0, 0, &events).await;
    let t =
        Scheduler::new(lake.clone(), ComputeConfig::default(), None).on_notices(&[old, recent].into()).await.unwrap();
    assert_eq!((t.completed, t.failed), (2, 0));

    // Another compute process, started afresh (nothing in memory), without notices; its periodic
    // cycle (hourly) keeps the dates within the lookbacks, reconciliation the rest.
    let interval = Duration::from_millis(500);
    let config = ComputeConfig {
        interval: Duration::from_secs(3600),
        reconcile_interval: interval,
        flaky_refresh: Duration::from_secs(3600),
        ..ComputeConfig::default()
    };
    let (announce, mut announced) = tokio::sync::broadcast::channel(64);
    let scheduler = Scheduler::new(lake.clone(), config, Some(announce));
    let metrics = scheduler.metrics();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(testlake_compute::run(scheduler, None, shutdown.clone()));
    let passes = "testlake_compute_reconciliations_total{status=\"success\"} ";
    eventually("a first reconciliation", || async { metric(&metrics, passes) >= Some(1.0) }).await;
    assert_eq!(metric(&metrics, "testlake_compute_reconciled_dates_total "), Some(0.0), "nothing was stale");
    let cycles = "testlake_compute_cycles_total{status=\"success\"} ";
    eventually("the first cycle", || async { metric(&metrics, cycles) >= Some(1.0) }).await;
    while announced.try_recv().is_ok() {} // the cycle's recompute of the recent date

    // More results land on the old date; their notice is lost.
    let more = events_on(&mut fleet, &[40]);
    land_committed(&lake, "ci", 0, next, &more).await;
    events.extend(more);
    let landed = std::time::Instant::now();
    let mut rewritten = BTreeSet::new();
    while rewritten.len() < 2 {
        let notice = tokio::time::timeout(Duration::from_secs(60), announced.recv()).await.unwrap().unwrap();
        if notice.table != testlake_schemas::Table::FlakyScores {
            assert_eq!(notice.date, old, "only the date whose inputs changed is recomputed: {notice:?}");
            rewritten.insert(notice.table);
        }
    }
    let took = landed.elapsed();
    println!("reconciled {took:?} after landing (interval {interval:?})");
    assert!(took < interval + Duration::from_secs(10), "took {took:?}");
    assert_eq!(daily_runs(&lake).await, runs_by_date(&events));
    assert_eq!(metric(&metrics, "testlake_compute_reconciled_dates_total "), Some(1.0));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();
}

/// Runs of `date` in `table` (`trends_hourly` or `trends_daily`).
async fn runs_in(lake: &Lake, table: &str, date: NaiveDate) -> i64 {
    let ctx = testlake_compute::catalog::lake_session(lake).await.unwrap();
    let sql = format!("SELECT CAST(coalesce(sum(runs), 0) AS BIGINT) FROM {table} WHERE date = '{date}'");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Compute process A takes a date's lease, computes it, and is held before its writes until its
/// lease has expired; B takes the lease over, computes the date with the results that landed
/// meanwhile and writes it; then A's writes go ahead. The fence refuses them: the trends keep
/// B's newer numbers. On stores with conditional updates (in memory, and S3 on moto: `If-Match`)
/// and one without (local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_holder_never_overwrites_its_successors_trends() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Lake::in_memory();
    let local: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
    let s3 = TestLake::start(Backend::Moto);
    for (url, inner) in [
        (memory.url().clone(), Arc::clone(memory.store())),
        (url::Url::from_directory_path(dir.path()).unwrap(), local),
        (s3.lake.url().clone(), Arc::clone(s3.lake.store())),
    ] {
        let plain = Lake::with_store(url.clone(), Arc::clone(&inner));
        let store = Controlled::new(inner);
        let slow = Lake::with_store(url, store.clone());
        let mut fleet = Fleet::new(FleetConfig { repositories: 1, ..FleetConfig::default() });
        let date = date_of(3);
        let mut events = events_on(&mut fleet, &[3]);
        let next = land_committed(&plain, "ci", 0, 0, &events).await;
        // Computed once already: A replaces a file (with a conditional update where there is one).
        Scheduler::new(plain.clone(), ComputeConfig::default(), None).on_notices(&[date].into()).await.unwrap();

        let short = ComputeConfig { lease_ttl: Duration::from_millis(200), ..ComputeConfig::default() };
        let mut a = Scheduler::new(slow, short, None);
        store.hold.send_replace(true);
        let a_run = tokio::spawn(async move {
            let tally = a.on_notices(&[date].into()).await.unwrap();
            (tally, a.metrics())
        });
        store.wait_held().await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let more = events_on(&mut fleet, &[3]);
        land_committed(&plain, "ci", 0, next, &more).await;
        events.extend(more);
        let t = Scheduler::new(plain.clone(), ComputeConfig::default(), None).on_notices(&[date].into()).await.unwrap();
        assert_eq!((t.completed, t.failed), (1, 0), "B took the expired lease");
        let want = runs_by_date(&events)[&date.to_string()];
        assert_eq!(runs_in(&plain, "trends_daily", date).await, want);

        store.hold.send_replace(false);
        let (t, metrics) = a_run.await.unwrap();
        assert_eq!((t.completed, t.skipped, t.failed), (0, 1, 0), "A's writes were fenced");
        for table in ["trends_hourly", "trends_daily"] {
            assert_eq!(runs_in(&plain, table, date).await, want, "{table} keeps B's numbers");
            let line = format!("testlake_compute_fenced_writes_total{{table=\"{table}\"}} ");
            assert_eq!(metric(&metrics, &line), Some(1.0), "{table}");
        }
    }
}
