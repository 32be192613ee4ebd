//! Operations: the HTTP endpoints, `liminal tree`, `--check-config`, the
//! documented environment overrides and the graceful drain, all against the
//! real server process.

mod common;
mod http;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT, cli_binary, crash_channel, stalled_subscriber};
use liminal_client::{ClientError, RawConnection, SubscriptionEvent};
use liminal_protocol::{Frame, PROTOCOL_VERSION, StartPosition};

fn http_address(server: &TestServer) -> String {
    server
        .http_address
        .clone()
        .expect("the startup line names the HTTP address (http=...)")
}


/// Returns the value of an exact metric line such as `name{label="x"}`.
fn metric_value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[tokio::test]
async fn health_answers_200() {
    let server = TestServer::start("");
    let response = http::get(&http_address(&server), "/health").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["status"], "ok");
}

#[tokio::test]
async fn ready_answers_200_once_started() {
    let server = TestServer::start("");
    let response = http::get(&http_address(&server), "/ready").await;
    assert_eq!(response.status, 200, "{response:?}");
    let body = response.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["unmet"], serde_json::json!([]));
}

#[tokio::test]
async fn unknown_path_answers_404() {
    let server = TestServer::start("");
    let response = http::get(&http_address(&server), "/nope").await;
    assert_eq!(response.status, 404, "{response:?}");
}

#[tokio::test]
async fn other_methods_answer_405() {
    let server = TestServer::start("");
    let address = http_address(&server);
    for path in ["/health", "/ready", "/metrics", "/supervision"] {
        for method in ["POST", "PUT", "DELETE"] {
            let response = http::request(&address, method, path).await;
            assert_eq!(response.status, 405, "{method} {path}: {response:?}");
        }
    }
}

