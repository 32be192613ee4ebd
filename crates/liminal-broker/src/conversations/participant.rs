//! The participant actor: serves one conversation, linked to its
//! conversation actor (`broker/conversations/<id>/participant`).
//!
//! It either runs an in-process [`Responder`](super::responder::Responder)
//! or proxies to a remote worker connection. Replies go straight into the
//! requester's outbox. A responder that panics or returns an error makes
//! this actor fail, and its conversation applies the crash policy. A proxy
//! monitors the worker's connection actor and fails as soon as it stops,
//! so the requester learns at once that its worker is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use liminal_protocol::Frame;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use tracing::{debug, info, warn};

use crate::connections::connection::ConnectionMsg;
use crate::conversations::ConversationEvent;
use crate::conversations::responder::{BoxedResponder, ConversationInfo, ReplyContext};
use crate::conversations::routing::{Route, WorkerEntry};
use crate::outbox::Outbox;

/// Conversation data shared between a conversation actor and its
/// participants; it outlives each participant incarnation.
#[derive(Debug)]
pub(crate) struct ConversationShared {
    pub info: ConversationInfo,
    pub requester_outbox: Arc<Outbox>,
    /// Messages accepted by the conversation that no participant has
    /// finished handling.
    pub queued: AtomicUsize,
    started: Instant,
    /// Milliseconds after `started` of the last message or reply.
    last_activity_ms: AtomicU64,
    /// Participants restarted after a crash (`restart` policy).
    pub restarts: AtomicU64,
}

