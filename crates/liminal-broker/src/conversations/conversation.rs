//! The conversation actor (`broker/conversations/<id>`): owns one
//! conversation's lifecycle and its participant.
//!
//! It spawns the participant linked to itself before the requester learns
//! that the conversation is open, so no message is forwarded to a
//! participant that is not running. It monitors the requester's connection actor: when
//! that connection goes away, the conversation closes and the participant
//! stops. Lifecycle: created → active → closing → closed, or → failed when
//! the participant crashes under the `fail` policy (or past the restart
//! intensity under `restart`). Every transition is logged with
//! `conversation_id`, `subject` and the actor path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use liminal_protocol::{ErrorCode, Frame};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use tracing::{info, warn};

use crate::config::{BrokerConfig, CrashPolicy};
use crate::connections::connection::ConnectionMsg;
use crate::conversations::ConversationEvent;
use crate::conversations::participant::{ConversationShared, ParticipantActor, ParticipantArgs, ParticipantMsg};
use crate::conversations::routing::{Route, Routing};
use crate::outbox::Outbox;
use crate::supervision::RestartBudget;

/// How long a closing participant may take for `on_close` (or to flush its
/// queued messages) before it is stopped without waiting further.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Lifecycle states of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Created,
    Active,
    Closing,
    Closed,
    Failed,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Created => "created",
            Lifecycle::Active => "active",
            Lifecycle::Closing => "closing",
            Lifecycle::Closed => "closed",
            Lifecycle::Failed => "failed",
        }
    }
}

/// The messages of a conversation actor.
#[derive(Debug)]
pub enum ConversationMsg {
    /// A message of the requester, from its connection actor.
    Message { message_id: u64, payload: Bytes },
    /// Close normally: requested by the client, or broker shutdown.
    Close { reason: String },
    /// Fault injection: crash the participant and push `FaultInjected` (or
    /// an error) into `outbox`.
    CrashParticipant { request_id: u64, outbox: Arc<Outbox> },
    /// Timer: close if the conversation has been idle long enough.
    IdleCheck,
    /// Timer: the closing participant ran out of time.
    CloseDeadline,
}

pub(crate) struct ConversationArgs {
    pub shared: Arc<ConversationShared>,
    pub path: String,
    pub request_id: u64,
    pub requester: ActorRef<ConnectionMsg>,
    pub route: Route,
    pub routing: Arc<Routing>,
    pub config: Arc<BrokerConfig>,
    /// Shared with the supervisor, which reads it for the tree.
    pub participant_slot: Arc<std::sync::Mutex<Option<ActorCell>>>,
}

type Timer = tokio::task::JoinHandle<Result<(), ractor::MessagingErr<ConversationMsg>>>;

pub(crate) struct ConversationState {
    shared: Arc<ConversationShared>,
    path: String,
    lifecycle: Lifecycle,
    myself: ActorCell,
    requester: ActorRef<ConnectionMsg>,
    requester_gone: bool,
    participant: Option<ActorRef<ParticipantMsg>>,
    participant_slot: Arc<std::sync::Mutex<Option<ActorCell>>>,
    routing: Arc<Routing>,
    config: Arc<BrokerConfig>,
    budget: RestartBudget,
    close_reason: String,
    timers: Vec<Timer>,
}

impl Drop for ConversationState {
    fn drop(&mut self) {
        for timer in &self.timers {
            timer.abort();
        }
        self.myself.unmonitor(self.requester.get_cell());
        // Frees the route and the per-connection count on the requester's
        // side, whatever way this actor ended.
        let _ = self
            .requester
            .send_message(ConnectionMsg::Conversation(ConversationEvent::Ended {
                conversation_id: self.shared.info.conversation_id,
            }));
    }
}

