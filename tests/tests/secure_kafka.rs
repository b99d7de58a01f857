//! testlake against secured Kafka (`tests/src/secure.rs`: stunnel for TLS, the SASL proxy for
//! PLAIN and SCRAM, both for SASL_SSL), every client through its shared configuration: the
//! ingest's consumer, the admin client creating its topics, the landed-notice publisher,
//! compute's notice follower and publisher, `testlake produce`, `testlake junit` and `testlake
//! all`; and PyPI confluent-kafka as an outside producer. Every event lands once, counted against
//! what the test produced. An untrusted certificate and a wrong password stop a process at start
//! with an error naming the cause, within seconds; no password appears in any process's log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_schemas::TestEvent;
use testlake_tests::s3::venv_tool;
use testlake_tests::{
    Running, SecureKafka, Security, free_port, landed_ids, testlake_binary, trend_runs, unique_topic,
};

/// Three attempts of two tests: one flaky (a failure, then a pass), one failing and re-run.
const REPORT: &str = r#"<testsuite name="com.acme.SecureTest" timestamp="2026-11-27T10:00:00">
  <testcase classname="com.acme.SecureTest" name="flaky" time="0.25"><flakyFailure message="nope"/></testcase>
  <testcase classname="com.acme.SecureTest" name="broken" time="0.5">
    <failure message="boom">at Secure.broken</failure>
    <rerunFailure message="boom again"/>
  </testcase>
  <testcase classname="com.acme.SecureTest" name="fine" time="0.1"/>
</testsuite>"#;
/// The events [`REPORT`] becomes: one per attempt, counted by hand.
const REPORT_EVENTS: usize = 5;

/// How long a process refused by the broker may take to say so.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);

/// A test's folder, its processes' logs and the secrets none of them may print.
struct Scene {
    dir: tempfile::TempDir,
    secrets: Vec<String>,
}

