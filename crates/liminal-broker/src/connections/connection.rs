//! The connection actor: one per accepted TCP connection.
//!
//! Owns the handshake state, the connection's subscriptions and its socket
//! tasks. Supervised by `broker/connections` as a temporary child: a crash
//! closes the socket (the tasks are aborted with the state) and is logged,
//! but the connection is not restarted, because its peer is gone. Channel
//! actors monitor this actor, so its subscriptions disappear with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use liminal_protocol::{ErrorCode, Frame, PROTOCOL_VERSION, negotiate_version};
use liminal_schema::ValidationFailure;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::channels::messages::{ChannelMsg, InflightPermit, PublishBatch, PublishItem};
use crate::connections::context::ConnectionContext;
use crate::connections::io::{AbortOnDrop, read_frames, write_frames};
use crate::connections::subscriptions::schema_error;
use crate::connections::validation::Verdicts;
use crate::outbox::{Outbox, OutboxStats};

/// The messages of a connection actor. Frames come from its reader task;
/// the rest report on the socket tasks.
#[derive(Debug)]
pub enum ConnectionMsg {
    /// Frames from the socket, with the schema checks of their publishes.
    Frames { frames: Vec<Frame>, verdicts: Verdicts },
    /// The peer sent an undecodable or oversized frame; the reader stopped.
    ProtocolViolation { code: ErrorCode, message: String },
    /// The peer closed the socket or it failed while reading.
    PeerClosed(String),
    /// The writer sent everything it will send and closed its half.
    WriterFinished(String),
    /// A channel rejected a subscription this actor had registered.
    SubscriptionRejected { subscription_id: u64 },
    /// Graceful drain: send `Draining`, reject new work, and signal
    /// `drained` once every in-flight publish of this connection has its
    /// ack or error queued.
    Drain {
        deadline_ms: u64,
        drained: tokio::sync::oneshot::Sender<()>,
    },
    /// End of a drain: write what is queued, then close the socket.
    Close,
    /// `limits.hello_timeout` passed since the connection was accepted.
    HelloDeadline,
    /// From a conversation or participant actor (see `conversations`).
    Conversation(crate::conversations::ConversationEvent),
}

/// What the connections supervisor passes to a new connection actor.
pub struct ConnectionArgs {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub id: u64,
    pub path: String,
    pub context: Arc<ConnectionContext>,
    /// Slow-consumer counters shared by all connections.
    pub outbox_stats: Arc<OutboxStats>,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub channel: String,
    pub request: liminal_protocol::StartPosition,
    pub accept_schemas: Option<Vec<String>>,
    /// Offset at which a re-attached subscription continues (see `SubscribeRequest::resume_offset`).
    pub resume_offset: Arc<std::sync::atomic::AtomicU64>,
    /// The client's id of the `Subscribe` request.
    pub request_id: u64,
    /// Whether the channel replied to the request (see `SubscribeRequest::answered`).
    pub answered: Arc<AtomicBool>,
}

pub struct ConnectionState {
    pub(crate) id: u64,
    pub(crate) path: String,
    pub(crate) context: Arc<ConnectionContext>,
    pub(crate) outbox: Arc<Outbox>,
    inflight: Arc<Semaphore>,
    greeted: bool,
    /// Set by `Drain`: publishes, subscribes and other new work are rejected
    /// with the `draining` code.
    draining: bool,
    /// `greeted && !draining`, shared with the reader task, which validates
    /// publishes against channel schemas only while it is set.
    accepting_publishes: Arc<AtomicBool>,
    /// Waits for this connection's in-flight publishes during a drain.
    drain_waiter: Option<AbortOnDrop>,
    /// Closes the outbox once the in-flight publishes have their replies
    /// queued, after the reader stopped (see `close_after_inflight`).
    close_waiter: Option<AbortOnDrop>,
    pub(crate) channels: HashMap<String, crate::channels::ChannelHandle>,
    pub(crate) subscriptions: HashMap<u64, Subscription>,
    /// Conversations this connection opened or serves as a worker.
    pub(crate) conversation_routes: crate::conversations::ConversationRoutes,
    /// Channel actors this connection monitors, by actor id.
    pub(crate) watched: HashMap<ActorId, String>,
    pub(crate) next_subscription_id: u64,
    _reader: AbortOnDrop,
    _writer: AbortOnDrop,
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        // Producers see a closed outbox at once, even if the actor crashed.
        self.outbox.close(None);
    }
}

