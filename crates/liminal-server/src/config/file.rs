//! The TOML configuration file, as written by operators. Every table denies
//! unknown keys, so a misspelled key is a startup error naming it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address of the client (TCP) listener.
    pub listen_address: String,
    /// Address of the HTTP listener for /health, /ready, /metrics and /supervision.
    pub health_listen_address: String,
    /// Directory below which the durable store lives.
    pub persistence_path: String,
    /// How long a graceful drain may take before the server exits anyway.
    pub drain_timeout_ms: u64,
    /// Whether an undeclared channel is created (ephemeral) on first use.
    pub auto_create_channels: bool,
    /// Name this server reports in `Welcome`; defaults to "liminal".
    #[serde(default)]
    pub server_id: Option<String>,
    /// Enables the `InjectFault` frame. For fault-tolerance tests only.
    #[serde(default)]
    pub fault_injection: bool,
    /// Default slow-consumer policy: "drop" or "disconnect".
    #[serde(default = "default_slow_consumer")]
    pub slow_consumer: String,
    /// When durable writes are synced to disk: "always", "interval" or "never".
    #[serde(default = "default_fsync")]
    pub fsync: String,
    /// Longest time between syncs under `fsync = "interval"`, in milliseconds.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Threads that validate publishes to schema channels; 0 means one per CPU core.
    #[serde(default)]
    pub schema_validation_threads: u64,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub supervision: SupervisionFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub channels: Vec<ChannelFile>,
    #[serde(default)]
    pub conversations: ConversationsFile,
}

fn default_fsync() -> String {
    "always".to_owned()
}

fn default_fsync_interval_ms() -> u64 {
    10
}

fn default_slow_consumer() -> String {
    "drop".to_owned()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    pub max_connections: u64,
    pub max_subscriptions_per_connection: u64,
    pub max_conversations_per_connection: u64,
    pub max_frame_bytes: u64,
    pub max_outbound_bytes: u64,
    pub max_inflight_publishes: u64,
    pub write_timeout_ms: u64,
    pub hello_timeout_ms: u64,
}

impl Default for LimitsFile {
    fn default() -> LimitsFile {
        let limits = liminal_broker::Limits::default();
        LimitsFile {
            max_connections: limits.max_connections as u64,
            max_subscriptions_per_connection: limits.max_subscriptions_per_connection as u64,
            max_conversations_per_connection: limits.max_conversations_per_connection as u64,
            max_frame_bytes: u64::from(limits.max_frame_bytes),
            max_outbound_bytes: limits.max_outbound_bytes as u64,
            max_inflight_publishes: limits.max_inflight_publishes as u64,
            write_timeout_ms: limits.write_timeout.as_millis() as u64,
            hello_timeout_ms: limits.hello_timeout.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionFile {
    /// Restarts a supervisor allows a child within `restart_window_ms`.
    pub max_restarts: u64,
    pub restart_window_ms: u64,
}

impl Default for SupervisionFile {
    fn default() -> SupervisionFile {
        let intensity = liminal_broker::RestartIntensity::default();
        SupervisionFile {
            max_restarts: u64::from(intensity.max_restarts),
            restart_window_ms: intensity.within.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Shared token clients present in `Hello`. Unset disables auth.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    pub name: String,
    #[serde(default)]
    pub durable: bool,
    /// JSON Schema file, relative to the config file.
    #[serde(default)]
    pub schema: Option<String>,
    /// "drop" or "disconnect"; the server default when unset.
    #[serde(default)]
    pub slow_consumer: Option<String>,
    /// Idempotency window, for example "2m" or "24h".
    #[serde(default)]
    pub dedup_window: Option<String>,
    #[serde(default)]
    pub max_messages: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Oldest message age kept, for example "7d".
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsFile {
    /// A subject without any responder: "echo" (built-in echo responder) or "reject" (`no_responder`).
    pub unknown_subject: String,
    /// Who serves a subject that has both kinds of responder: "in_process" or "remote".
    pub prefer: String,
    /// Messages a conversation holds before its participant handled them.
    pub max_queued_messages: u64,
    /// A conversation without traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// What a participant crash does: "fail" or "restart".
    pub crash_policy: String,
    /// Per-subject crash policies that override `crash_policy`.
    pub crash_policies: std::collections::BTreeMap<String, String>,
}

impl Default for ConversationsFile {
    fn default() -> ConversationsFile {
        let defaults = liminal_broker::ConversationsConfig::default();
        ConversationsFile {
            unknown_subject: "echo".to_owned(),
            prefer: "in_process".to_owned(),
            max_queued_messages: defaults.max_queued_messages as u64,
            idle_timeout_ms: defaults.idle_timeout.as_millis() as u64,
            crash_policy: "fail".to_owned(),
            crash_policies: std::collections::BTreeMap::new(),
        }
    }
}
