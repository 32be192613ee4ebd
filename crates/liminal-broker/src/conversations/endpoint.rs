//! The connection actor's side of conversations: the frames a requester or
//! a worker sends, and the routes from conversation ids to actors.
//!
//! A requester's `ConversationMessage` goes to its conversation actor; a
//! worker's `WorkerReply` goes to the participant it serves. Both routes are
//! registered by those actors through [`ConversationEvent`] messages, which
//! reach this connection before the frame that tells the client the id, so
//! no later frame can miss its route.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use liminal_protocol::{ErrorCode, Frame};
use ractor::ActorRef;
use tracing::{debug, info};

use crate::connections::connection::{ConnectionMsg, ConnectionState};
use crate::conversations::conversation::ConversationMsg;
use crate::conversations::participant::ParticipantMsg;
use crate::conversations::routing::{Routing, WorkerEntry};
use crate::conversations::{ConversationEvent, ConversationsMsg, OpenRequest};

/// One connection's conversations, as requester and as worker.
#[derive(Default)]
pub struct ConversationRoutes {
    /// Conversations this connection opened, by id.
    open: HashMap<u64, ActorRef<ConversationMsg>>,
    /// Opens sent to the supervisor and not answered yet; they count
    /// against the per-connection limit.
    opening: usize,
    /// Conversations assigned to this connection as a worker.
    assigned: HashMap<u64, ActorRef<ParticipantMsg>>,
    /// Subjects this connection serves as a worker, and where they are
    /// registered; dropped registrations are removed (see `Drop`).
    registrations: Option<Registrations>,
}

struct Registrations {
    routing: Arc<Routing>,
    connection_id: u64,
    subjects: HashSet<String>,
}

impl Drop for ConversationRoutes {
    fn drop(&mut self) {
        // The connection actor is gone (stopped, crashed or killed): it can
        // take no more conversations. Participants serving it monitor its
        // actor and fail on their own.
        if let Some(registrations) = &self.registrations {
            for subject in &registrations.subjects {
                registrations.routing.workers.unregister(subject, registrations.connection_id);
            }
        }
    }
}

impl ConversationRoutes {
    /// Conversations this connection has open or opening.
    pub fn requester_count(&self) -> usize {
        self.open.len() + self.opening
    }
}

impl ConnectionState {
    /// Handles a conversation or worker frame from the client.
    pub(crate) fn handle_conversation_frame(&mut self, myself: &ActorRef<ConnectionMsg>, frame: Frame) {
        match frame {
            Frame::OpenConversation { request_id, subject } => self.open_conversation(myself, request_id, subject),
            Frame::ConversationMessage {
                conversation_id,
                message_id,
                payload,
            } => self.conversation_message(conversation_id, message_id, payload),
            Frame::CloseConversation { conversation_id } => self.close_conversation(conversation_id),
            Frame::RegisterResponder { request_id, subject } => self.register_responder(myself, request_id, subject),
            Frame::UnregisterResponder { request_id, subject } => self.unregister_responder(request_id, subject),
            Frame::WorkerReply {
                conversation_id,
                in_reply_to,
                payload,
            } => self.worker_reply(conversation_id, in_reply_to, payload),
            Frame::WorkerFail {
                conversation_id,
                reason,
            } => self.worker_fail(conversation_id, reason),
            other => unreachable!("{} is not a conversation frame", other.name()),
        }
    }

    /// Handles a message from a conversation or participant actor.
    pub(crate) fn handle_conversation_event(&mut self, event: ConversationEvent) {
        let routes = &mut self.conversation_routes;
        match event {
            ConversationEvent::Opened {
                request_id,
                conversation_id,
                conversation,
            } => {
                routes.opening = routes.opening.saturating_sub(1);
                routes.open.insert(conversation_id, conversation);
                self.outbox.push_control(Frame::ConversationOpened {
                    request_id,
                    conversation_id,
                });
            }
            ConversationEvent::OpenFailed { request_id, error } => {
                routes.opening = routes.opening.saturating_sub(1);
                debug!(actor = %self.path, conn_id = self.id, request_id, "conversation open failed");
                self.outbox.push_control(error);
            }
            ConversationEvent::Ended { conversation_id } => {
                routes.open.remove(&conversation_id);
            }
            ConversationEvent::WorkerAssigned {
                conversation_id,
                participant,
            } => {
                routes.assigned.insert(conversation_id, participant);
            }
            ConversationEvent::WorkerReleased {
                conversation_id,
                participant,
            } => {
                let current = routes.assigned.get(&conversation_id);
                if current.is_some_and(|actor| actor.get_id() == participant) {
                    routes.assigned.remove(&conversation_id);
                }
            }
        }
    }