#[tokio::test]
async fn metrics_served_before_any_channel_exists() {
    let server = TestServer::start("");
    let response = http::get(&http_address(&server), "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        metric_value(&response.body, "liminal_channels"),
        Some(0.0),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn metrics_count_connections_and_messages() {
    let server = TestServer::start("");
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut subscription = subscriber.subscribe("metered").await.unwrap();
    for index in 0..3 {
        let ack = publisher
            .publish("metered", format!("m{index}"))
            .await
            .unwrap();
        assert!(ack.delivered);
    }
    for _ in 0..3 {
        let event = subscription.next_timeout(WAIT).await.unwrap();
        assert!(
            matches!(event, Some(SubscriptionEvent::Message(_))),
            "{event:?}"
        );
    }

    let response = http::get(&http_address(&server), "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content type {content_type:?}"
    );
    let page = &response.body;
    assert!(
        page.contains("# TYPE liminal_connections_open gauge"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE liminal_channel_published_messages_total counter"),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_connections_open"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_connections_accepted_total"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_connections_rejected_total"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_connections_crashed_total"),
        Some(0.0),
        "{page}"
    );
    let channel = "{channel=\"metered\"}";
    assert_eq!(
        metric_value(
            page,
            &format!("liminal_channel_published_messages_total{channel}")
        ),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            page,
            &format!("liminal_channel_published_bytes_total{channel}")
        ),
        Some(6.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            page,
            &format!("liminal_channel_delivered_messages_total{channel}")
        ),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, &format!("liminal_channel_subscriptions{channel}")),
        Some(1.0),
        "{page}"
    );
    // `demo` is declared in no config here, so only the auto-created channel counts.
    assert_eq!(metric_value(page, "liminal_channels"), Some(1.0), "{page}");
    assert_eq!(
        metric_value(page, "liminal_subscriptions"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_slow_consumer_dropped_messages_total"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        metric_value(page, "liminal_conversations_active"),
        Some(0.0),
        "{page}"
    );
}

#[tokio::test]
async fn metrics_report_store_writes_and_dedup() {
    let server = TestServer::start("[[channels]]\nname = \"kept\"\ndurable = true\n");
    let client = server.client().await;
    for index in 0..10 {
        let request = liminal_client::PublishRequest {
            channel: "kept".into(),
            payload: format!("m{index}").into(),
            idempotency_key: Some("same".into()),
            ..Default::default()
        };
        client.publish_with(request).await.unwrap();
    }
    let page = http::get(&http_address(&server), "/metrics").await.body;
    let writes = metric_value(&page, "liminal_store_write_seconds_count").expect("write latency histogram");
    assert!(writes >= 1.0, "{page}");
    let fastest_bucket = metric_value(&page, "liminal_store_write_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(fastest_bucket, Some(writes), "the +Inf bucket counts every write");
    assert!(metric_value(&page, "liminal_store_fsyncs_total").unwrap() >= 1.0, "fsync = always syncs");
    assert_eq!(
        metric_value(&page, "liminal_channel_dedup_hits_total{channel=\"kept\"}"),
        Some(9.0),
        "{page}"
    );
}

#[tokio::test]
async fn metrics_count_open_conversations() {
    let server = TestServer::start("");
    let client = server.client().await;
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
    let page = http::get(&http_address(&server), "/metrics").await.body;
    assert_eq!(
        metric_value(&page, "liminal_conversations_active"),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test]
async fn metrics_count_conversation_outcomes() {
    let server = TestServer::start("");
    let client = server.client().await;

    let closed = client.open_conversation("echo").await.unwrap();
    closed.close_and_wait(WAIT).await.unwrap();

    let mut crashed = client.open_conversation("echo").await.unwrap();
    let request_id = client.next_request_id();
    let target = format!("participant/{}", crashed.id());
    let answer = client.call(request_id, Frame::InjectFault { request_id, target }).await.unwrap();
    assert!(matches!(answer, Frame::FaultInjected { .. }), "{answer:?}");
    let event = crashed.next_timeout(WAIT).await.unwrap();
    assert!(matches!(event, Some(liminal_client::ConversationEvent::Failed(_))), "{event:?}");

    let _still_open = client.open_conversation("echo").await.unwrap();
    let page = http::get(&http_address(&server), "/metrics").await.body;
    assert_eq!(metric_value(&page, "liminal_conversations_opened_total"), Some(3.0), "{page}");
    assert_eq!(metric_value(&page, "liminal_conversations_ended_total{outcome=\"closed\"}"), Some(1.0), "{page}");
    assert_eq!(metric_value(&page, "liminal_conversations_ended_total{outcome=\"failed\"}"), Some(1.0), "{page}");
    assert_eq!(metric_value(&page, "liminal_conversation_participant_crashes_total"), Some(1.0), "{page}");
}

#[tokio::test]
async fn metrics_count_restarts_per_supervisor() {
    let server = TestServer::start("");
    let client = server.client().await;
    client.publish("fragile", "x").await.unwrap();
    crash_channel(&client, "fragile").await;
    assert!(
        server.wait_for_log("actor restarted", WAIT),
        "{}",
        server.log()
    );

    let page = http::get(&http_address(&server), "/metrics").await.body;
    assert_eq!(
        metric_value(
            &page,
            "liminal_supervisor_restarts_total{supervisor=\"broker/channels\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            "liminal_supervisor_restarts_total{supervisor=\"broker/connections\"}"
        ),
        Some(0.0),
        "{page}"
    );
}

#[tokio::test]
async fn supervision_serves_live_tree() {
    let server = TestServer::start("");
    let client = server.client().await;
    client.publish("orders", "x").await.unwrap();

    let response = http::get(&http_address(&server), "/supervision").await;
    assert_eq!(response.status, 200, "{response:?}");
    let tree = response.json();
    assert_eq!(tree["path"], "broker");
    assert_eq!(tree["kind"], "supervisor");
    let children = tree["children"].as_array().expect("children");
    let find = |path: &str| {
        children
            .iter()
            .find(|child| child["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {tree}"))
    };
    let channels = find("broker/channels")["children"]
        .as_array()
        .expect("channel children")
        .clone();
    assert!(
        channels
            .iter()
            .any(|channel| channel["path"] == "broker/channels/orders" && channel["restarts"] == 0),
        "{tree}"
    );
    let connections = find("broker/connections")["children"]
        .as_array()
        .expect("connection children")
        .clone();
    assert_eq!(connections.len(), 1, "{tree}");
    assert_eq!(connections[0]["kind"], "connection");
}

fn run_tree(arguments: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(cli_binary());
    command
        .arg("tree")
        .args(arguments)
        .env_remove("LIMINAL_HEALTH");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run liminal tree")
}

#[test]
fn liminal_tree_on_client_port_explains() {
    let server = TestServer::start("");
    let output = run_tree(&["--health", &server.address], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not answer HTTP"), "{stderr}");
    assert!(stderr.contains("health_listen_address"), "{stderr}");
}

#[tokio::test]
async fn liminal_tree_prints_restart_counts() {
    let server = TestServer::start("");
    let client = server.client().await;
    client.publish("fragile", "x").await.unwrap();
    client.publish("steady", "x").await.unwrap();
    crash_channel(&client, "fragile").await;
    assert!(
        server.wait_for_log("actor restarted", WAIT),
        "{}",
        server.log()
    );

    let output = run_tree(&["--health", &http_address(&server)], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|line| {
                line.contains(&format!(" {name} ")) || line.starts_with(&format!("{name} "))
            })
            .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("broker").starts_with("broker "), "{stdout}");
    assert!(line("channels").contains("supervisor"), "{stdout}");
    assert!(
        line("fragile").trim_end().ends_with("restarts=1"),
        "{stdout}"
    );
    assert!(
        line("steady").trim_end().ends_with("restarts=0"),
        "{stdout}"
    );
    assert!(
        line("connections").contains("├── ") || line("connections").contains("└── "),
        "{stdout}"
    );
}

#[tokio::test]
async fn liminal_tree_reads_liminal_health() {
    let server = TestServer::start("");
    let output = run_tree(&["--json"], &[("LIMINAL_HEALTH", &http_address(&server))]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(tree["path"], "broker");
}

#[tokio::test]
async fn liminal_tree_reports_unreachable_server() {
    // A port that was just free: nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let output = run_tree(&["--health", &address], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&address), "{stderr}");
}

fn check_config(text: &str) -> std::process::Output {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("liminal.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .arg("--check-config")
        .arg(&path)
        .env_remove("LIMINAL_AUTH_TOKEN")
        .output()
        .expect("run liminal-server --check-config")
}

#[test]
fn check_config_prints_redacted_config() {
    let text = format!(
        "{}\n[auth]\ntoken = \"hunter2-secret\"\n",
        common::BASE_CONFIG
    );
    let output = check_config(&text);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("hunter2-secret"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(stdout.contains("drain_timeout_ms = 5000"), "{stdout}");
    // Defaults not in the file are part of the effective configuration.
    assert!(stdout.contains("max_connections"), "{stdout}");
}

#[test]
fn check_config_warns_about_misspelled_variable() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("liminal.toml");
    std::fs::write(&path, common::BASE_CONFIG).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .arg("--check-config")
        .arg(&path)
        .env("LIMINAL_LIMITS_MAX_CONECTIONS", "5")
        .output()
        .expect("run liminal-server --check-config");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LIMINAL_LIMITS_MAX_CONECTIONS"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("MAX_CONECTIONS"), "warnings must stay off stdout: {stdout}");
}

#[test]
fn check_config_without_path_checks_embedded_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .arg("--check-config")
        .env("LIMINAL_LIMITS_MAX_CONNECTIONS", "7")
        .output()
        .expect("run liminal-server --check-config");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("listen_address = \"127.0.0.1:7400\""), "{stdout}");
    assert!(stdout.contains("max_connections = 7"), "{stdout}");
}

#[test]
fn check_config_rejects_zero_limit() {
    let text = format!("{}\n[limits]\nmax_connections = 0\n", common::BASE_CONFIG);
    let output = check_config(&text);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("limits.max_connections"), "{stderr}");
}

#[test]
fn every_override_is_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md exists");
    for (variable, ..) in liminal_server::config::env::OVERRIDES {
        assert!(
            docs.contains(&format!("`{variable}`")),
            "{variable} is not listed in docs/operations.md"
        );
    }
}

#[test]
fn every_config_key_is_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md exists");
    // The embedded default is the shipped config/liminal.toml; serializing
    // the parsed file lists every key, including defaults the file omits.
    let settings = liminal_server::Settings::load_with_env(None, Vec::new()).unwrap();
    let value = serde_json::to_value(&settings.file).unwrap();
    let mut keys = Vec::new();
    config_keys(&value, "", &mut keys);
    assert!(
        keys.contains(&"limits.max_connections".to_owned()),
        "{keys:?}"
    );
    for key in keys {
        assert!(
            docs.contains(&format!("`{key}`")),
            "config key {key} is not documented in docs/operations.md"
        );
    }
}

/// Collects dotted key paths; array elements are written `name[].key`.
fn config_keys(value: &serde_json::Value, prefix: &str, keys: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                config_keys(child, &format!("{prefix}{key}."), keys);
            }
        }
        serde_json::Value::Array(items) if items.iter().any(|item| item.is_object()) => {
            let name = prefix.trim_end_matches('.');
            for item in items {
                config_keys(item, &format!("{name}[]."), keys);
            }
        }
        _ => {
            let key = prefix.trim_end_matches('.').to_owned();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
}


#[tokio::test]
async fn drain_answers_every_publish_and_exits_zero() {
    let mut server = TestServer::start("");
    let subscriber = server.client().await;
    let mut subscription = subscriber.subscribe("drained").await.unwrap();
    let publisher = server.client().await;

    // Publish continuously, keeping up to 256 publishes in flight, until the
    // server stops taking them.
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            for index in 0..2_000_000u64 {
                let request = liminal_client::PublishRequest {
                    channel: "drained".to_owned(),
                    payload: format!("{index}").into(),
                    ..Default::default()
                };
                match publisher.publish_pipelined(request) {
                    Ok(future) => pending.push_back(future),
                    Err(_) => break,
                }
                if pending.len() >= 256 {
                    match pending.pop_front().unwrap().await {
                        Ok(ack) => acked.push(ack.message_id),
                        Err(error) => errors.push(error),
                    }
                }
                if errors.len() > 100 {
                    break;
                }
            }
            for future in pending {
                match future.await {
                    Ok(ack) => acked.push(ack.message_id),
                    Err(error) => errors.push(error),
                }
            }
            (acked, errors)
        })
    };
    // Let the publisher reach full speed first.
    let deadline = Instant::now() + WAIT;
    loop {
        let page = http::get(&http_address(&server), "/metrics").await.body;
        let published = metric_value(
            &page,
            "liminal_channel_published_messages_total{channel=\"drained\"}",
        );
        if published.unwrap_or(0.0) >= 5_000.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publisher never got going:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.signal_and_wait("TERM", Duration::from_secs(10));
        (status, server)
    });
    let (status, server) = status.await.unwrap();
    let elapsed = started.elapsed();
    let status = status.expect("the server exited after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "drain took {elapsed:?}, over drain_timeout_ms"
    );

    let (acked, errors) = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("every publish was answered or failed")
        .unwrap();
    assert!(!acked.is_empty());
    for error in &errors {
        match error {
            ClientError::Server { code, .. } => assert_eq!(code, "draining", "{error}"),
            // Publishes sent after the socket closed never reached the server.
            ClientError::Closed(_) => {}
            other => panic!("unexpected publish failure {other}"),
        }
    }
    let draining = errors
        .iter()
        .filter(|error| matches!(error, ClientError::Server { code, .. } if code == "draining"))
        .count();
    assert!(
        draining > 0,
        "no publish was rejected with `draining` ({} acked); errors: {errors:?}; log:\n{}",
        acked.len(),
        server.log()
    );

    // Every acked message reached the subscriber before its socket closed.
    let mut delivered = std::collections::HashSet::new();
    while let Ok(Some(event)) = subscription.next_timeout(WAIT).await {
        if let SubscriptionEvent::Message(message) = event {
            delivered.insert(message.message_id);
        }
    }
    let missing: Vec<u64> = acked
        .iter()
        .filter(|id| !delivered.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acked messages never delivered, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    let event = tokio::time::timeout(WAIT, publisher.next_event())
        .await
        .expect("a server event");
    assert!(
        matches!(event, Some(Frame::Draining { deadline_ms: 5000 })),
        "expected Draining first, got {event:?}"
    );
    let log = server.log();
    for phase in [
        "drain started",
        "drain: stopped accepting client connections",
        "drain: in-flight publishes answered",
        "drain: client connections closed",
        "drain: broker stopped and store flushed",
        "drain finished",
    ] {
        assert!(log.contains(phase), "log lacks {phase:?}:\n{log}");
    }
}

