//! Publish/subscribe over real TCP against the real server binary.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use liminal_client::{Client, SubscriptionEvent};

async fn expect_message(subscription: &mut liminal_client::Subscription, payload: &[u8]) -> u64 {
    match subscription.next_timeout(WAIT).await.expect("message in time") {
        Some(SubscriptionEvent::Message(message)) => {
            assert_eq!(message.payload.as_ref(), payload);
            message.message_id
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Publishes until the ack reports `delivered == expected` or the wait ends.
async fn wait_for_delivered(client: &Client, channel: &str, expected: bool) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let ack = client.publish(channel, "probe").await.expect("publish");
        if ack.delivered == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn pubsub_round_trip() {
    let server = TestServer::start("");
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut subscription = subscriber.subscribe("orders").await.unwrap();

    let first = publisher.publish("orders", "one").await.unwrap();
    let second = publisher.publish("orders", "two").await.unwrap();
    assert!(first.delivered);
    assert!(second.delivered);
    assert!(second.message_id > first.message_id, "message ids are monotonic");

    assert_eq!(expect_message(&mut subscription, b"one").await, first.message_id);
    assert_eq!(expect_message(&mut subscription, b"two").await, second.message_id);
}

#[tokio::test]
async fn fanout_reaches_three_subscribers() {
    let server = TestServer::start("");
    let mut subscriptions = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = server.client().await;
        subscriptions.push(client.subscribe("fan").await.unwrap());
        clients.push(client);
    }
    let publisher = server.client().await;
    let ack = publisher.publish("fan", "hello all").await.unwrap();
    assert!(ack.delivered);
    for subscription in &mut subscriptions {
        assert_eq!(expect_message(subscription, b"hello all").await, ack.message_id);
    }
}

#[tokio::test]
async fn publish_without_subscriber_not_delivered() {
    let server = TestServer::start("");
    let publisher = server.client().await;
    let ack = publisher.publish("empty", "nobody listens").await.unwrap();
    assert!(!ack.delivered);
    assert!(!ack.duplicate);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start("");
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut subscription = subscriber.subscribe("unsub").await.unwrap();
    publisher.publish("unsub", "before").await.unwrap();
    expect_message(&mut subscription, b"before").await;

    subscriber.unsubscribe(subscription.subscription_id).await.unwrap();
    let ack = publisher.publish("unsub", "after").await.unwrap();
    assert!(!ack.delivered);
    // The receiver ends after Unsubscribed, without the second message.
    assert_eq!(subscription.next_timeout(WAIT).await.unwrap(), None);
}

#[tokio::test]
async fn unknown_subscription_unsubscribe_rejected() {
    let server = TestServer::start("");
    let client = server.client().await;
    let error = client.unsubscribe(999).await.unwrap_err();
    assert_eq!(error.code(), Some("unknown_subscription"));
}

#[tokio::test]
async fn disconnect_removes_subscriptions() {
    let server = TestServer::start("");
    let publisher = server.client().await;
    {
        let subscriber = server.client().await;
        let _subscription = subscriber.subscribe("gone").await.unwrap();
        assert!(publisher.publish("gone", "x").await.unwrap().delivered);
    }
    // The subscriber's client is dropped: its socket closes, its connection
    // actor stops and the channel forgets the subscription on its own.
    assert!(wait_for_delivered(&publisher, "gone", false).await);
}

#[tokio::test]
async fn crashed_connection_leaves_no_subscription() {
    let server = TestServer::start("");
    let publisher = server.client().await;
    let subscriber = server.client().await;
    let _subscription = subscriber.subscribe("crash-conn").await.unwrap();
    assert!(publisher.publish("crash-conn", "x").await.unwrap().delivered);

    let request_id = subscriber.next_request_id();
    // The connection actor panics while handling this frame, so no answer comes.
    let _ = subscriber.request(
        request_id,
        liminal_protocol::Frame::InjectFault {
            request_id,
            target: "connection".into(),
        },
    );
    assert!(wait_for_delivered(&publisher, "crash-conn", false).await);
    assert!(server.wait_for_log("actor crashed", WAIT), "crash not logged:\n{}", server.log());
    assert!(server.log().contains("broker/connections/"), "crash log lacks the actor path");
    // The server keeps serving.
    assert!(publisher.ping().await.is_ok());
}

#[tokio::test]
async fn pipelined_publishes_all_acked_in_order() {
    let server = TestServer::start("");
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut subscription = subscriber.subscribe("pipe").await.unwrap();
    let mut pending = Vec::new();
    for index in 0..5_000u32 {
        let request = liminal_client::PublishRequest {
            channel: "pipe".into(),
            payload: index.to_be_bytes().to_vec().into(),
            ..Default::default()
        };
        pending.push(publisher.publish_pipelined(request).unwrap());
    }
    let mut last_id = 0;
    for future in pending {
        let ack = future.await.unwrap();
        assert!(ack.message_id > last_id);
        last_id = ack.message_id;
    }
    for index in 0..5_000u32 {
        expect_message(&mut subscription, &index.to_be_bytes()).await;
    }
}
