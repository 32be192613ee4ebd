//! Remote workers: a client connection that serves the conversations of a
//! subject. The server assigns each new conversation on the subject to one
//! registered worker (round-robin), sends it `WorkerOpen`, each
//! `WorkerMessage` and `WorkerClose`, and forwards its `WorkerReply`
//! frames to the requester.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use liminal_protocol::Frame;
use tokio::sync::mpsc;

use crate::{Client, ClientError};

/// An event a worker receives.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// A conversation was assigned to this worker.
    Open { conversation_id: u64, subject: String },
    /// A requester's message. Reply with [`Worker::reply`].
    Message {
        conversation_id: u64,
        message_id: u64,
        payload: Bytes,
    },
    /// The conversation ended; replies to it are no longer accepted.
    Close { conversation_id: u64, reason: String },
}

/// A registration for one subject on a client connection.
pub struct Worker {
    client: Client,
    subject: String,
    receiver: mpsc::UnboundedReceiver<WorkerEvent>,
}

impl Worker {
    /// The subject this worker serves.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Waits for the next event; `None` once the connection closed.
    pub async fn next(&mut self) -> Option<WorkerEvent> {
        self.receiver.recv().await
    }

    /// Waits up to `timeout` for the next event.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WorkerEvent>, ClientError> {
        tokio::time::timeout(timeout, self.receiver.recv())
            .await
            .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))
    }

    /// Sends a reply to message `in_reply_to` of a conversation assigned to
    /// this worker. A message may get any number of replies.
    pub fn reply(&self, conversation_id: u64, in_reply_to: u64, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.client.send(Frame::WorkerReply {
            conversation_id,
            in_reply_to,
            payload: payload.into(),
        })
    }

    /// Reports that this worker cannot handle a conversation. The requester
    /// gets `ConversationFailed` with `reason` (or, under the `restart`
    /// crash policy, a fresh participant).
    pub fn fail(&self, conversation_id: u64, reason: impl Into<String>) -> Result<(), ClientError> {
        self.client.send(Frame::WorkerFail {
            conversation_id,
            reason: reason.into(),
        })
    }

    /// Stops taking new conversations. Conversations already assigned go
    /// on, and their events still arrive on this handle.
    pub async fn unregister(&self) -> Result<(), ClientError> {
        let request_id = self.client.next_request_id();
        self.client
            .call(
                request_id,
                Frame::UnregisterResponder {
                    request_id,
                    subject: self.subject.clone(),
                },
            )
            .await?;
        self.client
            .with_worker_table(|table| table.subjects.remove(&self.subject));
        Ok(())
    }
}

impl Client {
    /// Registers this connection as a worker for `subject`.
    pub async fn register_worker(&self, subject: &str) -> Result<Worker, ClientError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        // The route exists before the request leaves, because the server may
        // assign a conversation before its `ResponderRegistered` arrives.
        self.with_worker_table(|table| table.subjects.insert(subject.to_owned(), sender));
        let request_id = self.next_request_id();
        let answer = self
            .call(
                request_id,
                Frame::RegisterResponder {
                    request_id,
                    subject: subject.to_owned(),
                },
            )
            .await;
        match answer {
            Ok(Frame::ResponderRegistered { .. }) => Ok(Worker {
                client: self.clone(),
                subject: subject.to_owned(),
                receiver,
            }),
            Ok(other) => {
                self.with_worker_table(|table| table.subjects.remove(subject));
                Err(ClientError::Protocol(format!(
                    "expected ResponderRegistered, got {}",
                    other.name()
                )))
            }
            Err(error) => {
                self.with_worker_table(|table| table.subjects.remove(subject));
                Err(error)
            }
        }
    }
}

/// The reader's routes for worker frames: by subject for `WorkerOpen`,
/// then by conversation id until `WorkerClose`.
#[derive(Default)]
pub(crate) struct WorkerTable {
    subjects: HashMap<String, mpsc::UnboundedSender<WorkerEvent>>,
    conversations: HashMap<u64, mpsc::UnboundedSender<WorkerEvent>>,
}

impl WorkerTable {
    /// Routes a worker frame, or returns the frame when it is not one.
    pub(crate) fn route(&mut self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::WorkerOpen {
                conversation_id,
                subject,
            } => {
                if let Some(sender) = self.subjects.get(&subject) {
                    self.conversations.insert(conversation_id, sender.clone());
                    let _ = sender.send(WorkerEvent::Open {
                        conversation_id,
                        subject,
                    });
                }
                None
            }
            Frame::WorkerMessage {
                conversation_id,
                message_id,
                payload,
            } => {
                if let Some(sender) = self.conversations.get(&conversation_id) {
                    let _ = sender.send(WorkerEvent::Message {
                        conversation_id,
                        message_id,
                        payload,
                    });
                }
                None
            }
            Frame::WorkerClose {
                conversation_id,
                reason,
            } => {
                if let Some(sender) = self.conversations.remove(&conversation_id) {
                    let _ = sender.send(WorkerEvent::Close {
                        conversation_id,
                        reason,
                    });
                }
                None
            }
            other => Some(other),
        }
    }

    /// Drops every route, so each handle sees the end of its events.
    pub(crate) fn clear(&mut self) {
        self.subjects.clear();
        self.conversations.clear();
    }
}
