//! `testlake`: one subcommand per stage, an all-in-one mode, and producers.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use testlake::fleet::FleetConfig;
use testlake::produce::{ProduceConfig, Source, produce};
use testlake::stack::{Stack, StackConfig};
use testlake_compute::ComputeConfig;
use testlake_compute::flaky::FlakyConfig;
use testlake_ingest::{CompactConfig, Compactor, FlushPolicy, Ingest, IngestConfig};
use testlake_query::{AppState, ServeConfig};
use testlake_schemas::Lake;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(name = "testlake", version, about = "CI test analytics: Kafka → Parquet lake → trends → HTTP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Consume test events from Kafka into the lake's `results` table.
    Ingest {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        compact: CompactArgs,
    },
    /// Compact closed hours of `results` into few large files (the ingest and all-in-one
    /// processes also do it every --compact-every).
    Compact {
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        compact: CompactArgs,
        /// One pass, then exit (default: a pass every --compact-every until stopped).
        #[arg(long)]
        once: bool,
        /// Test hook: abort the process the n-th time a compaction step is reached.
        #[arg(long, env = "TESTLAKE_CRASH_AT", hide = true)]
        crash_at: Option<String>,
    },
    /// Materialize the trend tables, once or periodically.
    Compute {
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        notices: NoticeArgs,
        #[command(flatten)]
        compute: ComputeArgs,
        /// Recompute every date once and exit.
        #[arg(long)]
        once: bool,
        #[command(subcommand)]
        action: Option<ComputeAction>,
    },
    /// Serve the HTTP API (with --brokers: cached, invalidated and pushed by landed notices).
    Serve {
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        notices: NoticeArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Ingest, compute and serve in one process (a single machine).
    All {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        compact: CompactArgs,
        #[command(flatten)]
        compute: ComputeArgs,
        #[command(flatten)]
        serve: ServeArgs,
        /// Also run the synthetic CI fleet in-process at this many events per second (0: off).
        #[arg(long, env = "TESTLAKE_FLEET_RATE", default_value_t = 0)]
        fleet_rate: u64,
    },
    /// Run one read-only SQL statement over the lake's tables (the same tables and rules as
    /// `POST /api/v1/sql`). Reads the statement from stdin when none is given.
    Sql {
        #[command(flatten)]
        lake: LakeArgs,
        /// The statement, e.g. "SELECT repository, count(*) FROM results GROUP BY 1".
        statement: Option<String>,
        /// table (aligned text), csv or json (one object per line).
        #[arg(long, default_value = "table")]
        format: String,
        /// At most this many rows.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
        /// Stop the statement after this long.
        #[arg(long, default_value = "5min")]
        timeout: humantime::Duration,
    },
    /// Convert JUnit XML reports into events (every retry attempt its own event) and produce them.
    Junit {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// JUnit XML report files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Repository (default: from the CI environment, e.g. GITHUB_REPOSITORY).
        #[arg(long)]
        repository: Option<String>,
        /// Branch (default: from the CI environment).
        #[arg(long)]
        branch: Option<String>,
        /// Commit SHA (default: from the CI environment).
        #[arg(long)]
        commit: Option<String>,
        /// CI pipeline run id (default: from the CI environment).
        #[arg(long)]
        run_id: Option<String>,
        /// CI job or shard inside the run (default: from the CI environment).
        #[arg(long)]
        job_id: Option<String>,
        /// Print the events as JSON lines instead of producing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Produce events to the topic from a JSON-lines file or the synthetic CI fleet.
    Produce {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// A JSON-lines file, one message per line, sent as is.
        #[arg(long, conflicts_with = "synthetic")]
        file: Option<PathBuf>,
        /// Produce runs of the synthetic CI fleet.
        #[arg(long)]
        synthetic: bool,
        /// Messages per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Number of repositories in the synthetic fleet.
        #[arg(long, default_value_t = 3)]
        repositories: usize,
        /// Seed of the synthetic fleet.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TESTLAKE_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic of test events.
    #[arg(long, env = "TESTLAKE_TOPIC", default_value = "ci-test-events")]
    topic: String,
    /// Topic the ingest announces landed partitions on, for other processes ("" to disable).
    #[arg(long, env = "TESTLAKE_LANDED_TOPIC", default_value = "testlake-landed")]
    landed_topic: String,
}

#[derive(Args)]
struct NoticeArgs {
    /// Kafka bootstrap servers to follow landed-partition notices from (none: scan the lake only).
    #[arg(long, env = "TESTLAKE_BROKERS")]
    brokers: Option<String>,
    /// Topic of landed-partition notices.
    #[arg(long, env = "TESTLAKE_LANDED_TOPIC", default_value = "testlake-landed")]
    landed_topic: String,
}

#[derive(Args)]
struct LakeArgs {
    /// Lake root: a path, file:///…, or s3://… .
    #[arg(long, env = "TESTLAKE_LAKE", default_value = "./lake")]
    lake: String,
}

#[derive(Args)]
struct CompactArgs {
    /// Time between compaction passes over closed hours ("0s": no compaction in this process).
    #[arg(long, env = "TESTLAKE_COMPACT_EVERY", default_value = "5min")]
    compact_every: humantime::Duration,
    /// An hour is compacted once it ended this long ago.
    #[arg(long, env = "TESTLAKE_COMPACT_CLOSED_AFTER", default_value = "10min")]
    compact_closed_after: humantime::Duration,
    /// Rows per compacted file at most; files this large are left alone.
    #[arg(long, env = "TESTLAKE_COMPACT_ROWS", default_value_t = CompactConfig::default().target_rows)]
    compact_rows: u64,
    /// Replaced files are deleted this long after their compaction commits (readers listing
    /// folders see the hour twice meanwhile; statements following the log finish first).
    #[arg(long, env = "TESTLAKE_COMPACT_GRACE", default_value = "10s")]
    compact_grace: humantime::Duration,
    /// A compaction left undecided this long is taken for a crashed compactor's and aborted.
    #[arg(long, env = "TESTLAKE_COMPACT_STALE_AFTER", default_value = "10min")]
    compact_stale_after: humantime::Duration,
}

impl CompactArgs {
    fn config(&self) -> CompactConfig {
        CompactConfig {
            every: *self.compact_every,
            closed_after: *self.compact_closed_after,
            target_rows: self.compact_rows.max(1),
            grace: *self.compact_grace,
            stale_after: *self.compact_stale_after,
        }
    }
}

#[derive(Args)]
struct IngestArgs {
    /// Consumer group; members of one group share the topic's partitions.
    #[arg(long, env = "TESTLAKE_GROUP", default_value = "testlake-ingest")]
    group: String,
    /// Flush a partition's buffer at this many rows (bigger files, more memory).
    #[arg(long, env = "TESTLAKE_FLUSH_ROWS", default_value_t = FlushPolicy::default().max_rows)]
    flush_rows: usize,
    /// Flush a partition's buffer at this many input bytes.
    #[arg(long, env = "TESTLAKE_FLUSH_BYTES", default_value_t = FlushPolicy::default().max_bytes)]
    flush_bytes: usize,
    /// Flush a partition's buffer when its oldest row is this old (freshness vs. file count).
    #[arg(long, env = "TESTLAKE_FLUSH_AGE", default_value = "500ms")]
    flush_age: humantime::Duration,
    /// Extra librdkafka consumer property, KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
    /// Input bytes buffered over all partitions before the largest buffer is flushed early:
    /// the ingest's memory bound.
    #[arg(long, env = "TESTLAKE_BUFFER_BYTES", default_value_t = FlushPolicy::default().max_total_bytes)]
    buffer_bytes: usize,
    /// Test hook: abort the process the n-th time a commit step is reached (`after_intent:3`).
    #[arg(long, env = "TESTLAKE_CRASH_AT", hide = true)]
    crash_at: Option<String>,
}

#[derive(Subcommand)]
enum ComputeAction {
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
struct ComputeArgs {
    /// Run the periodic cycle (notices drive recompute either way).
    #[arg(long, env = "TESTLAKE_COMPUTE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    compute_enabled: bool,
    /// How far back the cycle checks hourly trends.
    #[arg(long, env = "TESTLAKE_HOURLY_LOOKBACK", default_value = "2days")]
    hourly_lookback: humantime::Duration,
    /// How far back the cycle checks daily trends.
    #[arg(long, env = "TESTLAKE_DAILY_LOOKBACK", default_value = "7days")]
    daily_lookback: humantime::Duration,
    /// At most this many dates recomputed per cycle.
    #[arg(long, env = "TESTLAKE_COMPUTE_BATCH_SIZE", default_value_t = 64)]
    compute_batch_size: usize,
    /// Wait this long after start before the first cycle.
    #[arg(long, env = "TESTLAKE_COMPUTE_STARTUP_DELAY", default_value = "0s")]
    compute_startup_delay: humantime::Duration,
    /// Serve /healthz and /metrics of a standalone compute process here.
    #[arg(long, env = "TESTLAKE_COMPUTE_LISTEN")]
    compute_listen: Option<SocketAddr>,
    /// How long a partition lease lasts unless released (several compute processes).
    #[arg(long, env = "TESTLAKE_LEASE_TTL", default_value = "5min")]
    lease_ttl: humantime::Duration,
    /// How often compute scans the lake for dates whose results changed.
    #[arg(long, env = "TESTLAKE_COMPUTE_INTERVAL", default_value = "30s")]
    compute_interval: humantime::Duration,
    /// The shortest time between two refreshes of today's flaky scores.
    #[arg(long, env = "TESTLAKE_FLAKY_REFRESH", default_value = "30s")]
    flaky_refresh: humantime::Duration,
    /// How far back flaky scores look.
    #[arg(long, env = "TESTLAKE_FLAKY_WINDOW", default_value = "30days")]
    flaky_window: humantime::Duration,
    /// A flip that lifts the weighted flip rate above this marks a flake (with enough executions).
    #[arg(long, env = "TESTLAKE_FLIP_THRESHOLD", default_value_t = FlakyConfig::default().flip_threshold)]
    flip_threshold: f64,
    /// Executions a test needs before its weighted flip rate can call it flaky.
    #[arg(long, env = "TESTLAKE_FLAKY_MIN_EXECUTIONS", default_value_t = FlakyConfig::default().min_executions)]
    flaky_min_executions: u64,
    /// A run in which at least this share of tests failed is an outage, left out of flaky scores.
    #[arg(long, env = "TESTLAKE_OUTAGE_SHARE", default_value_t = FlakyConfig::default().outage_failure_share)]
    outage_share: f64,
}

#[derive(Args)]
struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TESTLAKE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Memory budget of cached answers, in bytes.
    #[arg(long, env = "TESTLAKE_CACHE_BYTES", default_value_t = 256 << 20)]
    cache_bytes: u64,
    /// Push an alert when a repository's pass rate today drops below this (0: no alerts).
    #[arg(long, env = "TESTLAKE_ALERT_PASS_RATE", default_value_t = 0.8)]
    alert_pass_rate: f64,
    /// Require this bearer token on /api/* (probes stay open). Prefer the environment variable.
    #[arg(long, env = "TESTLAKE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> ServeConfig {
        let mut config = ServeConfig::new(self.listen);
        config.cache_bytes = self.cache_bytes;
        config.alerts.pass_rate_below = Some(self.alert_pass_rate).filter(|r| *r > 0.0);
        config.auth_token = self.api_token.clone().filter(|t| !t.is_empty());
        config
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

impl IngestArgs {
    fn config(&self, kafka: &KafkaArgs) -> IngestConfig {
        let mut config = IngestConfig::new(&kafka.brokers, &kafka.topic);
        config.group_id = self.group.clone();
        config.flush = FlushPolicy {
            max_rows: self.flush_rows,
            max_bytes: self.flush_bytes,
            max_age: *self.flush_age,
            max_total_bytes: self.buffer_bytes,
        };
        config.crash_at = self.crash_at.clone();
        config.kafka_properties = self.kafka_properties.clone();
        config
    }
}

impl ComputeArgs {
    fn config(&self) -> ComputeConfig {
        ComputeConfig {
            enabled: self.compute_enabled,
            hourly_lookback: *self.hourly_lookback,
            daily_lookback: *self.daily_lookback,
            batch_size: self.compute_batch_size.max(1),
            startup_delay: *self.compute_startup_delay,
            lease_ttl: *self.lease_ttl,
            interval: *self.compute_interval,
            flaky_refresh: *self.flaky_refresh,
            flaky: FlakyConfig {
                window: chrono::Duration::from_std(*self.flaky_window).unwrap_or(chrono::Duration::days(30)),
                flip_threshold: self.flip_threshold,
                min_executions: self.flaky_min_executions,
                outage_failure_share: self.outage_share,
                ..FlakyConfig::default()
            },
            ..ComputeConfig::default()
        }
    }
}

/// Cancels the token on the first SIGINT/SIGTERM; a second signal exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                std::process::exit(130);
            }
            info!("shutting down: flushing and committing (signal again to force)");
            cancel.cancel();
        }
    });
    token
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,datafusion=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = shutdown_on_signal();
    match cli.command {
        Command::Ingest { kafka, lake, ingest, compact } => {
            let lake = Lake::open(&lake.lake)?;
            let (landed, forwarder) = if kafka.landed_topic.is_empty() {
                (None, None)
            } else {
                testlake::kafka::ensure_topic(&kafka.brokers, &kafka.landed_topic, 1).await?;
                let publisher = testlake_ingest::notices::Publisher::new(&kafka.brokers, &kafka.landed_topic)?;
                let (tx, rx) = tokio::sync::broadcast::channel(4096);
                (Some(tx), Some(tokio::spawn(testlake_ingest::notices::publish(rx, publisher))))
            };
            let ingest = Ingest::new(ingest.config(&kafka), lake.clone(), landed, Default::default())?;
            let compactor = tokio::spawn(Compactor::new(lake, compact.config()).run(shutdown.clone()));
            ingest.run(shutdown).await?;
            compactor.await?;
            if let Some(forwarder) = forwarder {
                forwarder.await?;
            }
        }
        Command::Compact { lake, compact, once, crash_at } => {
            let mut compactor = Compactor::new(Lake::open(&lake.lake)?, compact.config());
            if once {
                let crash = crash_at.as_deref().map(testlake_ingest::crash::Crasher::parse).transpose();
                let report = compactor.pass(&crash.map_err(anyhow::Error::msg)?.unwrap_or_default()).await?;
                info!(?report, "compaction pass done");
                anyhow::ensure!(report.failed == 0, "{} hours failed to compact", report.failed);
            } else {
                anyhow::ensure!(!compact.compact_every.is_zero(), "--compact-every 0s: nothing to do");
                compactor.run(shutdown).await;
            }
        }
        Command::Compute { lake, notices, compute, once, action } => {
            let lake = Lake::open(&lake.lake)?;
            if let Some(ComputeAction::Backfill { from, to }) = action {
                anyhow::ensure!(from <= to, "--from ({from}) must not be after --to ({to})");
                let mut scheduler = testlake_compute::Scheduler::new(lake, compute.config(), None);
                let tally = scheduler
                    .backfill(from, to, |done, total, date, tally| {
                        let width = 30;
                        let filled = width * done / total.max(1);
                        eprint!(
                            "\r[{}{}] {done}/{total} {date}  completed {} skipped {} failed {}",
                            "#".repeat(filled),
                            ".".repeat(width - filled),
                            tally.completed,
                            tally.skipped,
                            tally.failed
                        );
                    })
                    .await?;
                eprintln!();
                info!(completed = tally.completed, skipped = tally.skipped, failed = tally.failed, "backfill finished");
                anyhow::ensure!(tally.failed == 0, "{} backfill tasks failed", tally.failed);
            } else if once {
                let tally = testlake_compute::run_once(&lake, &compute.config()).await?;
                info!(completed = tally.completed, skipped = tally.skipped, failed = tally.failed, "computed");
                anyhow::ensure!(tally.failed == 0, "{} compute tasks failed", tally.failed);
            } else {
                let landed = match &notices.brokers {
                    Some(brokers) if !notices.landed_topic.is_empty() => {
                        testlake::kafka::ensure_topic(brokers, &notices.landed_topic, 1).await?;
                        Some(testlake_ingest::notices::subscribe(brokers, &notices.landed_topic, shutdown.clone())?)
                    }
                    _ => None,
                };
                // What compute rewrites is announced on the same topic, for query services.
                let computed = notices.brokers.as_deref().filter(|_| !notices.landed_topic.is_empty()).map(|brokers| {
                    let publisher = testlake_ingest::notices::Publisher::new(brokers, &notices.landed_topic)?;
                    let (tx, rx) = tokio::sync::broadcast::channel::<testlake_schemas::Landed>(1024);
                    anyhow::Ok((tx, tokio::spawn(testlake_ingest::notices::publish(rx, publisher))))
                });
                let (computed, forwarder) = computed.transpose()?.unzip();
                let scheduler = testlake_compute::Scheduler::new(lake, compute.config(), computed);
                if let Some(listen) = compute.compute_listen {
                    testlake::probes::serve(listen, scheduler.metrics(), shutdown.clone()).await?;
                }
                testlake_compute::run(scheduler, landed, shutdown).await?;
                if let Some(forwarder) = forwarder {
                    forwarder.await?;
                }
            }
        }
        Command::Serve { lake, notices, serve } => {
            let mut config = serve.config();
            let landed = match &notices.brokers {
                Some(brokers) if !notices.landed_topic.is_empty() => {
                    testlake::kafka::ensure_topic(brokers, &notices.landed_topic, 1).await?;
                    Some(testlake_ingest::notices::subscribe(brokers, &notices.landed_topic, shutdown.clone())?)
                }
                _ => {
                    tracing::warn!("no --brokers: nothing tells the service what landed, so it caches nothing");
                    config.cache_bytes = 0;
                    None
                }
            };
            let state = std::sync::Arc::new(AppState::new(Lake::open(&lake.lake)?, &config));
            testlake_query::serve(config, state, landed, shutdown, None).await?;
        }
        Command::All { kafka, lake, ingest, compact, compute, serve, fleet_rate } => {
            let config = StackConfig {
                lake: lake.lake,
                ingest: ingest.config(&kafka),
                compact: compact.config(),
                compute: compute.config(),
                serve: serve.config(),
            };
            if fleet_rate > 0 {
                // The fleet's topic must exist before the consumer subscribes to it.
                testlake::kafka::ensure_topic(&kafka.brokers, &kafka.topic, 4).await?;
            }
            let mut publisher = None;
            if !kafka.landed_topic.is_empty() {
                testlake::kafka::ensure_topic(&kafka.brokers, &kafka.landed_topic, 1).await?;
                publisher = Some(testlake_ingest::notices::Publisher::new(&kafka.brokers, &kafka.landed_topic)?);
            }
            let stack = Stack::start_publishing(config, publisher, shutdown.clone()).await?;
            info!(api = %format!("http://{}/api/v1/dashboard", stack.addr), lake = %stack.lake.url(), "testlake is running");
            if fleet_rate > 0 {
                let produce_config = ProduceConfig {
                    brokers: kafka.brokers.clone(),
                    topic: kafka.topic.clone(),
                    source: Source::Synthetic(FleetConfig::default()),
                    rate: fleet_rate,
                    count: None,
                };
                let token = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = produce(produce_config, token).await {
                        tracing::error!(error = %e, "synthetic fleet stopped");
                    }
                });
            }
            stack.wait().await?;
        }
        Command::Sql { lake, statement, format, max_rows, timeout } => {
            let statement = match statement {
                Some(s) => s,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let lake = Lake::open(&lake.lake)?;
            let limits = testlake_query::sql::SqlLimits { timeout: *timeout, max_rows, ..Default::default() };
            let mut committed = Default::default();
            let ctx = testlake_query::sql::session(&lake, &mut committed, &limits)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let answer =
                testlake_query::sql::run(&ctx, &statement, &limits).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let stdout = std::io::stdout();
            match format.as_str() {
                "table" => println!("{}", arrow::util::pretty::pretty_format_batches(&[answer.batch])?),
                "csv" => {
                    arrow::csv::WriterBuilder::new().with_header(true).build(stdout.lock()).write(&answer.batch)?
                }
                "json" => {
                    let mut writer = arrow::json::LineDelimitedWriter::new(stdout.lock());
                    writer.write(&answer.batch)?;
                    writer.finish()?;
                }
                other => anyhow::bail!("--format must be table, csv or json, got {other:?}"),
            }
            if answer.truncated {
                eprintln!("(truncated at {max_rows} rows; raise --max-rows for more)");
            }
        }
        Command::Junit { kafka, files, repository, branch, commit, run_id, job_id, dry_run } => {
            let mut context = testlake::junit::context_from_env(|name| std::env::var(name).ok());
            for (flag, field) in [
                (repository, &mut context.repository),
                (branch, &mut context.branch),
                (commit, &mut context.commit_sha),
                (run_id, &mut context.run_id),
            ] {
                if let Some(value) = flag {
                    *field = value;
                }
            }
            context.job_id = job_id.or(context.job_id);
            let events = testlake::junit::convert(&files, &context)?;
            if dry_run {
                for event in &events {
                    println!("{}", event.to_json());
                }
            } else {
                testlake::junit::produce(&kafka.brokers, &kafka.topic, &events).await?;
                info!(events = events.len(), files = files.len(), topic = %kafka.topic, "produced");
            }
        }
        Command::Produce { kafka, file, synthetic, rate, count, repositories, seed } => {
            let source = match (file, synthetic) {
                (Some(path), _) => Source::File(path),
                (None, true) => Source::Synthetic(FleetConfig { repositories, seed, ..FleetConfig::default() }),
                (None, false) => {
                    anyhow::bail!("say where events come from: --file FILE or --synthetic")
                }
            };
            let config = ProduceConfig { brokers: kafka.brokers, topic: kafka.topic, source, rate, count };
            produce(config, shutdown).await?;
        }
    }
    Ok(())
}
