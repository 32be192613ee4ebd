//! Conversations from the requester's side: open one on a subject, send
//! messages, and receive replies, notices and the conversation's end.
//!
//! Each conversation has its own route in the client's reader, like a
//! subscription: frames for it arrive on its [`Conversation`] handle in the
//! order the server sent them.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use liminal_protocol::{ErrorCode, Frame};
use tokio::sync::mpsc;

use crate::{Client, ClientError};

/// An event of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationEvent {
    /// A reply of the participant to message `in_reply_to`.
    Reply { in_reply_to: u64, payload: Bytes },
    /// The participant crashed and a fresh one took over (`restart` policy).
    Notice(String),
    /// The conversation ended normally; nothing follows.
    Closed(String),
    /// The participant crashed or its worker disconnected; nothing follows.
    Failed(String),
    /// The server discarded a message of this conversation, for example
    /// with `conversation_queue_full`. The conversation goes on.
    Rejected { code: String, message: String },
}

/// Errors of a conversation request that produced no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConversationError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("conversation {conversation_id} failed: {reason}")]
    Failed { conversation_id: u64, reason: String },
    #[error("conversation {conversation_id} closed before the reply arrived: {reason}")]
    Closed { conversation_id: u64, reason: String },
    #[error("conversation {conversation_id}: the server rejected the message ({code}): {message}")]
    Rejected {
        conversation_id: u64,
        code: String,
        message: String,
    },
}

/// An open conversation. Dropping it does not close it on the server (use
/// [`Conversation::close`]); the server closes it when the connection
/// closes or after its idle timeout.
pub struct Conversation {
    client: Client,
    conversation_id: u64,
    receiver: mpsc::UnboundedReceiver<ConversationEvent>,
}

impl Conversation {
    /// The server-assigned conversation id.
    pub fn id(&self) -> u64 {
        self.conversation_id
    }

    /// Sends a message and returns its id, which replies carry as
    /// `in_reply_to`. Ids come from the client's request id counter, so
    /// they are unique on this connection.
    pub fn send(&self, payload: impl Into<Bytes>) -> Result<u64, ClientError> {
        let message_id = self.client.next_request_id();
        self.send_with_id(message_id, payload)?;
        Ok(message_id)
    }

    /// Sends a message with an id chosen by the caller.
    pub fn send_with_id(&self, message_id: u64, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.client.send(Frame::ConversationMessage {
            conversation_id: self.conversation_id,
            message_id,
            payload: payload.into(),
        })
    }

    /// The next event, or `None` after the conversation ended or the
    /// connection closed.
    pub async fn next(&mut self) -> Option<ConversationEvent> {
        self.receiver.recv().await
    }

