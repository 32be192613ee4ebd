//! Durable channels against the real server: acked means stored, replay
//! from any offset, named consumers across restarts, crash safety.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT};
use liminal_client::{Client, PublishRequest, SubscribeOptions, Subscription, SubscriptionEvent};
use liminal_protocol::StartPosition;

const DURABLE: &str = "[[channels]]\nname = \"events\"\ndurable = true\n";

/// Publishes `count` messages pipelined and returns their offsets.
async fn publish_many(client: &Client, channel: &str, count: u32, prefix: &str) -> Vec<u64> {
    let mut pending = Vec::with_capacity(count as usize);
    for index in 0..count {
        let request = PublishRequest {
            channel: channel.to_owned(),
            payload: format!("{prefix}{index}").into(),
            ..PublishRequest::default()
        };
        pending.push(client.publish_pipelined(request).unwrap());
    }
    let mut offsets = Vec::with_capacity(count as usize);
    for future in pending {
        let ack = future.await.expect("publish acked");
        offsets.push(ack.offset.expect("durable ack carries an offset"));
    }
    offsets
}

/// Reads exactly `count` messages from a subscription.
async fn read_messages(subscription: &mut Subscription, count: usize) -> Vec<(u64, String)> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match subscription.next_timeout(Duration::from_secs(10)).await.expect("message in time") {
            Some(SubscriptionEvent::Message(message)) => {
                messages.push((message.message_id, String::from_utf8(message.payload.to_vec()).unwrap()))
            }
            other => panic!("expected a message after {} messages, got {other:?}", messages.len()),
        }
    }
    messages
}

async fn subscribe_from(client: &Client, channel: &str, start: StartPosition) -> Subscription {
    client
        .subscribe_with(channel, SubscribeOptions { start, accept_schemas: None })
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_survive_sigterm_restart() {
    let mut server = TestServer::start(DURABLE);
    let client = server.client().await;
    let offsets = publish_many(&client, "events", 10_000, "m").await;
    assert_eq!(offsets, (1..=10_000).collect::<Vec<u64>>(), "offsets are contiguous from 1");
    drop(client);
    assert!(server.stop().success(), "SIGTERM exits 0");

    server.spawn();
    let client = server.client().await;
    let mut subscription = subscribe_from(&client, "events", StartPosition::Earliest).await;
    assert_eq!(subscription.start_offset, Some(1));
    let messages = read_messages(&mut subscription, 10_000).await;
    for (index, (offset, payload)) in messages.iter().enumerate() {
        assert_eq!(*offset, index as u64 + 1);
        assert_eq!(payload, &format!("m{index}"));
    }
}

#[tokio::test]
async fn acked_messages_survive_sigkill_cycles() {
    let mut server = TestServer::start(DURABLE);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut sequence = 0u64;
    for cycle in 0..10u64 {
        let client = server.client().await;
        // Stream publishes with up to 64 in flight and kill the server at a
        // moment that varies per cycle.
        let kill_after = Duration::from_millis(30 + (cycle * 37) % 120);
        let started = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        let mut killed = false;
        loop {
            if !killed && started.elapsed() >= kill_after {
                server.kill();
                killed = true;
            }
            if !killed && in_flight.len() < 64 {
                sequence += 1;
                let payload = format!("c{cycle}-{sequence}");
                let request = PublishRequest {
                    channel: "events".into(),
                    payload: payload.clone().into(),
                    ..PublishRequest::default()
                };
                match client.publish_pipelined(request) {
                    Ok(future) => in_flight.push_back((payload, future)),
                    Err(_) => break,
                }
                continue;
            }
            let Some((payload, future)) = in_flight.pop_front() else {
                break;
            };
            match future.await {
                Ok(ack) => {
                    acked.insert(ack.offset.unwrap(), payload);
                }
                Err(_) => {
                    // Not acked: the message may or may not be stored.
                }
            }
        }
        server.spawn();
    }

    let client = server.client().await;
    let mut subscription = subscribe_from(&client, "events", StartPosition::Earliest).await;
    let last_acked = *acked.keys().last().expect("some publishes were acked");
    let stored = read_messages(&mut subscription, last_acked as usize).await;
    for (index, (offset, payload)) in stored.iter().enumerate() {
        assert_eq!(*offset, index as u64 + 1, "offsets have no gaps");
        if let Some(expected) = acked.get(offset) {
            assert_eq!(payload, expected, "acked message at offset {offset} is intact");
        }
    }
    assert!(acked.len() > 100, "the test published too little to mean anything: {}", acked.len());
}

#[tokio::test]
async fn named_consumer_resumes_after_restart() {
    let mut server = TestServer::start(DURABLE);
    let client = server.client().await;
    publish_many(&client, "events", 20, "n").await;

    let consumer = StartPosition::Consumer("billing".into());
    let mut subscription = subscribe_from(&client, "events", consumer.clone()).await;
    let first = read_messages(&mut subscription, 10).await;
    // Acknowledge through offset 7 only: 8, 9 and 10 were received but not acked.
    client.ack(subscription.subscription_id, 7).unwrap();
    client.ping().await.unwrap();
    assert_eq!(first[6].0, 7);
    drop(client);
    assert!(server.stop().success());

    server.spawn();
    let client = server.client().await;
    let mut subscription = subscribe_from(&client, "events", consumer).await;
    assert_eq!(subscription.start_offset, Some(8), "resumes after the last acked offset");
    let resumed = read_messages(&mut subscription, 13).await;
    let offsets: Vec<u64> = resumed.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (8..=20).collect::<Vec<u64>>(), "unacked 8..=10 are redelivered");

    // A new consumer name starts at the oldest message.
    let mut fresh = subscribe_from(&client, "events", StartPosition::Consumer("audit".into())).await;
    assert_eq!(fresh.start_offset, Some(1));
    assert_eq!(read_messages(&mut fresh, 1).await[0].0, 1);
}

