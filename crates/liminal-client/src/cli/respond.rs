//! `liminal respond`: a remote worker that serves one subject. It replies
//! to each message with its payload (`--echo`) or with the output of a
//! shell command (`--exec`).

use std::collections::HashMap;
use std::process::Stdio;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::{Client, WorkerEvent};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["echo", "exec"])))]
pub struct RespondArgs {
    /// Subject to serve.
    pub subject: String,
    /// Reply to each message with its own payload.
    #[arg(long)]
    pub echo: bool,
    /// Run COMMAND with `sh -c` for each message, with the payload on its
    /// stdin, and reply with its stdout.
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,
}

/// A message to handle: (message id, payload).
type Job = (u64, Bytes);

/// Serves conversations until the connection closes. Messages of one
/// conversation are handled in order; conversations run concurrently.
pub async fn run(client: &Client, args: &RespondArgs) -> anyhow::Result<()> {
    let mut worker = client.register_worker(&args.subject).await?;
    eprintln!("serving subject \"{}\"", args.subject);
    let mut conversations: HashMap<u64, mpsc::UnboundedSender<Job>> = HashMap::new();
    while let Some(event) = worker.next().await {
        match event {
            WorkerEvent::Open { conversation_id, .. } => {
                let (sender, receiver) = mpsc::unbounded_channel();
                conversations.insert(conversation_id, sender);
                tokio::spawn(serve_conversation(
                    client.clone(),
                    conversation_id,
                    args.exec.clone(),
                    receiver,
                ));
            }
            WorkerEvent::Message {
                conversation_id,
                message_id,
                payload,
            } => {
                if let Some(sender) = conversations.get(&conversation_id) {
                    let _ = sender.send((message_id, payload));
                }
            }
            WorkerEvent::Close { conversation_id, .. } => {
                conversations.remove(&conversation_id);
            }
        }
    }
    let reason = client
        .closed_reason()
        .map(|error| error.to_string())
        .unwrap_or_else(|| "connection closed".to_owned());
    anyhow::bail!("worker for \"{}\" stopped: {reason}", args.subject)
}

async fn serve_conversation(
    client: Client,
    conversation_id: u64,
    command: Option<String>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    // Room for the reply frame's own fields, with margin.
    let max_reply = (client.max_frame_bytes() as usize).saturating_sub(256);
    while let Some((message_id, payload)) = jobs.recv().await {
        let output = match &command {
            None => Ok(payload),
            Some(command) => run_command(command, &payload).await,
        };
        // A reply over the frame limit would make the server close this
        // worker's connection, failing every conversation it serves.
        let output = output.and_then(|reply| {
            if reply.len() > max_reply {
                anyhow::bail!(
                    "the reply of {} bytes is more than the {max_reply} bytes a reply may have on this server (limits.max_frame_bytes)",
                    reply.len()
                );
            }
            Ok(reply)
        });
        let reply = match output {
            Ok(reply) => reply,
            Err(error) => {
                // The requester learns of the failure at once instead of
                // getting an empty or partial reply.
                eprintln!("conversation {conversation_id}, message {message_id}: {error:#}");
                let frame = liminal_protocol::Frame::WorkerFail {
                    conversation_id,
                    reason: format!("{error:#}"),
                };
                let _ = client.send(frame);
                return;
            }
        };
        let frame = liminal_protocol::Frame::WorkerReply {
            conversation_id,
            in_reply_to: message_id,
            payload: reply,
        };
        if client.send(frame).is_err() {
            return;
        }
    }
}

/// Runs `command` with `input` on stdin and returns its stdout. A non-zero
/// exit status is an error naming the status and the command's stderr.
async fn run_command(command: &str, input: &[u8]) -> anyhow::Result<Bytes> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start `sh -c {command:?}`"))?;
    let mut stdin = child.stdin.take().context("the command has no stdin")?;
    let input = input.to_vec();
    // Writing in its own task keeps a command that prints before it reads
    // all of stdin from blocking on a full pipe.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("failed to run `sh -c {command:?}`"))?;
    let _ = writer.await;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        anyhow::bail!(
            "`{command}` exited with {}{}",
            output.status,
            if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
        );
    }
    Ok(Bytes::from(output.stdout))
}
