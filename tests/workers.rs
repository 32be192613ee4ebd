//! Remote workers against a real server: round trips, round-robin
//! assignment, a worker that dies mid-conversation, the in-process versus
//! remote preference, and the `liminal request` / `liminal respond` CLI.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, WAIT, cli_binary};
use liminal_broker::{ConversationInfo, ReplyContext, Responder, ResponderError};
use liminal_client::{Client, ClientOptions, ConversationEvent, Worker, WorkerEvent};
use liminal_protocol::Frame;

/// Serves `worker` in a task. Each reply is the message's payload prefixed
/// by `tag`, so tests can tell workers apart.
fn serve_tagged(mut worker: Worker, tag: &'static str) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut opened = Vec::new();
        while let Some(event) = worker.next().await {
            match event {
                WorkerEvent::Open { conversation_id, .. } => opened.push(conversation_id),
                WorkerEvent::Message {
                    conversation_id,
                    message_id,
                    payload,
                } => {
                    let mut reply = tag.as_bytes().to_vec();
                    reply.extend_from_slice(&payload);
                    worker.reply(conversation_id, message_id, reply).unwrap();
                }
                WorkerEvent::Close { .. } => {}
            }
        }
        opened
    })
}

/// Waits until the server logged `count` registrations for `subject`. Only
/// workers in other processes need this, because `register_worker` returns
/// after the server confirmed the registration.
fn wait_for_registrations(server: &TestServer, subject: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while server
        .log()
        .lines()
        .filter(|line| line.contains("worker registered") && line.contains(subject))
        .count()
        < count
    {
        assert!(Instant::now() < deadline, "worker for {subject} never registered:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_respond(server: &TestServer, args: &[&str]) -> Child {
    Command::new(cli_binary())
        .arg("--server")
        .arg(&server.address)
        .arg("respond")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn liminal respond")
}

fn liminal_request(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(cli_binary())
        .arg("--server")
        .arg(&server.address)
        .arg("request")
        .args(args)
        .output()
        .expect("run liminal request")
}

// -- protocol round trips ----------------------------------------------------

#[tokio::test]
async fn remote_worker_round_trip() {
    let server = TestServer::start("");
    let worker_client = server.client().await;
    let mut worker = worker_client.register_worker("jobs").await.unwrap();
    let requester = server.client().await;
    let mut conversation = requester.open_conversation("jobs").await.unwrap();

    let event = worker.next_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!(
        event,
        WorkerEvent::Open {
            conversation_id: conversation.id(),
            subject: "jobs".to_owned()
        }
    );

    let message_id = conversation.send("work item").unwrap();
    let event = worker.next_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!(
        event,
        WorkerEvent::Message {
            conversation_id: conversation.id(),
            message_id,
            payload: Bytes::from("work item"),
        }
    );
    // Two replies to one message, both delivered in order.
    worker.reply(conversation.id(), message_id, "part 1").unwrap();
    worker.reply(conversation.id(), message_id, "part 2").unwrap();
    for part in ["part 1", "part 2"] {
        let event = conversation.next_timeout(WAIT).await.unwrap().unwrap();
        assert_eq!(
            event,
            ConversationEvent::Reply {
                in_reply_to: message_id,
                payload: Bytes::from(part)
            }
        );
    }

    let conversation_id = conversation.id();
    let closing = tokio::spawn(conversation.close_and_wait(WAIT));
    let event = worker.next_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!(
        event,
        WorkerEvent::Close {
            conversation_id,
            reason: "closed by client".to_owned()
        }
    );
    assert_eq!(closing.await.unwrap().unwrap(), "closed by client");
}

#[tokio::test]
async fn two_workers_share_conversations_round_robin() {
    let server = TestServer::start("");
    let first_client = server.client().await;
    let second_client = server.client().await;
    let first = serve_tagged(first_client.register_worker("pool").await.unwrap(), "A:");
    let second = serve_tagged(second_client.register_worker("pool").await.unwrap(), "B:");

    let requester = server.client().await;
    let mut tags = Vec::new();
    for index in 0..6 {
        let mut conversation = requester.open_conversation("pool").await.unwrap();
        let reply = conversation.request(format!("job {index}"), WAIT).await.unwrap();
        tags.push(reply[..2].to_vec());
        conversation.close_and_wait(WAIT).await.unwrap();
    }
    let alternating: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
    assert_ne!(alternating[0], alternating[1], "consecutive conversations go to different workers");
    for pair in alternating.windows(3) {
        assert_eq!(pair[0], pair[2], "assignment alternates: {tags:?}");
    }

    drop(first_client);
    drop(second_client);
    first.abort();
    second.abort();
}

#[tokio::test]
async fn unregistered_worker_gets_no_new_conversations() {
    let server = TestServer::start("[conversations]\nunknown_subject = \"reject\"\n");
    let worker_client = server.client().await;
    let mut worker = worker_client.register_worker("leaving").await.unwrap();
    let requester = server.client().await;
    let mut kept = requester.open_conversation("leaving").await.unwrap();
    assert!(matches!(
        worker.next_timeout(WAIT).await.unwrap(),
        Some(WorkerEvent::Open { .. })
    ));

    worker.unregister().await.unwrap();
    let Err(error) = requester.open_conversation("leaving").await else {
        panic!("a conversation was assigned to an unregistered worker");
    };
    assert_eq!(error.code(), Some("no_responder"));

    // The conversation assigned before unregistering goes on.
    let message_id = kept.send("still served?").unwrap();
    let Some(WorkerEvent::Message { payload, .. }) = worker.next_timeout(WAIT).await.unwrap() else {
        panic!("the kept conversation's message did not reach the worker");
    };
    worker.reply(kept.id(), message_id, payload).unwrap();
    assert_eq!(
        kept.next_timeout(WAIT).await.unwrap(),
        Some(ConversationEvent::Reply {
            in_reply_to: message_id,
            payload: Bytes::from("still served?")
        })
    );
}

#[tokio::test]
async fn worker_disconnect_fails_conversation_at_once() {
    let server = TestServer::start("");
    let worker_client = server.client().await;
    let mut worker = worker_client.register_worker("fragile.jobs").await.unwrap();
    let requester = server.client().await;
    let mut conversation = requester.open_conversation("fragile.jobs").await.unwrap();
    let mut bystander = requester.open_conversation("other").await.unwrap();
    assert!(matches!(
        worker.next_timeout(WAIT).await.unwrap(),
        Some(WorkerEvent::Open { .. })
    ));

    // Crash the worker's connection actor; its socket closes with it.
    let request_id = worker_client.next_request_id();
    worker_client
        .send(Frame::InjectFault {
            request_id,
            target: "connection".to_owned(),
        })
        .unwrap();
    let started = Instant::now();
    let event = conversation.next_timeout(WAIT).await.unwrap().unwrap();
    let ConversationEvent::Failed(reason) = event else {
        panic!("expected ConversationFailed, got {event:?}");
    };
    assert!(started.elapsed() < Duration::from_secs(2), "failure took {:?}", started.elapsed());
    assert!(reason.contains("worker connection"), "{reason}");
    assert_eq!(bystander.request("unaffected", WAIT).await.unwrap(), Bytes::from("unaffected"));
}

#[tokio::test]
async fn killed_worker_process_fails_conversation() {
    let server = TestServer::start("[conversations]\nunknown_subject = \"reject\"\n");
    let mut worker = spawn_respond(&server, &["process.jobs", "--echo"]);
    wait_for_registrations(&server, "process.jobs", 1);

    let requester = server.client().await;
    let mut conversation = requester.open_conversation("process.jobs").await.unwrap();
    assert_eq!(conversation.request("alive?", WAIT).await.unwrap(), Bytes::from("alive?"));

    worker.kill().unwrap();
    worker.wait().unwrap();
    let started = Instant::now();
    let event = conversation.next_timeout(WAIT).await.unwrap().unwrap();
    assert!(matches!(event, ConversationEvent::Failed(_)), "{event:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "failure took {:?}", started.elapsed());

    // Its registration is gone with it.
    let Err(error) = requester.open_conversation("process.jobs").await else {
        panic!("a conversation was assigned to a dead worker");
    };
    assert_eq!(error.code(), Some("no_responder"));
}

#[tokio::test]
async fn reply_to_unassigned_conversation_is_an_error() {
    let server = TestServer::start("");
    let client = server.client().await;
    client
        .send(Frame::WorkerReply {
            conversation_id: 77,
            in_reply_to: 1,
            payload: Bytes::from("stray"),
        })
        .unwrap();
    let event = tokio::time::timeout(WAIT, client.next_event()).await.unwrap().unwrap();
    let Frame::Error { code, .. } = event else {
        panic!("expected an Error frame, got {event:?}");
    };
    assert_eq!(code, "unknown_conversation");
}

// -- in-process versus remote (embedded server) ------------------------------

struct Local;

impl Responder for Local {
    async fn on_message(&mut self, context: &mut ReplyContext<'_>, _payload: Bytes) -> Result<(), ResponderError> {
        context.reply("in-process");
        Ok(())
    }
}

async fn preference_winner(prefer: &str) -> Bytes {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("liminal.toml");
    let text = format!(
        "listen_address = \"127.0.0.1:0\"\nhealth_listen_address = \"127.0.0.1:0\"\npersistence_path = {:?}\ndrain_timeout_ms = 5000\nauto_create_channels = true\n[conversations]\nprefer = \"{prefer}\"\n",
        directory.path().join("data").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let settings = liminal_server::Settings::load_with_env(Some(&path), Vec::new()).unwrap();
    let server = liminal_server::Server::builder(settings)
        .responder("both", |_: &ConversationInfo| Local)
        .start()
        .await
        .unwrap();
    let address = server.client_address().to_string();
    let worker_client = Client::connect(&address, ClientOptions::default()).await.unwrap();
    let worker = serve_tagged(worker_client.register_worker("both").await.unwrap(), "remote:");
    let requester = Client::connect(&address, ClientOptions::default()).await.unwrap();
    let mut conversation = requester.open_conversation("both").await.unwrap();
    let reply = conversation.request("who?", WAIT).await.unwrap();
    worker.abort();
    server.shutdown().await;
    reply
}

#[tokio::test]
async fn in_process_responder_wins_by_default() {
    assert_eq!(preference_winner("in_process").await, Bytes::from("in-process"));
}

#[tokio::test]
async fn remote_worker_wins_when_preferred() {
    assert_eq!(preference_winner("remote").await, Bytes::from("remote:who?"));
}

// -- CLI ---------------------------------------------------------------------

#[test]
fn request_cli_prints_echo_reply() {
    let server = TestServer::start("");
    let output = liminal_request(&server, &["greeting", "hello there"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "hello there\n");
}

#[test]
fn request_cli_fails_without_responder() {
    let server = TestServer::start("[conversations]\nunknown_subject = \"reject\"\n");
    let output = liminal_request(&server, &["nobody", "hello", "--timeout", "2000"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_responder"), "{stderr}");
}

#[test]
fn request_cli_times_out_on_silent_worker() {
    let server = TestServer::start("");
    // The worker runs `sleep 3` per message, so its (empty) reply comes
    // long after the requester's 300 ms timeout.
    let mut worker = spawn_respond(&server, &["silent", "--exec", "sleep 3"]);
    wait_for_registrations(&server, "silent", 1);
    let output = liminal_request(&server, &["silent", "anyone?", "--timeout", "300"]);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out after 300 ms"), "{stderr}");
}

#[test]
fn respond_exec_answers_with_command_output() {
    let server = TestServer::start("");
    let mut worker = spawn_respond(&server, &["upper", "--exec", "tr a-z A-Z"]);
    wait_for_registrations(&server, "upper", 1);
    let output = liminal_request(&server, &["upper", "make me loud"]);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "MAKE ME LOUD\n");
}

#[test]
fn respond_exec_failure_fails_conversation() {
    let server = TestServer::start("");
    let mut worker = spawn_respond(&server, &["broken", "--exec", "echo oops >&2; exit 3"]);
    wait_for_registrations(&server, "broken", 1);
    let started = std::time::Instant::now();
    let output = liminal_request(&server, &["broken", "hello", "--timeout", "5000"]);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(!output.status.success(), "a failed command must not look like a reply");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exit status: 3"), "{stderr}");
    assert!(stderr.contains("oops"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "the failure came by timeout");
}

#[test]
fn respond_exec_oversized_reply_fails_only_its_conversation() {
    let server = TestServer::start("[limits]\nmax_frame_bytes = 4096\n");
    let mut worker = spawn_respond(&server, &["chatty", "--exec", "head -c 10000 /dev/zero"]);
    wait_for_registrations(&server, "chatty", 1);
    let output = liminal_request(&server, &["chatty", "hello", "--timeout", "5000"]);
    assert!(!output.status.success(), "an oversized reply must fail the conversation");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("10000 bytes is more than"), "{stderr}");

    // The worker is still connected and serves the next conversation.
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
    let output = liminal_request(&server, &["chatty", "again", "--timeout", "5000"]);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("10000 bytes is more than"));
}

#[test]
fn respond_requires_a_mode() {
    let output = Command::new(cli_binary())
        .args(["respond", "subject"])
        .output()
        .expect("run liminal respond");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--echo"), "{stderr}");
    assert!(stderr.contains("--exec"), "{stderr}");
}
