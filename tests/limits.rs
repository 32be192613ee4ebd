//! Configured limits over the wire: going over each one returns an
//! `Error` frame carrying the limit's own code.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, WAIT};
use liminal_client::{ClientError, PublishRequest, RawConnection};
use liminal_protocol::{Frame, PROTOCOL_VERSION};

async fn greeted_raw(server: &TestServer) -> RawConnection {
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Hello {
            versions: vec![PROTOCOL_VERSION],
            client_name: "limits-test".to_owned(),
            token: None,
        })
        .await
        .unwrap();
    let answer = connection.receive(WAIT).await.unwrap();
    assert!(matches!(answer, Some(Frame::Welcome { .. })), "{answer:?}");
    connection
}

fn error_code(frame: &Option<Frame>) -> Option<&str> {
    match frame {
        Some(Frame::Error { code, .. }) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn connection_over_limit_gets_error_and_close() {
    let server = TestServer::start("[limits]\nmax_connections = 2\n");
    let first = server.client().await;
    let _second = server.client().await;

    let mut third = RawConnection::connect(&server.address).await.unwrap();
    let answer = third.receive(WAIT).await.unwrap();
    assert_eq!(
        error_code(&answer),
        Some("too_many_connections"),
        "{answer:?}"
    );
    let end = third.receive(WAIT).await.unwrap();
    assert!(
        end.is_none(),
        "the rejected connection must be closed, got {end:?}"
    );

    // A closed connection frees its place.
    drop(first);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match liminal_client::Client::connect(&server.address, Default::default()).await {
            Ok(client) => {
                client.ping().await.unwrap();
                break;
            }
            Err(error) => {
                assert!(
                    error.is(liminal_protocol::ErrorCode::TooManyConnections),
                    "{error}"
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "the freed place was never reused"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn subscription_over_limit_rejected() {
    let server = TestServer::start("[limits]\nmax_subscriptions_per_connection = 2\n");
    let client = server.client().await;
    client.subscribe("a").await.unwrap();
    client.subscribe("b").await.unwrap();
    let error = client
        .subscribe("c")
        .await
        .err()
        .expect("the third subscription is rejected");
    assert_eq!(error.code(), Some("too_many_subscriptions"), "{error}");

    // The limit is per connection, and the connection stays usable.
    client.ping().await.unwrap();
    let other = server.client().await;
    other.subscribe("c").await.unwrap();
}

#[tokio::test]
async fn conversation_over_limit_rejected() {
    let server = TestServer::start("[limits]\nmax_conversations_per_connection = 2\n");
    let client = server.client().await;
    for _ in 0..2 {
        let request_id = client.next_request_id();
        let answer = client
            .call(
                request_id,
                Frame::OpenConversation {
                    request_id,
                    subject: "echo".to_owned(),
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(answer, Frame::ConversationOpened { .. }),
            "{answer:?}"
        );
    }
    let request_id = client.next_request_id();
    let error = client
        .call(
            request_id,
            Frame::OpenConversation {
                request_id,
                subject: "echo".to_owned(),
            },
        )
        .await
        .err()
        .expect("the third conversation is rejected");
    assert_eq!(error.code(), Some("too_many_conversations"), "{error}");
}

#[tokio::test]
async fn oversized_frame_rejected_and_closed() {
    let server = TestServer::start("[limits]\nmax_frame_bytes = 1024\n");
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Hello {
            versions: vec![PROTOCOL_VERSION],
            client_name: "limits-test".to_owned(),
            token: None,
        })
        .await
        .unwrap();
    let welcome = connection.receive(WAIT).await.unwrap();
    assert!(
        matches!(
            welcome,
            Some(Frame::Welcome {
                max_frame_bytes: 1024,
                ..
            })
        ),
        "Welcome must announce the limit: {welcome:?}"
    );

    // A frame just under the limit passes.
    connection
        .send(&Frame::Publish {
            request_id: 1,
            channel: "big".to_owned(),
            payload: Bytes::from(vec![b'x'; 900]),
            headers: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let ack = connection.receive(WAIT).await.unwrap();
    assert!(
        matches!(ack, Some(Frame::PublishAck { request_id: 1, .. })),
        "{ack:?}"
    );

    connection
        .send(&Frame::Publish {
            request_id: 2,
            channel: "big".to_owned(),
            payload: Bytes::from(vec![b'x'; 2_000]),
            headers: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let answer = connection.receive(WAIT).await.unwrap();
    assert_eq!(error_code(&answer), Some("frame_too_large"), "{answer:?}");
    let end = connection.receive(WAIT).await.unwrap();
    assert!(end.is_none(), "the connection must be closed, got {end:?}");
}

#[tokio::test]
async fn inflight_limit_applies_backpressure() {
    let server = TestServer::start("[limits]\nmax_inflight_publishes = 4\n");
    let subscriber = server.client().await;
    let mut subscription = subscriber.subscribe("paced").await.unwrap();
    let publisher = server.client().await;
    // Far more publishes in flight than the limit: the server stops
    // reading instead of failing them.
    let acks: Vec<_> = (0..2_000)
        .map(|index| {
            publisher
                .publish_pipelined(PublishRequest {
                    channel: "paced".to_owned(),
                    payload: Bytes::from(format!("{index}")),
                    ..PublishRequest::default()
                })
                .unwrap()
        })
        .collect();
    let mut last = 0;
    for ack in acks {
        let ack = ack.await.expect("every publish is acked");
        assert!(ack.message_id > last, "acks arrive in order");
        last = ack.message_id;
    }
    let mut received = 0;
    while received < 2_000 {
        match subscription.next_timeout(WAIT).await.unwrap() {
            Some(liminal_client::SubscriptionEvent::Message(_)) => received += 1,
            other => panic!("unexpected {other:?} after {received} messages"),
        }
    }
}

#[tokio::test]
async fn outbound_limit_applies_to_control_frames() {
    // Replies the client does not read count against four times the
    // outbound bound; past that the connection is closed as a slow consumer.
    let server = TestServer::start("[limits]\nmax_outbound_bytes = 4096\n");
    let mut connection = greeted_raw(&server).await;
    // Each Ping gets a small Pong. Send them without reading until
    // the server gives up on the connection (its close makes a send fail).
    let mut nonce = 0u64;
    'sending: while !server.log().contains("slow consumer: replies piled up") {
        assert!(
            nonce < 5_000_000,
            "the server never closed the connection:\n{}",
            server.log()
        );
        for _ in 0..20_000 {
            if connection.send(&Frame::Ping { nonce }).await.is_err() {
                break 'sending;
            }
            nonce += 1;
        }
    }
    assert!(
        server.wait_for_log("slow consumer: replies piled up", WAIT),
        "{}",
        server.log()
    );

    // What the client can still read ends with the error or, when the
    // server's close reset the connection, ends early; it never goes on.
    loop {
        match connection.receive(WAIT).await {
            Ok(Some(Frame::Pong { .. })) => {}
            Ok(Some(Frame::Error { code, .. })) => {
                assert_eq!(code, "slow_consumer");
                break;
            }
            Ok(None) | Err(ClientError::Closed(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}
