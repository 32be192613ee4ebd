//! The broker's runtime configuration, as the server hands it over after
//! loading and validating the TOML file and the `LIMINAL_*` overrides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liminal_schema::ChannelSchema;
pub use liminal_store::FsyncPolicy;

/// The policy a channel applies when a subscriber's connection cannot take more data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// The slow subscriber loses its oldest pending messages and receives their count.
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
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub durable: bool,
    pub retention: RetentionConfig,
    pub slow_consumer: Option<SlowConsumerPolicy>,
    pub dedup_window: Duration,
    /// Compiled JSON Schema every published payload must match.
    pub schema: Option<Arc<ChannelSchema>>,
}

impl ChannelConfig {
    /// Returns an ephemeral channel with default settings.
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
    /// Maximum time one socket write may wait for the peer to read before
    /// the connection is closed as a slow consumer.
    pub write_timeout: Duration,
    /// Maximum time a new connection may take to send a valid `Hello`.
    pub hello_timeout: Duration,
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
            write_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// What opening a conversation on a subject without any responder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSubjectPolicy {
    /// The built-in echo responder serves the conversation.
    #[default]
    Echo,
    /// The open is answered with `Error{code: "no_responder"}`.
    Reject,
}

/// Which kind of responder serves a subject that has both an in-process
/// responder and registered remote workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponderPreference {
    #[default]
    InProcess,
    Remote,
}

/// What happens to a conversation whose participant crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashPolicy {
    /// The conversation fails and the requester gets `ConversationFailed`.
    #[default]
    Fail,
    /// A fresh participant continues the conversation (within the restart
    /// intensity) and the requester gets `ConversationNotice`.
    Restart,
}

/// Settings of the conversations subsystem (`[conversations]` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationsConfig {
    pub unknown_subject: UnknownSubjectPolicy,
    pub prefer: ResponderPreference,
    /// Messages a conversation accepts before its participant has handled
    /// them; one more is rejected with `conversation_queue_full`.
    pub max_queued_messages: usize,
    /// A conversation with no message from its requester and no reply for
    /// this long is closed with reason `idle timeout`.
    pub idle_timeout: Duration,
    /// Crash policy of subjects not listed in `crash_policies`.
    pub default_crash_policy: CrashPolicy,
    /// Crash policy by subject.
    pub crash_policies: std::collections::BTreeMap<String, CrashPolicy>,
}

impl ConversationsConfig {
    /// The crash policy that applies to `subject`.
    pub fn crash_policy(&self, subject: &str) -> CrashPolicy {
        self.crash_policies
            .get(subject)
            .copied()
            .unwrap_or(self.default_crash_policy)
    }
}

impl Default for ConversationsConfig {
    fn default() -> ConversationsConfig {
        ConversationsConfig {
            unknown_subject: UnknownSubjectPolicy::default(),
            prefer: ResponderPreference::default(),
            max_queued_messages: 256,
            idle_timeout: Duration::from_secs(300),
            default_crash_policy: CrashPolicy::default(),
            crash_policies: std::collections::BTreeMap::new(),
        }
    }
}

/// Location and sync policy of the durable store.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// Directory of the RocksDB store; created when missing.
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
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
    pub conversations: ConversationsConfig,
    /// The durable store; required when any channel is durable.
    pub persistence: Option<PersistenceConfig>,
    /// Threads that validate publishes to channels with a schema; 0 means one per CPU core. The
    /// pool is started only when a declared channel has a schema.
    pub schema_validation_threads: usize,
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
            persistence: None,
            conversations: ConversationsConfig::default(),
            schema_validation_threads: 0,
        }
    }
}
