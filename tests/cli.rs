//! The `liminal` CLI against a real server: the README's 30-second tour.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, cli_binary};

fn liminal(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(cli_binary())
        .arg("--server")
        .arg(&server.address)
        .args(args)
        .output()
        .expect("run liminal")
}

/// Publishes with the CLI until a subscriber got it (the subscriber process
/// may still be connecting), returning the printed ack line.
fn publish_until_delivered(server: &TestServer, payload: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = liminal(server, &["pub", "demo", payload]);
        assert!(output.status.success(), "pub failed: {}", String::from_utf8_lossy(&output.stderr));
        let line = String::from_utf8(output.stdout).unwrap();
        if line.contains("delivered=true") {
            return line;
        }
        assert!(Instant::now() < deadline, "no subscriber ever received {payload}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sub_prints_two_published_payloads() {
    let server = TestServer::start("");
    let subscriber = Command::new(cli_binary())
        .args(["--server", &server.address, "sub", "demo", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = publish_until_delivered(&server, "hello");
    assert!(first.starts_with("message_id="), "{first}");
    let second = liminal(&server, &["pub", "demo", "world"]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("delivered=true"));

    let output = subscriber.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "hello\nworld\n");
}

#[test]
fn pub_json_and_stdin_lines() {
    let server = TestServer::start("");
    let mut child = Command::new(cli_binary())
        .args(["--server", &server.address, "pub", "lines", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    for index in 0..100 {
        writeln!(stdin, "line {index}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    let ids: Vec<u64> = lines.iter().map(|line| line["message_id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "acks printed in order");
    assert_eq!(lines[0]["delivered"], false);
}

#[test]
fn sub_json_output() {
    let server = TestServer::start("");
    let subscriber = Command::new(cli_binary())
        .args(["--server", &server.address, "sub", "demo", "--count", "1", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    publish_until_delivered(&server, "{\"a\":1}");
    let output = subscriber.wait_with_output().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["payload"], "{\"a\":1}");
    assert!(line["message_id"].as_u64().unwrap() >= 1);
}

#[test]
fn cli_reports_server_errors_on_stderr() {
    let server = TestServer::start("");
    let output = liminal(&server, &["pub", "bad name", "x"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid_request"), "{stderr}");
}

#[test]
fn cli_reports_unreachable_server() {
    let output = Command::new(cli_binary())
        .args(["--server", "127.0.0.1:1", "pub", "demo", "x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to 127.0.0.1:1"), "{stderr}");
}

#[test]
fn server_rejects_bad_config_naming_key() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("bad.toml");
    std::fs::write(
        &path,
        format!("{}\nlisten_adress = \"127.0.0.1:1\"\n", common::BASE_CONFIG),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_adress"), "{stderr}");
}

#[test]
fn durable_pub_prints_offset_and_sub_replays() {
    let server = TestServer::start("[[channels]]\nname = \"log\"\ndurable = true\n");
    for index in 1..=3 {
        let output = liminal(&server, &["pub", "log", &format!("entry {index}"), "--json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let ack: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(ack["offset"], index);
        assert_eq!(ack["duplicate"], false);
    }
    let text = liminal(&server, &["pub", "log", "entry 4"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("offset=4"));

    let replay = liminal(&server, &["sub", "log", "--from", "earliest", "--count", "4"]);
    assert_eq!(String::from_utf8(replay.stdout).unwrap(), "entry 1\nentry 2\nentry 3\nentry 4\n");
    let from_three = liminal(&server, &["sub", "log", "--from", "3", "--count", "2"]);
    assert_eq!(String::from_utf8(from_three.stdout).unwrap(), "entry 3\nentry 4\n");

    // A named consumer acks what it printed and resumes after it next time.
    let first = liminal(&server, &["sub", "log", "--consumer", "reader", "--count", "2"]);
    assert_eq!(String::from_utf8(first.stdout).unwrap(), "entry 1\nentry 2\n");
    let second = liminal(&server, &["sub", "log", "--consumer", "reader", "--count", "2"]);
    assert_eq!(String::from_utf8(second.stdout).unwrap(), "entry 3\nentry 4\n");
}

#[test]
fn pub_key_reports_duplicate() {
    let server = TestServer::start("");
    let first = liminal(&server, &["pub", "keyed", "x", "--key", "k1", "--json"]);
    let second = liminal(&server, &["pub", "keyed", "x", "--key", "k1", "--json"]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["message_id"], second["message_id"]);
}

#[test]
fn sub_reports_server_drain() {
    let mut server = TestServer::start("");
    let subscriber = Command::new(cli_binary())
        .args(["--server", &server.address, "sub", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    publish_until_delivered(&server, "before");
    let status = server.signal_and_wait("TERM", Duration::from_secs(10)).expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");

    let output = subscriber.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("graceful drain"), "{stderr}");
}

#[test]
fn pub_stdin_rejects_oversized_line_locally() {
    use std::io::Write;
    let server = TestServer::start("[limits]\nmax_frame_bytes = 4096\n");
    let mut child = Command::new(cli_binary())
        .args(["--server", &server.address, "pub", "sizes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "small 1").unwrap();
    writeln!(stdin, "{}", "x".repeat(10_000)).unwrap();
    for index in 3..=5 {
        writeln!(stdin, "small {index}").unwrap();
    }
    // A line of raw bytes that are not UTF-8 is published as it is.
    stdin.write_all(&[0xff, 0xfe, b'\n']).unwrap();
    drop(stdin);

    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2: 10000 bytes is more than"), "{stderr}");
    assert!(stderr.contains("5 of 6 lines published; 1 rejected, 0 not confirmed"), "{stderr}");
    let acks = String::from_utf8_lossy(&output.stdout);
    assert_eq!(acks.lines().count(), 5, "{acks}");
}

#[test]
fn missing_config_error_said_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_liminal-server"))
        .args(["--config", "/nonexistent/liminal.toml"])
        .output()
        .expect("run liminal-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/liminal.toml"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn cli_server_without_port_explained() {
    let output = Command::new(cli_binary())
        .args(["--server", "127.0.0.1", "pub", "demo", "x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected HOST:PORT"), "{stderr}");
}
