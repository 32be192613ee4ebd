//! `liminal sub`.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use liminal_protocol::StartPosition;

use crate::{Client, Message, SubscribeOptions, SubscriptionEvent};

#[derive(Debug, Args)]
pub struct SubArgs {
    /// Channel to read.
    pub channel: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Where to start: "latest" (default), "earliest" or an offset (durable channels).
    #[arg(long, value_name = "earliest|latest|OFFSET", conflicts_with = "consumer")]
    pub from: Option<String>,
    /// Named durable consumer: resume after its last acknowledged offset and
    /// acknowledge each message after printing it.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Print one JSON object per message instead of the payload: `message_id`, `payload` for
    /// UTF-8 payloads or `payload_base64` for any other bytes, and `headers` when it has any.
    #[arg(long)]
    pub json: bool,
}

fn start_position(args: &SubArgs) -> anyhow::Result<StartPosition> {
    if let Some(name) = &args.consumer {
        return Ok(StartPosition::Consumer(name.clone()));
    }
    match args.from.as_deref() {
        None | Some("latest") => Ok(StartPosition::Latest),
        Some("earliest") => Ok(StartPosition::Earliest),
        Some(offset) => offset
            .parse()
            .map(StartPosition::Offset)
            .with_context(|| format!("invalid --from {offset:?}: expected earliest, latest or an offset number")),
    }
}

pub async fn run(client: &Client, args: &SubArgs) -> anyhow::Result<()> {
    let options = SubscribeOptions {
        start: start_position(args)?,
        accept_schemas: None,
    };
    let mut subscription = client.subscribe_with(&args.channel, options).await?;
    if subscription.truncated {
        eprintln!(
            "note: the requested offset was removed by retention; starting at offset {}",
            subscription.start_offset.unwrap_or(0)
        );
    }
    let mut received = 0u64;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|count| received < count) {
        let Some(event) = subscription.next().await else {
            let reason = client
                .closed_reason()
                .map(|error| error.to_string())
                .unwrap_or_else(|| "connection closed".to_owned());
            anyhow::bail!("subscription ended: {reason}");
        };
        match event {
            SubscriptionEvent::Message(message) => {
                let mut out = stdout.lock();
                if args.json {
                    writeln!(out, "{}", json_line(&message))?;
                } else {
                    out.write_all(&message.payload)?;
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                drop(out);
                if args.consumer.is_some() {
                    client.ack(subscription.subscription_id, message.message_id)?;
                }
                received += 1;
            }
            SubscriptionEvent::Dropped(count) => {
                eprintln!("warning: the server dropped {count} messages because this subscriber read too slowly");
            }
            SubscriptionEvent::Lost(reason) => anyhow::bail!("subscription lost: {reason}"),
        }
    }
    if args.consumer.is_some() {
        // Acks are fire-and-forget; a round trip makes sure they left.
        client.ping().await?;
    }
    Ok(())
}

/// Formats one message for `--json`. A payload that is not UTF-8 is sent as
/// base64, so binary messages survive the round trip through JSON intact.
fn json_line(message: &Message) -> serde_json::Value {
    let mut object = match std::str::from_utf8(&message.payload) {
        Ok(text) => serde_json::json!({ "message_id": message.message_id, "payload": text }),
        Err(_) => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&message.payload);
            serde_json::json!({ "message_id": message.message_id, "payload_base64": encoded })
        }
    };
    if let Some(headers) = &message.headers {
        object["headers"] = serde_json::json!(headers);
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use liminal_protocol::Headers;

    fn message(message_id: u64, payload: &[u8], headers: Option<Headers>) -> Message {
        Message {
            message_id,
            payload: bytes::Bytes::copy_from_slice(payload),
            headers,
        }
    }

    #[test]
    fn json_line_keeps_text_and_binary() {
        let text = json_line(&message(3, "héllo".as_bytes(), None));
        assert_eq!(text["message_id"], 3);
        assert_eq!(text["payload"], "héllo");
        assert!(text.get("headers").is_none());

        let binary = json_line(&message(4, &[0xff, 0x00, 0x80], None));
        assert_eq!(binary["payload_base64"], "/wCA");
        assert!(binary.get("payload").is_none());
    }

    #[test]
    fn json_line_shows_headers() {
        let mut headers = Headers::new();
        headers.insert("trace".to_owned(), "abc".to_owned());
        let line = json_line(&message(5, b"x", Some(headers)));
        assert_eq!(line["headers"]["trace"], "abc");
    }
}
