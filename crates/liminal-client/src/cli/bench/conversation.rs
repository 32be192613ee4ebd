//! `liminal bench conversation`: crash-to-failure latency and request/reply
//! round trips over conversations.
//!
//! Each scenario prints a human-readable line and a `RESULT key=value ...`
//! line for scripts. Requests are sequential (one in flight), so the round
//! trip is latency, not throughput under load.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use liminal_protocol::Frame;

use super::{connect, new_histogram};
use crate::{Client, ConversationEvent, WorkerEvent};

/// How long one step may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ConversationBenchArgs {
    /// Participant crashes to time.
    #[arg(long, default_value_t = 200)]
    pub crashes: u64,
    /// Timed requests per round-trip scenario.
    #[arg(long, default_value_t = 5_000)]
    pub requests: u64,
    /// Untimed requests before each round-trip scenario.
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// Payload size of each request, in bytes.
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
}

pub async fn run(server: &str, token: Option<String>, args: &ConversationBenchArgs) -> anyhow::Result<()> {
    let client = connect(server, token.clone(), "bench-requester").await?;
    // Subjects unique to this run, so concurrent runs or leftover workers
    // on the same server do not interfere.
    let run_id = std::process::id();
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);

    let crashes = crash_to_failure(&client, &format!("bench.crash.{run_id}"), args.crashes).await?;
    report_latency("conversation-crash-to-failed", "crash -> ConversationFailed", &crashes, None);

    let worker_subject = format!("bench.worker.{run_id}");
    let worker_client = connect(server, token, "bench-worker").await?;
    let worker_task = spawn_echo_worker(&worker_client, &worker_subject).await?;
    let (remote, elapsed) = round_trips(&client, &worker_subject, &payload, args).await?;
    report_latency("conversation-rtt-remote-worker", "request/reply via remote worker", &remote, Some(elapsed));
    worker_task.abort();

    let (local, elapsed) = round_trips(&client, &format!("bench.echo.{run_id}"), &payload, args).await?;
    report_latency("conversation-rtt-in-process-echo", "request/reply via in-process echo", &local, Some(elapsed));
    Ok(())
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
    histogram.record(micros).expect("value within the histogram bounds");
}

/// Opens a conversation, makes sure its participant replies, crashes the
/// participant over the wire and times until `ConversationFailed` arrives.
/// The time includes one client-to-server transit of the `InjectFault`.
async fn crash_to_failure(client: &Client, subject: &str, crashes: u64) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram();
    for round in 0..crashes {
        let mut conversation = client.open_conversation(subject).await?;
        conversation
            .request("ready?", STEP_TIMEOUT)
            .await
            .with_context(|| format!("round {round}: the participant did not answer before the crash"))?;
        let request_id = client.next_request_id();
        let started = Instant::now();
        let answer = client.request(
            request_id,
            Frame::InjectFault {
                request_id,
                target: format!("participant/{}", conversation.id()),
            },
        )?;
        loop {
            match conversation.next_timeout(STEP_TIMEOUT).await? {
                Some(ConversationEvent::Failed(_)) => break,
                Some(_) => {}
                None => anyhow::bail!("round {round}: the conversation ended without ConversationFailed"),
            }
        }
        record(&mut histogram, started.elapsed());
        answer
            .await
            .context("connection closed")?
            .context("the server rejected the fault injection; is fault_injection = true?")?;
    }
    Ok(histogram)
}

/// Registers an echo worker for `subject` on `client` and serves it in a task.
async fn spawn_echo_worker(client: &Client, subject: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut worker = client.register_worker(subject).await?;
    Ok(tokio::spawn(async move {
        while let Some(event) = worker.next().await {
            if let WorkerEvent::Message {
                conversation_id,
                message_id,
                payload,
            } = event
            {
                if worker.reply(conversation_id, message_id, payload).is_err() {
                    return;
                }
            }
        }
    }))
}

/// Sequential requests on one conversation; returns the round-trip
/// histogram and the wall time of the timed part.
async fn round_trips(
    client: &Client,
    subject: &str,
    payload: &Bytes,
    args: &ConversationBenchArgs,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let mut conversation = client.open_conversation(subject).await?;
    for _ in 0..args.warmup {
        conversation.request(payload.clone(), STEP_TIMEOUT).await?;
    }
    let mut histogram = new_histogram();
    let started = Instant::now();
    for _ in 0..args.requests {
        let sent = Instant::now();
        conversation.request(payload.clone(), STEP_TIMEOUT).await?;
        record(&mut histogram, sent.elapsed());
    }
    let elapsed = started.elapsed();
    conversation.close_and_wait(STEP_TIMEOUT).await?;
    Ok((histogram, elapsed))
}

fn report_latency(scenario: &str, label: &str, histogram: &Histogram<u64>, elapsed: Option<Duration>) {
    let p50 = histogram.value_at_quantile(0.50);
    let p99 = histogram.value_at_quantile(0.99);
    let max = histogram.max();
    let count = histogram.len();
    let rate = elapsed.map(|elapsed| count as f64 / elapsed.as_secs_f64());
    match rate {
        Some(rate) => println!("{label}: n={count} p50={p50} µs p99={p99} µs max={max} µs ({rate:.0} requests/s)"),
        None => println!("{label}: n={count} p50={p50} µs p99={p99} µs max={max} µs"),
    }
    let mut line = format!("RESULT scenario={scenario} n={count} p50_us={p50} p99_us={p99} max_us={max}");
    if let Some(rate) = rate {
        line.push_str(&format!(" req_per_s={rate:.0}"));
    }
    println!("{line}");
}
