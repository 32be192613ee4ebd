//! Ephemeral pub/sub scenarios: throughput from the first publish to the
//! last message received, with loss detection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;

use super::{connect, report, run_channel};
use crate::{PublishRequest, SubscriptionEvent};

#[derive(Debug, Args)]
pub struct PubsubArgs {
    /// Messages to publish.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Payload size in bytes.
    #[arg(short = 'p', long, default_value_t = 128)]
    pub payload: usize,
    /// Publishes in flight (sent, not yet acked).
    #[arg(long, default_value_t = 2_048)]
    pub window: usize,
}

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[arg(short = 'n', long, default_value_t = 200_000)]
    pub count: u64,
    #[arg(short = 'p', long, default_value_t = 128)]
    pub payload: usize,
    /// Subscribers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    pub subs: usize,
    #[arg(long, default_value_t = 2_048)]
    pub window: usize,
}

/// How long a subscriber waits for more messages before counting the rest as lost.
const IDLE_LIMIT: Duration = Duration::from_secs(3);

async fn run(server: &str, token: Option<String>, count: u64, payload: usize, subs: usize, window: usize, scenario: &str) -> anyhow::Result<()> {
    let channel = run_channel(scenario);
    let mut receivers = Vec::new();
    for index in 0..subs {
        let client = connect(server, token.clone(), &format!("bench-sub-{index}")).await?;
        let mut subscription = client.subscribe(&channel).await?;
        receivers.push(tokio::spawn(async move {
            let _client = client;
            let mut received = 0u64;
            while received < count {
                // Taking what already arrived first keeps the idle timer off the per-message path.
                if let Some(event) = subscription.try_next() {
                    if matches!(event, SubscriptionEvent::Message(_)) {
                        received += 1;
                    }
                    continue;
                }
                match tokio::time::timeout(IDLE_LIMIT, subscription.next()).await {
                    Ok(Some(SubscriptionEvent::Message(_))) => received += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (received, Instant::now())
        }));
    }
    let publisher = connect(server, token.clone(), "bench-pub").await?;
    let body = Bytes::from(vec![b'x'; payload]);
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    for _ in 0..count {
        if in_flight.len() >= window {
            let ack: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                in_flight.pop_front().expect("window is full");
            ack.await?;
        }
        let request = PublishRequest {
            channel: channel.clone(),
            payload: body.clone(),
            ..PublishRequest::default()
        };
        in_flight.push_back(Box::pin(publisher.publish_pipelined(request)?));
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await?;
    }
    let published = started.elapsed();
    let mut delivered = 0;
    let mut last = started;
    for receiver in receivers {
        let (received, finished) = receiver.await?;
        delivered += received;
        last = last.max(finished);
    }
    let expected = count * subs as u64;
    let lost = expected - delivered;
    let status = if lost == 0 { "ok" } else { "loss" };
    let publish_rate = count as f64 / published.as_secs_f64();
    report(
        scenario,
        delivered,
        last - started,
        None,
        &format!("subs={subs} payload={payload} pub_msgs_per_s={publish_rate:.0} lost={lost} status={status}"),
    );
    Ok(())
}

pub async fn run_pubsub(server: &str, token: Option<String>, args: &PubsubArgs) -> anyhow::Result<()> {
    run(server, token, args.count, args.payload, 1, args.window, "pubsub").await
}

pub async fn run_fanout(server: &str, token: Option<String>, args: &FanoutArgs) -> anyhow::Result<()> {
    run(server, token, args.count, args.payload, args.subs, args.window, "fanout").await
}
