//! Async Rust client for the Liminal broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), liminal_client::ClientError> {
//! use liminal_client::{Client, ClientOptions};
//! let client = Client::connect("127.0.0.1:7400", ClientOptions::default()).await?;
//! let mut subscription = client.subscribe("demo").await?;
//! let ack = client.publish("demo", "hello").await?;
//! assert!(ack.delivered);
//! let event = subscription.next().await;
//! # Ok(()) }
//! ```

pub mod cli;
mod client;
mod conversation;
mod error;
mod raw;
mod worker;

pub use client::{
    Client, ClientOptions, Message, PublishAck, PublishRequest, ServerEvent, SubscribeOptions, Subscription,
    SubscriptionEvent,
};
pub use conversation::{Conversation, ConversationError, ConversationEvent};
pub use error::ClientError;
pub use raw::RawConnection;
pub use worker::{Worker, WorkerEvent};