pub(crate) struct ConversationActor;

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConversationMsg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        info!(actor = %args.path, conversation_id = args.shared.info.conversation_id, subject = %args.shared.info.subject, "actor started");
        myself.monitor(args.requester.get_cell());
        let mut state = ConversationState {
            shared: args.shared,
            path: args.path,
            lifecycle: Lifecycle::Created,
            myself: myself.get_cell(),
            requester: args.requester,
            requester_gone: false,
            participant: None,
            participant_slot: args.participant_slot,
            routing: args.routing,
            budget: RestartBudget::new(args.config.restart_intensity),
            config: args.config,
            close_reason: String::new(),
            timers: Vec::new(),
        };
        state.log_transition(Lifecycle::Created, &args.route.describe());
        state.start_participant(&myself, args.route).await?;

        // The requester's connection registers the route before it sends
        // `ConversationOpened`, so every later frame of the client finds it.
        let opened = ConnectionMsg::Conversation(ConversationEvent::Opened {
            request_id: args.request_id,
            conversation_id: state.shared.info.conversation_id,
            conversation: myself.clone(),
        });
        // Counted before the requester can learn the id, like the end in `finish`.
        let opened_count = &state.routing.stats.opened;
        opened_count.fetch_add(1, Ordering::Relaxed);
        if state.requester.get_status() != ActorStatus::Running || state.requester.send_message(opened).is_err() {
            opened_count.fetch_sub(1, Ordering::Relaxed);
            return Err("the requester's connection closed before the conversation opened".into());
        }
        state.shared.touch();
        state.set_lifecycle(Lifecycle::Active);
        let idle_timeout = state.config.conversations.idle_timeout;
        state.timers.push(myself.send_after(idle_timeout, || ConversationMsg::IdleCheck));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConversationMsg>,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, conversation_id = state.shared.info.conversation_id, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConversationMsg>,
        message: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConversationMsg::Message { message_id, payload } => state.forward(message_id, payload),
            ConversationMsg::Close { reason } => state.begin_close(&myself, reason),
            ConversationMsg::CrashParticipant { request_id, outbox } => state.crash_participant(request_id, &outbox),
            ConversationMsg::IdleCheck => state.check_idle(&myself),
            ConversationMsg::CloseDeadline => {
                if state.lifecycle == Lifecycle::Closing {
                    warn!(actor = %state.path, conversation_id = state.shared.info.conversation_id, grace_ms = CLOSE_GRACE.as_millis() as u64, "participant did not stop within the close grace; stopping it");
                    if let Some(participant) = state.participant.take() {
                        participant.kill();
                    }
                    state.finish(&myself, Lifecycle::Closed, None);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ConversationMsg>,
        event: SupervisionEvent,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        if cell.get_id() == state.requester.get_id() {
            state.requester_gone = true;
            state.begin_close(&myself, "requester disconnected".to_owned());
            return Ok(());
        }
        let is_participant = state.participant.as_ref().is_some_and(|participant| participant.get_id() == cell.get_id());
        if !is_participant {
            return Ok(());
        }
        state.participant = None;
        state.set_participant_slot(None);
        match failure {
            Some(reason) => state.participant_failed(&myself, reason).await,
            None if state.lifecycle == Lifecycle::Closing => state.finish(&myself, Lifecycle::Closed, None),
            // A participant never stops on its own while active, but if it
            // does, the conversation cannot continue.
            None => state.finish(&myself, Lifecycle::Closed, Some("participant stopped".to_owned())),
        }
        Ok(())
    }
}

impl ConversationState {
    fn conversation_id(&self) -> u64 {
        self.shared.info.conversation_id
    }

    fn log_transition(&self, to: Lifecycle, detail: &str) {
        info!(
            actor = %self.path,
            conversation_id = self.conversation_id(),
            subject = %self.shared.info.subject,
            state = to.as_str(),
            detail,
            "conversation state changed"
        );
    }

    fn set_lifecycle(&mut self, to: Lifecycle) {
        if self.lifecycle != to {
            self.lifecycle = to;
            let detail = if to == Lifecycle::Closing { self.close_reason.clone() } else { String::new() };
            self.log_transition(to, &detail);
        }
    }

