//! Schema-checked channels: invalid payloads are rejected at publish and
//! never reach a subscriber or the store.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestServer;
use bytes::BytesMut;
use liminal_client::{PublishRequest, RawConnection, SubscribeOptions, SubscriptionEvent};
use liminal_protocol::{Frame, PROTOCOL_VERSION, StartPosition, encode_frame_into};

/// Starts a server whose durable `orders` channel uses the shipped example schema.
fn start_orders_server() -> TestServer {
    let schema = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config/schemas/orders.json"));
    TestServer::start_with_files(
        "[[channels]]\nname = \"orders\"\ndurable = true\nschema = \"orders.json\"\n",
        &[("orders.json", schema)],
    )
}

const VALID: &str = r#"{"id":"ORD-00000001","sku":"ABC-12","quantity":2,"price":9.5,"currency":"EUR",
"customer":{"id":"c1","email":"a@example.com"},"created_at":"2026-12-04T10:00:00Z","status":"new"}"#;

#[tokio::test]
async fn valid_payload_delivered_invalid_rejected() {
    let server = start_orders_server();
    let client = server.client().await;
    let mut subscription = client.subscribe("orders").await.unwrap();
    assert!(subscription.schema_id.as_deref().unwrap().starts_with("sha256:"));

    let ack = client.publish("orders", VALID).await.unwrap();
    assert!(ack.delivered);

    let invalid = VALID.replace("\"quantity\":2", "\"quantity\":0").replace("ABC-12", "bad sku");
    let error = client.publish("orders", invalid).await.unwrap_err();
    assert_eq!(error.code(), Some("schema_validation_failed"));
    let message = error.to_string();
    assert!(message.contains("/quantity"), "{message}");
    assert!(message.contains("/sku"), "{message}");

    let error = client.publish("orders", "not json at all").await.unwrap_err();
    assert_eq!(error.code(), Some("schema_validation_failed"));
    assert!(error.to_string().contains("JSON"), "{error}");

    // Only the valid message reached the subscriber and the store.
    match subscription.next_timeout(Duration::from_secs(5)).await.unwrap() {
        Some(SubscriptionEvent::Message(message)) => assert_eq!(message.message_id, ack.message_id),
        other => panic!("expected the valid message, got {other:?}"),
    }
    assert!(subscription.next_timeout(Duration::from_millis(300)).await.is_err());
    let mut replay = client
        .subscribe_with("orders", SubscribeOptions { start: StartPosition::Earliest, accept_schemas: None })
        .await
        .unwrap();
    assert!(matches!(replay.next_timeout(Duration::from_secs(5)).await, Ok(Some(SubscriptionEvent::Message(_)))));
    assert!(replay.next_timeout(Duration::from_millis(300)).await.is_err(), "an invalid payload was stored");
}

#[tokio::test]
async fn rejected_payload_does_not_claim_idempotency_key() {
    let server = start_orders_server();
    let client = server.client().await;
    let keyed = |payload: &str| PublishRequest {
        channel: "orders".into(),
        payload: payload.to_owned().into(),
        idempotency_key: Some("order-7".into()),
        ..PublishRequest::default()
    };
    assert!(client.publish_with(keyed("{}")).await.is_err());
    let ack = client.publish_with(keyed(VALID)).await.unwrap();
    assert!(!ack.duplicate);
}

#[tokio::test]
async fn deeply_nested_payload_rejected_without_crash() {
    let server = start_orders_server();
    let client = server.client().await;
    for nested in ["[".repeat(10_000) + &"]".repeat(10_000), "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000)] {
        let error = client.publish("orders", nested).await.unwrap_err();
        assert_eq!(error.code(), Some("schema_validation_failed"));
    }
    // Also on a channel without a schema nothing parses the payload, so it
    // is simply carried.
    assert!(client.publish("free", "[".repeat(10_000)).await.is_ok());
    assert!(client.publish("orders", VALID).await.is_ok(), "the server still serves");
}

#[tokio::test]
async fn schema_id_negotiation() {
    let server = start_orders_server();
    let client = server.client().await;
    let subscription = client.subscribe("orders").await.unwrap();
    let id = subscription.schema_id.clone().unwrap();

    let accepted = client
        .subscribe_with("orders", SubscribeOptions { start: StartPosition::Latest, accept_schemas: Some(vec![id.clone()]) })
        .await
        .unwrap();
    assert_eq!(accepted.schema_id.as_deref(), Some(id.as_str()));

    let error = client
        .subscribe_with(
            "orders",
            SubscribeOptions { start: StartPosition::Latest, accept_schemas: Some(vec!["sha256:0000".into()]) },
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Some("schema_mismatch"));
    assert!(error.to_string().contains(&id), "{error}");
}

