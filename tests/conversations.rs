//! Conversations against a real server: the echo fallback, `reject` mode,
//! crash handling, limits, idle timeout, actor cleanup and shutdown.
//!
//! Most tests run the `liminal-server` binary. Tests that need application
//! code as a responder (a stateful one, one that panics, a slow one) embed
//! the same server in the test process through `Server::builder`, with a
//! real TCP listener. In-process responders are Rust code linked into the
//! server, so embedding is how an application provides them. It also keeps
//! test-only responders out of the shipped binary.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, WAIT};
use liminal_broker::{ConversationInfo, ReplyContext, Responder, ResponderError};
use liminal_client::{Client, ClientOptions, ConversationError, ConversationEvent};
use liminal_protocol::Frame;

// -- helpers -------------------------------------------------------------

/// An embedded server on 127.0.0.1 port 0 with its own temp directory.
struct Embedded {
    server: liminal_server::Server,
    _directory: tempfile::TempDir,
}

impl Embedded {
    async fn start(extra: &str, configure: impl FnOnce(liminal_server::server::ServerBuilder) -> liminal_server::server::ServerBuilder) -> Embedded {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("liminal.toml");
        let text = format!(
            "listen_address = \"127.0.0.1:0\"\nhealth_listen_address = \"127.0.0.1:0\"\npersistence_path = {:?}\ndrain_timeout_ms = 5000\nauto_create_channels = true\nfault_injection = true\n{extra}",
            directory.path().join("data").display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        let settings = liminal_server::Settings::load_with_env(Some(&path), Vec::new()).unwrap();
        let server = configure(liminal_server::Server::builder(settings)).start().await.unwrap();
        Embedded {
            server,
            _directory: directory,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.server.client_address().to_string(), ClientOptions::default())
            .await
            .unwrap()
    }
}

/// Keeps a running total per conversation and replies to each number with it.
struct RunningTotal {
    total: i64,
}

impl Responder for RunningTotal {
    async fn on_message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        let text = std::str::from_utf8(&payload).map_err(ResponderError::new)?;
        let number: i64 = text.trim().parse().map_err(ResponderError::new)?;
        self.total += number;
        context.reply(self.total.to_string());
        Ok(())
    }
}

/// Panics on the payload `boom`, echoes anything else.
struct Fragile;

impl Responder for Fragile {
    async fn on_message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        if payload.as_ref() == b"boom" {
            panic!("responder asked to explode");
        }
        context.reply(payload);
        Ok(())
    }
}

/// Echoes each message after a delay, so messages queue up.
struct Slow;

impl Responder for Slow {
    async fn on_message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        context.reply(payload);
        Ok(())
    }
}

async fn inject_participant_fault(client: &Client, conversation_id: u64) {
    let request_id = client.next_request_id();
    let answer = client
        .call(
            request_id,
            Frame::InjectFault {
                request_id,
                target: format!("participant/{conversation_id}"),
            },
        )
        .await
        .expect("fault injected");
    assert!(matches!(answer, Frame::FaultInjected { .. }), "{answer:?}");
}

/// Fetches the `broker/conversations` subtree of the server's live
/// supervision tree from its HTTP `/supervision` endpoint.
fn conversations_subtree(server: &TestServer) -> serde_json::Value {
    use std::io::{Read, Write};
    let address = server.http_address.as_ref().expect("the server reports its HTTP address");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET /supervision HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tree: serde_json::Value = serde_json::from_str(body).unwrap();
    tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["path"] == "broker/conversations")
        .expect("broker/conversations in the tree")
        .clone()
}

/// Counts conversation and participant nodes in the live supervision tree.
fn count_conversation_actors(server: &TestServer) -> (usize, usize) {
    let conversations = conversations_subtree(server);
    let nodes = conversations["children"].as_array().unwrap();
    let participants = nodes
        .iter()
        .map(|node| node["children"].as_array().map_or(0, Vec::len))
        .sum();
    (nodes.len(), participants)
}

