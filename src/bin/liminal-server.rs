//! The `liminal-server` binary.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = liminal_server::cli::Args::parse();
    match liminal_server::cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liminal-server: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
