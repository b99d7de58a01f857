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
        all.config(),
        StackConfig {
            lake: DEFAULT_LAKE.to_owned(),
            lake_options: Vec::new(),
            ingest: IngestConfig::default(),
            compact: CompactConfig::default(),
            compute: ComputeConfig::default(),
            serve: ServeConfig::default(),
        },
    );
    assert_eq!(all.ingest.kafka.landed_topic(), Some(testlake_ingest::notices::DEFAULT_TOPIC));
    assert_eq!(*all.ingest.shutdown.shutdown_grace, testlake::shutdown::DEFAULT_GRACE);
    assert_eq!(all.fleet_rate, 0);
}

#[test]
fn the_other_commands_without_flags_build_the_libraries_defaults() {
    let Command::Ingest(ingest) = parse(&["ingest"]) else { panic!("not ingest") };
    same(ingest.ingest.config(&ingest.kafka), IngestConfig::default());
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
    ]) else {
        panic!("not all")
    };
    let config = all.config();
    assert_eq!(config.compute.flaky.window, chrono::Duration::days(3));
    assert_eq!(config.serve.alerts.pass_rate_below, None);
    assert_eq!(config.compute.batch_size, 1);
    assert_eq!(config.ingest.kafka_properties, [("security.protocol".to_owned(), "SASL_SSL".to_owned())]);
    assert_eq!(all.ingest.kafka.landed_topic(), None);
    assert_eq!(*all.ingest.shutdown.shutdown_grace, std::time::Duration::from_secs(2));
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
