//! The flags' defaults are the libraries' defaults: what a command builds from no flags at all
//! equals the libraries' `Default`s. (Run without `TESTLAKE_*` variables set: they are defaults too.)

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Command {
    Cli::try_parse_from([&["testlake"], args].concat()).unwrap_or_else(|e| panic!("{args:?}: {e}")).command
}

/// Configurations have no `PartialEq`; their `Debug` shows every field.
fn same<T: std::fmt::Debug>(built: T, default: T) {
    assert_eq!(format!("{built:#?}"), format!("{default:#?}"));
}

#[test]
fn all_without_flags_builds_the_libraries_defaults() {
    let Command::All(all) = parse(&["all"]) else { panic!("not all") };
    same(
        all.config().unwrap(),
        StackConfig {
            lake: DEFAULT_LAKE.to_owned(),
            lake_options: Vec::new(),
            ingest: IngestConfig::default(),
            compact: CompactConfig::default(),
            compute: ComputeConfig::default(),
            serve: ServeConfig::default(),
            refresh_caches: true,
        },
    );
    assert_eq!(all.kafka.landed_topic(), Some(testlake_ingest::notices::DEFAULT_TOPIC));
    assert_eq!(*all.shutdown.shutdown_grace, testlake::shutdown::DEFAULT_GRACE);
    assert_eq!(all.fleet.fleet_rate, 0);
    // The one-command local run creates its topics; every other command only when asked.
    assert_eq!(all.kafka.topics.creation(true), Some(Creation::default()));
}

#[test]
fn the_other_commands_without_flags_build_the_libraries_defaults() {
    let Command::Ingest(ingest) = parse(&["ingest"]) else { panic!("not ingest") };
    same(ingest.ingest.config(ingest.kafka.config().unwrap(), &ingest.kafka.topic), IngestConfig::default());
    assert_eq!(ingest.kafka.topics.creation(false), None);
    same(ingest.compact.config(), CompactConfig::default());
    let Command::Compute(compute) = parse(&["compute"]) else { panic!("not compute") };
    same(compute.compute.config(), ComputeConfig::default());
    assert_eq!(compute.notices.landed_topic, testlake_ingest::notices::DEFAULT_TOPIC);
    let Command::Serve(serve) = parse(&["serve"]) else { panic!("not serve") };
    same(serve.serve.config(), ServeConfig::default());
    assert_eq!(serve.lake.lake, DEFAULT_LAKE);
    let Command::Sql(sql) = parse(&["sql"]) else { panic!("not sql") };
    assert_eq!(sql.limits().max_rows, SqlLimits::default().max_rows);
    let Command::Produce(produce) = parse(&["produce"]) else { panic!("not produce") };
    same(produce.fleet(), FleetConfig::default());
    assert_eq!(*produce.shutdown.shutdown_grace, testlake::shutdown::DEFAULT_GRACE);
}

#[test]
fn flags_reach_the_configurations() {
    let Command::All(all) = parse(&[
        "all",
        "--flaky-window",
        "3days",
        "--alert-pass-rate",
        "0",
        "--compute-batch-size",
        "0",
        "--landed-topic",
        "",
        "--kafka-property",
        "security.protocol = SASL_SSL",
        "--shutdown-grace",
        "2s",
        "--create-topics=false",
    ]) else {
        panic!("not all")
    };
    let config = all.config().unwrap();
    assert_eq!(config.compute.flaky.window, chrono::Duration::days(3));
    assert_eq!(config.serve.alerts.pass_rate_below, None);
    assert_eq!(config.compute.batch_size, 1);
    assert_eq!(config.ingest.kafka.properties.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(all.kafka.topics.creation(true), None);
    assert_eq!(all.kafka.landed_topic(), None);
    assert_eq!(*all.shutdown.shutdown_grace, std::time::Duration::from_secs(2));
}

#[test]
fn sql_flags_reach_the_service() {
    let Command::Serve(serve) = parse(&[
        "serve",
        "--sql-timeout",
        "5s",
        "--sql-memory-bytes",
        "1048576",
        "--sql-max-rows",
        "7",
        "--sql-concurrency",
        "0",
    ]) else {
        panic!("not serve")
    };
    let limits = serve.serve.config().sql_limits;
    assert_eq!(
        limits,
        SqlLimits { timeout: std::time::Duration::from_secs(5), memory_bytes: 1 << 20, max_rows: 7, concurrency: 1 }
    );
}

/// A properties file whose `sasl.username` a flag overrides, and which names the brokers.
fn properties_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "# from the cluster's console\nbootstrap.servers=from-file:9092\nsecurity.protocol=SSL\nsasl.username=file\n",
    )
    .unwrap();
    file
}

