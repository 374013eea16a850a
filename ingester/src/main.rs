//! `sluice-ingester`: the server and its command-line client.

mod cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Sluice ingester: durable time-series writes, buffered in memory,
/// queried over Arrow Flight.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info` or `sluice_ingester=debug,info`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an ingester. With no arguments: a complete single node under ./data.
    Serve(Box<sluice_ingester::Config>),
    /// Write line protocol (files, stdin, gzip) over gRPC, with a progress bar.
    Write(cli::WriteArgs),
    /// Query a table over Arrow Flight (table, CSV, JSON Lines or Parquet).
    Query(cli::QueryArgs),
    /// Show an ingester's state: buffer, WAL, persist queue.
    Status(cli::StatusArgs),
    /// Close the open WAL segment and start a new one.
    Rotate(cli::RotateArgs),
    /// Persist buffered data to Parquet (all, or one namespace/table).
    Persist(cli::PersistArgs),
    /// Drain the ingester before shutdown (PrepareShutdown).
    Drain(cli::DrainArgs),
    /// Accept writes again after a drain that has not finished.
    Resume(cli::ResumeArgs),
    /// List the namespaces in the catalog.
    Namespaces(cli::NamespacesArgs),
    /// List a namespace's tables and their columns.
    Tables(cli::TablesArgs),
    /// Make bearer tokens for `serve --tokens-file`.
    Token(cli::TokenArgs),
}

fn init_logging(filter: &str, format: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received Ctrl-C"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, &cli.log_format);
    let res = match cli.command {
        Command::Serve(config) => sluice_ingester::serve(*config, shutdown_signal())
            .await
            .map_err(anyhow::Error::from),
        Command::Write(a) => cli::run_write(a).await,
        Command::Query(a) => cli::run_query(a).await,
        Command::Status(a) => cli::run_status(a).await,
        Command::Rotate(a) => cli::run_rotate(a).await,
        Command::Persist(a) => cli::run_persist(a).await,
        Command::Drain(a) => cli::run_drain(a).await,
        Command::Resume(a) => cli::run_resume(a).await,
        Command::Namespaces(a) => cli::run_namespaces(a).await,
        Command::Tables(a) => cli::run_tables(a).await,
        Command::Token(a) => cli::run_token(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
