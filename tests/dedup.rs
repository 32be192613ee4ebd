//! Idempotent publish: a key repeated within the dedup window is acked as a
//! duplicate and never delivered or stored twice.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::TestServer;
use liminal_client::{Client, PublishAck, PublishRequest, SubscribeOptions, Subscription, SubscriptionEvent};
use liminal_protocol::StartPosition;

const DURABLE: &str = "[[channels]]\nname = \"orders\"\ndurable = true\n";

async fn publish_keyed(client: &Client, channel: &str, key: &str, payload: &str) -> PublishAck {
    client
        .publish_with(PublishRequest {
            channel: channel.into(),
            payload: payload.to_owned().into(),
            idempotency_key: Some(key.into()),
            ..PublishRequest::default()
        })
        .await
        .expect("keyed publish acked")
}

/// Collects every message that arrives until the subscription is quiet.
async fn drain(subscription: &mut Subscription) -> Vec<(u64, String)> {
    let mut messages = Vec::new();
    while let Ok(Some(SubscriptionEvent::Message(message))) =
        subscription.next_timeout(Duration::from_millis(500)).await
    {
        messages.push((message.message_id, String::from_utf8(message.payload.to_vec()).unwrap()));
    }
    messages
}

async fn stored(client: &Client, channel: &str) -> Vec<(u64, String)> {
    let options = SubscribeOptions {
        start: StartPosition::Earliest,
        accept_schemas: None,
    };
    let mut subscription = client.subscribe_with(channel, options).await.unwrap();
    drain(&mut subscription).await
}

#[tokio::test]
async fn same_key_twice_delivered_once_durable() {
    let server = TestServer::start(DURABLE);
    let client = server.client().await;
    let mut subscription = client.subscribe("orders").await.unwrap();
    let first = publish_keyed(&client, "orders", "order-1", "first").await;
    let second = publish_keyed(&client, "orders", "order-1", "second").await;
    assert!(!first.duplicate);
    assert!(first.delivered);
    assert!(second.duplicate);
    assert!(!second.delivered);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.offset, first.offset);
    assert_eq!(drain(&mut subscription).await, vec![(first.message_id, "first".to_owned())]);
    assert_eq!(stored(&client, "orders").await.len(), 1);
}

#[tokio::test]
async fn same_key_twice_delivered_once_ephemeral() {
    let server = TestServer::start("");
    let client = server.client().await;
    let mut subscription = client.subscribe("fleeting").await.unwrap();
    let first = publish_keyed(&client, "fleeting", "k", "a").await;
    let second = publish_keyed(&client, "fleeting", "k", "b").await;
    assert!(second.duplicate);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.offset, None);
    assert_eq!(drain(&mut subscription).await.len(), 1);
}

#[tokio::test]
async fn duplicate_after_restart_within_window() {
    let mut server = TestServer::start(DURABLE);
    let client = server.client().await;
    let first = publish_keyed(&client, "orders", "persisted", "one").await;
    drop(client);
    assert!(server.stop().success());
    server.spawn();
    let client = server.client().await;
    let retry = publish_keyed(&client, "orders", "persisted", "one").await;
    assert!(retry.duplicate, "the receipt survived the restart");
    assert_eq!(retry.offset, first.offset);
}

#[tokio::test]
async fn key_delivered_again_after_window() {
    let server = TestServer::start("[[channels]]\nname = \"short\"\ndurable = true\ndedup_window = \"1s\"\n");
    let client = server.client().await;
    let first = publish_keyed(&client, "short", "k", "a").await;
    // Just past the window, and so most likely before the once-a-second purge
    // removed the expired receipt: the reused key must take that receipt over.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let later = publish_keyed(&client, "short", "k", "b").await;
    assert!(!later.duplicate);
    assert!(later.offset > first.offset);

    let retry = publish_keyed(&client, "short", "k", "b").await;
    assert!(retry.duplicate, "a retry of the reused key was stored again");
    assert_eq!(retry.offset, later.offset);
}