pub struct ConnectionActor;

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let limits = args.context.config.limits;
        let _ = args.stream.set_nodelay(true);
        let (read_half, write_half) = args.stream.into_split();
        let outbox = Arc::new(Outbox::for_connection(
            limits.max_outbound_bytes,
            args.outbox_stats,
            args.path.clone(),
        ));
        let inflight = Arc::new(Semaphore::new(limits.max_inflight_publishes));
        let accepting_publishes = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_frames(
            read_half,
            limits.max_frame_bytes as usize,
            inflight.clone(),
            limits.max_inflight_publishes,
            myself.clone(),
            args.context.clone(),
            accepting_publishes.clone(),
        ));
        let writer = tokio::spawn(write_frames(
            write_half,
            outbox.clone(),
            myself.clone(),
            limits.write_timeout,
        ));
        info!(actor = %args.path, conn_id = args.id, peer = %args.peer, "actor started");
        // A peer that never completes the handshake would otherwise hold a
        // connection slot forever (and Hello carries the auth token).
        myself.send_after(limits.hello_timeout, || ConnectionMsg::HelloDeadline);
        Ok(ConnectionState {
            id: args.id,
            path: args.path,
            context: args.context,
            outbox,
            inflight,
            greeted: false,
            draining: false,
            accepting_publishes,
            drain_waiter: None,
            close_waiter: None,
            channels: HashMap::new(),
            subscriptions: HashMap::new(),
            conversation_routes: Default::default(),
            watched: HashMap::new(),
            next_subscription_id: 1,
            _reader: AbortOnDrop(reader),
            _writer: AbortOnDrop(writer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, conn_id = state.id, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::Frames { frames, verdicts } => state.handle_frames(&myself, frames, verdicts).await,
            ConnectionMsg::ProtocolViolation { code, message } => {
                warn!(actor = %state.path, conn_id = state.id, code = %code, %message, "closing connection after protocol violation");
                state.close_after_inflight(Some(Frame::error(None, code, message)));
            }
            ConnectionMsg::PeerClosed(reason) => {
                // The peer may only have shut down its sending side and still
                // read, so the publishes it sent get their replies before closing.
                // The writer's end then stops this actor.
                debug!(actor = %state.path, conn_id = state.id, %reason, "peer closed");
                state.close_after_inflight(None);
            }
            ConnectionMsg::WriterFinished(reason) => myself.stop(Some(reason)),
            ConnectionMsg::SubscriptionRejected { subscription_id } => {
                state.subscriptions.remove(&subscription_id);
            }
            ConnectionMsg::Drain { deadline_ms, drained } => state.start_drain(deadline_ms, drained),
            ConnectionMsg::Close => state.outbox.close(None),
            ConnectionMsg::HelloDeadline if !state.greeted => {
                let timeout_ms = state.context.config.limits.hello_timeout.as_millis() as u64;
                warn!(actor = %state.path, conn_id = state.id, timeout_ms, "closing connection: no Hello within the hello timeout");
                state.outbox.close(Some(Frame::error(
                    None,
                    ErrorCode::HelloRequired,
                    format!("no Hello within {timeout_ms} ms (limits.hello_timeout_ms); closing the connection"),
                )));
            }
            ConnectionMsg::HelloDeadline => {}
            ConnectionMsg::Conversation(event) => state.handle_conversation_event(event),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ConnectionMsg>,
        event: SupervisionEvent,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        // Events come from the channel actors this connection monitors.
        if let SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) = event {
            if let Some(channel) = state.watched.remove(&cell.get_id()) {
                myself.unmonitor(cell);
                state.reattach(&myself, &channel).await;
            }
        }
        Ok(())
    }
}

