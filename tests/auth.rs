//! Token authentication: `[auth] token` or `LIMINAL_AUTH_TOKEN` on the
//! server, the token in `Hello` on the client.

mod common;

use std::process::Command;

use common::{TestServer, WAIT, cli_binary};
use liminal_client::{Client, ClientOptions, RawConnection};
use liminal_protocol::{Frame, PROTOCOL_VERSION, StartPosition};

const TOKEN: &str = "correct-horse-battery-staple";
const WRONG_TOKEN: &str = "tr0ub4dor-and-3";

fn auth_config() -> String {
    format!("[auth]\ntoken = \"{TOKEN}\"\n")
}

fn options(token: Option<&str>) -> ClientOptions {
    ClientOptions {
        token: token.map(str::to_owned),
        ..ClientOptions::default()
    }
}

fn hello(token: Option<&str>) -> Frame {
    Frame::Hello {
        versions: vec![PROTOCOL_VERSION],
        client_name: "auth-test".to_owned(),
        token: token.map(str::to_owned),
    }
}

/// Sends `Hello` with `token` on a raw connection and returns the reply
/// and what follows it (`None` once the server closed the connection).
async fn raw_hello(server: &TestServer, token: Option<&str>) -> (Option<Frame>, Option<Frame>) {
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection.send(&hello(token)).await.unwrap();
    let answer = connection.receive(WAIT).await.unwrap();
    let next = connection.receive(WAIT).await.unwrap();
    (answer, next)
}

fn assert_unauthorized(answer: &Option<Frame>, next: &Option<Frame>) {
    match answer {
        Some(Frame::Error {
            code, request_id, ..
        }) => {
            assert_eq!(code, "unauthorized");
            assert_eq!(*request_id, None);
        }
        other => panic!("expected Error unauthorized, got {other:?}"),
    }
    assert!(
        next.is_none(),
        "the connection must be closed after unauthorized, got {next:?}"
    );
}

#[tokio::test]
async fn right_token_accepted() {
    let server = TestServer::start(&auth_config());
    let client = Client::connect(&server.address, options(Some(TOKEN)))
        .await
        .unwrap();
    let ack = client.publish("guarded", "hello").await.unwrap();
    assert_eq!(ack.message_id, 1);
}

#[tokio::test]
async fn wrong_token_rejected_and_closed() {
    let server = TestServer::start(&auth_config());
    let (answer, next) = raw_hello(&server, Some(WRONG_TOKEN)).await;
    assert_unauthorized(&answer, &next);

    let error = Client::connect(&server.address, options(Some(WRONG_TOKEN)))
        .await
        .err()
        .expect("a wrong token is rejected");
    assert_eq!(error.code(), Some("unauthorized"), "{error}");
}

#[tokio::test]
async fn missing_token_rejected_and_closed() {
    let server = TestServer::start(&auth_config());
    let (answer, next) = raw_hello(&server, None).await;
    assert_unauthorized(&answer, &next);
}

#[tokio::test]
async fn frames_before_hello_rejected() {
    let server = TestServer::start(&auth_config());
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    let before_hello = [
        Frame::Publish {
            request_id: 1,
            channel: "guarded".to_owned(),
            payload: "sneaky".into(),
            headers: None,
            idempotency_key: None,
        },
        Frame::Subscribe {
            request_id: 2,
            channel: "guarded".to_owned(),
            start: StartPosition::Latest,
            accept_schemas: None,
        },
        Frame::Ping { nonce: 3 },
    ];
    for frame in &before_hello {
        connection.send(frame).await.unwrap();
        let answer = connection.receive(WAIT).await.unwrap();
        match answer {
            Some(Frame::Error { code, .. }) => {
                assert_eq!(code, "hello_required", "answer to {}", frame.name())
            }
            other => panic!(
                "expected hello_required for {}, got {other:?}",
                frame.name()
            ),
        }
    }

    // Nothing was published before the handshake, and the connection can
    // still authenticate.
    connection.send(&hello(Some(TOKEN))).await.unwrap();
    let welcome = connection.receive(WAIT).await.unwrap();
    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );
    let client = Client::connect(&server.address, options(Some(TOKEN)))
        .await
        .unwrap();
    let ack = client.publish("guarded", "first").await.unwrap();
    assert_eq!(
        ack.message_id, 1,
        "the publish sent before Hello must not have been accepted"
    );
}

#[tokio::test]
async fn tokens_never_logged() {
    let server = TestServer::start(&auth_config());
    let (answer, _) = raw_hello(&server, Some(WRONG_TOKEN)).await;
    assert!(matches!(answer, Some(Frame::Error { .. })));
    let (answer, _) = raw_hello(&server, None).await;
    assert!(matches!(answer, Some(Frame::Error { .. })));
    let client = Client::connect(&server.address, options(Some(TOKEN)))
        .await
        .unwrap();
    client.ping().await.unwrap();

    assert!(
        server.wait_for_log("rejected Hello", WAIT),
        "{}",
        server.log()
    );
    assert!(
        server.wait_for_log("handshake complete", WAIT),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.contains(TOKEN),
        "the server's token appears in the log:\n{log}"
    );
    assert!(
        !log.contains(WRONG_TOKEN),
        "a presented token appears in the log:\n{log}"
    );
}

#[tokio::test]
async fn token_from_environment() {
    let server = TestServer::start_with_env("", &[("LIMINAL_AUTH_TOKEN", TOKEN)]);
    let (answer, next) = raw_hello(&server, Some(WRONG_TOKEN)).await;
    assert_unauthorized(&answer, &next);
    let client = Client::connect(&server.address, options(Some(TOKEN)))
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert!(!server.log().contains(TOKEN), "{}", server.log());
}

#[tokio::test]
async fn no_token_configured_accepts_any_hello() {
    let server = TestServer::start("");
    for token in [None, Some(WRONG_TOKEN)] {
        let client = Client::connect(&server.address, options(token))
            .await
            .unwrap();
        client.ping().await.unwrap();
    }
}

fn cli(server: &TestServer, arguments: &[&str], token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(cli_binary());
    command
        .args(["--server", &server.address])
        .args(arguments)
        .env_remove("LIMINAL_TOKEN");
    if let Some(token) = token {
        command.env("LIMINAL_TOKEN", token);
    }
    command.output().expect("run liminal")
}

#[tokio::test]
async fn cli_uses_liminal_token() {
    let server = TestServer::start(&auth_config());
    let output = cli(&server, &["pub", "guarded", "from-cli"], Some(TOKEN));
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = cli(&server, &["pub", "guarded", "from-cli"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(stderr.contains("pass the server's token with --token"), "{stderr}");

    let output = cli(
        &server,
        &["--token", WRONG_TOKEN, "pub", "guarded", "x"],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(stderr.contains("check the value of --token"), "{stderr}");
    assert!(
        !stderr.contains(WRONG_TOKEN),
        "the CLI echoed the token: {stderr}"
    );
}
