//! Slow consumers over the wire: a subscriber that never reads must not
//! slow down the other subscribers of its channel, and must not make the
//! server's memory grow without bound, under both policies.
//!
//! The stalled subscriber is a raw connection that subscribes and then
//! never reads. The kernel's socket buffers fill first, then its outbox
//! (`limits.max_outbound_bytes`), and from then on the policy applies.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, WAIT, stalled_subscriber};
use liminal_client::{Client, PublishRequest, SubscriptionEvent};
use liminal_protocol::Frame;

/// Messages per rate measurement.
const RATE_MESSAGES: u64 = 200_000;
/// Payload size of the rate measurement, in bytes.
const RATE_PAYLOAD: usize = 64;
/// Most messages the publisher may be ahead of the fast subscriber. It keeps
/// the fast subscriber's own outbox far below its bound, so the fast
/// subscriber never counts as slow and every message reaches it.
const FLOW_WINDOW: u64 = 4_096;
/// Measurements per setup; the best of them is compared, which filters out
/// pauses caused by other processes on the machine.
const ROUNDS: usize = 5;

/// Held by every test here, so they run one at a time: the rate and memory
/// measurements are meaningless while another test loads the same cores.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}


/// Publishes `count` messages to `channel` while one fast subscriber reads
/// them, and returns the fast subscriber's rate in messages per second,
/// from the first publish to the last message received.
async fn fast_subscriber_rate(server: &TestServer, channel: &str, count: u64) -> f64 {
    let subscriber = server.client().await;
    let mut subscription = subscriber.subscribe(channel).await.unwrap();
    let publisher = server.client().await;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());

    let started = Instant::now();
    let publishing = tokio::spawn(publish_with_window(
        publisher,
        channel.to_owned(),
        count,
        received.clone(),
        progress.clone(),
    ));
    let mut next_id = None;
    while received.load(Ordering::Relaxed) < count {
        let event = subscription
            .next_timeout(Duration::from_secs(30))
            .await
            .expect("the fast subscriber kept receiving")
            .expect("the subscription stayed open");
        match event {
            SubscriptionEvent::Message(message) => {
                if let Some(expected) = next_id {
                    assert_eq!(
                        message.message_id, expected,
                        "the fast subscriber missed a message"
                    );
                }
                next_id = Some(message.message_id + 1);
                received.fetch_add(1, Ordering::Relaxed);
                progress.notify_one();
            }
            other => panic!("the fast subscriber got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    publishing.await.unwrap();
    count as f64 / elapsed.as_secs_f64()
}

/// Publishes pipelined, staying at most `FLOW_WINDOW` messages ahead of
/// `received`, and checks every ack.
async fn publish_with_window(
    publisher: Client,
    channel: String,
    count: u64,
    received: Arc<AtomicU64>,
    progress: Arc<tokio::sync::Notify>,
) {
    let payload = Bytes::from(vec![b'p'; RATE_PAYLOAD]);
    let mut acks = std::collections::VecDeque::new();
    for sent in 0..count {
        while sent >= received.load(Ordering::Relaxed) + FLOW_WINDOW {
            // Progress may have been notified before this wait started, so
            // the wait is bounded and the condition checked again.
            let _ = tokio::time::timeout(Duration::from_millis(5), progress.notified()).await;
        }
        let request = PublishRequest {
            channel: channel.clone(),
            payload: payload.clone(),
            ..PublishRequest::default()
        };
        acks.push_back(publisher.publish_pipelined(request).unwrap());
        if acks.len() > FLOW_WINDOW as usize {
            acks.pop_front().unwrap().await.expect("publish acked");
        }
    }
    for ack in acks {
        ack.await.expect("publish acked");
    }
}

/// Runs the rate measurement alternately without and with a stalled
/// subscriber on the channel and returns the best rate of each. With
/// `prefill`, the stalled subscriber's socket buffers and outbox are filled
/// before the measurement starts, so it is measured in its steady state.
async fn compare_rates(server: &TestServer, policy: &str, prefill: bool) -> (f64, f64) {
    let mut alone = Vec::new();
    let mut with_stalled = Vec::new();
    for round in 0..ROUNDS {
        let channel = format!("alone-{round}");
        alone.push(fast_subscriber_rate(server, &channel, RATE_MESSAGES).await);

        let channel = format!("stalled-{round}");
        let stalled = stalled_subscriber(server, &channel).await;
        if prefill {
            let publisher = server.client().await;
            publish_bulk(&publisher, &channel, PREFILL_MESSAGES, PREFILL_PAYLOAD).await;
        }
        with_stalled.push(fast_subscriber_rate(server, &channel, RATE_MESSAGES).await);
        drop(stalled);
    }
    eprintln!(
        "policy {policy}: fast subscriber msg/s alone {alone:.0?}, with a stalled subscriber {with_stalled:.0?}"
    );
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    (best(&alone), best(&with_stalled))
}

/// Prefill volume: 32 MiB, more than the kernel's socket buffers on loopback
/// and the 1 MiB outbox together.
const PREFILL_MESSAGES: u64 = 2_048;
const PREFILL_PAYLOAD: usize = 16 * 1024;

fn server_config(policy: &str) -> String {
    format!("slow_consumer = \"{policy}\"\n[limits]\nmax_outbound_bytes = 1048576\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_keeps_fast_subscriber_rate() {
    let _exclusive = exclusive();
    let server = TestServer::start(&server_config("drop"));
    // Under `drop` the stalled subscriber stays subscribed, so the
    // measurement starts once it is dropping.
    let (alone, with_stalled) = compare_rates(&server, "drop", true).await;
    assert!(
        with_stalled >= 0.9 * alone,
        "a stalled subscriber slowed the fast one from {alone:.0} to {with_stalled:.0} msg/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_policy_keeps_fast_subscriber_rate() {
    let _exclusive = exclusive();
    let server = TestServer::start(&server_config("disconnect"));
    // Under `disconnect` a full outbox ends the subscription, so the
    // measurement covers the stalled subscriber from its first message
    // until it is cut off.
    let (alone, with_stalled) = compare_rates(&server, "disconnect", false).await;
    assert!(
        with_stalled >= 0.9 * alone,
        "a stalled subscriber slowed the fast one from {alone:.0} to {with_stalled:.0} msg/s"
    );
}

/// Resident memory of a process, from /proc (Linux only), in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Publishes `count` messages of `size` bytes, pipelined, and returns the
/// id of the last one.
async fn publish_bulk(publisher: &Client, channel: &str, count: u64, size: usize) -> u64 {
    let payload = Bytes::from(vec![b'b'; size]);
    let mut acks = std::collections::VecDeque::new();
    let mut last = 0;
    for _ in 0..count {
        let request = PublishRequest {
            channel: channel.to_owned(),
            payload: payload.clone(),
            ..PublishRequest::default()
        };
        acks.push_back(publisher.publish_pipelined(request).unwrap());
        if acks.len() >= 1_024 {
            last = acks
                .pop_front()
                .unwrap()
                .await
                .expect("publish acked")
                .message_id;
        }
    }
    for ack in acks {
        last = ack.await.expect("publish acked").message_id;
    }
    last
}

/// Bulk volume for the memory checks: 100 000 messages of 1 KiB, about
/// 100 MiB, a hundred times the outbox bound.
const BULK_MESSAGES: u64 = 100_000;
const BULK_PAYLOAD: usize = 1_024;
/// Allowed growth of the server's resident memory while the bulk volume
/// passes a stalled subscriber. The outbox keeps at most 1 MiB and the
/// writer task at most one more outbox's worth. The rest is allocator slack.
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_bounds_memory_and_reports_drops() {
    let _exclusive = exclusive();
    let server = TestServer::start(&server_config("drop"));
    let mut stalled = stalled_subscriber(&server, "bulk").await;
    let publisher = server.client().await;
    // Warm-up: fill the socket buffers and the outbox once, so the
    // allocator has seen the steady state before the first reading.
    let warmup = 10_000;
    publish_bulk(&publisher, "bulk", warmup, BULK_PAYLOAD).await;
    let before = resident_kib(server.pid());
    let last_id = publish_bulk(&publisher, "bulk", BULK_MESSAGES, BULK_PAYLOAD).await;
    let after = resident_kib(server.pid());
    eprintln!(
        "drop policy: server VmRSS {before} KiB before, {after} KiB after {BULK_MESSAGES} messages"
    );
    assert!(
        after <= before + MAX_RSS_GROWTH_KIB,
        "server memory grew from {before} KiB to {after} KiB"
    );

    // Every message is either delivered or reported as dropped.
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    loop {
        match stalled.receive(WAIT).await.unwrap() {
            Some(Frame::Deliver { message_id, .. }) => {
                delivered += 1;
                if message_id == last_id {
                    break;
                }
            }
            Some(Frame::MessagesDropped { count, .. }) => dropped += count,
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("drop policy: stalled subscriber got {delivered} messages and {dropped} dropped");
    assert!(dropped > 0, "nothing was dropped");
    assert_eq!(delivered + dropped, warmup + BULK_MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_policy_bounds_memory_and_closes() {
    let _exclusive = exclusive();
    let server = TestServer::start(&server_config("disconnect"));
    let mut stalled = stalled_subscriber(&server, "bulk").await;
    let publisher = server.client().await;
    publish_bulk(&publisher, "bulk", 10_000, BULK_PAYLOAD).await;
    let before = resident_kib(server.pid());
    publish_bulk(&publisher, "bulk", BULK_MESSAGES, BULK_PAYLOAD).await;
    let after = resident_kib(server.pid());
    eprintln!(
        "disconnect policy: server VmRSS {before} KiB before, {after} KiB after {BULK_MESSAGES} messages"
    );
    assert!(
        after <= before + MAX_RSS_GROWTH_KIB,
        "server memory grew from {before} KiB to {after} KiB"
    );

    // The stalled subscriber finds what its socket held, then the error,
    // then the end of the stream.
    let mut delivered = 0u64;
    loop {
        match stalled.receive(WAIT).await.unwrap() {
            Some(Frame::Deliver { .. }) => delivered += 1,
            Some(Frame::Error { code, .. }) => {
                assert_eq!(code, "slow_consumer");
                break;
            }
            other => panic!("unexpected {other:?} after {delivered} deliveries"),
        }
    }
    assert!(
        delivered < 10_000 + BULK_MESSAGES,
        "the subscriber was never cut off"
    );
    let end = stalled.receive(WAIT).await.unwrap();
    assert!(
        end.is_none(),
        "the connection must close after the error, got {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_closed_after_write_timeout() {
    let _guard = exclusive();
    let server = TestServer::start("[limits]\nmax_outbound_bytes = 65536\nwrite_timeout_ms = 500\n");
    let mut stalled = stalled_subscriber(&server, "stall").await;
    let publisher = server.client().await;
    // Enough to fill the stalled peer's socket buffers and then some.
    publish_bulk(&publisher, "stall", BULK_MESSAGES, BULK_PAYLOAD).await;

    assert!(
        server.wait_for_log("closing slow consumer", Duration::from_secs(10)),
        "the stalled connection was never closed:\n{}",
        server.log()
    );
    // Reading now drains what the kernel buffered, then the stream ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stalled.receive(Duration::from_secs(2)).await {
            Ok(Some(_)) => assert!(Instant::now() < deadline, "the stream never ended"),
            Ok(None) | Err(_) => break,
        }
    }
    // The publisher's channel kept working.
    assert!(publisher.publish("stall", "after").await.is_ok());
}