impl ConnectionState {
    async fn handle_frames(&mut self, myself: &ActorRef<ConnectionMsg>, frames: Vec<Frame>, verdicts: Verdicts) {
        // Consecutive publishes are grouped per channel so that a channel
        // actor handles many messages per mailbox receive. Any other frame
        // flushes the groups first, which keeps each channel's view of this
        // connection's frames in order.
        let mut batches: Vec<PublishBatch> = Vec::new();
        let mut verdicts = verdicts.into_iter();
        for frame in frames {
            let verdict = verdicts.next().flatten();
            match frame {
                Frame::Publish {
                    request_id,
                    channel,
                    payload,
                    headers,
                    idempotency_key,
                } => {
                    let permit = InflightPermit::adopt(self.inflight.clone());
                    if let Err(error) = self.check_publish(request_id, &channel, idempotency_key.as_deref()) {
                        self.outbox.push_control(error);
                        continue;
                    }
                    let schema_check = match verdict {
                        Some(result) => result,
                        None => self.check_schema_inline(&channel, &payload),
                    };
                    if let Err(failure) = schema_check {
                        self.outbox.push_control(schema_error(request_id, &channel, &failure));
                        continue;
                    }
                    let item = PublishItem {
                        request_id,
                        payload,
                        headers,
                        idempotency_key,
                        permit,
                    };
                    match batches.iter_mut().find(|batch| batch.channel == channel) {
                        Some(batch) => batch.items.push(item),
                        None => batches.push(PublishBatch {
                            channel,
                            items: vec![item],
                            reply: self.outbox.clone(),
                        }),
                    }
                }
                other => {
                    self.dispatch_publishes(&mut batches).await;
                    self.handle_frame(myself, other).await;
                }
            }
        }
        self.dispatch_publishes(&mut batches).await;
    }

    /// Validates a publish the reader did not check, because it read the
    /// publish before this connection's handshake completed.
    fn check_schema_inline(&self, channel: &str, payload: &[u8]) -> Result<(), ValidationFailure> {
        let schema = self
            .context
            .validation
            .as_ref()
            .and_then(|validation| validation.schema(channel));
        match schema {
            Some(schema) => schema.validate(payload),
            None => Ok(()),
        }
    }

