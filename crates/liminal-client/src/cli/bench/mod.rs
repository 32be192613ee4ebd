//! `liminal bench`: bounded load scenarios against a running broker, with
//! one `RESULT key=value ...` line per run, in the same shape as the
//! scenarios other brokers are measured with.

mod conversation;
mod pubsub;
mod stream;

use std::time::Duration;

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;

use crate::Client;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// One publisher and one subscriber on an ephemeral channel.
    Pubsub(pubsub::PubsubArgs),
    /// One publisher and several subscribers on an ephemeral channel.
    Fanout(pubsub::FanoutArgs),
    /// Pipelined publishes to a durable channel, timed to the last ack.
    Publish(stream::PublishArgs),
    /// Fill a durable channel, then read it back from the earliest offset.
    Replay(stream::ReplayArgs),
    /// Participant crash to `ConversationFailed` at the client, and
    /// request/reply round trips through a remote worker and the in-process
    /// echo responder. Needs `fault_injection = true` on the server.
    Conversation(conversation::ConversationBenchArgs),
}

pub async fn run(server: &str, token: Option<String>, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.scenario {
        Scenario::Pubsub(scenario) => pubsub::run_pubsub(server, token, scenario).await,
        Scenario::Fanout(scenario) => pubsub::run_fanout(server, token, scenario).await,
        Scenario::Publish(scenario) => stream::run_publish(server, token, scenario).await,
        Scenario::Replay(scenario) => stream::run_replay(server, token, scenario).await,
        Scenario::Conversation(scenario) => conversation::run(server, token, scenario).await,
    }
}

pub(crate) async fn connect(server: &str, token: Option<String>, name: &str) -> anyhow::Result<Client> {
    let options = crate::ClientOptions {
        name: name.to_owned(),
        token,
        ..crate::ClientOptions::default()
    };
    Ok(Client::connect(server, options).await?)
}

/// A unique channel name per run, so runs never see each other's messages.
pub(crate) fn run_channel(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos}")
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Prints the result line: scenario, count, rate and latency quantiles in µs.
pub(crate) fn report(scenario: &str, count: u64, elapsed: Duration, latency: Option<&Histogram<u64>>, extra: &str) {
    let rate = count as f64 / elapsed.as_secs_f64();
    let mut line = format!(
        "RESULT scenario={scenario} n={count} elapsed_s={:.3} msgs_per_s={rate:.0}",
        elapsed.as_secs_f64()
    );
    if let Some(histogram) = latency {
        line.push_str(&format!(
            " p50_us={} p99_us={} max_us={}",
            histogram.value_at_quantile(0.50),
            histogram.value_at_quantile(0.99),
            histogram.max()
        ));
    }
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    println!("{line}");
}
