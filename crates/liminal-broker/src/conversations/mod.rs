//! `broker/conversations`: crash-aware request/reply.
//!
//! ```text
//! broker/conversations              ConversationsSupervisor
//! └── <conversation id>             ConversationActor, temporary child
//!     └── participant               ParticipantActor, linked to its conversation
//! ```
//!
//! A requester's connection sends this supervisor an open request. The
//! supervisor picks who serves the subject ([`routing`]) and spawns the
//! conversation actor, which spawns its participant.
//! Conversation actors are not restarted: their state is the conversation
//! itself. Participant crashes are handled by the conversation actor
//! according to the subject's crash policy. `docs/architecture.md`
//! describes the lifecycle and the crash path.

pub mod conversation;
mod endpoint;
pub mod participant;
pub mod responder;
pub(crate) mod routing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liminal_protocol::{ErrorCode, Frame};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use tracing::{info, warn};

use crate::config::BrokerConfig;
use crate::connections::connection::ConnectionMsg;
use crate::outbox::Outbox;
use crate::supervision::TreeNode;
use conversation::{ConversationActor, ConversationArgs, ConversationMsg};
use participant::{ConversationShared, ParticipantMsg};
use responder::{ConversationInfo, ResponderRegistry};
use routing::{Routing, WorkerRegistry};
pub use routing::ConversationStats;

pub use endpoint::ConversationRoutes;

/// Events that conversation and participant actors send to a connection
/// actor, as `ConnectionMsg::Conversation`.
#[derive(Debug)]
pub enum ConversationEvent {
    /// A conversation this connection requested is running; the
    /// connection registers it and sends `ConversationOpened`.
    Opened {
        request_id: u64,
        conversation_id: u64,
        conversation: ActorRef<ConversationMsg>,
    },
    /// An open failed; the connection sends `error`.
    OpenFailed { request_id: u64, error: Frame },
    /// A conversation of this connection ended (any way).
    Ended { conversation_id: u64 },
    /// A conversation was assigned to this connection as a worker; its
    /// `WorkerReply` frames go to `participant`.
    WorkerAssigned {
        conversation_id: u64,
        participant: ActorRef<ParticipantMsg>,
    },
    /// The participant that served an assigned conversation stopped.
    WorkerReleased { conversation_id: u64, participant: ActorId },
}

/// A request to open a conversation, from the requester's connection actor.
#[derive(Debug)]
pub struct OpenRequest {
    pub request_id: u64,
    pub subject: String,
    pub requester: ActorRef<ConnectionMsg>,
    pub outbox: Arc<Outbox>,
}

/// The messages of the conversations supervisor.
#[derive(Debug)]
pub enum ConversationsMsg {
    Open(OpenRequest),
    /// Fault injection: crash the participant of a conversation and push
    /// `FaultInjected` (or an error) into `outbox`.
    InjectFault {
        conversation_id: u64,
        request_id: u64,
        outbox: Arc<Outbox>,
    },
    /// Broker shutdown: closes every conversation with `reason`, rejects new
    /// opens, and replies once all conversation actors stopped.
    CloseAll { reason: String, reply: RpcReplyPort<()> },
    /// Returns this subtree of the supervision tree.
    Tree(RpcReplyPort<TreeNode>),
}

/// The conversations supervisor and routing state that connections use.
#[derive(Clone)]
pub struct ConversationsHandle {
    pub(crate) supervisor: ActorRef<ConversationsMsg>,
    pub(crate) routing: Arc<Routing>,
}

impl std::fmt::Debug for ConversationsHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConversationsHandle")
            .field("supervisor", &self.supervisor.get_id())
            .finish()
    }
}

struct Entry {
    conversation_id: u64,
    path: String,
    actor: ActorRef<ConversationMsg>,
    shared: Arc<ConversationShared>,
    participant: Arc<Mutex<Option<ActorCell>>>,
}

pub struct ConversationsState {
    path: String,
    config: Arc<BrokerConfig>,
    routing: Arc<Routing>,
    next_id: u64,
    live: HashMap<ActorId, Entry>,
    by_conversation: HashMap<u64, ActorId>,
    /// Set at shutdown: no new conversations, and these wait for the rest to end.
    closing_waiters: Option<Vec<RpcReplyPort<()>>>,
}

pub struct ConversationsSupervisor;

/// Start arguments of the conversations supervisor.
pub struct ConversationsArgs {
    pub config: Arc<BrokerConfig>,
    pub responders: ResponderRegistry,
    pub path: String,
    pub ready: tokio::sync::oneshot::Sender<ConversationsHandle>,
}