#[test]
fn every_command_that_talks_to_kafka_takes_the_client_flags() {
    let file = properties_file();
    let path = file.path().to_str().unwrap();
    let client = ["--kafka-properties", path, "--kafka-property", "sasl.username=flag", "--create-topics"];
    for command in [&["ingest"][..], &["all"], &["produce"], &["junit", "report.xml"], &["compute"], &["serve"]] {
        let kafka = match parse(&[command, &client[..]].concat()) {
            Command::Ingest(c) => (c.kafka.config().unwrap(), c.kafka.topics.creation(false)),
            Command::All(c) => (c.kafka.config().unwrap(), c.kafka.topics.creation(false)),
            Command::Produce(c) => (c.kafka.config().unwrap(), c.kafka.topics.creation(false)),
            Command::Junit(c) => (c.kafka.config().unwrap(), c.kafka.topics.creation(false)),
            Command::Compute(c) => {
                (c.notices.topic().unwrap().expect("notices followed").0, c.notices.topics.creation(false))
            }
            Command::Serve(c) => {
                (c.notices.topic().unwrap().expect("notices followed").0, c.notices.topics.creation(false))
            }
            _ => unreachable!(),
        };
        let (config, creation) = kafka;
        assert_eq!(config.brokers, "from-file:9092", "{command:?}");
        assert_eq!(config.properties.get("security.protocol"), Some("SSL"), "{command:?}");
        assert_eq!(config.properties.get("sasl.username"), Some("flag"), "{command:?}");
        assert_eq!(creation, Some(Creation::default()), "{command:?}");
    }
}

#[test]
fn brokers_flag_wins_and_notices_need_brokers() {
    let file = properties_file();
    let path = file.path().to_str().unwrap();
    let Command::Ingest(ingest) = parse(&["ingest", "--brokers", "flag:9092", "--kafka-properties", path]) else {
        panic!("not ingest")
    };
    assert_eq!(ingest.kafka.config().unwrap().brokers, "flag:9092");
    let Command::Compute(compute) = parse(&["compute"]) else { panic!("not compute") };
    assert!(compute.notices.topic().unwrap().is_none(), "no brokers: the lake only");
    let Command::Serve(serve) = parse(&["serve", "--kafka-properties", path, "--landed-topic", ""]) else {
        panic!("not serve")
    };
    assert!(serve.notices.topic().unwrap().is_none(), "notices disabled");
}

#[test]
fn topic_creation_is_set_by_flags() {
    let Command::Produce(produce) =
        parse(&["produce", "--create-topics", "--partitions", "12", "--replication-factor", "3"])
    else {
        panic!("not produce")
    };
    assert_eq!(produce.kafka.topics.creation(false), Some(Creation { partitions: 12, replication_factor: 3 }));
    let Command::Produce(produce) = parse(&["produce", "--replication-factor", "-1"]) else { panic!("not produce") };
    assert_eq!(produce.kafka.topics.creation(false), None);
    assert!(Cli::try_parse_from(["testlake", "produce", "--partitions", "-2"]).is_err());
    // A report after the flag is a report, not the flag's value.
    let Command::Junit(junit) = parse(&["junit", "--create-topics", "r.xml"]) else { panic!("not junit") };
    assert_eq!((junit.files.len(), junit.kafka.topics.creation(false).is_some()), (1, true));
}

#[test]
fn bad_kafka_properties_are_errors_that_show_no_secret() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "security.protocol=SASL_SSL\nsasl.password hunter2\n").unwrap();
    let Command::Ingest(ingest) = parse(&["ingest", "--kafka-properties", file.path().to_str().unwrap()]) else {
        panic!("not ingest")
    };
    let err = format!("{:#}", ingest.kafka.config().unwrap_err());
    assert!(
        err.ends_with(":2: expected KEY=VALUE (not shown: it may hold a secret)") && !err.contains("hunter2"),
        "{err}"
    );
    let Command::Ingest(ingest) = parse(&["ingest", "--kafka-property", "sasl.password:hunter2"]) else {
        panic!("not ingest")
    };
    let err = format!("{:#}", ingest.kafka.config().unwrap_err());
    assert!(err.contains("--kafka-property") && !err.contains("hunter2"), "{err}");
    let Command::Ingest(ingest) = parse(&["ingest", "--kafka-properties", "/no/such/file"]) else {
        panic!("not ingest")
    };
    assert!(format!("{:#}", ingest.kafka.config().unwrap_err()).contains("/no/such/file"));
}
