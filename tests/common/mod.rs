//! Test harness: starts the real `liminal-server` binary on 127.0.0.1 with
//! port 0, a fresh temp directory and a config written for the test, and
//! stops it when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use liminal_client::{Client, ClientOptions};

/// Config keys every test server gets; tests append tables after it.
pub const BASE_CONFIG: &str = r#"
listen_address = "127.0.0.1:0"
health_listen_address = "127.0.0.1:0"
persistence_path = "data"
drain_timeout_ms = 5000
auto_create_channels = true
fault_injection = true
"#;

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    pub address: String,
    pub http_address: Option<String>,
    pub directory: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl TestServer {
    /// Starts a server with `BASE_CONFIG` plus `extra` TOML.
    pub fn start(extra: &str) -> TestServer {
        TestServer::start_with_env(extra, &[])
    }

    /// Starts a server after copying `files` (name in the config dir, source
    /// path) next to its config, for schemas referenced by relative path.
    pub fn start_with_files(extra: &str, files: &[(&str, PathBuf)]) -> TestServer {
        let staging = tempfile::tempdir().expect("create temp dir");
        for (name, source) in files {
            std::fs::copy(source, staging.path().join(name)).expect("copy test file");
        }
        TestServer::start_in(staging, extra, &[])
    }

    /// Starts a server with extra TOML and environment variables.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_in(tempfile::tempdir().expect("create temp dir"), extra, env)
    }

    fn start_in(directory: tempfile::TempDir, extra: &str, env: &[(&str, &str)]) -> TestServer {
        let config_path = directory.path().join("liminal.toml");
        let config = BASE_CONFIG.replace(
            "persistence_path = \"data\"",
            &format!("persistence_path = {:?}", directory.path().join("data").display().to_string()),
        );
        std::fs::write(&config_path, format!("{config}\n{extra}")).expect("write config");
        let log_path = directory.path().join("server.log");
        let mut server = TestServer {
            child: None,
            address: String::new(),
            http_address: None,
            directory,
            config_path,
            log_path,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process (again) with the same config, data and log file.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_liminal-server"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info,liminal_broker=debug")
            // Symbolizing a backtrace of the debug binary takes seconds.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn liminal-server");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not report its address; log:\n{}", self.log());
            }
        };
        for field in line.split_whitespace() {
            if let Some(address) = field.strip_prefix("client=") {
                self.address = address.to_owned();
            }
            if let Some(address) = field.strip_prefix("http=") {
                self.http_address = Some(address.to_owned());
            }
        }
        assert!(!self.address.is_empty(), "unexpected startup line {line:?}");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal and waits for the exit status (None if it did not exit in time).
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait("TERM", Duration::from_secs(20))
            .expect("server did not exit within 20 s of SIGTERM")
    }

    /// Kills with SIGKILL.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_line(|line| line.contains(needle), timeout)
    }

    /// Waits until a line of the log satisfies `matches`. The server writes
    /// its log on its own schedule, so a line may appear after the client
    /// saw the event it describes.
    pub fn wait_for_log_line(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().lines().any(&matches) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn data_dir(&self) -> &Path {
        self.directory.path()
    }

    /// Connects a client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.address, ClientOptions::default())
            .await
            .expect("connect to test server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Path of the `liminal` CLI binary.
pub fn cli_binary() -> &'static str {
    env!("CARGO_BIN_EXE_liminal")
}

/// Default wait for events that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);

/// Crashes a channel actor through `InjectFault` (the test config enables
/// fault injection) and checks the server confirmed it.
pub async fn crash_channel(client: &Client, channel: &str) {
    let request_id = client.next_request_id();
    let answer = client
        .call(
            request_id,
            liminal_protocol::Frame::InjectFault {
                request_id,
                target: format!("channel/{channel}"),
            },
        )
        .await
        .expect("fault injected");
    assert!(matches!(answer, liminal_protocol::Frame::FaultInjected { .. }), "{answer:?}");
}

/// Connects a raw client that says Hello, subscribes to `channel` from the
/// latest message and then never reads, so its socket and outbox fill up.
pub async fn stalled_subscriber(server: &TestServer, channel: &str) -> liminal_client::RawConnection {
    use liminal_protocol::{Frame, PROTOCOL_VERSION, StartPosition};
    let mut connection = liminal_client::RawConnection::connect(&server.address).await.unwrap();
    connection
        .send(&Frame::Hello {
            versions: vec![PROTOCOL_VERSION],
            client_name: "stalled".to_owned(),
            token: None,
        })
        .await
        .unwrap();
    let welcome = connection.receive(WAIT).await.unwrap();
    assert!(matches!(welcome, Some(Frame::Welcome { .. })), "{welcome:?}");
    connection
        .send(&Frame::Subscribe {
            request_id: 1,
            channel: channel.to_owned(),
            start: StartPosition::Latest,
            accept_schemas: None,
        })
        .await
        .unwrap();
    let answer = connection.receive(WAIT).await.unwrap();
    assert!(matches!(answer, Some(Frame::Subscribed { .. })), "{answer:?}");
    connection
}
