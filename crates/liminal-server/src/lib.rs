//! The Liminal server: configuration, listeners, signal handling and
//! logging around the broker's actor system.

pub mod cli;
pub mod config;
pub mod drain;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod server;

pub use config::{ConfigError, Settings};
pub use server::{Server, StartError};
