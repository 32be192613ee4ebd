//! Liminal's actor system.
//!
//! ```text
//! broker                      root supervisor (BrokerActor)
//! ├── channels                ChannelsSupervisor: permanent children
//! │   └── <channel name>      ChannelActor, one per channel
//! └── connections             ConnectionsSupervisor: temporary children
//!     └── <connection id>     ConnectionActor, one per TCP connection
//! ```
//!
//! `docs/architecture.md` describes the tree and the path of a message.

pub mod auth;
pub mod broker;
pub mod channels;
pub mod config;
pub mod connections;
pub mod names;
pub mod outbox;
pub mod supervision;

pub use broker::{BrokerError, BrokerHandle};
pub use config::{BrokerConfig, ChannelConfig, Limits, RestartIntensity, RetentionConfig, SlowConsumerPolicy};
pub use supervision::TreeNode;

/// Longest idempotency key a publish may carry, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
