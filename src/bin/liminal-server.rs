//! The `liminal-server` binary.

use clap::Parser;

// The broker allocates and frees many small buffers per message on several
// threads: frames, payload copies and parsed JSON for schema checks. mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = liminal_server::cli::Args::parse();
    match liminal_server::cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liminal-server: {}", liminal::error_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
