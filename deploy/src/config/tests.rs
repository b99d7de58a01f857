//! The configuration file: keys from the flags, layering (flag > env > file > default), refusals
//! naming file, line and key, `config show`, and the README's reference.

use std::path::Path;

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::cli::{Cli, Command as Sub};

fn parse_with(text: &str, args: &[&str]) -> Result<Cli> {
    let file = ConfigFile::parse(text, Path::new("test.toml"))?;
    let matches = apply(Cli::command(), &file)?.try_get_matches_from([&["testlake"], args].concat())?;
    Ok(Cli::from_arg_matches(&matches)?)
}

fn error(text: &str) -> String {
    format!("{:#}", parse_with(text, &["all"]).err().expect("refused"))
}

#[test]
fn a_file_sets_every_stage_and_flags_win_over_it() {
    let text = r#"
[kafka]
brokers = "file:9092"
topic = "events"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.password" = "s3cret"

[lake]
url = "s3://bucket/prefix"

[ingest]
flush_rows = 5000

[compact]
every = "1m"

[compute]
interval = "15m"
hourly_lookback = "12h"
daily_lookback = "3d"
persist_daily_trends = false
flaky_refresh = "1h"
batch_size = 5000

[flaky]
window = "14d"

[serve]
allowed_hosts = ["a.example", "b.example"]
refresh_caches = false

[sql]
max_rows = 7

[log]
format = "json"
"#;
    let cli = parse_with(text, &["all", "--flush-rows", "9", "--topic", "flagged"]).unwrap();
    assert_eq!(cli.log.log_format, crate::cli::LogFormat::Json);
    let Sub::All(all) = cli.command else { panic!("not all") };
    let config = all.config().unwrap();
    assert_eq!(config.lake, "s3://bucket/prefix");
    assert_eq!(config.ingest.flush.max_rows, 9, "the flag wins over the file");
    assert_eq!(config.ingest.topic, "flagged");
    assert_eq!(config.ingest.kafka.brokers, "file:9092");
    assert_eq!(config.ingest.kafka.properties.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(config.ingest.kafka.properties.get("sasl.password"), Some("s3cret"));
    assert_eq!(config.compact.every, std::time::Duration::from_secs(60));
    assert_eq!(config.compute.interval, std::time::Duration::from_secs(900));
    assert_eq!(config.compute.hourly_lookback, std::time::Duration::from_secs(12 * 3600));
    assert_eq!(config.compute.daily_lookback, std::time::Duration::from_secs(3 * 86_400));
    assert!(config.compute.persist_hourly && !config.compute.persist_daily);
    assert_eq!(config.compute.flaky_refresh, std::time::Duration::from_secs(3600));
    assert_eq!(config.compute.batch_size, 5000);
    assert_eq!(config.compute.flaky.window, chrono::Duration::days(14));
    assert_eq!(config.serve.allowed_hosts, ["a.example", "b.example"]);
    assert!(!config.refresh_caches);
    assert_eq!(config.serve.sql_limits.max_rows, 7);

    // One file serves every command: `serve` takes its keys and leaves ingest's.
    let Sub::Serve(serve) = parse_with(text, &["serve"]).unwrap().command else { panic!("not serve") };
    assert_eq!(serve.notices.brokers.as_deref(), Some("file:9092"));
    assert_eq!(serve.serve.config().sql_limits.max_rows, 7);
}

#[test]
fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
    let e = error("[ingest]\nflush_rows = 5\nflush_rowz = 6\n");
    assert!(e.starts_with("test.toml:3: unknown key `ingest.flush_rowz`"), "{e}");
    assert!(e.contains("flush_rows"), "lists the section's keys: {e}");
    let e = error("\n[ingset]\nflush_rows = 5\n");
    assert!(e.starts_with("test.toml:3: unknown key `ingset.flush_rows` (the sections are "), "{e}");
    let e = error("[compute]\n\ninterval = \"often\"\n");
    assert!(e.starts_with("test.toml:3: `compute.interval`: invalid value 'often'"), "{e}");
    let e = error("[compute]\nbatch_size = \"many\"\n");
    assert!(e.starts_with("test.toml:2: `compute.batch_size`"), "{e}");
    let e = error("[log]\nformat = \"xml\"\n");
    assert!(e.starts_with("test.toml:2: `log.format`"), "{e}");
    let e = error("flush_rows = 5\n");
    assert!(e.starts_with("test.toml:1: `flush_rows` is not a section"), "{e}");
    let e = error("[ingest]\nflush_rows = [1, 2]\n");
    assert!(e.starts_with("test.toml:2: `ingest.flush_rows` takes one value"), "{e}");
    let e = error("[ingest]\nflush_rows = 5\n[ingest\n");
    assert!(e.starts_with("test.toml:3: not TOML"), "{e}");
    let e = error("[kafka.properties]\n\"a\" = [1]\n");
    assert!(e.starts_with("test.toml:2: `kafka.properties.a`"), "{e}");
}