    fn check_publish(&self, request_id: u64, channel: &str, key: Option<&str>) -> Result<(), Frame> {
        if !self.greeted {
            return Err(hello_required(Some(request_id), "Publish"));
        }
        if self.draining {
            return Err(draining_error(request_id, "Publish"));
        }
        // Names in the cache were validated when they were first resolved.
        if !self.channels.contains_key(channel) {
            crate::names::validate_channel_name(channel)
                .map_err(|message| Frame::error(Some(request_id), ErrorCode::InvalidRequest, message))?;
        }
        if let Some(key) = key {
            if key.is_empty() {
                return Err(Frame::error(
                    Some(request_id),
                    ErrorCode::InvalidRequest,
                    "idempotency key is empty; omit it or send 1 to 256 bytes",
                ));
            }
            if key.len() > crate::MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(Frame::error(
                    Some(request_id),
                    ErrorCode::IdempotencyKeyTooLong,
                    format!(
                        "idempotency key of {} bytes is longer than the maximum of {} bytes",
                        key.len(),
                        crate::MAX_IDEMPOTENCY_KEY_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn dispatch_publishes(&mut self, batches: &mut Vec<PublishBatch>) {
        for batch in batches.drain(..) {
            let channel = batch.channel.clone();
            let actor = match self.channel_actor(&channel).await {
                Ok(actor) => actor,
                Err(failure) => {
                    let mut batch = batch;
                    for item in batch.take_items() {
                        self.outbox.push_control(failure.frame(Some(item.request_id)));
                    }
                    continue;
                }
            };
            if let Err(ractor::MessagingErr::SendErr(ChannelMsg::Publish(batch))) =
                actor.send_message(ChannelMsg::Publish(batch))
            {
                // The cached actor died; retry once with the current one.
                // If that fails too, dropping the batch answers every item
                // with `channel_unavailable`.
                self.channels.remove(&channel);
                if let Ok(actor) = self.channel_actor(&channel).await {
                    let _ = actor.send_message(ChannelMsg::Publish(batch));
                }
            }
        }
    }

    async fn handle_frame(&mut self, myself: &ActorRef<ConnectionMsg>, frame: Frame) {
        if let Frame::Hello {
            versions,
            client_name,
            token,
        } = frame
        {
            self.hello(&versions, &client_name, token.as_deref());
            return;
        }
        if !self.greeted {
            self.outbox
                .push_control(hello_required(request_id_of(&frame), frame.name()));
            return;
        }
        if self.draining {
            if let Frame::Subscribe { request_id, .. }
            | Frame::OpenConversation { request_id, .. }
            | Frame::RegisterResponder { request_id, .. } = &frame
            {
                self.outbox.push_control(draining_error(*request_id, frame.name()));
                return;
            }
        }
        match frame {
            Frame::Ping { nonce } => {
                self.outbox.push_control(Frame::Pong { nonce });
            }
            Frame::Pong { .. } => {}
            Frame::Subscribe {
                request_id,
                channel,
                start,
                accept_schemas,
            } => self.subscribe(myself, request_id, channel, start, accept_schemas).await,
            Frame::Unsubscribe {
                request_id,
                subscription_id,
            } => self.unsubscribe(request_id, subscription_id),
            Frame::Ack {
                subscription_id,
                offset,
            } => self.ack(subscription_id, offset),
            Frame::InjectFault { request_id, target } => self.inject_fault(request_id, &target).await,
            frame @ (Frame::OpenConversation { .. }
            | Frame::ConversationMessage { .. }
            | Frame::CloseConversation { .. }
            | Frame::RegisterResponder { .. }
            | Frame::UnregisterResponder { .. }
            | Frame::WorkerReply { .. }
            | Frame::WorkerFail { .. }) => self.handle_conversation_frame(myself, frame),
            other => {
                let name = other.name();
                self.outbox.push_control(Frame::error(
                    request_id_of(&other),
                    ErrorCode::UnexpectedFrame,
                    format!("a client may not send {name} frames to the server"),
                ));
            }
        }
    }

    fn hello(&mut self, versions: &[u16], client_name: &str, token: Option<&str>) {
        if self.greeted {
            self.outbox.push_control(Frame::error(
                None,
                ErrorCode::AlreadyGreeted,
                "Hello was already accepted on this connection",
            ));
            return;
        }
        if let Some(expected) = &self.context.config.auth_token {
            let presented = token.unwrap_or("");
            if !crate::auth::tokens_match(expected, presented) {
                let message = if token.is_none() {
                    "Hello carries no token, but the server requires one"
                } else {
                    "the token in Hello is wrong"
                };
                warn!(actor = %self.path, conn_id = self.id, client = client_name, "rejected Hello: {message}");
                self.outbox
                    .close(Some(Frame::error(None, ErrorCode::Unauthorized, message)));
                return;
            }
        }
        let Some(version) = negotiate_version(versions) else {
            self.outbox.close(Some(Frame::error(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "none of the offered protocol versions {versions:?} is supported; this server speaks version {PROTOCOL_VERSION}"
                ),
            )));
            return;
        };
        self.greeted = true;
        self.accepting_publishes.store(true, Ordering::Release);
        info!(actor = %self.path, conn_id = self.id, client = client_name, version, "handshake complete");
        self.outbox.push_control(Frame::Welcome {
            version,
            server_id: self.context.config.server_id.clone(),
            max_frame_bytes: self.context.config.limits.max_frame_bytes,
        });
    }

    async fn inject_fault(&mut self, request_id: u64, target: &str) {
        if !self.context.config.fault_injection {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::FaultInjectionDisabled,
                "fault injection is disabled on this server (set fault_injection = true to enable it)",
            ));
            return;
        }
        warn!(actor = %self.path, conn_id = self.id, target, "fault injection requested");
        if target == "connection" {
            panic!("fault injected into connection {}", self.id);
        }
        if let Some(conversation_id) = target.strip_prefix("participant/") {
            self.inject_participant_fault(request_id, conversation_id);
            return;
        }
        let Some(channel) = target.strip_prefix("channel/") else {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::InvalidRequest,
                format!("unknown fault target \"{target}\"; expected \"connection\", \"channel/NAME\" or \"participant/CONVERSATION_ID\""),
            ));
            return;
        };
        let mut sent = false;
        for _attempt in 0..2 {
            match self.channel_actor(channel).await {
                Ok(actor) if actor.send_message(ChannelMsg::Crash).is_ok() => {
                    sent = true;
                    break;
                }
                // A stale cached actor: forget it and look the channel up again.
                Ok(_) => {
                    self.channels.remove(channel);
                }
                Err(failure) => {
                    self.outbox.push_control(failure.frame(Some(request_id)));
                    return;
                }
            }
        }
        if sent {
            self.outbox.push_control(Frame::FaultInjected {
                request_id,
                target: target.to_owned(),
            });
        } else {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::ChannelUnavailable,
                format!("channel \"{channel}\" is restarting; retry the fault injection"),
            ));
        }
    }
}

