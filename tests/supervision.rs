//! Supervision: a crashed channel actor is restarted by `broker/channels`,
//! the channel serves again, and existing subscribers keep receiving.

mod common;

use common::{TestServer, WAIT, crash_channel};
use liminal_client::SubscriptionEvent;
use liminal_protocol::Frame;


#[tokio::test]
async fn crashed_channel_restarts_and_subscriber_keeps_receiving() {
    let server = TestServer::start("");
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut subscription = subscriber.subscribe("sturdy").await.unwrap();
    let before = publisher.publish("sturdy", "before").await.unwrap();

    crash_channel(&publisher, "sturdy").await;
    assert!(
        server.wait_for_log("actor restarted", WAIT),
        "restart not logged:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("broker/channels/sturdy"), "log lacks the channel path:\n{log}");
    assert!(log.contains("actor crashed"), "log lacks the crash:\n{log}");

    // The restarted channel serves, and the old subscription is re-attached
    // (or reported lost; it never goes silently dead).
    let deadline = std::time::Instant::now() + WAIT;
    let after = loop {
        let ack = publisher.publish("sturdy", "after").await.unwrap();
        if ack.delivered {
            break ack;
        }
        assert!(std::time::Instant::now() < deadline, "subscription never re-attached:\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(after.message_id > before.message_id, "ids stay monotonic across the restart");

    let mut seen_after = false;
    while let Some(event) = subscription.next_timeout(WAIT).await.unwrap() {
        match event {
            SubscriptionEvent::Message(message) if message.payload.as_ref() == b"after" => {
                seen_after = true;
                break;
            }
            SubscriptionEvent::Message(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(seen_after);
}

#[tokio::test]
async fn restart_intensity_exceeded_stops_server() {
    let server_config = "[supervision]\nmax_restarts = 2\nrestart_window_ms = 60000\n";
    let mut server = TestServer::start(server_config);
    let client = server.client().await;
    client.publish("fragile", "x").await.unwrap();
    // Two crashes are restarted; the third exceeds the intensity.
    for round in 1..=2 {
        crash_channel(&client, "fragile").await;
        let deadline = std::time::Instant::now() + WAIT;
        while server.log().matches("actor restarted").count() < round {
            assert!(std::time::Instant::now() < deadline, "restart {round} not logged:\n{}", server.log());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // The third crash escalates and stops the broker, so the answer may
    // never arrive: the connection can close first.
    let request_id = client.next_request_id();
    let _ = client
        .call(
            request_id,
            Frame::InjectFault {
                request_id,
                target: "channel/fragile".into(),
            },
        )
        .await;
    assert!(
        server.wait_for_log("restart intensity exceeded", WAIT),
        "escalation not logged:\n{}",
        server.log()
    );
    // The broker gave up, so the process exits with an error status.
    let status = server
        .signal_and_wait("0", std::time::Duration::from_secs(10))
        .expect("server exits after escalation");
    assert!(!status.success());
}

#[tokio::test]
async fn fault_injection_disabled_by_default() {
    let server = TestServer::start_with_env("", &[("LIMINAL_FAULT_INJECTION", "false")]);
    let client = server.client().await;
    let request_id = client.next_request_id();
    let error = client
        .call(
            request_id,
            Frame::InjectFault {
                request_id,
                target: "connection".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("fault_injection_disabled"));
}

/// Publishes `payload` to `channel`, retrying while the channel actor is
/// down, and returns the message id.
async fn publish_through_restart(client: &liminal_client::Client, channel: &str, payload: String) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match client.publish(channel, payload.clone()).await {
            Ok(ack) => return ack.message_id,
            Err(error) if error.code() == Some("channel_unavailable") => {
                assert!(std::time::Instant::now() < deadline, "channel never came back: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(error) => panic!("publish failed: {error}"),
        }
    }
}

/// Collects `count` message payloads from `subscription`, then checks that
/// nothing more arrives.
async fn collect_exactly(subscription: &mut liminal_client::Subscription, count: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    while payloads.len() < count {
        match subscription.next_timeout(WAIT).await.unwrap() {
            Some(SubscriptionEvent::Message(message)) => {
                payloads.push(String::from_utf8(message.payload.to_vec()).unwrap());
            }
            other => panic!("expected message {} of {count}, got {other:?}", payloads.len() + 1),
        }
    }
    let extra = subscription.next_timeout(std::time::Duration::from_millis(300)).await;
    assert!(extra.is_err(), "a message arrived twice: {extra:?}");
    payloads
}

#[tokio::test]
async fn durable_subscribers_resume_exactly_after_restart() {
    use liminal_client::SubscribeOptions;
    use liminal_protocol::StartPosition;

    let server = TestServer::start("[[channels]]\nname = \"ledger\"\ndurable = true\n");
    let publisher = server.client().await;
    for index in 0..5 {
        publisher.publish("ledger", format!("m{index}")).await.unwrap();
    }
    let subscriber = server.client().await;
    let subscribe = |start| SubscribeOptions { start, accept_schemas: None };
    let mut earliest = subscriber.subscribe_with("ledger", subscribe(StartPosition::Earliest)).await.unwrap();
    let mut from_offset = subscriber.subscribe_with("ledger", subscribe(StartPosition::Offset(3))).await.unwrap();
    let mut latest = subscriber.subscribe_with("ledger", subscribe(StartPosition::Latest)).await.unwrap();
    for index in 5..10 {
        publisher.publish("ledger", format!("m{index}")).await.unwrap();
    }
    let before = |from: usize| (from..10).map(|index| format!("m{index}")).collect::<Vec<_>>();
    assert_eq!(collect_exactly(&mut earliest, 10).await, before(0));
    assert_eq!(collect_exactly(&mut from_offset, 8).await, before(2));
    assert_eq!(collect_exactly(&mut latest, 5).await, before(5));

    // Publishing right after the crash makes some messages land on the
    // restarted actor before the subscriptions are re-attached to it.
    crash_channel(&publisher, "ledger").await;
    for index in 10..20 {
        publish_through_restart(&publisher, "ledger", format!("m{index}")).await;
    }
    let after = (10..20).map(|index| format!("m{index}")).collect::<Vec<_>>();
    for subscription in [&mut earliest, &mut from_offset, &mut latest] {
        assert_eq!(collect_exactly(subscription, 10).await, after);
    }
    assert!(server.log().contains("subscriptions re-attached"), "{}", server.log());
}

/// A `Subscribe` queued behind a crash in the channel's mailbox is lost with
/// it. The connection re-sends it to the restarted channel with its request
/// id, so the client still gets `Subscribed`.
#[tokio::test]
async fn subscribe_lost_in_crash_still_answered() {
    use liminal_client::RawConnection;
    use liminal_protocol::{PROTOCOL_VERSION, StartPosition};

    let server = TestServer::start("");
    let publisher = server.client().await;
    publisher.publish("flaky", "create").await.unwrap();

    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    let mut buffer = bytes::BytesMut::new();
    let frames = [
        Frame::Hello { versions: vec![PROTOCOL_VERSION], client_name: "racer".into(), token: None },
        Frame::InjectFault { request_id: 1, target: "channel/flaky".into() },
        Frame::Subscribe { request_id: 2, channel: "flaky".into(), start: StartPosition::Latest, accept_schemas: None },
    ];
    for frame in &frames {
        liminal_protocol::encode_frame_into(frame, &mut buffer).unwrap();
    }
    connection.send_bytes(&buffer).await.unwrap();

    let mut subscribed = None;
    while subscribed.is_none() {
        match connection.receive(WAIT).await.unwrap().expect("connection open") {
            Frame::Subscribed { request_id, subscription_id, .. } => {
                assert_eq!(request_id, 2);
                subscribed = Some(subscription_id);
            }
            Frame::Welcome { .. } | Frame::FaultInjected { .. } => {}
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
    publish_through_restart(&publisher, "flaky", "after".to_owned()).await;
    match connection.receive(WAIT).await.unwrap() {
        Some(Frame::Deliver { subscription_id, payload, .. }) => {
            assert_eq!(Some(subscription_id), subscribed);
            assert_eq!(payload.as_ref(), b"after");
        }
        other => panic!("expected the message, got {other:?}"),
    }
}
