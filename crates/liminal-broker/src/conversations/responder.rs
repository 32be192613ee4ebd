//! The `Responder` trait: application code that serves conversations
//! in-process, inside a participant actor.
//!
//! A [`ResponderFactory`] registered for a subject creates one responder per
//! conversation, so a responder keeps per-conversation state in its own
//! fields. The participant actor calls the hooks one at a time, in order:
//! `on_open` once, `on_message` for each message, `on_close` once when the
//! conversation closes normally. A hook that returns an error or panics
//! crashes the participant, and the subject's crash policy applies.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use liminal_protocol::Frame;

use crate::outbox::Outbox;

/// The conversation a responder serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationInfo {
    pub conversation_id: u64,
    pub subject: String,
}

/// A responder hook failed; the participant crashes with this message as
/// the reason, which the requester sees in `ConversationFailed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResponderError(String);

impl ResponderError {
    /// Wraps any displayable error or message.
    pub fn new(message: impl fmt::Display) -> ResponderError {
        ResponderError(message.to_string())
    }
}

/// The handle through which a responder answers one message. Replies go
/// straight into the requester's send queue, in the order they are made.
pub struct ReplyContext<'a> {
    conversation: &'a ConversationInfo,
    message_id: u64,
    outbox: &'a Outbox,
    on_reply: &'a (dyn Fn() + Send + Sync),
    replies: usize,
}

impl<'a> ReplyContext<'a> {
    pub(crate) fn new(
        conversation: &'a ConversationInfo,
        message_id: u64,
        outbox: &'a Outbox,
        on_reply: &'a (dyn Fn() + Send + Sync),
    ) -> ReplyContext<'a> {
        ReplyContext {
            conversation,
            message_id,
            outbox,
            on_reply,
            replies: 0,
        }
    }

    /// The conversation this message belongs to.
    pub fn conversation(&self) -> &ConversationInfo {
        self.conversation
    }

    /// The requester's id of the message being answered.
    pub fn message_id(&self) -> u64 {
        self.message_id
    }

    /// Sends one reply to the message being handled. Returns false when the
    /// requester's connection is closing, so the reply cannot arrive.
    pub fn reply(&mut self, payload: impl Into<Bytes>) -> bool {
        let sent = self.outbox.push_control(Frame::ConversationReply {
            conversation_id: self.conversation.conversation_id,
            in_reply_to: self.message_id,
            payload: payload.into(),
        });
        if sent {
            self.replies += 1;
            (self.on_reply)();
        }
        sent
    }

    /// Replies sent so far for this message.
    pub fn replies(&self) -> usize {
        self.replies
    }
}

/// Application code that serves the conversations of a subject.
///
/// Implement the hooks with `async fn`; the futures must be `Send` because
/// the participant actor runs on the multi-threaded tokio runtime.
pub trait Responder: Send + 'static {
    /// Called once, before the first message.
    fn on_open(&mut self, conversation: &ConversationInfo) -> impl Future<Output = Result<(), ResponderError>> + Send {
        let _ = conversation;
        async { Ok(()) }
    }

    /// Called for each message of the requester. Reply zero or more times
    /// through `context`.
    fn on_message(
        &mut self,
        context: &mut ReplyContext<'_>,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), ResponderError>> + Send;

    /// Called once when the conversation closes normally (closed by the
    /// requester, idle timeout, requester disconnected, shutdown). Not
    /// called after a crash.
    fn on_close(
        &mut self,
        conversation: &ConversationInfo,
        reason: &str,
    ) -> impl Future<Output = Result<(), ResponderError>> + Send {
        let _ = (conversation, reason);
        async { Ok(()) }
    }
}

/// The object-safe form of [`Responder`], so that participants can hold
/// responders of any type.
trait ErasedResponder: Send {
    fn open<'a>(&'a mut self, conversation: &'a ConversationInfo) -> BoxFuture<'a, Result<(), ResponderError>>;
    fn message<'a, 'b>(
        &'a mut self,
        context: &'a mut ReplyContext<'b>,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ResponderError>>;
    fn close<'a>(
        &'a mut self,
        conversation: &'a ConversationInfo,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), ResponderError>>;
}

impl<T: Responder> ErasedResponder for T {
    fn open<'a>(&'a mut self, conversation: &'a ConversationInfo) -> BoxFuture<'a, Result<(), ResponderError>> {
        Box::pin(Responder::on_open(self, conversation))
    }

    fn message<'a, 'b>(
        &'a mut self,
        context: &'a mut ReplyContext<'b>,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ResponderError>> {
        Box::pin(Responder::on_message(self, context, payload))
    }

    fn close<'a>(
        &'a mut self,
        conversation: &'a ConversationInfo,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), ResponderError>> {
        Box::pin(Responder::on_close(self, conversation, reason))
    }
}

/// A responder of any type, as a factory returns it.
pub struct BoxedResponder(Box<dyn ErasedResponder>);

impl BoxedResponder {
    pub fn new(responder: impl Responder) -> BoxedResponder {
        BoxedResponder(Box::new(responder))
    }

    pub(crate) async fn open(&mut self, conversation: &ConversationInfo) -> Result<(), ResponderError> {
        self.0.open(conversation).await
    }

    pub(crate) async fn message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        self.0.message(context, payload).await
    }

    pub(crate) async fn close(&mut self, conversation: &ConversationInfo, reason: &str) -> Result<(), ResponderError> {
        self.0.close(conversation, reason).await
    }
}

