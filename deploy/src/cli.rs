//! The command line: a struct of flags per subcommand, made of groups (`*Args`) that each turn
//! into a library's configuration. Every default is the library's own (its `Default`), so the
//! binary cannot keep an old value when a library's changes; `cli/tests.rs` checks that `testlake
//! all` without flags builds exactly the libraries' defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use testlake::fleet::FleetConfig;
use testlake::kafka::Creation;
use testlake::stack::{DEFAULT_LAKE, StackConfig};
use testlake_compute::ComputeConfig;
use testlake_compute::flaky::FlakyConfig;
use testlake_ingest::kafka::{KafkaConfig, Properties};
use testlake_ingest::metrics::HealthRule;
use testlake_ingest::{CompactConfig, FlushPolicy, IngestConfig};
use testlake_query::live::AlertConfig;
use testlake_query::pg::PgConfig;
use testlake_query::sql::SqlLimits;
use testlake_query::{ServeConfig, ServeLimits};

#[derive(Parser)]
#[command(name = "testlake", version, about = "CI test analytics: Kafka → Parquet lake → trends → HTTP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// A TOML configuration file: one section per stage, under environment variables and flags
    /// (`testlake config reference` lists every key).
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How the process logs.
#[derive(Args)]
#[command(next_help_heading = "Log")]
pub struct LogArgs {
    /// Log lines as plain text or as JSON objects (one per line, for log collectors).
    #[arg(long, global = true, env = "TESTLAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which log lines are written: a level (error, warn, info, debug, trace) or a filter like
    /// RUST_LOG's, e.g. "info,testlake_query=debug" (default: RUST_LOG, else "info" with
    /// DataFusion and the Delta kernel at "warn").
    #[arg(long, global = true, env = "TESTLAKE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Consume test events from Kafka into the lake's `results` table.
    Ingest(IngestCommand),
    /// Compact closed hours of `results` into few large files (the ingest and all-in-one
    /// processes also do it every --compact-every).
    Compact(CompactCommand),
    /// Materialize the trend tables, once or periodically.
    Compute(ComputeCommand),
    /// Serve the HTTP API (with --brokers: cached, invalidated and pushed by landed notices).
    Serve(ServeCommand),
    /// Ingest, compute and serve in one process (a single machine).
    All(AllCommand),
    /// Run one read-only SQL statement over the lake's tables (the same tables and rules as
    /// `POST /api/v1/sql`). Reads the statement from stdin when none is given.
    Sql(SqlCommand),
    /// Convert JUnit XML reports into events (every retry attempt its own event) and produce them.
    Junit(JunitCommand),
    /// Produce events to the topic from a JSON-lines file or the synthetic CI fleet.
    Produce(ProduceCommand),
    /// The configuration: the effective values and where each comes from, or every key.
    #[command(subcommand)]
    Config(ConfigAction),
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration of a command, each value with its source (flag, env,
    /// file or default), secrets masked. E.g. `testlake --config prod.toml config show ingest`.
    Show {
        /// The command and its flags, as they would be run (default: `all`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print every configuration key as a Markdown table: section, key, flag, variable,
    /// default, and what it does (the README's reference is this output).
    Reference,
}

#[derive(Args)]
pub struct IngestCommand {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub compact: CompactArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

/// Where a standalone stage serves `/metrics`, `/healthz` and `/readyz`.
#[derive(Args)]
#[command(next_help_heading = "Probes")]
pub struct ProbeArgs {
    /// Serve /metrics, /healthz and /readyz of this process here (`testlake serve` and `all`
    /// serve them on --listen).
    #[arg(long, alias = "compute-listen", env = "TESTLAKE_PROBE_LISTEN", value_name = "ADDR")]
    pub probe_listen: Option<SocketAddr>,
}

#[derive(Args)]
pub struct CompactCommand {
    /// One pass, then exit (default: a pass every --compact-every until stopped).
    #[arg(long)]
    pub once: bool,
    /// Test hook: abort the process the n-th time a compaction step is reached.
    #[arg(long, env = "TESTLAKE_CRASH_AT", hide = true)]
    pub crash_at: Option<String>,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub compact: CompactArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

#[derive(Args)]
pub struct ComputeCommand {
    /// Recompute every date once and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub notices: NoticeArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(subcommand)]
    pub action: Option<ComputeAction>,
}

#[derive(Subcommand)]
pub enum ComputeAction {
    /// Recompute trends and flaky snapshots for every date in [--from, --to], with a progress bar.
    Backfill {
        /// First date, YYYY-MM-DD.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last date, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: chrono::NaiveDate,
    },
}

#[derive(Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub notices: NoticeArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

/// The flags of every stage (the probes are on --listen).
#[derive(Args)]
pub struct AllCommand {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub compact: CompactArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

/// The synthetic CI fleet `testlake all` can run in-process.
#[derive(Args)]
#[command(next_help_heading = "Fleet")]
pub struct FleetArgs {
    /// Also run the synthetic CI fleet in-process at this many events per second (0: off).
    #[arg(long, env = "TESTLAKE_FLEET_RATE", default_value_t = 0)]
    pub fleet_rate: u64,
}

impl AllCommand {
    /// The stack these flags describe.
    pub fn config(&self) -> anyhow::Result<StackConfig> {
        Ok(StackConfig {
            lake: self.lake.lake.clone(),
            lake_options: Vec::new(),
            ingest: IngestConfig {
                retention_days: self.compact.compact_retention_days,
                ..self.ingest.config(self.kafka.config()?, &self.kafka.topic)
            },
            compact: self.compact.config(),
            compute: self.compute.config(),
            serve: self.serve.config(),
            refresh_caches: self.serve.refresh_caches,
        })
    }
}

#[derive(Args)]
pub struct SqlCommand {
    /// The statement, e.g. "SELECT repository, count(*) FROM results GROUP BY 1".
    pub statement: Option<String>,
    /// table (aligned text), csv or json (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// At most this many rows.
    #[arg(long, default_value_t = SqlLimits::default().max_rows)]
    pub max_rows: usize,
    /// Stop the statement after this long (longer than the HTTP API's limit: this is a batch tool).
    #[arg(long, default_value = "5min")]
    pub timeout: humantime::Duration,
    #[command(flatten)]
    pub lake: LakeArgs,
}

impl SqlCommand {
    pub fn limits(&self) -> SqlLimits {
        SqlLimits { timeout: *self.timeout, max_rows: self.max_rows, ..SqlLimits::default() }
    }
}

#[derive(Args)]
pub struct JunitCommand {
    /// JUnit XML report files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Repository (default: from the CI environment, e.g. GITHUB_REPOSITORY).
    #[arg(long)]
    pub repository: Option<String>,
    /// Branch (default: from the CI environment).
    #[arg(long)]
    pub branch: Option<String>,
    /// Commit SHA (default: from the CI environment).
    #[arg(long)]
    pub commit: Option<String>,
    /// CI pipeline run id (default: from the CI environment).
    #[arg(long)]
    pub run_id: Option<String>,
    /// CI job or shard inside the run (default: from the CI environment).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Print the events as JSON lines instead of producing them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Args)]
pub struct ProduceCommand {
    /// A JSON-lines file, one message per line, sent as is.
    #[arg(long, conflicts_with = "synthetic")]
    pub file: Option<PathBuf>,
    /// Produce runs of the synthetic CI fleet.
    #[arg(long)]
    pub synthetic: bool,
    /// Messages per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Number of repositories in the synthetic fleet.
    #[arg(long, default_value_t = FleetConfig::default().repositories)]
    pub repositories: usize,
    /// Seed of the synthetic fleet.
    #[arg(long, default_value_t = FleetConfig::default().seed)]
    pub seed: u64,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

impl ProduceCommand {
    /// The synthetic fleet these flags describe.
    pub fn fleet(&self) -> FleetConfig {
        FleetConfig { repositories: self.repositories, seed: self.seed, ..FleetConfig::default() }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (default: bootstrap.servers of the Kafka properties, else
    /// 127.0.0.1:9092).
    #[arg(long, env = "TESTLAKE_BROKERS")]
    pub brokers: Option<String>,
    /// Topic of test events.
    #[arg(long, env = "TESTLAKE_TOPIC", default_value_t = IngestConfig::default().topic)]
    pub topic: String,
    /// Topic the ingest announces landed partitions on, for other processes ("" to disable).
    #[arg(long, env = "TESTLAKE_LANDED_TOPIC", default_value = testlake_ingest::notices::DEFAULT_TOPIC)]
    pub landed_topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
}

impl KafkaArgs {
    /// The topic to announce landed partitions on, unless disabled.
    pub fn landed_topic(&self) -> Option<&str> {
        Some(self.landed_topic.as_str()).filter(|t| !t.is_empty())
    }

    /// The configuration every Kafka client of the process shares.
    pub fn config(&self) -> anyhow::Result<KafkaConfig> {
        self.client.config(self.brokers.as_deref())
    }

    /// The events topic, with the partitions it gets if created.
    pub fn events_topic(&self) -> (&str, i32) {
        (self.topic.as_str(), self.topics.partitions)
    }

    /// The topics an ingest uses, with the partitions each gets if created: the events topic,
    /// and the landed-notice topic unless disabled.
    pub fn ingest_topics(&self) -> Vec<(&str, i32)> {
        let mut topics = vec![self.events_topic()];
        topics.extend(self.landed_topic().map(|t| (t, 1)));
        topics
    }
}

/// The librdkafka properties every Kafka client of the process shares (security, timeouts),
/// from a file, `TESTLAKE_KAFKA_*` variables and flags, each over the one before.
#[derive(Args)]
#[command(next_help_heading = "Kafka")]
pub struct ClientArgs {
    /// librdkafka property for every Kafka client of this process, KEY=VALUE (repeatable), e.g.
    /// security.protocol=SASL_SSL; over TESTLAKE_KAFKA_* variables and --kafka-properties. Keep
    /// secrets out of it: other users of the machine can read a command line.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_property: Vec<String>,
    /// librdkafka properties file for every Kafka client: key=value lines, # comments (a Java
    /// client's PLAIN or SCRAM sasl.jaas.config works too). Variables TESTLAKE_KAFKA_<NAME> set
    /// properties over it (TESTLAKE_KAFKA_SASL_PASSWORD is sasl.password; __ is _).
    #[arg(long = "kafka-properties", env = testlake_ingest::kafka::PROPERTIES_FILE_ENV, value_name = "FILE")]
    pub kafka_properties: Option<PathBuf>,
    /// librdkafka properties of the configuration file's `[kafka.properties]` table, KEY=VALUE,
    /// under every other source (only the file sets these).
    #[arg(long = crate::config::FILE_PROPERTIES_FLAG, hide = true, value_name = "KEY=VALUE")]
    pub file_properties: Vec<String>,
}

impl ClientArgs {
    /// The configuration: `brokers` when given, and the properties of every source.
    pub fn config(&self, brokers: Option<&str>) -> anyhow::Result<KafkaConfig> {
        Ok(KafkaConfig::from_sources(brokers, self.sources()?)?)
    }

    /// The sources of properties, each named, lowest precedence first: the configuration file,
    /// the properties file, environment, flags.
    fn sources(&self) -> anyhow::Result<Vec<(String, Properties)>> {
        let mut sources = vec![("[kafka.properties]".into(), Properties::parse_flags(&self.file_properties)?)];
        if let Some(path) = &self.kafka_properties {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --kafka-properties {name}"))?;
            sources.push((name.clone(), Properties::parse_file(&text, &name)?));
        }
        sources.push(("TESTLAKE_KAFKA_* variables".into(), Properties::from_env(std::env::vars_os())?));
        sources.push(("--kafka-property".into(), Properties::parse_flags(&self.kafka_property)?));
        Ok(sources)
    }

    /// Whether any source names bootstrap servers.
    fn names_brokers(&self) -> anyhow::Result<bool> {
        Ok(self.sources()?.iter().any(|(_, properties)| properties.get("bootstrap.servers").is_some()))
    }
}

/// Whether missing topics are created, and how.
#[derive(Args)]
#[command(next_help_heading = "Kafka")]
pub struct TopicArgs {
    /// Create the topics this command uses when they are missing (the events topic, the
    /// landed-notice topic); needs the right to create topics. Without it a missing topic is an
    /// error at start. `testlake all` creates them unless --create-topics=false.
    #[arg(long, env = "TESTLAKE_CREATE_TOPICS", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL")]
    pub create_topics: Option<bool>,
    /// Partitions of an events topic this command creates: ingest members beyond this many sit
    /// idle (the landed-notice topic gets 1; -1: the broker's num.partitions).
    #[arg(long, env = "TESTLAKE_PARTITIONS", default_value_t = Creation::default().partitions,
        value_parser = clap::value_parser!(i32).range(-1..), allow_negative_numbers = true)]
    pub partitions: i32,
    /// Replication factor of the topics this command creates (-1: the broker's
    /// default.replication.factor).
    #[arg(long, env = "TESTLAKE_REPLICATION_FACTOR", default_value_t = Creation::default().replication_factor,
        value_parser = clap::value_parser!(i32).range(-1..), allow_negative_numbers = true)]
    pub replication_factor: i32,
}

impl TopicArgs {
    /// How missing topics are created, if they are: as the flags say, else `by_default`.
    pub fn creation(&self, by_default: bool) -> Option<Creation> {
        let creation = Creation { partitions: self.partitions, replication_factor: self.replication_factor };
        self.create_topics.unwrap_or(by_default).then_some(creation)
    }
}

#[derive(Args)]
#[command(next_help_heading = "Kafka")]
pub struct NoticeArgs {
    /// Kafka bootstrap servers to follow landed-partition notices from (none, and no
    /// bootstrap.servers among the Kafka properties: scan the lake only).
    #[arg(long, env = "TESTLAKE_BROKERS")]
    pub brokers: Option<String>,
    /// Topic of landed-partition notices.
    #[arg(long, env = "TESTLAKE_LANDED_TOPIC", default_value = testlake_ingest::notices::DEFAULT_TOPIC)]
    pub landed_topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
}

impl NoticeArgs {
    /// The Kafka configuration and topic of the notices, unless no source names bootstrap
    /// servers or the topic is disabled.
    pub fn topic(&self) -> anyhow::Result<Option<(KafkaConfig, &str)>> {
        if self.landed_topic.is_empty() || (self.brokers.is_none() && !self.client.names_brokers()?) {
            return Ok(None);
        }
        Ok(Some((self.client.config(self.brokers.as_deref())?, self.landed_topic.as_str())))
    }
}

#[derive(Args)]
#[command(next_help_heading = "Lake")]
pub struct LakeArgs {
    /// Lake root: a path, file:///…, or s3://… .
    #[arg(long, env = "TESTLAKE_LAKE", default_value = DEFAULT_LAKE)]
    pub lake: String,
}

#[derive(Args)]
#[command(next_help_heading = "Shutdown")]
pub struct ShutdownArgs {
    /// How long stopping may take (inputs, then the ingest's last flush and commit, compute's
    /// running cycle, then the service) before the process exits anyway, naming what was still
    /// running. Longer loses less work to a kill; shorter stops sooner.
    #[arg(long, env = "TESTLAKE_SHUTDOWN_GRACE", default_value_t = testlake::shutdown::DEFAULT_GRACE.into())]
    pub shutdown_grace: humantime::Duration,
}

#[derive(Args)]
#[command(next_help_heading = "Compact")]
pub struct CompactArgs {
    /// Time between compaction passes over closed hours ("0s": no compaction in this process).
    #[arg(long, env = "TESTLAKE_COMPACT_EVERY", default_value_t = CompactConfig::default().every.into())]
    pub compact_every: humantime::Duration,
    /// An hour is compacted once it ended this long ago.
    #[arg(long, env = "TESTLAKE_COMPACT_CLOSED_AFTER", default_value_t = CompactConfig::default().closed_after.into())]
    pub compact_closed_after: humantime::Duration,
    /// Rows per compacted file at most; files this large are left alone.
    #[arg(long, env = "TESTLAKE_COMPACT_ROWS", default_value_t = CompactConfig::default().target_rows)]
    pub compact_rows: u64,
    /// Replaced files are deleted this long after their compaction commits (readers listing
    /// folders see the hour twice meanwhile; statements following the log finish first).
    #[arg(long, env = "TESTLAKE_COMPACT_GRACE", default_value_t = CompactConfig::default().grace.into())]
    pub compact_grace: humantime::Duration,
    /// A compaction left undecided this long is taken for a crashed compactor's and aborted.
    #[arg(long, env = "TESTLAKE_COMPACT_STALE_AFTER", default_value_t = CompactConfig::default().stale_after.into())]
    pub compact_stale_after: humantime::Duration,
    /// Days of `results` kept: a UTC date older than this (and --compact-closed-after more) is
    /// dropped from the Delta table and the commit log's view, and its files deleted after
    /// --compact-grace; computed trends of the date stay. 0 keeps everything.
    #[arg(long, env = "TESTLAKE_COMPACT_RETENTION_DAYS", default_value_t = CompactConfig::default().retention_days)]
    pub compact_retention_days: u32,
}

impl CompactArgs {
    pub fn config(&self) -> CompactConfig {
        CompactConfig {
            every: *self.compact_every,
            closed_after: *self.compact_closed_after,
            target_rows: self.compact_rows.max(1),
            grace: *self.compact_grace,
            stale_after: *self.compact_stale_after,
            retention_days: self.compact_retention_days,
        }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Ingest")]
pub struct IngestArgs {
    /// Consumer group; members of one group share the topic's partitions.
    #[arg(long, env = "TESTLAKE_GROUP", default_value_t = IngestConfig::default().group_id)]
    pub group: String,
    /// Flush a partition's buffer at this many rows (bigger files, more memory).
    #[arg(long, env = "TESTLAKE_FLUSH_ROWS", default_value_t = FlushPolicy::default().max_rows)]
    pub flush_rows: usize,
    /// Flush a partition's buffer at this many bytes: its input bytes, or what its rows take in
    /// memory if that is more. Bigger files against more memory.
    #[arg(long, env = "TESTLAKE_FLUSH_BYTES", default_value_t = FlushPolicy::default().max_bytes)]
    pub flush_bytes: usize,
    /// Flush a partition's buffer when its oldest row is this old (freshness vs. file count).
    #[arg(long, env = "TESTLAKE_FLUSH_AGE", default_value_t = FlushPolicy::default().max_age.into())]
    pub flush_age: humantime::Duration,
    /// Bytes buffered over all partitions (counted as for --flush-bytes) before the largest
    /// buffer is flushed early: the ingest's memory bound.
    #[arg(long, env = "TESTLAKE_BUFFER_BYTES", default_value_t = FlushPolicy::default().max_total_bytes)]
    pub buffer_bytes: usize,
    /// Test hook: abort the process the n-th time a commit step is reached (`after_intent:3`).
    #[arg(long, env = "TESTLAKE_CRASH_AT", hide = true)]
    pub crash_at: Option<String>,
    /// Report the ingest degraded (/healthz, testlake_component_health) when the messages behind
    /// the high watermarks of the partitions it owns pass this many: low warns early of a backlog,
    /// high tolerates bursts.
    #[arg(long, env = "TESTLAKE_LAG_DEGRADED", default_value_t = HealthRule::default().lag_degraded)]
    pub lag_degraded: u64,
    /// Report the ingest unhealthy (/healthz 503) when no Kafka broker has been reachable, or
    /// every write to the lake has failed, for this long: short restarts a stuck process sooner,
    /// long rides out a broker restart or a store outage.
    #[arg(long, env = "TESTLAKE_UNHEALTHY_AFTER", default_value_t = HealthRule::default().unhealthy_after.into())]
    pub unhealthy_after: humantime::Duration,
}

impl IngestArgs {
    /// The ingest of `topic` through `kafka`.
    pub fn config(&self, kafka: KafkaConfig, topic: &str) -> IngestConfig {
        IngestConfig {
            group_id: self.group.clone(),
            flush: FlushPolicy {
                max_rows: self.flush_rows,
                max_bytes: self.flush_bytes,
                max_age: *self.flush_age,
                max_total_bytes: self.buffer_bytes,
            },
            crash_at: self.crash_at.clone(),
            health: HealthRule { lag_degraded: self.lag_degraded, unhealthy_after: *self.unhealthy_after },
            ..IngestConfig::with_kafka(kafka, topic)
        }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Compute")]
pub struct ComputeArgs {
    /// Run the compute stage at all: false in `testlake all` runs ingest and the service only
    /// (the trend tables stay as they are); `testlake compute` then exits at once.
    #[arg(long, env = "TESTLAKE_COMPUTE_ENABLED", default_value_t = ComputeConfig::default().enabled,
        action = clap::ArgAction::Set, value_name = "BOOL")]
    pub compute_enabled: bool,
    /// Compute and write trends_hourly (false: the hourly charts stay empty).
    #[arg(long, env = "TESTLAKE_PERSIST_HOURLY_TRENDS", default_value_t = ComputeConfig::default().persist_hourly,
        action = clap::ArgAction::Set, value_name = "BOOL")]
    pub persist_hourly_trends: bool,
    /// Compute and write trends_daily (false: the daily charts stay empty).
    #[arg(long, env = "TESTLAKE_PERSIST_DAILY_TRENDS", default_value_t = ComputeConfig::default().persist_daily,
        action = clap::ArgAction::Set, value_name = "BOOL")]
    pub persist_daily_trends: bool,
    /// How far back the cycle checks hourly trends.
    #[arg(long, env = "TESTLAKE_HOURLY_LOOKBACK", default_value_t = ComputeConfig::default().hourly_lookback.into())]
    pub hourly_lookback: humantime::Duration,
    /// How far back the cycle checks daily trends.
    #[arg(long, env = "TESTLAKE_DAILY_LOOKBACK", default_value_t = ComputeConfig::default().daily_lookback.into())]
    pub daily_lookback: humantime::Duration,
    /// At most this many dates recomputed per cycle.
    #[arg(long, env = "TESTLAKE_COMPUTE_BATCH_SIZE", default_value_t = ComputeConfig::default().batch_size)]
    pub compute_batch_size: usize,
    /// Wait this long after start before the first cycle.
    #[arg(long, env = "TESTLAKE_COMPUTE_STARTUP_DELAY", default_value_t = ComputeConfig::default().startup_delay.into())]
    pub compute_startup_delay: humantime::Duration,
    /// How long a partition lease lasts unless released (several compute processes).
    #[arg(long, env = "TESTLAKE_LEASE_TTL", default_value_t = ComputeConfig::default().lease_ttl.into())]
    pub lease_ttl: humantime::Duration,
    /// How often the periodic cycle scans the lake for dates whose results changed ("0s": no
    /// cycle; landed notices and reconciliation drive recompute either way).
    #[arg(long, env = "TESTLAKE_COMPUTE_INTERVAL", default_value_t = ComputeConfig::default().interval.into())]
    pub compute_interval: humantime::Duration,
    /// How often every date's committed files are compared with what its trends were built from,
    /// at any age (0s: never): the longest a lost notice leaves a date stale; each run lists the
    /// trends tables and reads the commit log's news.
    #[arg(long, env = "TESTLAKE_RECONCILE_INTERVAL", default_value_t = ComputeConfig::default().reconcile_interval.into())]
    pub reconcile_interval: humantime::Duration,
    /// The shortest time between two refreshes of today's flaky scores.
    #[arg(long, env = "TESTLAKE_FLAKY_REFRESH", default_value_t = ComputeConfig::default().flaky_refresh.into())]
    pub flaky_refresh: humantime::Duration,
    #[command(flatten)]
    pub flaky: FlakyArgs,
}

/// The flaky-test definition's thresholds.
#[derive(Args)]
#[command(next_help_heading = "Flaky")]
pub struct FlakyArgs {
    /// How far back flaky scores look.
    #[arg(long, env = "TESTLAKE_FLAKY_WINDOW", default_value_t = flaky_window_default())]
    pub flaky_window: humantime::Duration,
    /// A flip that lifts the weighted flip rate above this marks a flake (with enough executions).
    #[arg(long, env = "TESTLAKE_FLIP_THRESHOLD", default_value_t = FlakyConfig::default().flip_threshold)]
    pub flip_threshold: f64,
    /// Executions a test needs before its weighted flip rate can call it flaky.
    #[arg(long, env = "TESTLAKE_FLAKY_MIN_EXECUTIONS", default_value_t = FlakyConfig::default().min_executions)]
    pub flaky_min_executions: u64,
    /// A run in which at least this share of tests failed is an outage, left out of flaky scores.
    #[arg(long, env = "TESTLAKE_OUTAGE_SHARE", default_value_t = FlakyConfig::default().outage_failure_share)]
    pub outage_share: f64,
}

fn flaky_window_default() -> humantime::Duration {
    FlakyConfig::default().window.to_std().expect("the default flaky window is positive").into()
}

impl ComputeArgs {
    pub fn config(&self) -> ComputeConfig {
        let defaults = ComputeConfig::default();
        ComputeConfig {
            enabled: self.compute_enabled,
            persist_hourly: self.persist_hourly_trends,
            persist_daily: self.persist_daily_trends,
            hourly_lookback: *self.hourly_lookback,
            daily_lookback: *self.daily_lookback,
            batch_size: self.compute_batch_size.max(1),
            startup_delay: *self.compute_startup_delay,
            lease_ttl: *self.lease_ttl,
            interval: *self.compute_interval,
            reconcile_interval: *self.reconcile_interval,
            flaky_refresh: *self.flaky_refresh,
            flaky: FlakyConfig {
                // Only a window of over 292 million years does not fit.
                window: chrono::Duration::from_std(*self.flaky.flaky_window).unwrap_or(defaults.flaky.window),
                flip_threshold: self.flaky.flip_threshold,
                min_executions: self.flaky.flaky_min_executions,
                outage_failure_share: self.flaky.outage_share,
                ..defaults.flaky.clone()
            },
            ..defaults
        }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Serve")]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TESTLAKE_LISTEN", default_value_t = ServeConfig::default().listen)]
    pub listen: SocketAddr,
    /// Memory budget of cached answers, in bytes.
    #[arg(long, env = "TESTLAKE_CACHE_BYTES", default_value_t = ServeConfig::default().cache_bytes)]
    pub cache_bytes: u64,
    /// Cache answers and refresh them (and push updates to dashboards) when landed notices say
    /// their data changed. false: every request reads the lake and nothing is pushed.
    #[arg(long, env = "TESTLAKE_REFRESH_CACHES", default_value_t = true, action = clap::ArgAction::Set,
        value_name = "BOOL")]
    pub refresh_caches: bool,
    /// Push an alert when a repository's pass rate today drops below this (0: no alerts).
    #[arg(long, env = "TESTLAKE_ALERT_PASS_RATE",
        default_value_t = AlertConfig::default().pass_rate_below.unwrap_or(0.0))]
    pub alert_pass_rate: f64,
    /// Require this bearer token on /api/* (probes stay open). Prefer the environment variable.
    #[arg(long, env = "TESTLAKE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[command(flatten)]
    pub limits: ServeLimitArgs,
    #[command(flatten)]
    pub sql: SqlArgs,
    #[command(flatten)]
    pub pg: PgArgs,
}

