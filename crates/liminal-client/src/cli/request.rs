//! `liminal request`: one request/reply exchange over a conversation.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use crate::Client;

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Subject of the conversation.
    pub subject: String,
    /// Message payload.
    pub payload: String,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout: u64,
}

/// Opens a conversation, sends the payload, prints the first reply and
/// closes. A failure (no responder, participant crash, timeout) is an error,
/// which the binary prints to stderr with a non-zero exit status.
pub async fn run(client: &Client, args: &RequestArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout);
    let mut conversation = client.open_conversation(&args.subject).await?;
    let reply = conversation.request(args.payload.clone(), timeout).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reply)?;
    if !reply.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    drop(stdout);
    // Best effort: the server also closes the conversation when this
    // connection closes.
    let _ = conversation.close_and_wait(timeout).await;
    Ok(())
}