/// Publishes many schema-checked messages in one write, so the server reads them in large
/// chunks and validates them on its pool, and checks that every reply matches its request and
/// that the accepted messages keep their order.
#[tokio::test]
async fn pipelined_publishes_checked_in_order() {
    const PUBLISHES: u64 = 600;
    const PING_AFTER: u64 = 300;
    let server = start_orders_server();
    let order = |request_id: u64| {
        let payload = VALID.replace("ORD-00000001", &format!("ORD-{request_id:08}"));
        // Every third order is invalid: a quantity of 0 is below the schema's minimum.
        if request_id % 3 == 0 { payload.replace("\"quantity\":2", "\"quantity\":0") } else { payload }
    };

    let mut buffer = BytesMut::new();
    let hello = Frame::Hello { versions: vec![PROTOCOL_VERSION], client_name: "pipelined".into(), token: None };
    encode_frame_into(&hello, &mut buffer).unwrap();
    for request_id in 1..=PUBLISHES {
        let publish = Frame::Publish {
            request_id,
            channel: "orders".into(),
            payload: order(request_id).into(),
            headers: None,
            idempotency_key: None,
        };
        encode_frame_into(&publish, &mut buffer).unwrap();
        if request_id == PING_AFTER {
            encode_frame_into(&Frame::Ping { nonce: 7 }, &mut buffer).unwrap();
        }
    }
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection.send_bytes(&buffer).await.unwrap();

    let mut answered = 0;
    let mut pong_seen = false;
    let mut last_message_id = 0;
    while answered < PUBLISHES || !pong_seen {
        let frame = connection.receive(Duration::from_secs(10)).await.unwrap().expect("the server closed the connection");
        match frame {
            Frame::Welcome { .. } => {}
            Frame::Pong { nonce } => {
                assert_eq!(nonce, 7);
                pong_seen = true;
            }
            Frame::PublishAck { request_id, message_id, .. } => {
                assert_ne!(request_id % 3, 0, "invalid order {request_id} was accepted");
                assert!(message_id > last_message_id, "order {request_id} was stored out of order");
                last_message_id = message_id;
                answered += 1;
            }
            Frame::Error { request_id: Some(request_id), code, message, .. } => {
                assert_eq!(request_id % 3, 0, "valid order {request_id} was rejected: {message}");
                assert_eq!(code, "schema_validation_failed");
                assert!(message.contains("/quantity"), "{message}");
                // Rejections are queued as the frames are handled, so they keep the Ping's place.
                assert_eq!(pong_seen, request_id > PING_AFTER, "rejection of order {request_id} is out of order");
                answered += 1;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let client = server.client().await;
    let mut replay = client
        .subscribe_with("orders", SubscribeOptions { start: StartPosition::Earliest, accept_schemas: None })
        .await
        .unwrap();
    for request_id in (1..=PUBLISHES).filter(|request_id| request_id % 3 != 0) {
        match replay.next_timeout(Duration::from_secs(5)).await.unwrap() {
            Some(SubscriptionEvent::Message(message)) => assert_eq!(message.payload, order(request_id).as_bytes()),
            other => panic!("expected order {request_id}, got {other:?}"),
        }
    }
    assert!(replay.next_timeout(Duration::from_millis(300)).await.is_err(), "an invalid order was stored");
}

/// Publishes read before the handshake completed are not validated by the reader. Before Hello
/// they must be rejected with `hello_required`, and right after it the connection validates them.
#[tokio::test]
async fn publishes_around_hello_checked() {
    let server = start_orders_server();
    let invalid = VALID.replace("\"quantity\":2", "\"quantity\":0");
    let publish = |request_id: u64, payload: &str| Frame::Publish {
        request_id,
        channel: "orders".into(),
        payload: payload.to_owned().into(),
        headers: None,
        idempotency_key: None,
    };

    let mut buffer = BytesMut::new();
    for request_id in 1..=10 {
        encode_frame_into(&publish(request_id, &invalid), &mut buffer).unwrap();
    }
    let hello = Frame::Hello { versions: vec![PROTOCOL_VERSION], client_name: "eager".into(), token: None };
    encode_frame_into(&hello, &mut buffer).unwrap();
    encode_frame_into(&publish(11, &invalid), &mut buffer).unwrap();
    encode_frame_into(&publish(12, VALID), &mut buffer).unwrap();
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection.send_bytes(&buffer).await.unwrap();

    let mut replies = std::collections::BTreeMap::new();
    while replies.len() < 12 {
        match connection.receive(Duration::from_secs(10)).await.unwrap().expect("connection open") {
            Frame::Welcome { .. } => {}
            Frame::Error { request_id: Some(request_id), code, .. } => {
                replies.insert(request_id, code);
            }
            Frame::PublishAck { request_id, .. } => {
                replies.insert(request_id, "ack".to_owned());
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    for request_id in 1..=10 {
        assert_eq!(replies[&request_id], "hello_required", "publish {request_id}");
    }
    assert_eq!(replies[&11], "schema_validation_failed");
    assert_eq!(replies[&12], "ack");
}

#[tokio::test]
async fn payload_limit_follows_frame_limit() {
    let directory = tempfile::tempdir().unwrap();
    let schema = directory.path().join("numbers.json");
    std::fs::write(&schema, r#"{"type": "array", "items": {"type": "integer"}}"#).unwrap();
    let server = TestServer::start_with_files(
        "[limits]\nmax_frame_bytes = 4194304\n\n[[channels]]\nname = \"numbers\"\nschema = \"numbers.json\"\n",
        &[("numbers.json", schema)],
    );
    let client = server.client().await;

    // About 2 MiB of JSON: larger than the schema crate's default limit of 1 MiB.
    let numbers = vec!["1"; 1024 * 1024].join(",");
    let payload = format!("[{numbers}]");
    assert!(payload.len() > 2 * 1024 * 1024 - 10);
    client.publish("numbers", payload).await.unwrap();

    let error = client.publish("numbers", format!("[{numbers},\"x\"]")).await.unwrap_err();
    assert_eq!(error.code(), Some("schema_validation_failed"));
    assert!(error.to_string().contains("/1048576"), "{error}");
}

fn startup_error(schema_text: Option<&str>) -> String {
    let directory = tempfile::tempdir().unwrap();
    if let Some(text) = schema_text {
        std::fs::write(directory.path().join("bad.json"), text).unwrap();
    }
    let config = format!(
        "{}\n[[channels]]\nname = \"orders\"\nschema = \"bad.json\"\n",
        common::BASE_CONFIG
    );
    let path = directory.path().join("liminal.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server must refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn startup_errors_name_schema_file_and_reason() {
    let missing = startup_error(None);
    assert!(missing.contains("bad.json"), "{missing}");
    assert!(missing.contains("channels[0].schema"), "{missing}");

    let not_json = startup_error(Some("{ this is not json"));
    assert!(not_json.contains("bad.json"), "{not_json}");
    assert!(not_json.to_lowercase().contains("json"), "{not_json}");

    let invalid = startup_error(Some(r#"{"type": "no-such-type"}"#));
    assert!(invalid.contains("bad.json"), "{invalid}");
    assert!(invalid.contains("no-such-type"), "{invalid}");
}

#[test]
fn cli_pub_shows_rejection() {
    let server = start_orders_server();
    let output = Command::new(common::cli_binary())
        .args(["--server", &server.address, "pub", "orders", r#"{"id":"ORD-1"}"#])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("schema_validation_failed"), "{stderr}");
    assert!(stderr.contains("\"sku\" is a required property"), "{stderr}");
}

#[test]
fn cli_pub_stdin_reports_rejected_line() {
    use std::io::Write;
    let server = start_orders_server();
    let mut child = Command::new(common::cli_binary())
        .args(["--server", &server.address, "pub", "orders"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let valid = VALID.replace('\n', "");
    for line in [valid.as_str(), "not json", valid.as_str(), valid.as_str()] {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);

    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "a rejected line must fail the command");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2:"), "{stderr}");
    assert!(stderr.contains("3 of 4 lines published; 1 rejected, 0 not confirmed"), "{stderr}");
    let acks = String::from_utf8_lossy(&output.stdout);
    assert_eq!(acks.lines().count(), 3, "{acks}");
}

#[test]
fn missing_schema_error_shows_resolved_path() {
    let directory = tempfile::tempdir().unwrap();
    let config = format!("{}\n[[channels]]\nname = \"orders\"\nschema = \"gone.json\"\n", common::BASE_CONFIG);
    std::fs::write(directory.path().join("liminal.toml"), config).unwrap();
    // A relative --config path: the error still names the absolute file.
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .args(["--config", "liminal.toml"])
        .current_dir(directory.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = directory.path().join("gone.json");
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");
}