#[tokio::test]
async fn drain_rejects_new_work_with_draining() {
    let mut server = TestServer::start("");
    let mut connection = RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Hello {
            versions: vec![PROTOCOL_VERSION],
            client_name: "late".to_owned(),
            token: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        connection.receive(WAIT).await.unwrap(),
        Some(Frame::Welcome { .. })
    ));

    Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    let notice = connection.receive(WAIT).await.unwrap();
    assert!(
        matches!(notice, Some(Frame::Draining { deadline_ms: 5000 })),
        "{notice:?}"
    );

    // Until the connection closes, new work is rejected and pings get Pongs.
    let late_work = [
        Frame::Subscribe {
            request_id: 7,
            channel: "late".to_owned(),
            start: StartPosition::Latest,
            accept_schemas: None,
        },
        Frame::Publish {
            request_id: 8,
            channel: "late".to_owned(),
            payload: "late".into(),
            headers: None,
            idempotency_key: None,
        },
    ];
    for frame in &late_work {
        connection.send(frame).await.unwrap();
        let answer = connection.receive(WAIT).await.unwrap();
        match answer {
            Some(Frame::Error {
                code, request_id, ..
            }) => {
                assert_eq!(code, "draining", "answer to {}", frame.name());
                assert!(request_id.is_some(), "the rejection names the request");
            }
            other => panic!("expected draining for {}, got {other:?}", frame.name()),
        }
    }
    connection.send(&Frame::Ping { nonce: 9 }).await.unwrap();
    assert_eq!(
        connection.receive(WAIT).await.unwrap(),
        Some(Frame::Pong { nonce: 9 })
    );

    let end = connection.receive(WAIT).await.unwrap();
    assert!(
        end.is_none(),
        "the server closes the connection at the end of the drain, got {end:?}"
    );
    // Signal 0 only checks that the process exists; a second TERM would
    // cut the drain short.
    let status =
        tokio::task::spawn_blocking(move || server.signal_and_wait("0", Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.expect("the server exited").success());
}

