//! Liminal's actor system.
//!
//! ```text
//! broker                      root supervisor (BrokerActor)
//! ├── store                   StoreActor: owns the RocksDB store (durable channels only)
//! ├── channels                ChannelsSupervisor: permanent children
//! │   └── <channel name>      ChannelActor, one per channel
//! ├── connections             ConnectionsSupervisor: temporary children
//! │   └── <connection id>     ConnectionActor, one per TCP connection
//! └── conversations           ConversationsSupervisor: temporary children
//!     └── <conversation id>   ConversationActor
//!         └── participant     ParticipantActor: a Responder or a remote worker proxy
//! ```
//!
//! `docs/architecture.md` describes the tree and the path of a message.

pub mod auth;
pub mod broker;
pub mod channels;
pub mod config;
pub mod connections;
pub mod conversations;
pub mod names;
pub mod outbox;
pub mod store;
pub mod supervision;

pub use broker::{BrokerError, BrokerHandle};
pub use config::{
    BrokerConfig, ChannelConfig, ConversationsConfig, CrashPolicy, FsyncPolicy, Limits, PersistenceConfig,
    ResponderPreference, RestartIntensity, RetentionConfig, SlowConsumerPolicy, UnknownSubjectPolicy,
};
pub use conversations::responder::{
    BoxedResponder, ConversationInfo, EchoResponder, RegistryError, ReplyContext, Responder, ResponderError,
    ResponderFactory, ResponderRegistry,
};
pub use supervision::TreeNode;

/// Longest idempotency key a publish may carry, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
