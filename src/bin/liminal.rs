//! The `liminal` command-line client.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = liminal_client::cli::Args::parse();
    match liminal_client::cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liminal: {}", liminal::error_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