    fn set_participant_slot(&self, cell: Option<ActorCell>) {
        *self.participant_slot.lock().unwrap_or_else(|poison| poison.into_inner()) = cell;
    }

    /// Spawns a participant linked to this actor and queues its `Open`, so
    /// the open hook runs before any message.
    async fn start_participant(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        route: Route,
    ) -> Result<(), ActorProcessingErr> {
        let args = ParticipantArgs {
            shared: self.shared.clone(),
            path: format!("{}/participant", self.path),
            route,
        };
        let (participant, _) = Actor::spawn_linked(None, ParticipantActor, args, myself.get_cell()).await?;
        participant.send_message(ParticipantMsg::Open)?;
        self.set_participant_slot(Some(participant.get_cell()));
        self.participant = Some(participant);
        Ok(())
    }

    fn forward(&mut self, message_id: u64, payload: Bytes) {
        let conversation_id = self.conversation_id();
        let outbox = &self.shared.requester_outbox;
        let participant = match (&self.participant, self.lifecycle) {
            (Some(participant), Lifecycle::Active) => participant,
            _ => {
                outbox.push_control(Frame::error(
                    None,
                    ErrorCode::UnknownConversation,
                    format!("conversation {conversation_id}: message {message_id} arrived while the conversation is {}; it was discarded", self.lifecycle.as_str()),
                ));
                return;
            }
        };
        let limit = self.config.conversations.max_queued_messages;
        if self.shared.queued.load(Ordering::Relaxed) >= limit {
            outbox.push_control(Frame::conversation_error(
                conversation_id,
                ErrorCode::ConversationQueueFull,
                format!("conversation {conversation_id}: message {message_id} discarded because {limit} messages are already queued (conversations.max_queued_messages); send it again after replies arrive"),
            ));
            return;
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.touch();
        if participant.send_message(ParticipantMsg::Message { message_id, payload }).is_err() {
            // The participant just died; its exit event follows and decides
            // the conversation's fate. This message is lost with it.
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves to `closing`: the participant handles what it has queued, runs
    /// its close hook and stops; its exit then closes the conversation.
    fn begin_close(&mut self, myself: &ActorRef<ConversationMsg>, reason: String) {
        if !matches!(self.lifecycle, Lifecycle::Created | Lifecycle::Active) {
            return;
        }
        self.close_reason = reason.clone();
        self.set_lifecycle(Lifecycle::Closing);
        let Some(participant) = &self.participant else {
            self.finish(myself, Lifecycle::Closed, None);
            return;
        };
        if participant.send_message(ParticipantMsg::Close { reason }).is_err() {
            // Its exit event is on the way and finishes the close.
            return;
        }
        self.timers.push(myself.send_after(CLOSE_GRACE, || ConversationMsg::CloseDeadline));
    }

    fn check_idle(&mut self, myself: &ActorRef<ConversationMsg>) {
        if self.lifecycle != Lifecycle::Active {
            return;
        }
        let timeout = self.config.conversations.idle_timeout;
        let idle = self.shared.idle_for();
        if idle >= timeout {
            self.begin_close(myself, "idle timeout".to_owned());
            return;
        }
        self.timers.retain(|timer| !timer.is_finished());
        self.timers.push(myself.send_after(timeout - idle, || ConversationMsg::IdleCheck));
    }

    fn crash_participant(&mut self, request_id: u64, outbox: &Outbox) {
        let target = format!("participant/{}", self.conversation_id());
        let sent = match (&self.participant, self.lifecycle) {
            (Some(participant), Lifecycle::Active) => participant.send_message(ParticipantMsg::Crash).is_ok(),
            _ => false,
        };
        if sent {
            warn!(actor = %self.path, conversation_id = self.conversation_id(), "fault injection: crashing the participant");
            outbox.push_control(Frame::FaultInjected { request_id, target });
        } else {
            outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::UnknownConversation,
                format!("conversation {} has no running participant to crash (it is {})", self.conversation_id(), self.lifecycle.as_str()),
            ));
        }
    }

    async fn participant_failed(&mut self, myself: &ActorRef<ConversationMsg>, reason: String) {
        self.routing.stats.participant_crashes.fetch_add(1, Ordering::Relaxed);
        warn!(actor = %format!("{}/participant", self.path), conversation_id = self.conversation_id(), subject = %self.shared.info.subject, %reason, "actor crashed");
        if self.lifecycle == Lifecycle::Closing {
            // The requester already asked to end the conversation.
            self.finish(myself, Lifecycle::Closed, None);
            return;
        }
        if self.lifecycle != Lifecycle::Active {
            return;
        }
        let policy = self.config.conversations.crash_policy(&self.shared.info.subject);
        if policy == CrashPolicy::Restart {
            match self.restart_participant(myself).await {
                Ok(()) => {
                    self.shared.requester_outbox.push_control(Frame::ConversationNotice {
                        conversation_id: self.conversation_id(),
                        notice: format!("the participant crashed ({reason}) and was restarted; messages it had not finished were lost"),
                    });
                    return;
                }
                Err(why) => {
                    warn!(actor = %self.path, conversation_id = self.conversation_id(), %why, "participant not restarted");
                    self.finish(myself, Lifecycle::Failed, Some(format!("participant crashed: {reason}; not restarted: {why}")));
                    return;
                }
            }
        }
        self.finish(myself, Lifecycle::Failed, Some(format!("participant crashed: {reason}")));
    }

    async fn restart_participant(&mut self, myself: &ActorRef<ConversationMsg>) -> Result<(), String> {
        if !self.budget.allow_restart(Instant::now()) {
            let intensity = self.config.restart_intensity;
            return Err(format!(
                "restart intensity exceeded ({} restarts within {} ms)",
                intensity.max_restarts,
                intensity.within.as_millis()
            ));
        }
        let route = self
            .routing
            .select(&self.shared.info.subject)
            .ok_or_else(|| "no responder for the subject any more".to_owned())?;
        // Messages in the crashed participant's mailbox are gone.
        self.shared.queued.store(0, Ordering::Relaxed);
        let description = route.describe();
        self.start_participant(myself, route).await.map_err(|error| error.to_string())?;
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        info!(
            actor = %format!("{}/participant", self.path),
            conversation_id = self.conversation_id(),
            restarts = self.budget.total_restarts(),
            route = %description,
            "actor restarted"
        );
        Ok(())
    }

    /// Ends the conversation: sends the final frame to the requester (unless
    /// its connection is gone) and stops this actor, which kills a
    /// participant still running.
    /// `failure` is the `ConversationFailed` reason for `Failed`, or an
    /// override of the close reason for `Closed`.
    fn finish(&mut self, myself: &ActorRef<ConversationMsg>, outcome: Lifecycle, failure: Option<String>) {
        // Counted before the requester can learn of the end, so metrics read
        // after the last frame include this conversation.
        let ended = match outcome {
            Lifecycle::Failed => &self.routing.stats.failed,
            _ => &self.routing.stats.closed,
        };
        ended.fetch_add(1, Ordering::Relaxed);
        let conversation_id = self.conversation_id();
        let reason = failure.unwrap_or_else(|| self.close_reason.clone());
        let frame = match outcome {
            Lifecycle::Failed => Frame::ConversationFailed {
                conversation_id,
                reason: reason.clone(),
            },
            _ => Frame::ConversationClosed {
                conversation_id,
                reason: reason.clone(),
            },
        };
        if !self.requester_gone {
            // The connection frees the route and its count before the
            // client can learn of the end and open another conversation.
            let ended = ConversationEvent::Ended { conversation_id };
            let _ = self.requester.send_message(ConnectionMsg::Conversation(ended));
            self.shared.requester_outbox.push_control(frame);
        }
        self.lifecycle = outcome;
        self.log_transition(outcome, &reason);
        myself.stop(Some(reason));
    }
}
