//! What every connection actor shares: configuration and the actors it
//! talks to.

use std::sync::Arc;

use ractor::ActorRef;

use crate::channels::ChannelsMsg;
use crate::config::BrokerConfig;
use crate::connections::validation::SchemaValidation;
use crate::conversations::ConversationsHandle;

/// Shared, read-only context of all connections of one broker.
#[derive(Debug)]
pub struct ConnectionContext {
    pub config: Arc<BrokerConfig>,
    pub channels: ActorRef<ChannelsMsg>,
    pub conversations: ConversationsHandle,
    /// Validates publishes to schema channels; `None` when no channel has a schema.
    pub validation: Option<SchemaValidation>,
}