/// A consumer that subscribes again right after acknowledging starts after
/// the ack, even while the store is still writing the cursor.
#[tokio::test]
async fn consumer_resubscribes_after_fresh_ack() {
    let server = TestServer::start(DURABLE);
    let client = server.client().await;
    publish_many(&client, "events", 5, "r").await;

    let consumer = StartPosition::Consumer("relay".into());
    for expected in 1..=5u64 {
        let mut subscription = subscribe_from(&client, "events", consumer.clone()).await;
        assert_eq!(subscription.start_offset, Some(expected), "after acking {}", expected - 1);
        let (offset, _) = read_messages(&mut subscription, 1).await[0].clone();
        assert_eq!(offset, expected);
        client.ack(subscription.subscription_id, offset).unwrap();
        client.unsubscribe(subscription.subscription_id).await.unwrap();
    }
}

/// Each round acks one message and disconnects at once, as `liminal sub
/// --consumer NAME --count 1` does, while another client keeps the channel's
/// mailbox full. The ack waits in that mailbox when the connection ends, and
/// the channel must still apply it before dropping the subscription, or the
/// next round starts one message early.
#[tokio::test]
async fn consumer_ack_survives_disconnect() {
    const ROUNDS: u64 = 10;
    const FLOOD: usize = 3_000;
    let server = TestServer::start(DURABLE);
    let publisher = server.client().await;
    publish_many(&publisher, "events", ROUNDS as u32, "d").await;

    let consumer = StartPosition::Consumer("hopper".into());
    for expected in 1..=ROUNDS {
        let client = server.client().await;
        let mut subscription = subscribe_from(&client, "events", consumer.clone()).await;
        assert_eq!(subscription.start_offset, Some(expected), "the ack of {} was lost", expected - 1);
        let (offset, _) = read_messages(&mut subscription, 1).await[0].clone();

        let flood: Vec<_> = (0..FLOOD)
            .map(|_| {
                let request = PublishRequest { channel: "events".into(), payload: "f".into(), ..PublishRequest::default() };
                publisher.publish_pipelined(request).unwrap()
            })
            .collect();
        client.ack(subscription.subscription_id, offset).unwrap();
        client.ping().await.unwrap();
        drop(subscription);
        drop(client);
        for ack in flood {
            ack.await.unwrap();
        }
    }
}

#[tokio::test]
async fn replay_joins_live_without_gap_or_duplicate() {
    let server = TestServer::start(DURABLE);
    let publisher = server.client().await;
    publish_many(&publisher, "events", 5_000, "h").await;

    let reader = server.client().await;
    let mut subscription = subscribe_from(&reader, "events", StartPosition::Offset(1)).await;
    // Publish more while the replay is running.
    let live = tokio::spawn({
        let publisher = publisher.clone();
        async move { publish_many(&publisher, "events", 5_000, "l").await }
    });
    let messages = read_messages(&mut subscription, 10_000).await;
    live.await.unwrap();
    let offsets: Vec<u64> = messages.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (1..=10_000).collect::<Vec<u64>>());
    // Nothing after the seam.
    assert!(subscription.next_timeout(Duration::from_millis(300)).await.is_err());
}

