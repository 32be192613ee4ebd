//! The `liminal-server` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::logging::{self, LogFormat};
use crate::server::Server;

/// Liminal message broker server.
#[derive(Debug, Parser)]
#[command(name = "liminal-server", version, about)]
pub struct Args {
    /// Configuration file (TOML). Without it the embedded default is used.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (and LIMINAL_* overrides), print the
    /// effective configuration with secrets redacted, and exit. Without PATH
    /// it checks the --config file, or the embedded default.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub check_config: Option<Option<PathBuf>>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs the server until SIGINT or SIGTERM. Returns an error for startup
/// failures and for a broker that stopped on its own.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.check_config {
        let settings = Settings::load(path.as_deref().or(args.config.as_deref()))?;
        // Warnings go to stderr so stdout stays a valid config file.
        for variable in &settings.unknown_variables {
            eprintln!("warning: {variable} matches no setting and is ignored (docs/operations.md lists every override)");
        }
        print!("{}", settings.redacted_toml());
        return Ok(());
    }
    logging::init(args.log_format);
    let settings = Settings::load(args.config.as_deref())?;
    for variable in &settings.unknown_variables {
        warn!(variable, "ignoring unknown LIMINAL_* environment variable");
    }
    info!(config = %settings.origin, "configuration loaded");

    let mut terminate = signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;

    let server = Server::start(&settings).await?;
    if let Ok(tree) = server.broker().tree().await {
        info!("supervision tree at startup:\n{}", tree.render().trim_end());
    }
    // One machine-readable line on stdout, so scripts and tests started with
    // port 0 learn the bound addresses.
    println!(
        "liminal-server listening client={} http={}",
        server.client_address(),
        server.http_address()
    );

    let broker_stopped = {
        let broker = server.broker().clone();
        async move {
            while broker.is_running() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let signal_name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        _ = broker_stopped => {
            error!("the broker stopped after a supervisor gave up; exiting");
            anyhow::bail!("the broker stopped after a supervisor exceeded its restart intensity");
        }
    };
    info!(signal = signal_name, "shutdown requested; a second signal exits at once");
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        warn!("second signal received; exiting without draining");
        std::process::exit(130);
    });
    crate::drain::drain(server, settings.server.drain_timeout).await;
    info!("shutdown complete");
    Ok(())
}