#[tokio::test]
async fn drain_reports_not_ready_and_honours_timeout() {
    let mut server = TestServer::start_with_env(
        "[limits]\nmax_outbound_bytes = 65536\n",
        &[("LIMINAL_DRAIN_TIMEOUT_MS", "2000")],
    );
    let address = http_address(&server);
    let _stalled = stalled_subscriber(&server, "clogged").await;
    let publisher = server.client().await;
    // Fill the kernel's socket buffers and the stalled connection's outbox,
    // so the drain cannot finish writing to it.
    let payload = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..2_000 {
        publisher.publish("clogged", payload.clone()).await.unwrap();
    }

    let pid = server.pid().to_string();
    let started = Instant::now();
    let waiting = tokio::task::spawn_blocking(move || {
        let status = server.signal_and_wait("TERM", Duration::from_secs(10));
        (status, server)
    });
    // While the drain waits for the stalled connection, the process is
    // alive but not ready.
    let mut seen_not_ready = false;
    while started.elapsed() < Duration::from_millis(1_500) {
        let ready = http::get(&address, "/ready").await;
        if ready.status == 503 {
            assert!(
                ready.json()["unmet"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!("not_draining")),
                "{ready:?}"
            );
            let health = http::get(&address, "/health").await;
            assert_eq!(health.status, 200, "{health:?}");
            seen_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, server) = waiting.await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        seen_not_ready,
        "/ready never answered 503 during the drain of pid {pid}"
    );
    let status = status.expect("the server exited");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    assert!(
        elapsed >= Duration::from_millis(1_900),
        "drain ended after {elapsed:?}, before its timeout"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "drain took {elapsed:?} with drain_timeout_ms = 2000"
    );
    assert!(
        server.log().contains("drain: timed out"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let mut server = TestServer::start_with_env(
        "[limits]\nmax_outbound_bytes = 65536\n",
        &[("LIMINAL_DRAIN_TIMEOUT_MS", "30000")],
    );
    let _stalled = stalled_subscriber(&server, "clogged").await;
    let publisher = server.client().await;
    let payload = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..2_000 {
        publisher.publish("clogged", payload.clone()).await.unwrap();
    }
    let pid = server.pid().to_string();
    Command::new("kill")
        .arg("-TERM")
        .arg(&pid)
        .status()
        .unwrap();
    assert!(
        server.wait_for_log("drain started", WAIT),
        "{}",
        server.log()
    );
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.signal_and_wait("INT", Duration::from_secs(5));
        (status, server)
    });
    let (status, server) = status.await.unwrap();
    let status = status.expect("the server exited after the second signal");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "second signal took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130), "log:\n{}", server.log());
}
