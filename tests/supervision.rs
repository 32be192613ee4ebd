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
