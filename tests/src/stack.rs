//! What runs under test: the all-in-one stack in this process ([`TestStack`]), and `testlake`
//! processes ([`IngestRun`]) guarded so that none outlives its test, with the signals and the
//! log lines the tests drive and read them by.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::broker::{Broker, unique_topic};

/// The `testlake` binary next to the running test (cargo builds it with the workspace's tests:
/// `deploy/tests/cli.rs` needs it).
pub fn testlake_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let bin = dir.join("testlake");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build -p testlake`", bin.display());
    bin
}

/// The all-in-one stack on a fresh topic of `broker` and a fresh lake, flushing every 200 ms.
pub struct TestStack {
    pub base: String,
    pub topic: String,
    pub lake_dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestStack {
    pub async fn start(broker: &Broker, prefix: &str, compute: testlake_compute::ComputeConfig) -> Self {
        let topic = unique_topic(prefix);
        testlake::kafka::ensure_topic(&broker.bootstrap(), &topic, 2).await.expect("topic");
        let lake_dir = tempfile::tempdir().expect("tempdir");
        let mut ingest = testlake_ingest::IngestConfig::new(broker.bootstrap(), &topic);
        ingest.group_id = unique_topic("group");
        ingest.flush = testlake_ingest::FlushPolicy {
            max_age: Duration::from_millis(200),
            ..testlake_ingest::FlushPolicy::default()
        };
        let config = testlake::stack::StackConfig {
            lake: lake_dir.path().to_str().expect("utf-8 path").to_owned(),
            lake_options: Vec::new(),
            ingest,
            // Off: tests reading the folders would see a compacted hour twice during the grace.
            compact: testlake_ingest::CompactConfig::off(),
            compute,
            serve: testlake_query::ServeConfig::new("127.0.0.1:0".parse().expect("addr")),
            refresh_caches: true,
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stack = testlake::stack::Stack::start(config, shutdown.clone()).await.expect("stack starts");
        let base = format!("http://{}", stack.addr);
        let running = tokio::spawn(stack.wait());
        Self { base, topic, lake_dir, shutdown, running }
    }

    /// Stops the stack and checks every stage stopped cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running)
            .await
            .expect("the stack stops")
            .expect("no stage panicked")
            .expect("every stage stopped cleanly");
    }
}

/// How to run one `testlake ingest` process.
#[derive(Debug, Clone)]
pub struct IngestRun<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
    pub lake: &'a std::path::Path,
    pub flush_rows: usize,
    pub flush_age: &'a str,
    /// `TESTLAKE_CRASH_AT` for this run.
    pub crash_at: Option<&'a str>,
    /// Where the process's log goes (`None`: discarded, or the test's stderr when
    /// `TESTLAKE_TEST_LOG` is set).
    pub log: Option<&'a std::path::Path>,
}

/// A child process that is killed when the guard drops, so a failing test leaves no process
/// behind.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The partitions the broker last gave an ingest process, from its log (`IngestRun::log`): the
/// list as logged (`[0, 1]`), or `None` after a revocation that no assignment followed, or before
/// any assignment.
pub fn last_assignment(log: &std::path::Path) -> Option<String> {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let last = log.lines().rev().find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))?;
    last.contains("partitions assigned").then(|| last.rsplit("partitions=").next().unwrap_or("").to_owned())
}

impl IngestRun<'_> {
    /// Starts the process (killed when the guard drops). A member that dies is noticed by the
    /// group after 3 s.
    pub fn spawn(&self) -> Running {
        Running(self.command().spawn().expect("spawn testlake ingest"))
    }

    /// The command line of the process, to add arguments to before spawning.
    pub fn command(&self) -> Command {
        let mut cmd = self.command_without_lake();
        cmd.args(["--lake", self.lake.to_str().expect("utf-8 path")]);
        cmd
    }

    /// [`Self::command`] on `lake` (any backend) instead of the folder `self.lake`.
    pub fn command_on(&self, lake: &crate::TestLake) -> Command {
        let mut cmd = self.command_without_lake();
        lake.apply(&mut cmd);
        cmd
    }

    fn command_without_lake(&self) -> Command {
        let mut cmd = Command::new(testlake_binary());
        cmd.args(["ingest", "--brokers", self.brokers, "--topic", self.topic, "--group", self.group])
            .args(["--flush-age", self.flush_age])
            .args(["--flush-rows", &self.flush_rows.to_string()])
            // These tests read the folders, which show a compacted hour twice during the grace.
            .args(["--compact-every", "0s"])
            .args(["--kafka-property", "session.timeout.ms=3000", "--kafka-property", "heartbeat.interval.ms=500"])
            // The landed-notice topic (`testlake-landed` unless a test names one) is created by the
            // first member: the tests' broker has no authorization.
            .arg("--create-topics")
            .env("RUST_LOG", std::env::var("TESTLAKE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null());
        match self.log {
            Some(path) => cmd.stderr(std::fs::File::create(path).expect("log file")),
            None if std::env::var_os("TESTLAKE_TEST_LOG").is_some() => cmd.stderr(Stdio::inherit()),
            None => cmd.stderr(Stdio::null()),
        };
        if let Some(spec) = self.crash_at {
            cmd.env("TESTLAKE_CRASH_AT", spec);
        }
        cmd
    }
}

/// Sends `signal` (`libc` numbers: 15 TERM, 19 STOP, 18 CONT, 9 KILL) to a child process.
pub fn signal(child: &Child, signal: i32) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().expect("kill");
    assert!(status.success(), "kill -{signal} {}", child.id());
}