impl ConversationShared {
    pub fn new(info: ConversationInfo, requester_outbox: Arc<Outbox>) -> ConversationShared {
        ConversationShared {
            info,
            requester_outbox,
            queued: AtomicUsize::new(0),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    /// Records traffic now, for the idle timeout.
    pub fn touch(&self) {
        let elapsed = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Time since the last message or reply.
    pub fn idle_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Marks one queued message as handled.
    fn finish_message(&self) {
        // Saturating: a restart resets the count while a message of the
        // previous participant may still be counted down.
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| Some(count.saturating_sub(1)));
    }
}

/// The messages of a participant actor.
#[derive(Debug)]
pub enum ParticipantMsg {
    /// First message: run `on_open`, or send `WorkerOpen` to the worker.
    Open,
    /// A message of the requester.
    Message { message_id: u64, payload: Bytes },
    /// A reply of the remote worker, from the worker's connection actor.
    WorkerReply { in_reply_to: u64, payload: Bytes },
    /// The remote worker reported that it cannot handle the conversation.
    WorkerFailed { reason: String },
    /// Close normally: run `on_close`, or send `WorkerClose`, then stop.
    Close { reason: String },
    /// Fault injection: panic on receipt.
    Crash,
}

pub(crate) struct ParticipantArgs {
    pub shared: Arc<ConversationShared>,
    pub path: String,
    pub route: Route,
}

enum Backend {
    InProcess(BoxedResponder),
    Remote(RemoteWorker),
}

/// A remote worker serving this participant. Dropping it (whether the
/// participant stopped, crashed or was killed) sends the worker
/// `WorkerClose` and releases the route on the worker's connection.
struct RemoteWorker {
    worker: WorkerEntry,
    conversation_id: u64,
    participant: ractor::ActorCell,
    closed: bool,
}

impl RemoteWorker {
    fn send_close(&mut self, reason: &str) {
        if !self.closed {
            self.closed = true;
            self.worker.outbox.push_control(Frame::WorkerClose {
                conversation_id: self.conversation_id,
                reason: reason.to_owned(),
            });
        }
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        self.send_close("participant stopped");
        self.participant.unmonitor(self.worker.connection.get_cell());
        let _ = self
            .worker
            .connection
            .send_message(ConnectionMsg::Conversation(ConversationEvent::WorkerReleased {
                conversation_id: self.conversation_id,
                participant: self.participant.get_id(),
            }));
    }
}

pub(crate) struct ParticipantState {
    shared: Arc<ConversationShared>,
    path: String,
    backend: Backend,
}

pub(crate) struct ParticipantActor;

impl Actor for ParticipantActor {
    type Msg = ParticipantMsg;
    type State = ParticipantState;
    type Arguments = ParticipantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ParticipantMsg>,
        args: ParticipantArgs,
    ) -> Result<ParticipantState, ActorProcessingErr> {
        let conversation_id = args.shared.info.conversation_id;
        let backend = match args.route {
            Route::InProcess(factory) => Backend::InProcess(factory.create(&args.shared.info)),
            Route::Remote(worker) => {
                // Monitor first, then check: a connection that stops after
                // this point is reported as an event.
                myself.monitor(worker.connection.get_cell());
                let remote = RemoteWorker {
                    worker,
                    conversation_id,
                    participant: myself.get_cell(),
                    closed: false,
                };
                let assigned = ConnectionMsg::Conversation(ConversationEvent::WorkerAssigned {
                    conversation_id,
                    participant: myself.clone(),
                });
                if remote.worker.connection.get_status() != ActorStatus::Running
                    || remote.worker.connection.send_message(assigned).is_err()
                {
                    return Err(format!(
                        "worker connection {} closed before the conversation started",
                        remote.worker.connection_id
                    )
                    .into());
                }
                Backend::Remote(remote)
            }
        };
        info!(actor = %args.path, conversation_id, subject = %args.shared.info.subject, "actor started");
        Ok(ParticipantState {
            shared: args.shared,
            path: args.path,
            backend,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ParticipantMsg>,
        state: &mut ParticipantState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, conversation_id = state.shared.info.conversation_id, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ParticipantMsg>,
        message: ParticipantMsg,
        state: &mut ParticipantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ParticipantMsg::Open => state.open().await?,
            ParticipantMsg::Message { message_id, payload } => {
                let outcome = state.message(message_id, payload).await;
                state.shared.finish_message();
                outcome?;
            }
            ParticipantMsg::WorkerReply { in_reply_to, payload } => state.worker_reply(in_reply_to, payload),
            // Failing the participant applies the subject's crash policy,
            // exactly as a worker that disconnected does.
            ParticipantMsg::WorkerFailed { reason } => return Err(format!("worker failed: {reason}").into()),
            ParticipantMsg::Close { reason } => {
                state.close(&reason).await;
                myself.stop(Some(reason));
            }
            ParticipantMsg::Crash => {
                panic!(
                    "fault injected into the participant of conversation {}",
                    state.shared.info.conversation_id
                )
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ParticipantMsg>,
        event: SupervisionEvent,
        state: &mut ParticipantState,
    ) -> Result<(), ActorProcessingErr> {
        // The only monitored actor is a remote worker's connection.
        let Backend::Remote(remote) = &mut state.backend else {
            return Ok(());
        };
        if let SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) = event {
            if cell.get_id() == remote.worker.connection.get_id() {
                remote.closed = true;
                return Err(format!("worker connection {} closed", remote.worker.connection_id).into());
            }
        }
        Ok(())
    }
}

impl ParticipantState {
    async fn open(&mut self) -> Result<(), ActorProcessingErr> {
        match &mut self.backend {
            Backend::InProcess(responder) => responder.open(&self.shared.info).await?,
            Backend::Remote(remote) => {
                let frame = Frame::WorkerOpen {
                    conversation_id: self.shared.info.conversation_id,
                    subject: self.shared.info.subject.clone(),
                };
                if !remote.worker.outbox.push_control(frame) {
                    remote.closed = true;
                    return Err(format!("worker connection {} is closing", remote.worker.connection_id).into());
                }
            }
        }
        Ok(())
    }

    async fn message(&mut self, message_id: u64, payload: Bytes) -> Result<(), ActorProcessingErr> {
        match &mut self.backend {
            Backend::InProcess(responder) => {
                let shared = self.shared.clone();
                let on_reply = move || shared.touch();
                let mut context = ReplyContext::new(
                    &self.shared.info,
                    message_id,
                    &self.shared.requester_outbox,
                    &on_reply,
                );
                responder.message(&mut context, payload).await?;
                debug!(
                    actor = %self.path,
                    conversation_id = self.shared.info.conversation_id,
                    message_id,
                    replies = context.replies(),
                    "message handled"
                );
            }
            Backend::Remote(remote) => {
                let frame = Frame::WorkerMessage {
                    conversation_id: self.shared.info.conversation_id,
                    message_id,
                    payload,
                };
                if !remote.worker.outbox.push_control(frame) {
                    remote.closed = true;
                    return Err(format!("worker connection {} is closing", remote.worker.connection_id).into());
                }
            }
        }
        Ok(())
    }

    fn worker_reply(&mut self, in_reply_to: u64, payload: Bytes) {
        if !matches!(self.backend, Backend::Remote(_)) {
            return;
        }
        self.shared.touch();
        self.shared.requester_outbox.push_control(Frame::ConversationReply {
            conversation_id: self.shared.info.conversation_id,
            in_reply_to,
            payload,
        });
    }

    async fn close(&mut self, reason: &str) {
        match &mut self.backend {
            Backend::InProcess(responder) => {
                if let Err(error) = responder.close(&self.shared.info, reason).await {
                    warn!(
                        actor = %self.path,
                        conversation_id = self.shared.info.conversation_id,
                        %error,
                        "responder failed in on_close; the conversation closes anyway"
                    );
                }
            }
            Backend::Remote(remote) => remote.send_close(reason),
        }
    }
}
