//! `testlake`: one subcommand per stage, an all-in-one mode, and producers. This file reads the
//! configuration file, parses, sets up logging and signals, and hands over to the subcommand's
//! function in [`commands`].

mod cli;
mod commands;
mod config;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
use testlake::shutdown::GraceExpired;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cli::{Cli, Command, ConfigAction, LogArgs, LogFormat};
use crate::config::ConfigFile;

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
            info!("shutting down: inputs, then ingest (flush and commit), compute, serving (signal again to force)");
            cancel.cancel();
        }
    });
    token
}

/// The command line, over the configuration file's values when one is named; exits on an
/// error, as clap does.
fn parse() -> (Cli, clap::Command, Option<ConfigFile>) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let fail = |e: anyhow::Error| -> ! {
        eprintln!("error: {e:#}");
        std::process::exit(2)
    };
    let file = config::path_from_args(&args).map(|path| ConfigFile::load(&path).unwrap_or_else(|e| fail(e)));
    let command = match &file {
        Some(file) => config::apply(Cli::command(), file).unwrap_or_else(|e| fail(e)),
        None => Cli::command(),
    };
    let matches = command.clone().try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, command, file)
}

/// What is logged without --log-level or `RUST_LOG`: the Delta kernel logs every snapshot it
/// builds at info, and deltalake every commit conflict at error — expected with several writers,
/// each of which re-reads the table and commits again (a commit that still fails is reported by
/// testlake itself).
const DEFAULT_LOG_LEVEL: &str =
    "info,datafusion=warn,buoyant_kernel=warn,deltalake_core=warn,deltalake_core::kernel::transaction=off";

/// Log lines to stderr, as text or JSON, filtered by --log-level, else `RUST_LOG`.
fn init_logging(log: &LogArgs) {
    let filter = match &log.log_level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
            eprintln!("error: --log-level {level:?}: {e}");
            std::process::exit(2)
        }),
        None => tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_LEVEL.into()),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (cli, command, file) = parse();
    init_logging(&cli.log);
    let shutdown = shutdown_on_signal();
    let result = match cli.command {
        Command::Ingest(command) => commands::ingest::run(command, shutdown).await,
        Command::Compact(command) => commands::compact::run(command, shutdown).await,
        Command::Compute(command) => commands::compute::run(command, shutdown).await,
        Command::Serve(command) => commands::serve::run(command, shutdown).await,
        Command::All(command) => commands::all::run(command, shutdown).await,
        Command::Sql(command) => commands::sql::run(command).await,
        Command::Junit(command) => commands::junit::run(command).await,
        Command::Produce(command) => commands::produce::run(command, shutdown).await,
        Command::Config(ConfigAction::Show { command: argv }) => {
            config::show(&command, file.as_ref(), &argv).map(|text| print!("{text}"))
        }
        Command::Config(ConfigAction::Reference) => {
            print!("{}", config::reference(&Cli::command()));
            Ok(())
        }
    };
    if let Err(e) = &result
        && let Some(expired) = e.downcast_ref::<GraceExpired>()
    {
        // Exit now: returning would wait for the stages' blocking work to finish.
        error!("{expired}");
        std::process::exit(1);
    }
    result
}
