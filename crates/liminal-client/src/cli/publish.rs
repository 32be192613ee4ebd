//! `liminal pub`.

use std::collections::VecDeque;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use liminal_protocol::Headers;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Client, ClientError, PublishAck, PublishRequest};

/// Publishes kept in flight while reading stdin.
const PIPELINE_WINDOW: usize = 1024;

#[derive(Debug, Args)]
pub struct PubArgs {
    /// Channel to publish to.
    pub channel: String,
    /// Message payload. Without it, each line of stdin is one message.
    pub payload: Option<String>,
    /// Idempotency key: a repeat within the channel's dedup window is not delivered again.
    #[arg(long)]
    pub key: Option<String>,
    /// Header as NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Print one JSON object per ack instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_headers(raw: &[String]) -> anyhow::Result<Option<Headers>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let mut headers = Headers::new();
    for entry in raw {
        let (name, value) = entry
            .split_once('=')
            .with_context(|| format!("invalid --header {entry:?}: expected NAME=VALUE"))?;
        headers.insert(name.to_owned(), value.to_owned());
    }
    Ok(Some(headers))
}

fn print_ack(ack: &PublishAck, json: bool) {
    if json {
        let mut object = serde_json::json!({
            "message_id": ack.message_id,
            "delivered": ack.delivered,
            "duplicate": ack.duplicate,
        });
        if let Some(offset) = ack.offset {
            object["offset"] = offset.into();
        }
        println!("{object}");
    } else {
        let mut line = format!("message_id={} delivered={}", ack.message_id, ack.delivered);
        if let Some(offset) = ack.offset {
            line.push_str(&format!(" offset={offset}"));
        }
        line.push_str(&format!(" duplicate={}", ack.duplicate));
        println!("{line}");
    }
}

pub async fn run(client: &Client, args: &PubArgs) -> anyhow::Result<()> {
    let headers = parse_headers(&args.headers)?;
    if let Some(payload) = &args.payload {
        let ack = client
            .publish_with(PublishRequest {
                channel: args.channel.clone(),
                payload: Bytes::from(payload.clone()),
                headers,
                idempotency_key: args.key.clone(),
            })
            .await?;
        print_ack(&ack, args.json);
        return Ok(());
    }
    if args.key.is_some() {
        anyhow::bail!("--key needs a PAYLOAD argument: one key cannot cover several stdin lines");
    }
    // Pipelined: up to PIPELINE_WINDOW publishes in flight, acks printed in
    // order. A rejected line is reported and the rest are still published,
    // because lines sent after it are already on their way to the server.
    let mut in_flight = VecDeque::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut line_number = 0u64;
    let mut rejected = 0u64;
    while let Some(line) = lines.next_line().await.context("failed to read stdin")? {
        line_number += 1;
        let request = PublishRequest {
            channel: args.channel.clone(),
            payload: Bytes::from(line),
            headers: headers.clone(),
            idempotency_key: None,
        };
        in_flight.push_back((line_number, client.publish_pipelined(request)?));
        if in_flight.len() >= PIPELINE_WINDOW {
            let (number, pending) = in_flight.pop_front().expect("window is not empty");
            rejected += report_line(number, pending.await, args.json)?;
        }
    }
    while let Some((number, pending)) = in_flight.pop_front() {
        rejected += report_line(number, pending.await, args.json)?;
    }
    if rejected > 0 {
        anyhow::bail!("the server rejected {rejected} of {line_number} lines; the others were published");
    }
    Ok(())
}

/// Prints the ack of stdin line `number`, or reports its rejection on
/// stderr and returns 1. Errors that end the connection are returned.
fn report_line(number: u64, outcome: Result<PublishAck, ClientError>, json: bool) -> anyhow::Result<u64> {
    match outcome {
        Ok(ack) => {
            print_ack(&ack, json);
            Ok(0)
        }
        Err(error @ ClientError::Server { .. }) => {
            eprintln!("liminal: line {number}: {error}");
            Ok(1)
        }
        Err(error) => Err(error.into()),
    }
}