impl Scene {
    fn new(secrets: &[&str]) -> Self {
        Self { dir: tempfile::tempdir().unwrap(), secrets: secrets.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn lake(&self) -> PathBuf {
        self.path("lake")
    }

    /// Writes a file of the test's folder.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `testlake args…`, logging to `<log>.log` in the test's folder at debug level.
    fn testlake<S: AsRef<std::ffi::OsStr>>(&self, log: &str, args: &[S]) -> Command {
        let mut command = Command::new(testlake_binary());
        command
            .args(args)
            .env("RUST_LOG", "debug,datafusion=info,hyper=info,reqwest=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(&format!("{log}.log"))).unwrap());
        command
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{log}.log"))).unwrap_or_default()
    }

    /// Runs a command to its end; it must succeed.
    fn run(&self, log: &str, command: &mut Command) {
        let status = command.status().unwrap();
        assert!(status.success(), "{log} failed:\n{}", self.log(log));
    }

    /// Starts a long-running process and waits until its log says `ready`.
    fn start(&self, log: &str, command: &mut Command, ready: &str) -> Running {
        let mut process = Running(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log(log).contains(ready) {
            assert!(process.try_wait().unwrap().is_none(), "{log} exited:\n{}", self.log(log));
            assert!(Instant::now() < deadline, "{log} never said {ready:?}:\n{}", self.log(log));
            std::thread::sleep(Duration::from_millis(100));
        }
        process
    }

    /// Runs a process the broker must refuse: it fails within [`REFUSED_WITHIN`], its error
    /// naming every one of `causes`.
    fn refused(&self, log: &str, command: &mut Command, causes: &[&str]) {
        let started = Instant::now();
        let mut process = Running(command.spawn().unwrap());
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < REFUSED_WITHIN,
                "{log} still running after {REFUSED_WITHIN:?}:\n{}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log_text = self.log(log);
        let error = log_text
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or_else(|| panic!("{log}: no error:\n{log_text}"));
        assert!(!status.success(), "{log} succeeded");
        for cause in causes {
            assert!(error.contains(cause), "{log}: {cause:?} not in {error:?}");
        }
    }

    /// `testlake junit` produces [`REPORT`] to `topic` with the Kafka `properties` file.
    fn junit(&self, brokers: &str, topic: &str, properties: &str) {
        let report = self.write("TEST-com.acme.SecureTest.xml", REPORT);
        let mut junit = self.testlake("junit", &["junit", "--brokers", brokers, "--topic", topic]);
        junit.args(["--kafka-properties", properties, "--repository", "acme/secure", "--branch", "main"]);
        self.run("junit", junit.args(["--commit", "c0ffee", "--run-id", "1"]).arg(&report));
    }

    /// Checks that no process of the test printed a secret (each log whole: debug level).
    fn assert_no_secret_in_logs(&self) {
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.contains("kafka client configuration"),
                    "{} never logged its configuration",
                    path.display()
                );
                for secret in &self.secrets {
                    assert!(!text.contains(secret.as_str()), "{} shows a secret", path.display());
                }
            }
        }
    }
}

/// `runs` runs of a synthetic fleet ending about now, written as JSON lines to `name`.
fn fleet_file(scene: &Scene, name: &str, seed: u64, runs: i64) -> (PathBuf, Vec<TestEvent>) {
    let mut fleet = Fleet::new(FleetConfig { seed, repositories: 1, ..FleetConfig::default() });
    let start = Utc::now() - TimeDelta::minutes(10 * runs);
    let events: Vec<TestEvent> = (0..runs).flat_map(|i| fleet.run(start + TimeDelta::minutes(10 * i))).collect();
    let lines: String = events.iter().map(|e| e.to_json() + "\n").collect();
    (scene.write(name, &lines), events)
}

/// PyPI confluent-kafka produces every line of `events` to `topic`, configured by `properties`.
fn python_produce(properties: &Path, topic: &str, events: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kafka_produce.py");
    let out: Output = Command::new(venv_tool("python"))
        .arg(script)
        .arg("--properties")
        .arg(properties)
        .args(["--topic", topic, "--file"])
        .arg(events)
        .output()
        .unwrap();
    assert!(out.status.success(), "confluent-kafka: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until the lake holds `known` (every one once) and `others` more events, each once.
async fn assert_landed_once(lake: &Path, known: &[&TestEvent], others: usize) {
    let want: BTreeSet<String> = known.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(want.len(), known.len(), "the test's own events have distinct ids");
    let total = known.len() + others;
    let deadline = Instant::now() + Duration::from_secs(60);
    let landed = loop {
        let landed = landed_ids(lake).await;
        let rows: usize = landed.values().sum();
        if rows >= total || Instant::now() > deadline {
            break landed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing = want.iter().filter(|id| !landed.contains_key(*id)).count();
    let twice = landed.values().filter(|n| **n > 1).count();
    assert_eq!((missing, twice), (0, 0), "{missing} of the produced events missing, {twice} landed twice");
    assert_eq!(landed.len(), total, "events in the lake: the test's {} and {others} more", known.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_every_event_lands_once_and_an_untrusted_broker_is_refused() {
    let kafka = SecureKafka::start(Security::Tls, &[]);
    let certs = kafka.certificates.as_ref().unwrap();
    let scene = Scene::new(&[]);
    let (brokers, lake) = (kafka.bootstrap(), scene.lake());
    let (topic, landed) = (unique_topic("tls"), unique_topic("tls-landed"));
    let properties =
        scene.write("client.properties", &format!("security.protocol=SSL\nssl.ca.location={}\n", certs.ca.display()));
    let props = properties.to_str().unwrap();
    let ingest = |other: &[&str]| -> Vec<String> {
        let mut args = vec!["ingest", "--brokers", &brokers, "--topic", &topic, "--landed-topic", &landed];
        args.extend(["--lake", lake.to_str().unwrap(), "--flush-age", "100ms", "--compact-every", "0s"]);
        args.extend(["--kafka-properties", props]);
        args.iter().chain(other).map(|a| (*a).to_owned()).collect()
    };

    // Another CA than the broker's: refused at start, naming TLS and the certificate.
    let other_ca = format!("ssl.ca.location={}", certs.other_ca.display());
    scene.refused(
        "untrusted",
        &mut scene.testlake("untrusted", &ingest(&["--kafka-property", &other_ca])),
        &["TLS failed", "certificate verify failed"],
    );

    // The ingest creates both topics (the admin client over TLS) and publishes notices.
    let mut consume = scene.testlake("ingest", &ingest(&["--create-topics"]));
    let _ingest = scene.start("ingest", &mut consume, "ingest started");

    let (file, produced) = fleet_file(&scene, "produce.jsonl", 1, 3);
    let file = file.to_str().unwrap();
    let args = [
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--file",
        file,
        "--rate",
        "0",
        "--kafka-properties",
        props,
    ];
    scene.run("produce", &mut scene.testlake("produce", &args));
    scene.junit(&brokers, &topic, props);
    // confluent-kafka reads the same file, with the brokers added.
    let python_properties = scene.write(
        "python.properties",
        &format!("bootstrap.servers={brokers}\n{}", std::fs::read_to_string(&properties).unwrap()),
    );
    let (outside, from_python) = fleet_file(&scene, "python.jsonl", 2, 2);
    python_produce(&python_properties, &topic, &outside);

    let known: Vec<&TestEvent> = produced.iter().chain(&from_python).collect();
    assert_landed_once(&lake, &known, REPORT_EVENTS).await;
    scene.assert_no_secret_in_logs();
}

/// A password no log has any reason to contain.
fn password(user: &str) -> String {
    format!("{user}-{}", uuid::Uuid::new_v4().simple())
}

/// Waits until compute has materialized `events` executions: it recomputes only on the notices
/// it follows (its periodic cycle is an hour away).
async fn assert_trends_count(lake: &Path, events: usize) {
    let lake = testlake_schemas::Lake::open(lake.to_str().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = 0;
    while Instant::now() < deadline {
        runs = trend_runs(&lake).await;
        if runs == events as i64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("compute's trends count {runs} executions, not the {events} that landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_every_client_authenticates_and_a_wrong_password_is_refused() {
    let (alice, bob, carol, wrong) = (password("alice"), password("bob"), password("carol"), password("wrong"));
    let kafka = SecureKafka::start(Security::Sasl, &[("alice", &alice), ("bob", &bob), ("carol", &carol)]);
    let scene = Scene::new(&[&alice, &bob, &carol, &wrong]);
    let (brokers, lake) = (kafka.bootstrap(), scene.lake());
    let (topic, landed) = (unique_topic("sasl"), unique_topic("sasl-landed"));
    let lake_arg = lake.to_str().unwrap();
    // The ingest: SCRAM-SHA-256 as alice, properties as flags, the password from the environment.
    let ingest = |log: &str, password: &str, other: &[&str]| {
        let mut command = scene.testlake(log, &["ingest", "--brokers", &brokers, "--topic", &topic]);
        command.args(["--landed-topic", &landed, "--lake", lake_arg, "--flush-age", "100ms", "--compact-every", "0s"]);
        for property in ["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-256", "sasl.username=alice"] {
            command.args(["--kafka-property", property]);
        }
        command.args(other).env("TESTLAKE_KAFKA_SASL_PASSWORD", password);
        command
    };

    scene.refused(
        "wrong-password",
        &mut ingest("wrong-password", &wrong, &[]),
        &["authentication failed", "invalid credentials", "SCRAM-SHA-256"],
    );

    // It creates both topics (the admin client) and publishes notices as alice.
    let _ingest = scene.start("ingest", &mut ingest("ingest", &alice, &["--create-topics"]), "ingest started");
    // Compute follows the notices and publishes its own, SCRAM-SHA-512 as bob, from a Java
    // client's properties file.
    let java = scene.write(
        "java.properties",
        &format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required username=\"bob\" password=\"{bob}\";\n"
        ),
    );
    let java = java.to_str().unwrap();
    let mut follow = scene.testlake("compute", &["compute", "--brokers", &brokers, "--landed-topic", &landed]);
    follow.args(["--kafka-properties", java, "--lake", lake_arg, "--compute-interval", "1h"]);
    let _compute = scene.start("compute", &mut follow, "following landed notices");

    // testlake produce: PLAIN as carol, every property from the environment.
    let (file, produced) = fleet_file(&scene, "produce.jsonl", 3, 3);
    let mut produce = scene.testlake("produce", &["produce", "--brokers", &brokers, "--topic", &topic, "--rate", "0"]);
    produce.arg("--file").arg(&file);
    for (variable, value) in [
        ("TESTLAKE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("TESTLAKE_KAFKA_SASL_MECHANISM", "PLAIN"),
        ("TESTLAKE_KAFKA_SASL_USERNAME", "carol"),
        ("TESTLAKE_KAFKA_SASL_PASSWORD", &carol),
    ] {
        produce.env(variable, value);
    }
    scene.run("produce", &mut produce);
    // testlake junit: SCRAM-SHA-512 as bob, the Java file.
    scene.junit(&brokers, &topic, java);
    // confluent-kafka: SCRAM-SHA-256 as alice.
    let python_properties = scene.write(
        "python.properties",
        &format!(
            "bootstrap.servers={brokers}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n\
             sasl.username=alice\nsasl.password={alice}\n"
        ),
    );
    let (outside, from_python) = fleet_file(&scene, "python.jsonl", 4, 2);
    python_produce(&python_properties, &topic, &outside);

    let known: Vec<&TestEvent> = produced.iter().chain(&from_python).collect();
    assert_landed_once(&lake, &known, REPORT_EVENTS).await;
    assert_trends_count(&lake, known.len() + REPORT_EVENTS).await;
    scene.assert_no_secret_in_logs();
}

/// A managed cluster's way (Confluent Cloud, MSK, Aiven): SASL_SSL with PLAIN, the brokers and
/// the CA in a properties file, the password in the environment — the README's worked example —
/// for `testlake all`, which creates its topics, and `testlake produce`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_the_readme_example_lands_every_event_once() {
    let secret = password("ci-fleet");
    let kafka = SecureKafka::start(Security::SaslTls, &[("ci-fleet", &secret)]);
    let certs = kafka.certificates.as_ref().unwrap();
    let scene = Scene::new(&[&secret]);
    let lake = scene.lake();
    let topic = unique_topic("sasl-ssl");
    let properties = format!(
        "# testlake.properties\nbootstrap.servers={}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\
         sasl.username=ci-fleet\nssl.ca.location={}\n",
        kafka.bootstrap(),
        certs.ca.display()
    );
    let file = scene.write("testlake.properties", &properties);
    let testlake = |log: &str, args: &[&str]| {
        let mut command = scene.testlake(log, args);
        command.args(["--topic", &topic]).arg("--kafka-properties").arg(&file);
        command.env("TESTLAKE_KAFKA_SASL_PASSWORD", &secret);
        command
    };

    let listen = format!("127.0.0.1:{}", free_port());
    let mut all = testlake("all", &["all", "--lake", lake.to_str().unwrap(), "--listen", &listen]);
    all.args(["--landed-topic", &unique_topic("landed"), "--flush-age", "100ms", "--compact-every", "0s"]);
    let _all = scene.start("all", &mut all, "testlake is running");

    let (events, produced) = fleet_file(&scene, "produce.jsonl", 5, 3);
    let mut produce = testlake("produce", &["produce", "--rate", "0"]);
    scene.run("produce", produce.arg("--file").arg(&events));
    let python_properties = scene.write("python.properties", &format!("{properties}sasl.password={secret}\n"));
    let (outside, from_python) = fleet_file(&scene, "python.jsonl", 6, 2);
    python_produce(&python_properties, &topic, &outside);

    let known: Vec<&TestEvent> = produced.iter().chain(&from_python).collect();
    assert_landed_once(&lake, &known, 0).await;
    scene.assert_no_secret_in_logs();
}
