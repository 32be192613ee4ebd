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
    publish_stdin(client, &args.channel, headers, args.json).await
}

/// Room left in a frame for everything but the payload: the frame name,
/// field names, request id and length prefix, with margin. Lines longer than
/// the server's frame limit minus this are rejected before they are sent.
const FRAME_OVERHEAD_BYTES: usize = 256;

/// Counts of stdin lines by outcome.
#[derive(Debug, Default)]
struct StdinOutcome {
    lines: u64,
    /// Rejected by the server or found too large before sending.
    rejected: u64,
    /// Sent, but the connection closed before their ack arrived: they may or
    /// may not have been published.
    unconfirmed: u64,
}

/// Publishes each line of stdin as one message, up to `PIPELINE_WINDOW` in
/// flight, and prints the acks in order. A line is any bytes up to a
/// newline (a trailing carriage return is removed), so payloads need not be
/// UTF-8. A rejected line is reported on stderr and the rest are still
/// published, because later lines are already on their way to the server.
/// If the connection closes, every line without an ack is reported as not
/// confirmed, so the caller knows what to retry.
async fn publish_stdin(client: &Client, channel: &str, headers: Option<Headers>, json: bool) -> anyhow::Result<()> {
    let max_payload = (client.max_frame_bytes() as usize)
        .saturating_sub(FRAME_OVERHEAD_BYTES + channel.len() + headers_size(headers.as_ref()));
    let mut in_flight = VecDeque::new();
    let mut outcome = StdinOutcome::default();
    let mut stopped = None;
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    loop {
        let mut line = match lines.next_segment().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                stopped = Some(format!("failed to read stdin after line {}: {error}", outcome.lines));
                break;
            }
        };
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        outcome.lines += 1;
        let number = outcome.lines;
        if line.len() > max_payload {
            eprintln!(
                "liminal: line {number}: {} bytes is more than the {max_payload} bytes a message may have on this server (limits.max_frame_bytes); not published",
                line.len()
            );
            outcome.rejected += 1;
            continue;
        }
        let request = PublishRequest {
            channel: channel.to_owned(),
            payload: Bytes::from(line),
            headers: headers.clone(),
            idempotency_key: None,
        };
        match client.publish_pipelined(request) {
            Ok(pending) => in_flight.push_back((number, pending)),
            Err(error) => {
                eprintln!("liminal: line {number}: not sent: {error}");
                outcome.unconfirmed += 1;
                stopped = Some(format!("the connection closed: {error}"));
                break;
            }
        }
        if in_flight.len() >= PIPELINE_WINDOW {
            let (number, pending) = in_flight.pop_front().expect("window is not empty");
            settle_line(client, number, pending.await, json, &mut outcome);
        }
    }
    while let Some((number, pending)) = in_flight.pop_front() {
        settle_line(client, number, pending.await, json, &mut outcome);
    }
    summarize(&outcome, stopped)
}

/// Prints the ack of stdin line `number`, or reports on stderr why it has none.
fn settle_line(client: &Client, number: u64, result: Result<PublishAck, ClientError>, json: bool, outcome: &mut StdinOutcome) {
    match result {
        Ok(ack) => print_ack(&ack, json),
        // While the connection is open, an error concerns this line alone.
        Err(error @ ClientError::Server { .. }) if client.closed_reason().is_none() => {
            eprintln!("liminal: line {number}: {error}");
            outcome.rejected += 1;
        }
        Err(error) => {
            eprintln!("liminal: line {number}: not confirmed, it may or may not have been published: {error}");
            outcome.unconfirmed += 1;
        }
    }
}

fn summarize(outcome: &StdinOutcome, stopped: Option<String>) -> anyhow::Result<()> {
    if outcome.rejected == 0 && outcome.unconfirmed == 0 && stopped.is_none() {
        return Ok(());
    }
    let mut summary = format!(
        "{} of {} lines published; {} rejected, {} not confirmed (see the lines reported above)",
        outcome.lines - outcome.rejected - outcome.unconfirmed,
        outcome.lines,
        outcome.rejected,
        outcome.unconfirmed
    );
    if let Some(reason) = stopped {
        summary.push_str(&format!("; stopped early: {reason}"));
    }
    anyhow::bail!(summary)
}

fn headers_size(headers: Option<&Headers>) -> usize {
    headers.map_or(0, |headers| headers.iter().map(|(name, value)| name.len() + value.len() + 8).sum())
}
