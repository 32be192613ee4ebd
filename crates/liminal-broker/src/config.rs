//! The broker's runtime configuration, as the server hands it over after
//! loading and validating the TOML file and the `LIMINAL_*` overrides.

use std::path::PathBuf;
use std::time::Duration;

/// What a channel does when a subscriber's connection cannot take more data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// The slow subscriber loses its oldest pending messages and is told how many.
    #[default]
    Drop,
    /// The slow connection is closed with the `slow_consumer` error code.
    Disconnect,
}

/// Retention limits of a durable channel; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

/// One channel declared in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub durable: bool,
    pub retention: RetentionConfig,
    pub slow_consumer: Option<SlowConsumerPolicy>,
    pub dedup_window: Duration,
    /// JSON Schema file for publish-time validation, already resolved
    /// relative to the config file.
    pub schema: Option<PathBuf>,
}

impl ChannelConfig {
    /// An ephemeral channel with default settings.
    pub fn ephemeral(name: impl Into<String>) -> ChannelConfig {
        ChannelConfig {
            name: name.into(),
            durable: false,
            retention: RetentionConfig::default(),
            slow_consumer: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            schema: None,
        }
    }
}

/// Default idempotency window, the same two minutes common brokers use.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// How often supervisors may restart a child before giving up and
/// escalating: at most `max_restarts` within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for RestartIntensity {
    fn default() -> RestartIntensity {
        RestartIntensity {
            max_restarts: 5,
            within: Duration::from_secs(10),
        }
    }
}

/// Per-connection and per-server limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_conversations_per_connection: usize,
    pub max_frame_bytes: u32,
    /// Bytes of encoded frames a connection may have queued for sending
    /// before the slow-consumer policy applies.
    pub max_outbound_bytes: usize,
    /// Publishes a connection may have in flight (received, not yet acked)
    /// before the server stops reading from its socket.
    pub max_inflight_publishes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_subscriptions_per_connection: 1_000,
            max_conversations_per_connection: 1_000,
            max_frame_bytes: liminal_protocol::DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: 8 * 1024 * 1024,
            max_inflight_publishes: 4_096,
        }
    }
}

/// Everything the broker needs to run.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Identifies this server in `Welcome` frames and logs.
    pub server_id: String,
    pub channels: Vec<ChannelConfig>,
    /// Whether publishing or subscribing to an undeclared channel creates it
    /// (as an ephemeral channel) instead of failing with `unknown_channel`.
    pub auto_create_channels: bool,
    pub restart_intensity: RestartIntensity,
    pub limits: Limits,
    pub slow_consumer: SlowConsumerPolicy,
    /// Shared secret every client must present in `Hello`; `None` disables auth.
    pub auth_token: Option<String>,
    /// Enables the `InjectFault` frame, which crashes actors on request.
    /// Meant for fault-tolerance tests; never enable it in production.
    pub fault_injection: bool,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            server_id: "liminal".to_owned(),
            channels: Vec::new(),
            auto_create_channels: true,
            restart_intensity: RestartIntensity::default(),
            limits: Limits::default(),
            slow_consumer: SlowConsumerPolicy::default(),
            auth_token: None,
            fault_injection: false,
        }
    }
}