#[test]
fn config_show_names_each_source_and_masks_secrets() {
    let text =
        "[ingest]\nflush_rows = 5000\n[serve]\napi_token = \"tok\"\n[kafka.properties]\n\"sasl.password\" = \"pw\"\n";
    let file = ConfigFile::parse(text, Path::new("test.toml")).unwrap();
    let cli = apply(Cli::command(), &file).unwrap();
    let argv: Vec<String> =
        ["all", "--flush-age", "2s", "--kafka-property", "ssl.key.password=kp", "--kafka-property", "client.id=c"]
            .map(String::from)
            .to_vec();
    let shown = show(&cli, Some(&file), &argv).unwrap();
    assert!(shown.contains("flush_rows = 5000  # file test.toml:2\n"), "{shown}");
    assert!(shown.contains("flush_age = \"2s\"  # flag\n"), "{shown}");
    assert!(shown.contains("flush_bytes = 134217728  # default\n"), "{shown}");
    assert!(shown.contains("api_token = \"***\""), "{shown}");
    assert!(shown.contains("\"sasl.password\" = \"***\""), "{shown}");
    assert!(shown.contains("# and from --kafka-property, over it: ssl.key.password=***, client.id=c\n"), "{shown}");
    assert!(!shown.contains("tok\"") && !shown.contains("pw\"") && !shown.contains("kp"), "a secret shown: {shown}");
    // What `show` prints is a configuration file that gives the same values.
    let again = ConfigFile::parse(&shown.replace("\"***\"", "\"x\""), Path::new("shown.toml")).unwrap();
    assert!(apply(Cli::command(), &again).is_ok());
    assert_eq!(again.get(&Key { section: "ingest".into(), key: "flush_age".into() }).unwrap().values, ["2s"]);
}

#[test]
fn every_key_means_one_flag_and_stages_keep_their_own_flags() {
    for (key, args) in keys(&Cli::command()) {
        let (_, first) = &args[0];
        for (command, arg) in &args {
            assert_eq!(arg.get_long(), first.get_long(), "{key} is two flags ({command})");
            assert_eq!(arg.get_env(), first.get_env(), "{key} has two variables ({command})");
        }
    }
    let keys = keys(&Cli::command());
    let key = |section: &str, key: &str| Key { section: section.into(), key: key.into() };
    // Command-specific flags are not keys (`testlake sql --max-rows` is not `[sql] max_rows`'s).
    let sql = &keys[&key("sql", "max_rows")];
    assert!(sql.iter().all(|(command, _)| command != "sql"), "{sql:?}");
    assert!(keys.contains_key(&key("lake", "url")));
    assert!(keys.contains_key(&key("probes", "listen")));
    assert!(keys.contains_key(&key("compute", "enabled")));
    assert!(!keys.keys().any(|k| k.section == "fleet" && k.key != "rate"));
}

/// The README's reference is `testlake config reference`, so it cannot drift from the flags.
/// `TESTLAKE_UPDATE_README=1` rewrites it.
#[test]
fn the_readme_reference_is_generated_from_the_flags() {
    let (start, end) = ("<!-- config-reference:start -->\n", "<!-- config-reference:end -->");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (from, to) = (readme.find(start).expect("start marker") + start.len(), readme.find(end).expect("end marker"));
    let generated = reference(&Cli::command());
    if std::env::var_os("TESTLAKE_UPDATE_README").is_some() {
        std::fs::write(&path, format!("{}{generated}{}", &readme[..from], &readme[to..])).unwrap();
    } else {
        assert!(
            readme[from..to] == generated,
            "README's reference is stale: run TESTLAKE_UPDATE_README=1 cargo test -p testlake config"
        );
    }
}

/// Each example file of `deploy/config/` loads, and gives the design's matrix: cycle, hourly and
/// daily lookback, flaky refresh, batch size; CI runs no background jobs.
#[test]
fn the_environment_files_give_the_design_matrix() {
    let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
    let defaults = testlake_compute::ComputeConfig::default();
    // (file, cycle, hourly lookback, daily lookback, flaky refresh, batch size)
    let matrix = [
        ("development", hours(1) / 4, hours(12), hours(72), hours(1), defaults.batch_size),
        ("staging", hours(1) / 2, hours(24), hours(168), hours(3), defaults.batch_size),
        ("production", hours(1), hours(24), hours(168), hours(6), 5000),
        ("high-volume", hours(1) / 2, hours(48), hours(168), defaults.flaky_refresh, 5000),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let load = |name: &str| {
        let file = ConfigFile::load(&dir.join(format!("{name}.toml"))).unwrap();
        let matches = apply(Cli::command(), &file).unwrap().try_get_matches_from(["testlake", "all"]).unwrap();
        let Sub::All(all) = Cli::from_arg_matches(&matches).unwrap().command else { panic!("not all") };
        all
    };
    for (name, cycle, hourly, daily, flaky, batch) in matrix {
        let all = load(name);
        let compute = all.config().unwrap().compute;
        assert!(compute.enabled, "{name}");
        assert_eq!(
            (
                compute.interval,
                compute.hourly_lookback,
                compute.daily_lookback,
                compute.flaky_refresh,
                compute.batch_size
            ),
            (cycle, hourly, daily, flaky, batch),
            "{name}"
        );
    }
    // Retention: raw results a quarter in production, past the flaky window at high volume,
    // kept forever elsewhere; the ingest is told it too (it dead-letters what would be dropped).
    for (name, days) in [("development", 0), ("staging", 0), ("production", 90), ("high-volume", 35)] {
        let config = load(name).config().unwrap();
        assert_eq!((config.compact.retention_days, config.ingest.retention_days), (days, days), "{name}");
    }
    let ci = load("ci");
    let config = ci.config().unwrap();
    assert!(!config.compute.enabled && !config.refresh_caches && config.compact.every.is_zero());
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, matrix.len() + 1, "a file in deploy/config/ that no test loads");
}
