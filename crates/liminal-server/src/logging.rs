//! Logging setup: `tracing-subscriber` on stderr, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset: the broker's own events at info,
/// dependencies at warn.
const DEFAULT_FILTER: &str = "warn,liminal=info,liminal_server=info,liminal_broker=info,liminal_store=info";

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|error| {
            eprintln!("liminal-server: ignoring invalid RUST_LOG={directives:?} ({error}); logging with {DEFAULT_FILTER:?}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };
    // Colours only for a terminal: in a file or a pipe the escape codes get
    // in the way of grep and log collectors.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
    install_panic_hook();
}

/// Routes panics through `tracing`, so a crashing actor leaves one
/// structured log event (with the thread and location) instead of raw
/// stderr text. A backtrace is captured only when `RUST_BACKTRACE` asks for it.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::capture();
        let location = info.location().map(|location| location.to_string()).unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                %location,
                %backtrace,
                "panic: {payload}"
            ),
            _ => tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, "panic: {payload}"),
        }
    }));
}