    /// The next event within `timeout`.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Result<Option<ConversationEvent>, ClientError> {
        tokio::time::timeout(timeout, self.receiver.recv())
            .await
            .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))
    }

    /// Sends one message and waits up to `timeout` for its first reply.
    /// Replies to earlier messages and notices that arrive meanwhile are
    /// skipped.
    pub async fn request(&mut self, payload: impl Into<Bytes>, timeout: Duration) -> Result<Bytes, ConversationError> {
        let message_id = self.send(payload)?;
        let conversation_id = self.conversation_id;
        let wait = async {
            loop {
                match self.receiver.recv().await {
                    Some(ConversationEvent::Reply { in_reply_to, payload }) if in_reply_to == message_id => {
                        return Ok(payload);
                    }
                    Some(ConversationEvent::Reply { .. } | ConversationEvent::Notice(_)) => {}
                    Some(ConversationEvent::Rejected { code, message }) => {
                        return Err(ConversationError::Rejected {
                            conversation_id,
                            code,
                            message,
                        });
                    }
                    Some(ConversationEvent::Failed(reason)) => {
                        return Err(ConversationError::Failed { conversation_id, reason });
                    }
                    Some(ConversationEvent::Closed(reason)) => {
                        return Err(ConversationError::Closed { conversation_id, reason });
                    }
                    None => {
                        let reason = self
                            .client
                            .closed_reason()
                            .unwrap_or_else(|| ClientError::Closed("connection closed".to_owned()));
                        return Err(ConversationError::Client(reason));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConversationError::Client(ClientError::Timeout(timeout.as_millis() as u64)))?
    }

    /// Asks the server to close the conversation. Replies to messages
    /// already sent still arrive, then `Closed`.
    pub fn close(&self) -> Result<(), ClientError> {
        self.client.send(Frame::CloseConversation {
            conversation_id: self.conversation_id,
        })
    }

    /// Closes the conversation and waits up to `timeout` for the server to
    /// confirm; returns the close reason (or the failure, if the
    /// participant crashed first).
    pub async fn close_and_wait(mut self, timeout: Duration) -> Result<String, ConversationError> {
        self.close()?;
        let conversation_id = self.conversation_id;
        let wait = async {
            loop {
                match self.receiver.recv().await {
                    Some(ConversationEvent::Closed(reason)) => return Ok(reason),
                    Some(ConversationEvent::Failed(reason)) => {
                        return Err(ConversationError::Failed { conversation_id, reason });
                    }
                    Some(_) => {}
                    None => {
                        let reason = self
                            .client
                            .closed_reason()
                            .unwrap_or_else(|| ClientError::Closed("connection closed".to_owned()));
                        return Err(ConversationError::Client(reason));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConversationError::Client(ClientError::Timeout(timeout.as_millis() as u64)))?
    }
}

impl Client {
    /// Opens a conversation on `subject` and waits for the server to start it.
    pub async fn open_conversation(&self, subject: &str) -> Result<Conversation, ClientError> {
        let request_id = self.next_request_id();
        let (sender, receiver) = mpsc::unbounded_channel();
        self.with_conversation_table(|table| table.pending.insert(request_id, sender));
        let answer = self
            .call(
                request_id,
                Frame::OpenConversation {
                    request_id,
                    subject: subject.to_owned(),
                },
            )
            .await;
        self.with_conversation_table(|table| table.pending.remove(&request_id));
        match answer? {
            Frame::ConversationOpened { conversation_id, .. } => Ok(Conversation {
                client: self.clone(),
                conversation_id,
                receiver,
            }),
            other => Err(ClientError::Protocol(format!(
                "expected ConversationOpened, got {}",
                other.name()
            ))),
        }
    }
}

/// The reader's routes for conversation frames, by request id while
/// opening and by conversation id once open.
#[derive(Default)]
pub(crate) struct ConversationTable {
    pending: HashMap<u64, mpsc::UnboundedSender<ConversationEvent>>,
    open: HashMap<u64, mpsc::UnboundedSender<ConversationEvent>>,
}

impl ConversationTable {
    /// Routes a conversation frame. Returns the frame back when it is not
    /// one, or for `ConversationOpened`, which still answers its request.
    pub(crate) fn route(&mut self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::ConversationOpened {
                request_id,
                conversation_id,
            } => {
                if let Some(sender) = self.pending.remove(&request_id) {
                    self.open.insert(conversation_id, sender);
                }
                Some(frame)
            }
            Frame::ConversationReply {
                conversation_id,
                in_reply_to,
                payload,
            } => {
                self.deliver(conversation_id, ConversationEvent::Reply { in_reply_to, payload });
                None
            }
            Frame::ConversationNotice {
                conversation_id,
                notice,
            } => {
                self.deliver(conversation_id, ConversationEvent::Notice(notice));
                None
            }
            Frame::ConversationClosed {
                conversation_id,
                reason,
            } => {
                if let Some(sender) = self.open.remove(&conversation_id) {
                    let _ = sender.send(ConversationEvent::Closed(reason));
                }
                None
            }
            Frame::ConversationFailed {
                conversation_id,
                reason,
            } => {
                if let Some(sender) = self.open.remove(&conversation_id) {
                    let _ = sender.send(ConversationEvent::Failed(reason));
                }
                None
            }
            other => Some(other),
        }
    }

    /// Routes an `Error` without request id that concerns one conversation,
    /// named by `conversation_id` or, from servers that do not send that
    /// field, by the `conversation <id>:` start of the message. Returns
    /// false when the error is not about an open conversation.
    pub(crate) fn route_error(&mut self, code: &str, message: &str, conversation_id: Option<u64>) -> bool {
        let about_conversation = code == ErrorCode::ConversationQueueFull.as_str()
            || code == ErrorCode::UnknownConversation.as_str();
        if !about_conversation {
            return false;
        }
        let Some(conversation_id) = conversation_id.or_else(|| conversation_id_in(message)) else {
            return false;
        };
        match self.open.get(&conversation_id) {
            Some(sender) => {
                let _ = sender.send(ConversationEvent::Rejected {
                    code: code.to_owned(),
                    message: message.to_owned(),
                });
                true
            }
            None => false,
        }
    }

    fn deliver(&self, conversation_id: u64, event: ConversationEvent) {
        if let Some(sender) = self.open.get(&conversation_id) {
            let _ = sender.send(event);
        }
    }

    /// Drops every route, so each handle sees the end of its events.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.open.clear();
    }
}

/// Parses the id from a message that starts with `conversation <id>:`.
fn conversation_id_in(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("conversation ")?;
    let (id, _) = rest.split_once(':')?;
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_field_wins_over_text() {
        let mut routes = ConversationTable::default();
        let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
        routes.open.insert(7, sender);
        assert!(routes.route_error("conversation_queue_full", "conversation 8: full", Some(7)));
        assert!(matches!(events.try_recv(), Ok(ConversationEvent::Rejected { .. })));
        assert!(!routes.route_error("conversation_queue_full", "conversation 7: full", Some(8)));
        assert!(routes.route_error("unknown_conversation", "conversation 7: gone", None));
    }

    #[test]
    fn error_prefix_names_the_conversation() {
        assert_eq!(conversation_id_in("conversation 42: queue full"), Some(42));
        assert_eq!(conversation_id_in("conversation x: queue full"), None);
        assert_eq!(conversation_id_in("subscription 42: gone"), None);
    }

    #[test]
    fn frames_route_to_their_conversation_until_it_ends() {
        let mut table = ConversationTable::default();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        table.pending.insert(5, sender);
        let opened = table.route(Frame::ConversationOpened {
            request_id: 5,
            conversation_id: 9,
        });
        assert!(opened.is_some(), "ConversationOpened still answers the request");
        assert!(
            table
                .route(Frame::ConversationReply {
                    conversation_id: 9,
                    in_reply_to: 1,
                    payload: Bytes::from("a"),
                })
                .is_none()
        );
        assert!(table.route_error("conversation_queue_full", "conversation 9: full", None));
        assert!(!table.route_error("conversation_queue_full", "conversation 10: full", None));
        table.route(Frame::ConversationFailed {
            conversation_id: 9,
            reason: "crash".to_owned(),
        });
        assert_eq!(
            receiver.try_recv().unwrap(),
            ConversationEvent::Reply {
                in_reply_to: 1,
                payload: Bytes::from("a")
            }
        );
        assert!(matches!(receiver.try_recv().unwrap(), ConversationEvent::Rejected { .. }));
        assert_eq!(receiver.try_recv().unwrap(), ConversationEvent::Failed("crash".to_owned()));
        assert!(receiver.try_recv().is_err(), "the route is gone after Failed");
        assert!(table.open.is_empty());
    }
}