impl Actor for ConversationsSupervisor {
    type Msg = ConversationsMsg;
    type State = ConversationsState;
    type Arguments = ConversationsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConversationsMsg>,
        args: ConversationsArgs,
    ) -> Result<ConversationsState, ActorProcessingErr> {
        info!(actor = %args.path, "actor started");
        let routing = Arc::new(Routing {
            config: args.config.conversations.clone(),
            responders: args.responders,
            workers: WorkerRegistry::default(),
            stats: ConversationStats::default(),
        });
        let _ = args.ready.send(ConversationsHandle {
            supervisor: myself,
            routing: routing.clone(),
        });
        Ok(ConversationsState {
            path: args.path,
            config: args.config,
            routing,
            next_id: 1,
            live: HashMap::new(),
            by_conversation: HashMap::new(),
            closing_waiters: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConversationsMsg>,
        state: &mut ConversationsState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, open_conversations = state.live.len(), "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConversationsMsg>,
        message: ConversationsMsg,
        state: &mut ConversationsState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConversationsMsg::Open(request) => state.open(&myself, request).await,
            ConversationsMsg::InjectFault {
                conversation_id,
                request_id,
                outbox,
            } => state.inject_fault(conversation_id, request_id, outbox),
            ConversationsMsg::CloseAll { reason, reply } => state.close_all(reason, reply),
            ConversationsMsg::Tree(reply) => {
                let _ = reply.send(state.tree());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ConversationsMsg>,
        event: SupervisionEvent,
        state: &mut ConversationsState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(entry) = state.remove(&cell.get_id()) {
                    // Not restarted: the conversation's state died with it.
                    warn!(actor = %entry.path, conversation_id = entry.conversation_id, reason = %reason, "actor crashed; conversation failed, not restarted");
                    entry.shared.requester_outbox.push_control(Frame::ConversationFailed {
                        conversation_id: entry.conversation_id,
                        reason: format!("internal: the conversation actor crashed: {reason}"),
                    });
                }
            }
            SupervisionEvent::ActorTerminated(cell, ..) => {
                state.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl ConversationsState {
    async fn open(&mut self, myself: &ActorRef<ConversationsMsg>, request: OpenRequest) {
        let request_id = request.request_id;
        if self.closing_waiters.is_some() {
            let error = Frame::error(
                Some(request_id),
                ErrorCode::Draining,
                "the server is shutting down and opens no new conversations",
            );
            reject_open(&request, error);
            return;
        }
        let Some(route) = self.routing.select(&request.subject) else {
            let message = format!(
                "no responder serves subject \"{}\" and conversations.unknown_subject is \"reject\"",
                request.subject
            );
            reject_open(&request, Frame::error(Some(request_id), ErrorCode::NoResponder, message));
            return;
        };
        let conversation_id = self.next_id;
        self.next_id += 1;
        let path = format!("{}/{conversation_id}", self.path);
        let info = ConversationInfo {
            conversation_id,
            subject: request.subject.clone(),
        };
        let participant_slot = Arc::new(Mutex::new(None));
        let shared = Arc::new(ConversationShared::new(info, request.outbox.clone()));
        let args = ConversationArgs {
            shared: shared.clone(),
            path: path.clone(),
            request_id,
            requester: request.requester.clone(),
            route,
            routing: self.routing.clone(),
            config: self.config.clone(),
            participant_slot: participant_slot.clone(),
        };
        match Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_conversation.insert(conversation_id, actor.get_id());
                let entry = Entry {
                    conversation_id,
                    path,
                    actor: actor.clone(),
                    shared,
                    participant: participant_slot,
                };
                self.live.insert(actor.get_id(), entry);
            }
            Err(error) => {
                warn!(actor = %path, conversation_id, subject = %request.subject, %error, "failed to start conversation");
                let message = format!("failed to start a conversation on subject \"{}\": {error}", request.subject);
                reject_open(&request, Frame::error(Some(request_id), ErrorCode::Internal, message));
            }
        }
    }

    fn inject_fault(&mut self, conversation_id: u64, request_id: u64, outbox: Arc<Outbox>) {
        let actor = self
            .by_conversation
            .get(&conversation_id)
            .and_then(|id| self.live.get(id))
            .map(|entry| entry.actor.clone());
        let sent = actor.is_some_and(|actor| {
            actor
                .send_message(ConversationMsg::CrashParticipant {
                    request_id,
                    outbox: outbox.clone(),
                })
                .is_ok()
        });
        if !sent {
            outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::UnknownConversation,
                format!("conversation {conversation_id} is not open"),
            ));
        }
    }

    fn close_all(&mut self, reason: String, reply: RpcReplyPort<()>) {
        info!(actor = %self.path, open_conversations = self.live.len(), %reason, "closing all conversations");
        for entry in self.live.values() {
            let _ = entry.actor.send_message(ConversationMsg::Close { reason: reason.clone() });
        }
        self.closing_waiters.get_or_insert_with(Vec::new).push(reply);
        self.answer_waiters_if_done();
    }

    fn remove(&mut self, actor: &ActorId) -> Option<Entry> {
        let entry = self.live.remove(actor)?;
        self.by_conversation.remove(&entry.conversation_id);
        self.answer_waiters_if_done();
        Some(entry)
    }

    fn answer_waiters_if_done(&mut self) {
        if !self.live.is_empty() {
            return;
        }
        if let Some(waiters) = self.closing_waiters.as_mut() {
            for waiter in waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn tree(&self) -> TreeNode {
        let mut entries: Vec<&Entry> = self.live.values().collect();
        entries.sort_by_key(|entry| entry.conversation_id);
        let children = entries
            .into_iter()
            .map(|entry| {
                let mut node = TreeNode::leaf(entry.path.clone(), "conversation", 0);
                let participant = entry.participant.lock().unwrap_or_else(|poison| poison.into_inner());
                if participant
                    .as_ref()
                    .is_some_and(|cell| cell.get_status() < ActorStatus::Stopping)
                {
                    let restarts = entry.shared.restarts.load(std::sync::atomic::Ordering::Relaxed);
                    node.children
                        .push(TreeNode::leaf(format!("{}/participant", entry.path), "participant", restarts));
                }
                node
            })
            .collect();
        TreeNode {
            path: self.path.clone(),
            kind: "supervisor",
            state: "running",
            restarts: 0,
            children,
        }
    }
}

/// Sends the requester's connection the error that answers its open.
fn reject_open(request: &OpenRequest, error: Frame) {
    let event = ConversationEvent::OpenFailed {
        request_id: request.request_id,
        error,
    };
    let _ = request.requester.send_message(ConnectionMsg::Conversation(event));
}

/// How long broker shutdown waits for conversations to close before it
/// stops the rest of the tree anyway.
pub const SHUTDOWN_CLOSE_TIMEOUT: Duration = Duration::from_millis(conversation::CLOSE_GRACE.as_millis() as u64 + 1_000);