#[tokio::test]
async fn start_positions_and_errors() {
    let server = TestServer::start(DURABLE);
    let client = server.client().await;
    publish_many(&client, "events", 10, "p").await;

    let mut from_five = subscribe_from(&client, "events", StartPosition::Offset(5)).await;
    assert_eq!(read_messages(&mut from_five, 1).await[0], (5, "p4".to_owned()));

    let mut latest = subscribe_from(&client, "events", StartPosition::Latest).await;
    assert_eq!(latest.start_offset, Some(11));
    let ack = client.publish("events", "new").await.unwrap();
    assert_eq!(ack.offset, Some(11));
    assert!(ack.delivered);
    assert_eq!(read_messages(&mut latest, 1).await[0], (11, "new".to_owned()));

    let error = client
        .subscribe_with("events", SubscribeOptions { start: StartPosition::Offset(500), accept_schemas: None })
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Some("invalid_start_position"));
    assert!(error.to_string().contains("500"), "{error}");

    let error = client
        .subscribe_with("scratch", SubscribeOptions { start: StartPosition::Earliest, accept_schemas: None })
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Some("invalid_start_position"), "ephemeral channels keep no history");
}

async fn wait_for_start(client: &Client, channel: &str, expected_first: u64) -> Subscription {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subscription = subscribe_from(client, channel, StartPosition::Earliest).await;
        if subscription.start_offset == Some(expected_first) {
            return subscription;
        }
        assert!(Instant::now() < deadline, "retention never reached offset {expected_first}");
        client.unsubscribe(subscription.subscription_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn retention_max_messages() {
    let server = TestServer::start("[[channels]]\nname = \"r\"\ndurable = true\nmax_messages = 100\n");
    let client = server.client().await;
    publish_many(&client, "r", 1_000, "x").await;
    let mut subscription = wait_for_start(&client, "r", 901).await;
    assert_eq!(read_messages(&mut subscription, 100).await.last().unwrap().0, 1_000);

    // An offset that retention removed starts at the oldest kept message.
    let truncated = subscribe_from(&client, "r", StartPosition::Offset(3)).await;
    assert!(truncated.truncated);
    assert_eq!(truncated.start_offset, Some(901));
}

#[tokio::test]
async fn retention_max_bytes() {
    // Payloads are 100 bytes; 10,000 bytes keep about 100 of them.
    let server = TestServer::start("[[channels]]\nname = \"b\"\ndurable = true\nmax_bytes = 10000\n");
    let client = server.client().await;
    for _ in 0..500 {
        client.publish("b", vec![b'x'; 100]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subscription = subscribe_from(&client, "b", StartPosition::Earliest).await;
        let first = subscription.start_offset.unwrap();
        let kept = 500 - first + 1;
        if kept <= 100 {
            assert!(kept >= 50, "retention removed too much: {kept} kept");
            break;
        }
        assert!(Instant::now() < deadline, "max_bytes never applied: {kept} kept");
        client.unsubscribe(subscription.subscription_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn retention_max_age() {
    let server = TestServer::start("[[channels]]\nname = \"a\"\ndurable = true\nmax_age = \"1s\"\n");
    let client = server.client().await;
    publish_many(&client, "a", 50, "old").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    publish_many(&client, "a", 5, "new").await;
    let mut subscription = wait_for_start(&client, "a", 51).await;
    assert_eq!(read_messages(&mut subscription, 5).await[0], (51, "new0".to_owned()));
}

#[tokio::test]
async fn slow_replay_does_not_block_live_publishing() {
    let server = TestServer::start(&format!("{DURABLE}\n[limits]\nmax_outbound_bytes = 65536\n"));
    let publisher = server.client().await;
    publish_many(&publisher, "events", 20_000, "s").await;

    // A reader that replays from the start but never reads its socket.
    let mut stalled = liminal_client::RawConnection::connect(&server.address).await.unwrap();
    stalled
        .send(&liminal_protocol::Frame::Hello {
            versions: vec![1],
            client_name: "stalled".into(),
            token: None,
        })
        .await
        .unwrap();
    stalled
        .send(&liminal_protocol::Frame::Subscribe {
            request_id: 1,
            channel: "events".into(),
            start: StartPosition::Earliest,
            accept_schemas: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    publish_many(&publisher, "events", 2_000, "live").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "live publishing stalled behind a replay: {:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test]
async fn durable_ack_reports_delivery_to_live_subscriber() {
    let server = TestServer::start(DURABLE);
    let client = server.client().await;
    let ack = client.publish("events", "nobody").await.unwrap();
    assert!(!ack.delivered);
    assert_eq!(ack.offset, Some(ack.message_id));
    let mut subscription = client.subscribe("events").await.unwrap();
    let ack = client.publish("events", "someone").await.unwrap();
    assert!(ack.delivered);
    assert_eq!(read_messages(&mut subscription, 1).await[0].1, "someone");
    let _ = WAIT;
}

#[tokio::test]
async fn no_delivery_after_unsubscribe_during_replay() {
    use liminal_protocol::Frame;
    let server = TestServer::start(&format!("{DURABLE}\n[limits]\nmax_outbound_bytes = 65536\n"));
    let publisher = server.client().await;
    publish_many(&publisher, "events", 20_000, "u").await;

    let mut raw = liminal_client::RawConnection::connect(&server.address).await.unwrap();
    raw.send(&Frame::Hello { versions: vec![1], client_name: "raw".into(), token: None }).await.unwrap();
    raw.send(&Frame::Subscribe {
        request_id: 1,
        channel: "events".into(),
        start: StartPosition::Earliest,
        accept_schemas: None,
    })
    .await
    .unwrap();
    let mut subscription_id = None;
    let mut delivered = 0;
    // Read some of the replay, then unsubscribe while it is still running.
    while delivered < 100 {
        match raw.receive(WAIT).await.unwrap() {
            Some(Frame::Subscribed { subscription_id: id, .. }) => subscription_id = Some(id),
            Some(Frame::Deliver { .. }) => delivered += 1,
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
    let subscription_id = subscription_id.unwrap();
    raw.send(&Frame::Unsubscribe { request_id: 2, subscription_id }).await.unwrap();
    let mut after_unsubscribed = 0;
    let mut unsubscribed = false;
    loop {
        match raw.receive(Duration::from_millis(500)).await {
            Ok(Some(Frame::Unsubscribed { .. })) => unsubscribed = true,
            Ok(Some(Frame::Deliver { .. })) if unsubscribed => after_unsubscribed += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(unsubscribed);
    assert_eq!(after_unsubscribed, 0, "Deliver frames arrived after Unsubscribed");
}

#[tokio::test]
async fn sigterm_drain_keeps_every_acked_message() {
    let mut server = TestServer::start(DURABLE);
    let publisher = server.client().await;
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let mut acked: Vec<(u64, String)> = Vec::new();
            let mut failures = 0;
            for index in 0..1_000_000u64 {
                let payload = format!("d{index}");
                let request = PublishRequest {
                    channel: "events".into(),
                    payload: payload.clone().into(),
                    ..PublishRequest::default()
                };
                match publisher.publish_pipelined(request) {
                    Ok(future) => pending.push_back((payload, future)),
                    Err(_) => break,
                }
                if pending.len() >= 128 {
                    let (payload, future) = pending.pop_front().unwrap();
                    match future.await {
                        Ok(ack) => acked.push((ack.offset.unwrap(), payload)),
                        Err(_) => failures += 1,
                    }
                }
                if failures > 100 {
                    break;
                }
            }
            for (payload, future) in pending {
                if let Ok(ack) = future.await {
                    acked.push((ack.offset.unwrap(), payload));
                }
            }
            acked
        })
    };
    // Let a few thousand publishes through, then ask for a drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, mut server) = tokio::task::spawn_blocking(move || {
        let status = server.signal_and_wait("TERM", Duration::from_secs(15));
        (status, server)
    })
    .await
    .unwrap();
    let status = status.expect("the server exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}:\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(7), "drain took {:?}", started.elapsed());
    let acked = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("every publish was answered or failed")
        .unwrap();
    assert!(acked.len() > 100, "only {} publishes were acked", acked.len());

    server.spawn();
    let client = server.client().await;
    let last = acked.iter().map(|(offset, _)| *offset).max().unwrap();
    let mut subscription = subscribe_from(&client, "events", StartPosition::Earliest).await;
    let stored: BTreeMap<u64, String> = read_messages(&mut subscription, last as usize).await.into_iter().collect();
    for (offset, payload) in &acked {
        assert_eq!(stored.get(offset), Some(payload), "acked message at offset {offset} was lost by the drain");
    }
}