    /// Fault injection target `participant/<conversation id>`.
    pub(crate) fn inject_participant_fault(&mut self, request_id: u64, conversation_id: &str) {
        let Ok(conversation_id) = conversation_id.parse::<u64>() else {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::InvalidRequest,
                format!("fault target \"participant/{conversation_id}\" needs a numeric conversation id"),
            ));
            return;
        };
        let message = ConversationsMsg::InjectFault {
            conversation_id,
            request_id,
            outbox: self.outbox.clone(),
        };
        if self.context.conversations.supervisor.send_message(message).is_err() {
            self.outbox.push_control(unavailable(request_id));
        }
    }

    fn open_conversation(&mut self, myself: &ActorRef<ConnectionMsg>, request_id: u64, subject: String) {
        if let Err(message) = crate::names::validate_subject(&subject) {
            self.outbox
                .push_control(Frame::error(Some(request_id), ErrorCode::InvalidRequest, message));
            return;
        }
        let limit = self.context.config.limits.max_conversations_per_connection;
        if self.conversation_routes.requester_count() >= limit {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::TooManyConversations,
                format!("this connection already has {limit} open conversations, the maximum (limits.max_conversations_per_connection); close one first"),
            ));
            return;
        }
        let request = OpenRequest {
            request_id,
            subject,
            requester: myself.clone(),
            outbox: self.outbox.clone(),
        };
        if self
            .context
            .conversations
            .supervisor
            .send_message(ConversationsMsg::Open(request))
            .is_err()
        {
            self.outbox.push_control(unavailable(request_id));
            return;
        }
        self.conversation_routes.opening += 1;
    }

    fn conversation_message(&mut self, conversation_id: u64, message_id: u64, payload: Bytes) {
        let Some(conversation) = self.conversation_routes.open.get(&conversation_id) else {
            self.outbox.push_control(unknown_conversation(conversation_id));
            return;
        };
        if conversation
            .send_message(ConversationMsg::Message { message_id, payload })
            .is_err()
        {
            self.conversation_routes.open.remove(&conversation_id);
            self.outbox.push_control(unknown_conversation(conversation_id));
        }
    }

    fn close_conversation(&mut self, conversation_id: u64) {
        let Some(conversation) = self.conversation_routes.open.get(&conversation_id) else {
            self.outbox.push_control(unknown_conversation(conversation_id));
            return;
        };
        let close = ConversationMsg::Close {
            reason: "closed by client".to_owned(),
        };
        if conversation.send_message(close).is_err() {
            self.conversation_routes.open.remove(&conversation_id);
            self.outbox.push_control(unknown_conversation(conversation_id));
        }
    }

    fn register_responder(&mut self, myself: &ActorRef<ConnectionMsg>, request_id: u64, subject: String) {
        if let Err(message) = crate::names::validate_subject(&subject) {
            self.outbox
                .push_control(Frame::error(Some(request_id), ErrorCode::InvalidRequest, message));
            return;
        }
        let routing = self.context.conversations.routing.clone();
        routing.workers.register(
            &subject,
            WorkerEntry {
                connection_id: self.id,
                connection: myself.clone(),
                outbox: self.outbox.clone(),
            },
        );
        let registrations = self.conversation_routes.registrations.get_or_insert_with(|| Registrations {
            routing,
            connection_id: self.id,
            subjects: HashSet::new(),
        });
        registrations.subjects.insert(subject.clone());
        info!(actor = %self.path, conn_id = self.id, %subject, "worker registered");
        self.outbox
            .push_control(Frame::ResponderRegistered { request_id, subject });
    }

    /// Removes a registration. Conversations already assigned to this
    /// worker continue. Unregistering a subject that is not registered
    /// succeeds, so a retry after a lost answer is harmless.
    fn unregister_responder(&mut self, request_id: u64, subject: String) {
        if let Some(registrations) = self.conversation_routes.registrations.as_mut() {
            if registrations.subjects.remove(&subject) {
                registrations.routing.workers.unregister(&subject, self.id);
                info!(actor = %self.path, conn_id = self.id, %subject, "worker unregistered");
            }
        }
        self.outbox
            .push_control(Frame::ResponderUnregistered { request_id, subject });
    }

    fn worker_fail(&mut self, conversation_id: u64, reason: String) {
        let Some(participant) = self.conversation_routes.assigned.remove(&conversation_id) else {
            self.outbox.push_control(unknown_conversation(conversation_id));
            return;
        };
        info!(actor = %self.path, conn_id = self.id, conversation_id, %reason, "worker reported a failure");
        let _ = participant.send_message(ParticipantMsg::WorkerFailed { reason });
    }

    fn worker_reply(&mut self, conversation_id: u64, in_reply_to: u64, payload: Bytes) {
        let Some(participant) = self.conversation_routes.assigned.get(&conversation_id) else {
            self.outbox.push_control(unknown_conversation(conversation_id));
            return;
        };
        if participant
            .send_message(ParticipantMsg::WorkerReply { in_reply_to, payload })
            .is_err()
        {
            self.conversation_routes.assigned.remove(&conversation_id);
            self.outbox.push_control(unknown_conversation(conversation_id));
        }
    }
}

/// Builds the error for a frame about a conversation this connection does
/// not have. Such frames carry no request id, so the error names the
/// conversation in `conversation_id` and, for older clients, in the text.
fn unknown_conversation(conversation_id: u64) -> Frame {
    Frame::conversation_error(
        conversation_id,
        ErrorCode::UnknownConversation,
        format!("conversation {conversation_id}: not an open conversation of this connection"),
    )
}

fn unavailable(request_id: u64) -> Frame {
    Frame::error(
        Some(request_id),
        ErrorCode::Internal,
        "the conversations supervisor is not running",
    )
}