/// The PostgreSQL wire protocol (`[pg]` in the configuration file).
#[derive(Args)]
#[command(next_help_heading = "PG")]
pub struct PgArgs {
    /// Also serve the PostgreSQL wire protocol here (psql, psycopg, Grafana's and Metabase's
    /// PostgreSQL data sources): the same read-only SQL, tables and limits as POST /api/v1/sql,
    /// the API token as the password. Off unless given.
    #[arg(long, env = "TESTLAKE_PG_LISTEN")]
    pub pg_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS on the PostgreSQL listener (with --pg-tls-key); without it
    /// the password travels in clear, so keep --pg-listen on loopback.
    #[arg(long, env = "TESTLAKE_PG_TLS_CERT", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<PathBuf>,
    /// PEM private key for --pg-tls-cert.
    #[arg(long, env = "TESTLAKE_PG_TLS_KEY", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<PathBuf>,
}

impl PgArgs {
    pub fn config(&self) -> Option<PgConfig> {
        let tls = self.pg_tls_cert.clone().zip(self.pg_tls_key.clone());
        self.pg_listen.map(|listen| PgConfig { listen, tls })
    }
}

/// The SQL endpoint's bounds (`POST /api/v1/sql`).
#[derive(Args)]
#[command(next_help_heading = "SQL")]
pub struct SqlArgs {
    /// How long one statement may run before it is stopped (400).
    #[arg(long, env = "TESTLAKE_SQL_TIMEOUT", default_value_t = SqlLimits::default().timeout.into())]
    pub sql_timeout: humantime::Duration,
    /// One statement's memory, in bytes: its operators' pool, and again what repeat(), lpad(),
    /// range() and the like may produce (over it: 400). At most --sql-concurrency statements hold
    /// this much each.
    #[arg(long, env = "TESTLAKE_SQL_MEMORY_BYTES", default_value_t = SqlLimits::default().memory_bytes)]
    pub sql_memory_bytes: usize,
    /// Rows one answer may hold (more are cut off, and the answer says so).
    #[arg(long, env = "TESTLAKE_SQL_MAX_ROWS", default_value_t = SqlLimits::default().max_rows)]
    pub sql_max_rows: usize,
    /// Statements running at once; one more is answered 429 with Retry-After. Higher lets more
    /// analysts in at once, at up to this many times the memory.
    #[arg(long, env = "TESTLAKE_SQL_CONCURRENCY", default_value_t = SqlLimits::default().concurrency)]
    pub sql_concurrency: usize,
}