#[tokio::test]
async fn concurrent_publishers_race_on_keys() {
    let server = TestServer::start(DURABLE);
    let observer = server.client().await;
    let mut subscription = observer.subscribe("orders").await.unwrap();

    let mut tasks = Vec::new();
    for publisher in 0..8 {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for key in 0..1_000 {
                // Each publisher walks the keys from a different start.
                let key = (key + publisher * 125) % 1_000;
                let request = PublishRequest {
                    channel: "orders".into(),
                    payload: format!("key-{key}").into(),
                    idempotency_key: Some(format!("key-{key}")),
                    ..PublishRequest::default()
                };
                pending.push(client.publish_pipelined(request).unwrap());
            }
            let mut fresh = 0;
            for future in pending {
                if !future.await.unwrap().duplicate {
                    fresh += 1;
                }
            }
            fresh
        }));
    }
    let mut fresh_total = 0;
    for task in tasks {
        fresh_total += task.await.unwrap();
    }
    assert_eq!(fresh_total, 1_000, "exactly one publish per key is not a duplicate");

    let delivered = drain(&mut subscription).await;
    assert_eq!(delivered.len(), 1_000);
    let unique: HashSet<&String> = delivered.iter().map(|(_, payload)| payload).collect();
    assert_eq!(unique.len(), 1_000);
    assert_eq!(stored(&observer, "orders").await.len(), 1_000);
}

#[tokio::test]
async fn sigkill_then_retry_stores_each_key_once() {
    const KEYS: usize = 3_000;
    let mut server = TestServer::start(DURABLE);
    let client = server.client().await;
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut unacked = Vec::new();
    let mut in_flight = std::collections::VecDeque::new();
    let mut next_key = 0;
    let mut killed = false;
    // Stream keyed publishes, 32 in flight, and kill the server after 300
    // acks, so some publishes were stored but not acked and some not stored.
    loop {
        if !killed && acked.len() >= 300 {
            server.kill();
            killed = true;
        }
        if !killed && next_key < KEYS && in_flight.len() < 32 {
            let key = format!("k{next_key}");
            next_key += 1;
            let request = PublishRequest {
                channel: "orders".into(),
                payload: key.clone().into(),
                idempotency_key: Some(key.clone()),
                ..PublishRequest::default()
            };
            match client.publish_pipelined(request) {
                Ok(future) => in_flight.push_back((key, future)),
                Err(_) => unacked.push(key),
            }
            continue;
        }
        let Some((key, future)) = in_flight.pop_front() else {
            break;
        };
        match future.await {
            Ok(ack) => {
                acked.insert(key, ack.offset.unwrap());
            }
            Err(_) => unacked.push(key),
        }
    }
    unacked.extend((next_key..KEYS).map(|key| format!("k{key}")));
    eprintln!("acked before the kill: {}, unacked: {}", acked.len(), unacked.len());
    assert!(killed, "the server was never killed");

    // The client retries every key it has no ack for.
    server.spawn();
    let client = server.client().await;
    let mut duplicates = 0;
    for key in &unacked {
        if publish_keyed(&client, "orders", key, key).await.duplicate {
            duplicates += 1;
        }
    }
    eprintln!("retries answered as duplicates (stored before the kill, ack lost): {duplicates}");
    let messages = stored(&client, "orders").await;
    let mut seen = HashSet::new();
    for (_, payload) in &messages {
        assert!(seen.insert(payload.clone()), "key {payload} stored twice");
    }
    assert_eq!(seen.len(), KEYS, "every key stored exactly once");
    for (key, offset) in &acked {
        assert!(messages.contains(&(*offset, key.clone())), "acked key {key} missing at offset {offset}");
    }
}

#[tokio::test]
async fn too_long_key_rejected() {
    let server = TestServer::start("");
    let client = server.client().await;
    let error = client
        .publish_with(PublishRequest {
            channel: "x".into(),
            payload: "p".into(),
            idempotency_key: Some("k".repeat(257)),
            ..PublishRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("idempotency_key_too_long"));
    assert!(error.to_string().contains("257"), "{error}");
}