impl fmt::Debug for BoxedResponder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BoxedResponder")
    }
}

/// Creates one responder per conversation of a subject. Any
/// `Fn(&ConversationInfo) -> R` closure with `R: Responder` is a factory.
pub trait ResponderFactory: Send + Sync + 'static {
    fn create(&self, conversation: &ConversationInfo) -> BoxedResponder;
}

impl<F, R> ResponderFactory for F
where
    F: Fn(&ConversationInfo) -> R + Send + Sync + 'static,
    R: Responder,
{
    fn create(&self, conversation: &ConversationInfo) -> BoxedResponder {
        BoxedResponder::new(self(conversation))
    }
}

/// The built-in responder for subjects without one (unless
/// `unknown_subject = "reject"`). It replies to each message with its payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoResponder;

impl Responder for EchoResponder {
    async fn on_message(&mut self, context: &mut ReplyContext<'_>, payload: Bytes) -> Result<(), ResponderError> {
        context.reply(payload);
        Ok(())
    }
}

/// Errors from registering a responder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot register a responder: {0}")]
    InvalidSubject(String),
}

/// In-process responder factories by subject. Cloning shares the registry,
/// so an application can register and unregister at runtime through
/// [`crate::BrokerHandle::responders`]; a change applies to conversations
/// opened afterwards, never to running ones.
#[derive(Clone, Default)]
pub struct ResponderRegistry {
    factories: Arc<RwLock<HashMap<String, Arc<dyn ResponderFactory>>>>,
}

impl ResponderRegistry {
    pub fn new() -> ResponderRegistry {
        ResponderRegistry::default()
    }

    /// Registers `factory` for `subject` and returns the factory it
    /// replaced, if any. The subject follows the channel name rules.
    pub fn register(
        &self,
        subject: impl Into<String>,
        factory: impl ResponderFactory,
    ) -> Result<Option<Arc<dyn ResponderFactory>>, RegistryError> {
        self.register_shared(subject, Arc::new(factory))
    }

    /// Like [`ResponderRegistry::register`], for a factory already in an `Arc`.
    pub fn register_shared(
        &self,
        subject: impl Into<String>,
        factory: Arc<dyn ResponderFactory>,
    ) -> Result<Option<Arc<dyn ResponderFactory>>, RegistryError> {
        let subject = subject.into();
        crate::names::validate_subject(&subject).map_err(RegistryError::InvalidSubject)?;
        Ok(self.write().insert(subject, factory))
    }

    /// Removes the factory of `subject` and returns it, if there was one.
    pub fn unregister(&self, subject: &str) -> Option<Arc<dyn ResponderFactory>> {
        self.write().remove(subject)
    }

    /// The factory registered for `subject`.
    pub fn get(&self, subject: &str) -> Option<Arc<dyn ResponderFactory>> {
        self.read().get(subject).cloned()
    }

    /// The registered subjects, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects: Vec<String> = self.read().keys().cloned().collect();
        subjects.sort();
        subjects
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<dyn ResponderFactory>>> {
        // Every mutation is a single insert or remove, so a poisoned lock
        // still guards a consistent map.
        self.factories.read().unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<dyn ResponderFactory>>> {
        self.factories.write().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl fmt::Debug for ResponderRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ResponderRegistry")
            .field("subjects", &self.subjects())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u64);

    impl Responder for Counter {
        async fn on_message(&mut self, context: &mut ReplyContext<'_>, _payload: Bytes) -> Result<(), ResponderError> {
            self.0 += 1;
            context.reply(self.0.to_string());
            Ok(())
        }
    }

    #[test]
    fn register_returns_replaced_factory() {
        let registry = ResponderRegistry::new();
        let first = registry.register("count", |_: &ConversationInfo| Counter(0)).unwrap();
        assert!(first.is_none());
        let second = registry.register("count", |_: &ConversationInfo| Counter(10)).unwrap();
        assert!(second.is_some());
        assert_eq!(registry.subjects(), vec!["count".to_owned()]);
        assert!(registry.unregister("count").is_some());
        assert!(registry.unregister("count").is_none());
    }

    #[test]
    fn register_rejects_invalid_subject() {
        let registry = ResponderRegistry::new();
        let Err(error) = registry.register("has space", |_: &ConversationInfo| EchoResponder) else {
            panic!("a subject with a space was accepted");
        };
        assert!(error.to_string().contains("has space"), "{error}");
    }

    #[tokio::test]
    async fn boxed_responder_replies_through_context() {
        let info = ConversationInfo {
            conversation_id: 3,
            subject: "count".to_owned(),
        };
        let outbox = Outbox::new(1 << 20);
        let mut responder = BoxedResponder::new(Counter(0));
        let on_reply = || {};
        for message_id in [7, 8] {
            let mut context = ReplyContext::new(&info, message_id, &outbox, &on_reply);
            responder.message(&mut context, Bytes::new()).await.unwrap();
            assert_eq!(context.replies(), 1);
        }
        let mut batch = Vec::new();
        assert!(outbox.next_batch(&mut batch).await);
        let replies: Vec<(u64, Bytes)> = batch
            .into_iter()
            .map(|frame| match frame {
                Frame::ConversationReply {
                    in_reply_to, payload, ..
                } => (in_reply_to, payload),
                other => panic!("unexpected frame {other:?}"),
            })
            .collect();
        assert_eq!(replies, vec![(7, Bytes::from("1")), (8, Bytes::from("2"))]);
    }
}
