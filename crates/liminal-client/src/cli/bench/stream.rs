//! Durable channel scenarios: publish to the last ack (with publish→ack
//! latency), keyed publish (idempotency cost) and replay from the start.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use liminal_protocol::StartPosition;

use super::{connect, new_histogram, report};
use crate::{PublishRequest, SubscribeOptions, SubscriptionEvent};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A durable channel declared in the server's config.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    #[arg(short = 'n', long, default_value_t = 200_000)]
    pub count: u64,
    #[arg(short = 'p', long, default_value_t = 128)]
    pub payload: usize,
    /// Publishes in flight (sent, not yet acked).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Give each message a unique idempotency key.
    #[arg(long)]
    pub key: bool,
    /// Send this file's contents as every payload instead of `--payload` bytes.
    #[arg(long, value_name = "PATH")]
    pub payload_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A durable channel declared in the server's config.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    #[arg(short = 'n', long, default_value_t = 200_000)]
    pub count: u64,
    #[arg(short = 'p', long, default_value_t = 128)]
    pub payload: usize,
}

type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::PublishAck, crate::ClientError>> + Send>>;

/// Publishes `count` messages with `window` in flight; returns the time to
/// the last ack, the latency histogram and the first offset written.
async fn publish(
    client: &crate::Client,
    channel: &str,
    count: u64,
    body: Bytes,
    window: usize,
    keyed: bool,
) -> anyhow::Result<(Duration, hdrhistogram::Histogram<u64>, u64)> {
    let run = super::run_channel("k");
    let mut latency = new_histogram();
    let mut in_flight: VecDeque<(Instant, AckFuture)> = VecDeque::with_capacity(window);
    let mut first_offset = None;
    let started = Instant::now();
    let mut settle = |sent: Instant, ack: crate::PublishAck, latency: &mut hdrhistogram::Histogram<u64>| {
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        first_offset.get_or_insert(ack.offset.unwrap_or(ack.message_id));
    };
    for index in 0..count {
        if in_flight.len() >= window {
            let (sent, ack) = in_flight.pop_front().expect("window is full");
            settle(sent, ack.await?, &mut latency);
        }
        let request = PublishRequest {
            channel: channel.to_owned(),
            payload: body.clone(),
            headers: None,
            idempotency_key: keyed.then(|| format!("{run}-{index}")),
        };
        in_flight.push_back((Instant::now(), Box::pin(client.publish_pipelined(request)?)));
    }
    while let Some((sent, ack)) = in_flight.pop_front() {
        settle(sent, ack.await?, &mut latency);
    }
    Ok((started.elapsed(), latency, first_offset.unwrap_or(1)))
}

pub async fn run_publish(server: &str, token: Option<String>, args: &PublishArgs) -> anyhow::Result<()> {
    let client = connect(server, token, "bench-publish").await?;
    let body = match &args.payload_file {
        Some(path) => Bytes::from(
            std::fs::read(path).map_err(|error| anyhow::anyhow!("cannot read --payload-file {}: {error}", path.display()))?,
        ),
        None => Bytes::from(vec![b'x'; args.payload]),
    };
    let payload_bytes = body.len();
    let (elapsed, latency, _) = publish(&client, &args.channel, args.count, body, args.window, args.key).await?;
    let scenario = if args.key { "publish-keyed" } else { "publish" };
    report(
        scenario,
        args.count,
        elapsed,
        Some(&latency),
        &format!("channel={} window={} payload={payload_bytes}", args.channel, args.window),
    );
    Ok(())
}

pub async fn run_replay(server: &str, token: Option<String>, args: &ReplayArgs) -> anyhow::Result<()> {
    let client = connect(server, token, "bench-replay").await?;
    let body = Bytes::from(vec![b'x'; args.payload]);
    let (_, _, first_offset) = publish(&client, &args.channel, args.count, body, 256, false).await?;
    let options = SubscribeOptions {
        start: StartPosition::Offset(first_offset),
        accept_schemas: None,
    };
    let started = Instant::now();
    let mut subscription = client.subscribe_with(&args.channel, options).await?;
    let mut received = 0u64;
    let mut expected = first_offset;
    while received < args.count {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
            Ok(Some(SubscriptionEvent::Message(message))) => {
                anyhow::ensure!(
                    message.message_id == expected,
                    "replay out of order: expected offset {expected}, got {}",
                    message.message_id
                );
                expected += 1;
                received += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let status = if received == args.count { "ok" } else { "loss" };
    report("replay", received, started.elapsed(), None, &format!("status={status}"));
    Ok(())
}