/// The `request_id` of a frame that has one.
pub(crate) fn request_id_of(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Publish { request_id, .. }
        | Frame::Subscribe { request_id, .. }
        | Frame::Unsubscribe { request_id, .. }
        | Frame::OpenConversation { request_id, .. }
        | Frame::RegisterResponder { request_id, .. }
        | Frame::UnregisterResponder { request_id, .. }
        | Frame::InjectFault { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

/// Maximum wait for in-flight publishes to get their replies before a
/// connection whose reader stopped closes anyway.
const CLOSE_INFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl ConnectionState {
    /// Closes the outbox, after `final_frame` if any, once every publish this
    /// connection forwarded has its ack or error queued, or after
    /// `CLOSE_INFLIGHT_TIMEOUT`. Used when the reader stopped: the frames
    /// before a malformed one, or before the peer shut down its sending side,
    /// were handled, so their replies are still owed.
    fn close_after_inflight(&mut self, final_frame: Option<Frame>) {
        if self.close_waiter.is_some() {
            return;
        }
        let inflight = self.inflight.clone();
        let permits = self.context.config.limits.max_inflight_publishes as u32;
        let outbox = self.outbox.clone();
        let waiter = tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_INFLIGHT_TIMEOUT, inflight.acquire_many(permits)).await;
            outbox.close(final_frame);
        });
        self.close_waiter = Some(AbortOnDrop(waiter));
    }

    /// Starts this connection's part of a graceful drain. The waiter takes
    /// every in-flight permit once: all permits free means every publish
    /// this connection forwarded has its ack or error queued in the outbox.
    /// The waiter lives in the state, so if the actor stops first, dropping
    /// it drops `drained` and the broker stops waiting for this connection.
    fn start_drain(&mut self, deadline_ms: u64, drained: tokio::sync::oneshot::Sender<()>) {
        self.draining = true;
        self.accepting_publishes.store(false, Ordering::Release);
        self.outbox.push_control(Frame::Draining { deadline_ms });
        let inflight = self.inflight.clone();
        let permits = self.context.config.limits.max_inflight_publishes as u32;
        let waiter = tokio::spawn(async move {
            // Released at once: the reader must keep reading, so that
            // publishes sent after `Draining` are rejected, not left unread.
            if let Ok(all) = inflight.acquire_many(permits).await {
                drop(all);
            }
            let _ = drained.send(());
        });
        self.drain_waiter = Some(AbortOnDrop(waiter));
        debug!(actor = %self.path, conn_id = self.id, deadline_ms, "connection draining");
    }
}

fn draining_error(request_id: u64, frame_name: &str) -> Frame {
    Frame::error(
        Some(request_id),
        ErrorCode::Draining,
        format!("{frame_name} rejected: the server is shutting down; retry on another server or after it restarts"),
    )
}

fn hello_required(request_id: Option<u64>, frame_name: &str) -> Frame {
    Frame::error(
        request_id,
        ErrorCode::HelloRequired,
        format!("{frame_name} sent before Hello; the first frame on a connection must be Hello"),
    )
}