/// Waits until the tree shows no conversation and no participant. The
/// wait yields to the runtime, so the test's own client tasks keep running.
async fn wait_for_no_conversation_actors(server: &TestServer, timeout: Duration) -> (usize, usize) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = count_conversation_actors(server);
        if counts == (0, 0) || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// -- echo fallback and reject mode --------------------------------------

#[tokio::test]
async fn echo_fallback_answers_each_message() {
    let server = TestServer::start("");
    let client = server.client().await;
    let mut conversation = client.open_conversation("anything.at-all").await.unwrap();
    for payload in ["first", "second"] {
        let reply = conversation.request(payload, WAIT).await.unwrap();
        assert_eq!(reply, Bytes::from(payload));
    }
    let reason = conversation.close_and_wait(WAIT).await.unwrap();
    assert_eq!(reason, "closed by client");

    let log = server.log();
    assert!(log.contains("conversation state changed"), "transitions are logged:\n{log}");
    assert!(log.contains("broker/conversations/1/participant"), "participant path is logged:\n{log}");
}

#[tokio::test]
async fn reject_mode_answers_no_responder() {
    let server = TestServer::start("[conversations]\nunknown_subject = \"reject\"\n");
    let client = server.client().await;
    let Err(error) = client.open_conversation("nobody.home").await else {
        panic!("a subject without responder was opened in reject mode");
    };
    assert_eq!(error.code(), Some("no_responder"), "{error}");
    assert!(error.to_string().contains("nobody.home"), "{error}");
}

#[tokio::test]
async fn open_with_invalid_subject_is_rejected() {
    let server = TestServer::start("");
    let client = server.client().await;
    let Err(error) = client.open_conversation("has space").await else {
        panic!("a subject with a space was opened");
    };
    assert_eq!(error.code(), Some("invalid_request"), "{error}");
}

#[tokio::test]
async fn message_to_unknown_conversation_is_an_error() {
    let server = TestServer::start("");
    let client = server.client().await;
    client
        .send(Frame::ConversationMessage {
            conversation_id: 4242,
            message_id: 1,
            payload: Bytes::from("x"),
        })
        .unwrap();
    let event = tokio::time::timeout(WAIT, client.next_event()).await.unwrap().unwrap();
    let Frame::Error { code, message, .. } = event else {
        panic!("expected an Error frame, got {event:?}");
    };
    assert_eq!(code, "unknown_conversation");
    assert!(message.starts_with("conversation 4242:"), "{message}");
    // Not a fatal error: the connection still works.
    client.ping().await.unwrap();
}

// -- in-process responders (embedded server) -----------------------------

#[tokio::test]
async fn stateful_responder_keeps_state_per_conversation() {
    let embedded = Embedded::start("", |builder| {
        builder.responder("sum", |_: &ConversationInfo| RunningTotal { total: 0 })
    })
    .await;
    let client = embedded.client().await;

    let mut first = client.open_conversation("sum").await.unwrap();
    let mut totals = Vec::new();
    for number in ["1", "2", "3"] {
        totals.push(first.request(number, WAIT).await.unwrap());
    }
    assert_eq!(totals, vec![Bytes::from("1"), Bytes::from("3"), Bytes::from("6")]);

    // A second conversation gets its own responder, starting from zero.
    let mut second = client.open_conversation("sum").await.unwrap();
    assert_eq!(second.request("10", WAIT).await.unwrap(), Bytes::from("10"));
    assert_eq!(first.request("4", WAIT).await.unwrap(), Bytes::from("10"));

    first.close_and_wait(WAIT).await.unwrap();
    second.close_and_wait(WAIT).await.unwrap();
    embedded.server.shutdown().await;
}

