//! Bad input over the wire: each case gets its error code, and the server
//! keeps serving other connections.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, WAIT};
use liminal_client::RawConnection;
use liminal_protocol::{Frame, PROTOCOL_VERSION};

fn hello() -> Frame {
    Frame::Hello {
        versions: vec![PROTOCOL_VERSION],
        client_name: "raw-test".into(),
        token: None,
    }
}

async fn greeted(server: &TestServer) -> RawConnection {
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection.send(&hello()).await.unwrap();
    match connection.receive(WAIT).await.unwrap() {
        Some(Frame::Welcome { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected Welcome, got {other:?}"),
    }
    connection
}

fn assert_error(frame: Option<Frame>, expected_code: &str, mentions: &str) {
    match frame {
        Some(Frame::Error { code, message, .. }) => {
            assert_eq!(code, expected_code, "message: {message}");
            assert!(message.contains(mentions), "message {message:?} should mention {mentions:?}");
        }
        other => panic!("expected Error {expected_code}, got {other:?}"),
    }
}

async fn assert_closed(connection: &mut RawConnection) {
    match connection.receive(WAIT).await {
        Ok(None) | Err(liminal_client::ClientError::Protocol(_)) => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

async fn assert_server_still_serves(server: &TestServer) {
    let client = server.client().await;
    let ack = client.publish("still-alive", "ok").await.unwrap();
    assert!(ack.message_id >= 1);
}

#[tokio::test]
async fn frame_before_hello_rejected() {
    let server = TestServer::start("");
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Publish {
            request_id: 5,
            channel: "x".into(),
            payload: Bytes::from_static(b"early"),
            headers: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let frame = connection.receive(WAIT).await.unwrap();
    assert_error(frame.clone(), "hello_required", "Publish");
    assert!(matches!(frame, Some(Frame::Error { request_id: Some(5), .. })));
    // The connection stays usable: a Hello now succeeds.
    connection.send(&hello()).await.unwrap();
    assert!(matches!(connection.receive(WAIT).await.unwrap(), Some(Frame::Welcome { .. })));
}

#[tokio::test]
async fn unsupported_version_rejected_and_closed() {
    let server = TestServer::start("");
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Hello {
            versions: vec![99, 100],
            client_name: "future".into(),
            token: None,
        })
        .await
        .unwrap();
    assert_error(connection.receive(WAIT).await.unwrap(), "unsupported_version", "[99, 100]");
    assert_closed(&mut connection).await;
    assert_server_still_serves(&server).await;
}

#[tokio::test]
async fn undecodable_frame_rejected_and_closed() {
    let server = TestServer::start("");
    let mut connection = greeted(&server).await;
    connection.send_bytes(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]).await.unwrap();
    assert_error(connection.receive(WAIT).await.unwrap(), "malformed_frame", "not a valid frame");
    assert_closed(&mut connection).await;
    assert_server_still_serves(&server).await;
}

#[tokio::test]
async fn oversized_frame_rejected_and_closed() {
    let server = TestServer::start("[limits]\nmax_frame_bytes = 1024\n");
    let mut connection = greeted(&server).await;
    // Only the length prefix is sent: the server must not wait for the body.
    connection.send_bytes(&5_000u32.to_be_bytes()).await.unwrap();
    assert_error(connection.receive(WAIT).await.unwrap(), "frame_too_large", "5000");
    assert_closed(&mut connection).await;
    assert_server_still_serves(&server).await;
}

#[tokio::test]
async fn unknown_channel_rejected_when_auto_create_off() {
    let server = TestServer::start_with_env(
        "[[channels]]\nname = \"declared\"\n",
        &[("LIMINAL_AUTO_CREATE_CHANNELS", "false")],
    );
    let client = server.client().await;
    let error = client.publish("nope", "x").await.unwrap_err();
    assert_eq!(error.code(), Some("unknown_channel"));
    assert!(error.to_string().contains("\"nope\""), "{error}");
    let error = client.subscribe("nope").await.err().expect("subscribe must fail");
    assert_eq!(error.code(), Some("unknown_channel"));
    // The declared channel works on the same connection.
    assert!(client.publish("declared", "x").await.is_ok());
}

#[tokio::test]
async fn invalid_channel_name_rejected() {
    let server = TestServer::start("");
    let client = server.client().await;
    let error = client.publish("has space", "x").await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_request"));
    assert!(error.to_string().contains("has space"), "{error}");
}

#[tokio::test]
async fn server_only_frame_from_client_rejected() {
    let server = TestServer::start("");
    let mut connection = greeted(&server).await;
    connection
        .send(&Frame::Deliver {
            subscription_id: 1,
            message_id: 1,
            payload: Bytes::new(),
            headers: None,
        })
        .await
        .unwrap();
    assert_error(connection.receive(WAIT).await.unwrap(), "unexpected_frame", "Deliver");
}

#[tokio::test]
async fn second_hello_rejected() {
    let server = TestServer::start("");
    let mut connection = greeted(&server).await;
    connection.send(&hello()).await.unwrap();
    assert_error(connection.receive(WAIT).await.unwrap(), "already_greeted", "Hello");
}

#[tokio::test]
async fn many_bad_clients_do_not_disturb_a_good_one() {
    let server = TestServer::start("");
    let good = server.client().await;
    let mut subscription = good.subscribe("steady").await.unwrap();
    for _ in 0..20 {
        let mut bad = RawConnection::connect(&server.address).await.unwrap();
        bad.send_bytes(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let _ = bad.receive(Duration::from_secs(2)).await;
    }
    let ack = good.publish("steady", "fine").await.unwrap();
    assert!(ack.delivered);
    assert!(matches!(
        subscription.next_timeout(WAIT).await.unwrap(),
        Some(liminal_client::SubscriptionEvent::Message(_))
    ));
}

#[tokio::test]
async fn silent_connection_closed_after_hello_timeout() {
    let server = TestServer::start("[limits]\nhello_timeout_ms = 300\nmax_connections = 1\n");
    let mut silent = RawConnection::connect(&server.address).await.unwrap();
    let frame = silent.receive(WAIT).await.unwrap();
    assert_error(frame, "hello_required", "300 ms");
    assert_closed(&mut silent).await;
    // The slot is free again for a real client.
    assert_server_still_serves(&server).await;
}

#[tokio::test]
async fn empty_idempotency_key_rejected() {
    let server = TestServer::start("");
    let client = server.client().await;
    let request = liminal_client::PublishRequest {
        channel: "k".into(),
        payload: "x".into(),
        idempotency_key: Some(String::new()),
        ..Default::default()
    };
    let error = client.publish_with(request).await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_request"));
    assert!(error.to_string().contains("empty"), "{error}");
}

#[tokio::test]
async fn unknown_conversation_error_names_it() {
    let server = TestServer::start("");
    let mut connection = greeted(&server).await;
    let message = Frame::ConversationMessage { conversation_id: 4242, message_id: 1, payload: Bytes::from_static(b"x") };
    connection.send(&message).await.unwrap();
    match connection.receive(WAIT).await.unwrap() {
        Some(Frame::Error { request_id, code, message, conversation_id }) => {
            assert_eq!(code, "unknown_conversation");
            assert_eq!(request_id, None);
            assert_eq!(conversation_id, Some(4242));
            assert!(message.starts_with("conversation 4242:"), "{message}");
        }
        other => panic!("expected unknown_conversation, got {other:?}"),
    }
    // The error concerns one conversation only, so the connection stays usable.
    connection.send(&Frame::Ping { nonce: 9 }).await.unwrap();
    assert!(matches!(connection.receive(WAIT).await.unwrap(), Some(Frame::Pong { nonce: 9 })));
}

/// Encodes `count` publishes to a durable channel, request ids 1 to `count`.
fn publishes(count: u64) -> bytes::BytesMut {
    let mut buffer = bytes::BytesMut::new();
    for request_id in 1..=count {
        let publish = Frame::Publish {
            request_id,
            channel: "kept".into(),
            payload: Bytes::from(format!("m{request_id}")),
            headers: None,
            idempotency_key: None,
        };
        liminal_protocol::encode_frame_into(&publish, &mut buffer).unwrap();
    }
    buffer
}

const KEPT_CHANNEL: &str = "[[channels]]\nname = \"kept\"\ndurable = true\n";

#[tokio::test]
async fn publishes_before_malformed_frame_answered() {
    let server = TestServer::start(KEPT_CHANNEL);
    let mut connection = greeted(&server).await;
    let mut buffer = publishes(10);
    buffer.extend_from_slice(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]);
    connection.send_bytes(&buffer).await.unwrap();

    for expected in 1..=10 {
        match connection.receive(WAIT).await.unwrap() {
            Some(Frame::PublishAck { request_id, .. }) => assert_eq!(request_id, expected),
            other => panic!("expected the ack of publish {expected}, got {other:?}"),
        }
    }
    assert_error(connection.receive(WAIT).await.unwrap(), "malformed_frame", "not a valid frame");
    assert_closed(&mut connection).await;
}

#[tokio::test]
async fn half_closed_peer_gets_its_acks() {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    let server = TestServer::start(KEPT_CHANNEL);
    let stream = tokio::net::TcpStream::connect(&server.address).await.unwrap();
    let (read_half, mut write_half) = stream.into_split();
    let mut buffer = bytes::BytesMut::new();
    liminal_protocol::encode_frame_into(&hello(), &mut buffer).unwrap();
    buffer.extend_from_slice(&publishes(10));
    write_half.write_all(&buffer).await.unwrap();
    write_half.shutdown().await.unwrap();

    let codec = liminal_protocol::FrameCodec::new(1024 * 1024);
    let mut frames = tokio_util::codec::FramedRead::new(read_half, codec);
    let mut acked = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout(WAIT, frames.next()).await {
        match frame.unwrap() {
            Frame::Welcome { .. } => {}
            Frame::PublishAck { request_id, .. } => acked.push(request_id),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(acked, (1..=10).collect::<Vec<_>>(), "the connection closed before answering");
}
