//! `testlake`: one subcommand per stage, an all-in-one mode, and producers. This file parses,
//! sets up logging and signals, and hands over to the subcommand's function in [`commands`].

mod cli;
mod commands;

use anyhow::Result;
use clap::Parser;
use testlake::shutdown::GraceExpired;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cli::{Cli, Command};

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
    let result = match cli.command {
        Command::Ingest(command) => commands::ingest::run(command, shutdown).await,
        Command::Compact(command) => commands::compact::run(command, shutdown).await,
        Command::Compute(command) => commands::compute::run(command, shutdown).await,
        Command::Serve(command) => commands::serve::run(command, shutdown).await,
        Command::All(command) => commands::all::run(command, shutdown).await,
        Command::Sql(command) => commands::sql::run(command).await,
        Command::Junit(command) => commands::junit::run(command).await,
        Command::Produce(command) => commands::produce::run(command, shutdown).await,
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