#[tokio::test]
async fn responders_change_at_runtime() {
    let embedded = Embedded::start("", |builder| builder).await;
    let client = embedded.client().await;
    let registry = embedded.server.broker().responders();

    let replaced = registry
        .register("sum", |_: &ConversationInfo| RunningTotal { total: 100 })
        .unwrap();
    assert!(replaced.is_none());
    let mut conversation = client.open_conversation("sum").await.unwrap();
    assert_eq!(conversation.request("1", WAIT).await.unwrap(), Bytes::from("101"));

    // Unregistering affects new conversations only; they fall back to echo.
    assert!(registry.unregister("sum").is_some());
    assert_eq!(conversation.request("1", WAIT).await.unwrap(), Bytes::from("102"));
    let mut fallback = client.open_conversation("sum").await.unwrap();
    assert_eq!(fallback.request("1", WAIT).await.unwrap(), Bytes::from("1"));
    embedded.server.shutdown().await;
}

#[tokio::test]
async fn responder_panic_fails_only_its_conversation() {
    let embedded = Embedded::start("", |builder| builder.responder("fragile", |_: &ConversationInfo| Fragile)).await;
    let client = embedded.client().await;
    let mut doomed = client.open_conversation("fragile").await.unwrap();
    let mut bystander = client.open_conversation("fragile").await.unwrap();
    assert_eq!(doomed.request("ok", WAIT).await.unwrap(), Bytes::from("ok"));

    let started = Instant::now();
    let Err(ConversationError::Failed { reason, .. }) = doomed.request("boom", WAIT).await else {
        panic!("the panicking conversation did not fail");
    };
    assert!(started.elapsed() < Duration::from_secs(2), "failure took {:?}", started.elapsed());
    assert!(reason.contains("responder asked to explode"), "{reason}");

    assert_eq!(bystander.request("still here", WAIT).await.unwrap(), Bytes::from("still here"));
    let mut fresh = client.open_conversation("fragile").await.unwrap();
    assert_eq!(fresh.request("new", WAIT).await.unwrap(), Bytes::from("new"));
    embedded.server.shutdown().await;
}