impl SqlArgs {
    pub fn limits(&self) -> SqlLimits {
        SqlLimits {
            timeout: *self.sql_timeout,
            memory_bytes: self.sql_memory_bytes,
            max_rows: self.sql_max_rows,
            concurrency: self.sql_concurrency.max(1),
        }
    }
}

/// What a client may make the service do: the names it may be reached by, and its bounds.
#[derive(Args)]
#[command(next_help_heading = "Serve")]
pub struct ServeLimitArgs {
    /// A host name clients may reach the service by, besides loopback names and IP addresses
    /// (repeatable; `*`: any). Other names are refused (403), whatever --listen is, 0.0.0.0
    /// included: this is what stops DNS rebinding. Add the names a proxy or users type.
    #[arg(long = "allowed-host", env = "TESTLAKE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more wait in the listen backlog. Bounds memory and file
    /// descriptors against many clients, at the cost of queueing them.
    #[arg(long, env = "TESTLAKE_MAX_CONNECTIONS", default_value_t = ServeLimits::default().max_connections)]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and a connection may stay idle):
    /// shorter frees places from slow or idle clients sooner.
    #[arg(long, env = "TESTLAKE_HEADER_READ_TIMEOUT",
        default_value_t = ServeLimits::default().header_read_timeout.into())]
    pub header_read_timeout: humantime::Duration,
    /// Live-update streams (/api/v1/events) connected at once; more are answered 503.
    #[arg(long, env = "TESTLAKE_MAX_SUBSCRIBERS", default_value_t = ServeLimits::default().max_subscribers)]
    pub max_subscribers: usize,
    /// Rows one dashboard answer may hold (more: 400, narrow the range): bounds each load's memory.
    #[arg(long, env = "TESTLAKE_ANSWER_ROWS", default_value_t = ServeLimits::default().answer_rows)]
    pub answer_rows: usize,
    /// How long loading one dashboard answer may take before it is abandoned (503).
    #[arg(long, env = "TESTLAKE_ANSWER_TIMEOUT", default_value_t = ServeLimits::default().answer_timeout.into())]
    pub answer_timeout: humantime::Duration,
}

impl ServeLimitArgs {
    pub fn limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: *self.header_read_timeout,
            max_subscribers: self.max_subscribers,
            answer_rows: self.answer_rows,
            answer_timeout: *self.answer_timeout,
        }
    }
}

impl ServeArgs {
    pub fn config(&self) -> ServeConfig {
        let mut config = ServeConfig::new(self.listen);
        config.cache_bytes = self.cache_bytes;
        config.alerts.pass_rate_below = Some(self.alert_pass_rate).filter(|r| *r > 0.0);
        config.auth_token = self.api_token.clone().filter(|t| !t.is_empty());
        config.allowed_hosts = self.limits.allowed_hosts.iter().filter(|h| !h.trim().is_empty()).cloned().collect();
        config.limits = self.limits.limits();
        config.sql_limits = self.sql.limits();
        config.pg = self.pg.config();
        config
    }
}

#[cfg(test)]
mod tests;
