//! Embeds the broker with a stateful in-process responder and talks to it
//! with the client.
//!
//! The `sum` responder keeps a running total per conversation: each message
//! is a number, and each reply is the total so far. Two conversations show
//! that the state belongs to one conversation.
//!
//! Run with `cargo run --example custom_responder`.

use bytes::Bytes;
use liminal_broker::{ConversationInfo, ReplyContext, Responder, ResponderError};
use liminal_client::{Client, ClientOptions};
use std::time::Duration;

/// One per conversation, created by the factory given to the builder.
struct RunningTotal {
    conversation_id: u64,
    total: i64,
}

impl Responder for RunningTotal {
    async fn on_open(&mut self, conversation: &ConversationInfo) -> Result<(), ResponderError> {
        println!("[sum] conversation {} opened", conversation.conversation_id);
        Ok(())
    }

    async fn on_message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        let text = std::str::from_utf8(&payload).map_err(ResponderError::new)?;
        // An error crashes this conversation's participant; the requester
        // gets `ConversationFailed` with this message as the reason.
        let number: i64 = text
            .trim()
            .parse()
            .map_err(|error| ResponderError::new(format!("{text:?} is not an integer: {error}")))?;
        self.total += number;
        context.reply(self.total.to_string());
        Ok(())
    }

    async fn on_close(&mut self, _conversation: &ConversationInfo, reason: &str) -> Result<(), ResponderError> {
        println!(
            "[sum] conversation {} closed ({reason}) with total {}",
            self.conversation_id, self.total
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The shipped defaults, on ports the OS picks.
    let mut settings = liminal_server::Settings::load_with_env(None, Vec::new())?;
    settings.server.listen_address = "127.0.0.1:0".parse()?;
    settings.server.health_listen_address = "127.0.0.1:0".parse()?;

    let server = liminal_server::Server::builder(settings)
        .responder("sum", |conversation: &ConversationInfo| RunningTotal {
            conversation_id: conversation.conversation_id,
            total: 0,
        })
        .start()
        .await?;
    let address = server.client_address().to_string();
    println!("broker listening on {address}");

    let client = Client::connect(&address, ClientOptions::default()).await?;
    let timeout = Duration::from_secs(5);
    let mut first = client.open_conversation("sum").await?;
    let mut second = client.open_conversation("sum").await?;
    for number in ["1", "2", "3"] {
        let total = first.request(number, timeout).await?;
        println!("conversation {}: +{number} -> {}", first.id(), String::from_utf8_lossy(&total));
    }
    let total = second.request("40", timeout).await?;
    println!("conversation {}: +40 -> {}", second.id(), String::from_utf8_lossy(&total));

    first.close_and_wait(timeout).await?;
    second.close_and_wait(timeout).await?;
    server.shutdown().await;
    Ok(())
}