#[tokio::test]
async fn full_queue_rejects_messages() {
    let extra = "[conversations]\nmax_queued_messages = 2\n";
    let embedded = Embedded::start(extra, |builder| builder.responder("slow", |_: &ConversationInfo| Slow)).await;
    let client = embedded.client().await;
    let mut conversation = client.open_conversation("slow").await.unwrap();
    let sent: Vec<u64> = (0..5).map(|index| conversation.send(format!("m{index}")).unwrap()).collect();

    let mut replies = Vec::new();
    let mut rejected = Vec::new();
    while replies.len() + rejected.len() < sent.len() {
        match conversation.next_timeout(WAIT).await.unwrap().unwrap() {
            ConversationEvent::Reply { in_reply_to, .. } => replies.push(in_reply_to),
            ConversationEvent::Rejected { code, message } => rejected.push((code, message)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(replies, sent[..2].to_vec(), "the first two messages were queued and answered");
    assert_eq!(rejected.len(), 3);
    for (code, message) in &rejected {
        assert_eq!(code, "conversation_queue_full");
        assert!(message.contains("max_queued_messages"), "{message}");
    }
    // Once the queue drained, messages are accepted again.
    assert_eq!(conversation.request("later", WAIT).await.unwrap(), Bytes::from("later"));
    embedded.server.shutdown().await;
}

// -- crashes over the wire -------------------------------------------------

#[tokio::test]
async fn participant_crash_fails_only_its_conversation() {
    let server = TestServer::start("");
    let client = server.client().await;
    let mut doomed = client.open_conversation("echo").await.unwrap();
    let mut bystander = client.open_conversation("echo").await.unwrap();
    assert_eq!(doomed.request("before", WAIT).await.unwrap(), Bytes::from("before"));

    let started = Instant::now();
    inject_participant_fault(&client, doomed.id()).await;
    let event = doomed.next_timeout(WAIT).await.unwrap().unwrap();
    let ConversationEvent::Failed(reason) = event else {
        panic!("expected ConversationFailed, got {event:?}");
    };
    assert!(started.elapsed() < Duration::from_secs(2), "failure took {:?}", started.elapsed());
    assert!(reason.contains("fault injected"), "{reason}");
    assert!(doomed.next_timeout(WAIT).await.unwrap().is_none(), "nothing follows a failure");

    assert_eq!(bystander.request("after", WAIT).await.unwrap(), Bytes::from("after"));
    let other_client = server.client().await;
    let mut fresh = other_client.open_conversation("echo").await.unwrap();
    assert_eq!(fresh.request("new", WAIT).await.unwrap(), Bytes::from("new"));

    let failed_logged = server.wait_for_log_line(
        |line| line.contains("conversation state changed") && line.contains("failed"),
        WAIT,
    );
    let log = server.log();
    assert!(failed_logged, "failed state not logged:\n{log}");
    let participant = format!("broker/conversations/{}/participant", doomed.id());
    assert!(log.contains("actor crashed"), "crash not logged:\n{log}");
    assert!(log.contains(&participant), "participant path not logged:\n{log}");
}

#[tokio::test]
async fn restart_policy_continues_with_notice() {
    let config = "[supervision]\nmax_restarts = 2\nrestart_window_ms = 60000\n\n[conversations]\ncrash_policy = \"fail\"\n\n[conversations.crash_policies]\nsturdy = \"restart\"\n";
    let server = TestServer::start(config);
    let client = server.client().await;
    let mut conversation = client.open_conversation("sturdy").await.unwrap();

    for round in 1..=2 {
        inject_participant_fault(&client, conversation.id()).await;
        let event = conversation.next_timeout(WAIT).await.unwrap().unwrap();
        let ConversationEvent::Notice(notice) = event else {
            panic!("round {round}: expected ConversationNotice, got {event:?}");
        };
        assert!(notice.contains("restarted"), "{notice}");
        let payload = format!("round {round}");
        assert_eq!(conversation.request(payload.clone(), WAIT).await.unwrap(), Bytes::from(payload));
    }

    let subtree = conversations_subtree(&server);
    let participant = &subtree["children"][0]["children"][0];
    assert_eq!(
        participant["path"],
        format!("broker/conversations/{}/participant", conversation.id())
    );
    assert_eq!(participant["restarts"], 2, "{subtree}");

    // The third crash within the window exceeds the restart intensity.
    inject_participant_fault(&client, conversation.id()).await;
    let event = conversation.next_timeout(WAIT).await.unwrap().unwrap();
    let ConversationEvent::Failed(reason) = event else {
        panic!("expected ConversationFailed after the restart budget, got {event:?}");
    };
    assert!(reason.contains("restart intensity exceeded"), "{reason}");

    // Other subjects keep the default `fail` policy.
    let mut plain = client.open_conversation("plain").await.unwrap();
    inject_participant_fault(&client, plain.id()).await;
    let event = plain.next_timeout(WAIT).await.unwrap().unwrap();
    assert!(matches!(event, ConversationEvent::Failed(_)), "{event:?}");
    assert!(server.log().contains("actor restarted"), "restart not logged");
}

// -- limits ----------------------------------------------------------------

#[tokio::test]
async fn conversation_limit_per_connection() {
    let server = TestServer::start("[limits]\nmax_conversations_per_connection = 2\n");
    let client = server.client().await;
    let first = client.open_conversation("a").await.unwrap();
    let _second = client.open_conversation("b").await.unwrap();
    let Err(error) = client.open_conversation("c").await else {
        panic!("a third conversation was opened over the limit");
    };
    assert_eq!(error.code(), Some("too_many_conversations"), "{error}");

    // Closing one frees a slot; other connections have their own limit.
    first.close_and_wait(WAIT).await.unwrap();
    client.open_conversation("c").await.unwrap();
    let other = server.client().await;
    other.open_conversation("d").await.unwrap();
}

#[tokio::test]
async fn idle_conversation_closes() {
    let server = TestServer::start("[conversations]\nidle_timeout_ms = 300\n");
    let client = server.client().await;
    let mut idle = client.open_conversation("quiet").await.unwrap();
    let mut busy = client.open_conversation("chatty").await.unwrap();

    let started = Instant::now();
    // Traffic keeps `busy` open while `idle` times out.
    let idle_reason = loop {
        assert_eq!(busy.request("ping", WAIT).await.unwrap(), Bytes::from("ping"));
        if let Ok(Some(event)) = idle.next_timeout(Duration::from_millis(100)).await {
            break event;
        }
        assert!(started.elapsed() < WAIT, "the idle conversation never closed");
    };
    assert_eq!(idle_reason, ConversationEvent::Closed("idle timeout".to_owned()));
    assert!(started.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", started.elapsed());
    assert_eq!(busy.request("still open", WAIT).await.unwrap(), Bytes::from("still open"));
}

// -- cleanup -------------------------------------------------------------

#[tokio::test]
async fn no_actors_left_after_many_conversations() {
    let server = TestServer::start("");
    assert_eq!(count_conversation_actors(&server), (0, 0));

    // 1,000 conversations opened and closed one after another.
    let client = server.client().await;
    for index in 0..1_000 {
        let conversation = client.open_conversation("cycle").await.unwrap();
        if index % 100 == 0 {
            let mut conversation = conversation;
            assert_eq!(conversation.request("x", WAIT).await.unwrap(), Bytes::from("x"));
            conversation.close_and_wait(WAIT).await.unwrap();
        } else {
            conversation.close_and_wait(WAIT).await.unwrap();
        }
    }
    assert_eq!(wait_for_no_conversation_actors(&server, WAIT).await, (0, 0), "after open/close cycles");

    // 1,000 conversations abandoned by requesters that disconnect.
    let mut requesters = Vec::new();
    for _ in 0..10 {
        let requester = server.client().await;
        for _ in 0..100 {
            let conversation = requester.open_conversation("abandoned").await.unwrap();
            conversation.send("left behind").unwrap();
        }
        requesters.push(requester);
    }
    let (open, participants) = count_conversation_actors(&server);
    assert_eq!(open, 1_000, "every abandoned conversation is open before the disconnect");
    assert_eq!(participants, 1_000);
    drop(requesters);
    assert_eq!(
        wait_for_no_conversation_actors(&server, Duration::from_secs(20)).await,
        (0, 0),
        "after requesters disconnected"
    );
    let log = server.log();
    assert!(log.contains("requester disconnected"), "close reason not logged");
}

#[tokio::test]
async fn shutdown_closes_open_conversations() {
    let mut server = TestServer::start("");
    let client = server.client().await;
    let mut conversation = client.open_conversation("long.running").await.unwrap();
    assert_eq!(conversation.request("hi", WAIT).await.unwrap(), Bytes::from("hi"));

    let pid = server.pid();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let event = conversation.next_timeout(WAIT).await.unwrap();
    assert_eq!(event, Some(ConversationEvent::Closed("shutdown".to_owned())));
    let status = server
        .signal_and_wait("0", Duration::from_secs(20))
        .expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn invalid_conversation_settings_name_the_key() {
    let cases = [
        ("[conversations]\nprefer = \"nearest\"\n", "conversations.prefer"),
        ("[conversations]\nunknown_subject = \"drop\"\n", "conversations.unknown_subject"),
        ("[conversations]\nmax_queued_messages = 0\n", "conversations.max_queued_messages"),
        ("[conversations.crash_policies]\nsum = \"retry\"\n", "conversations.crash_policies.sum"),
    ];
    for (extra, key) in cases {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("liminal.toml");
        std::fs::write(&path, format!("{}\n{extra}", common::BASE_CONFIG)).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_liminal-server"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{extra} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "error for {extra:?} does not name {key}: {stderr}");
    }
}
