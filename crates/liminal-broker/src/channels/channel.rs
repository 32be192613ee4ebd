//! The channel actor: owns one channel's subscriber set and fans published
//! messages out to it.
//!
//! Supervised by `broker/channels` (permanent child: restarted on a crash
//! within the restart intensity). The actor's state is rebuilt on restart:
//! message ids and idempotency receipts live in [`ChannelShared`], which
//! outlives each incarnation (and, for durable channels, in the store), and
//! subscribers re-attach themselves because every subscribing connection
//! monitors the channel actor (see the connection actor). While the channel
//! is down, publishes to it are answered with `channel_unavailable`.
//!
//! Ephemeral channels deliver and acknowledge inside one `handle` call.
//! Durable channels hand the batch to the store and deliver and acknowledge
//! when the store reports it written (see `durable.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liminal_protocol::{ErrorCode, Frame};
use liminal_schema::ChannelSchema;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{debug, info};

use crate::channels::dedup::EphemeralReceipts;
use crate::channels::durable::{DurableBinding, DurableState};
use crate::channels::messages::{ChannelMsg, PublishBatch, SubscribeRequest};
use crate::config::{ChannelConfig, SlowConsumerPolicy};
use crate::connections::io::AbortOnDrop;
use crate::outbox::Outbox;

/// How often a channel purges expired receipts and applies retention.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Channel data that survives restarts of the channel actor.
#[derive(Debug)]
pub struct ChannelShared {
    pub config: ChannelConfig,
    pub path: String,
    pub slow_consumer: SlowConsumerPolicy,
    /// The id the next published message of an ephemeral channel gets. Ids
    /// start at 1 and never go back, even across restarts of the actor.
    /// Durable channels take ids from the store's offsets instead.
    pub next_message_id: AtomicU64,
    pub stats: ChannelStats,
    pub durable: Option<DurableBinding>,
    pub schema: Option<Arc<ChannelSchema>>,
    pub receipts: Mutex<EphemeralReceipts>,
}

impl ChannelShared {
    /// Returns the channel's schema id, if it has a schema.
    pub fn schema_id(&self) -> Option<&str> {
        self.schema.as_deref().map(ChannelSchema::id)
    }
}

/// Per-channel counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub published_messages: AtomicU64,
    pub published_bytes: AtomicU64,
    pub delivered_messages: AtomicU64,
    pub delivered_bytes: AtomicU64,
    pub subscriptions: AtomicU64,
    pub dedup_hits: AtomicU64,
}

/// The way a subscriber currently receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Receives each message as the channel handles it.
    Live,
    /// A replay task is sending it stored messages; live messages are
    /// skipped until the replay reaches the head of the stream.
    CatchingUp,
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub outbox: Arc<Outbox>,
    pub mode: Mode,
    /// Increases each time a replay starts, so a stale replay report is ignored.
    pub generation: u64,
    /// Named durable consumer this subscription acknowledges for.
    pub consumer: Option<String>,
    /// Highest offset acknowledged through this subscription.
    pub acked: u64,
    /// Next offset to give this subscription, shared with its connection
    /// (see `SubscribeRequest::resume_offset`). Advanced on durable channels only.
    pub resume_offset: Arc<AtomicU64>,
    /// Cancel flag shared with the running replay task, if any. It is set
    /// under its lock when the subscription ends, so no replayed `Deliver`
    /// can follow the `Unsubscribed` frame.
    pub replay_cancelled: Option<Arc<Mutex<bool>>>,
}

/// Subscriptions keyed by (connection id, subscription id).
pub(crate) type SubscriberKey = (u64, u64);

pub struct ChannelState {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) subscribers: HashMap<SubscriberKey, Subscriber>,
    /// Connection actors this channel monitors, with their connection id.
    monitored: HashMap<ActorId, u64>,
    pub(crate) durable: Option<DurableState>,
    _ticker: AbortOnDrop,
}

impl Drop for ChannelState {
    /// Stops the replays of a channel actor that ended, crashed or not. Its
    /// subscribers re-attach to the restarted actor at their resume offset,
    /// and a replay that kept running would send them those messages twice.
    fn drop(&mut self) {
        for subscriber in self.subscribers.values() {
            if let Some(cancelled) = &subscriber.replay_cancelled {
                *cancelled.lock().unwrap_or_else(|poison| poison.into_inner()) = true;
            }
        }
    }
}

pub struct ChannelActor;

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = Arc<ChannelShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<ChannelMsg>,
        shared: Arc<ChannelShared>,
    ) -> Result<ChannelState, ActorProcessingErr> {
        let durable = match &shared.durable {
            Some(binding) => Some(DurableState::recover(binding).await?),
            None => None,
        };
        let ticker_target = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(MAINTENANCE_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if ticker_target.send_message(ChannelMsg::Tick).is_err() {
                    return;
                }
            }
        });
        info!(
            actor = %shared.path,
            channel = %shared.config.name,
            durable = durable.is_some(),
            last_offset = durable.as_ref().map(|state| state.last_appended),
            "actor started"
        );
        Ok(ChannelState {
            shared,
            subscribers: HashMap::new(),
            monitored: HashMap::new(),
            durable,
            _ticker: AbortOnDrop(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ChannelMsg>,
        state: &mut ChannelState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.shared.path, channel = %state.shared.config.name, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ChannelMsg>,
        message: ChannelMsg,
        state: &mut ChannelState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChannelMsg::Publish(batch) => {
                if state.durable.is_some() {
                    state.publish_durable(&myself, batch);
                } else {
                    state.publish_ephemeral(batch);
                }
            }
            ChannelMsg::Appended { batch, first_offset, result } => {
                state.appended(&myself, batch, first_offset, result)?;
            }
            ChannelMsg::Subscribe(request) => state.subscribe(&myself, request),
            ChannelMsg::Unsubscribe {
                connection_id,
                subscription_id,
                request_id,
                outbox,
            } => {
                state.remove_subscriber((connection_id, subscription_id));
                if let Some(request_id) = request_id {
                    outbox.push_control(Frame::Unsubscribed {
                        request_id,
                        subscription_id,
                    });
                }
            }
            ChannelMsg::Ack {
                connection_id,
                subscription_id,
                offset,
            } => state.ack(&myself, (connection_id, subscription_id), offset),
            ChannelMsg::CursorStored { consumer, offset } => state.cursor_stored(&consumer, offset),
            ChannelMsg::ConnectionGone { connection_id } => state.remove_connection(connection_id),
            ChannelMsg::ReplayDone {
                key,
                generation,
                next_offset,
            } => state.replay_done(&myself, key, generation, next_offset),
            ChannelMsg::ReplayFailed { key, generation, reason } => {
                state.replay_failed(key, generation, &reason);
            }
            ChannelMsg::Tick => state.maintain(),
            ChannelMsg::Crash => {
                panic!("fault injected into channel \"{}\"", state.shared.config.name)
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ChannelMsg>,
        event: SupervisionEvent,
        state: &mut ChannelState,
    ) -> Result<(), ActorProcessingErr> {
        // The only events a channel receives come from the connection actors
        // it monitors: a connection that stopped takes its subscriptions along.
        if let SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) = event {
            if let Some(connection_id) = state.monitored.remove(&cell.get_id()) {
                myself.unmonitor(cell);
                // ractor 0.16 hands supervision events to an actor ahead of its
                // queued messages (`ActorCell::listen_in_priority`), so the
                // connection's last acks may still be in the mailbox. Removing
                // its subscriptions through the mailbox handles those first.
                let _ = myself.send_message(ChannelMsg::ConnectionGone { connection_id });
            }
        }
        Ok(())
    }
}

impl ChannelState {
    fn publish_ephemeral(&mut self, mut batch: PublishBatch) {
        let now = Instant::now();
        let window = self.shared.config.dedup_window;
        let mut items = batch.take_items();

        // Keyed repeats within the window are acked as duplicates and
        // never reach a subscriber. Only this actor assigns ids, so the id an
        // item will get is the counter plus the number of items kept before it.
        let base_id = self.shared.next_message_id.load(Ordering::Relaxed);
        let mut kept = Vec::with_capacity(items.len());
        {
            let mut receipts = self.shared.receipts.lock().unwrap_or_else(|poison| poison.into_inner());
            for item in items.drain(..) {
                if let Some(key) = &item.idempotency_key {
                    if let Some(original) = receipts.lookup(key, window, now) {
                        self.shared.stats.dedup_hits.fetch_add(1, Ordering::Relaxed);
                        batch.reply.push_control(duplicate_ack(item.request_id, original, None));
                        continue;
                    }
                    receipts.insert(key.clone(), base_id + kept.len() as u64, now);
                }
                kept.push(item);
            }
        }
        let items = kept;
        if items.is_empty() {
            return;
        }

        let first_id = self
            .shared
            .next_message_id
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.count_published(&items);
        let deliveries = self.fan_out(&items, first_id, None);
        let acks = items.into_iter().enumerate().map(|(index, item)| Frame::PublishAck {
            request_id: item.request_id,
            message_id: first_id + index as u64,
            delivered: deliveries[index] > 0,
            offset: None,
            duplicate: false,
        });
        batch.reply.push_controls(acks);
    }

    pub(crate) fn count_published(&self, items: &[crate::channels::messages::PublishItem]) {
        let payload_bytes: u64 = items.iter().map(|item| item.payload.len() as u64).sum();
        let stats = &self.shared.stats;
        stats.published_messages.fetch_add(items.len() as u64, Ordering::Relaxed);
        stats.published_bytes.fetch_add(payload_bytes, Ordering::Relaxed);
    }

    /// Offers messages `first_id..` to every live subscriber and returns,
    /// per message, how many subscribers accepted it. Under `durable_policy`
    /// (durable channels), a subscriber whose outbox is full is switched to
    /// catching up from the store instead of losing messages; the returned
    /// list names them with the first offset they missed.
    pub(crate) fn fan_out(
        &mut self,
        items: &[crate::channels::messages::PublishItem],
        first_id: u64,
        mut lagging: Option<&mut Vec<(SubscriberKey, u64)>>,
    ) -> Vec<u32> {
        let mut deliveries = vec![0u32; items.len()];
        let mut dead = Vec::new();
        let stats = &self.shared.stats;
        for (key, subscriber) in &self.subscribers {
            if subscriber.mode != Mode::Live {
                continue;
            }
            let frames = items.iter().enumerate().map(|(index, item)| Frame::Deliver {
                subscription_id: key.1,
                message_id: first_id + index as u64,
                payload: item.payload.clone(),
                headers: item.headers.clone(),
            });
            let accepted = match lagging.as_deref_mut() {
                Some(lagging) => {
                    let accepted = subscriber.outbox.push_deliveries_until_full(frames);
                    if let Some(accepted) = accepted {
                        subscriber.resume_offset.fetch_max(first_id + accepted as u64, Ordering::Relaxed);
                        if accepted < items.len() {
                            lagging.push((*key, first_id + accepted as u64));
                        }
                    }
                    accepted
                }
                None => subscriber.outbox.push_deliveries(frames, self.shared.slow_consumer),
            };
            match accepted {
                Some(accepted) => {
                    for count in &mut deliveries[..accepted] {
                        *count += 1;
                    }
                    stats.delivered_messages.fetch_add(accepted as u64, Ordering::Relaxed);
                    let bytes: u64 = items[..accepted].iter().map(|item| item.payload.len() as u64).sum();
                    stats.delivered_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                None => dead.push(*key),
            }
        }
        for key in dead {
            self.remove_subscriber(key);
        }
        deliveries
    }

    fn subscribe(&mut self, myself: &ActorRef<ChannelMsg>, request: SubscribeRequest) {
        if let Err(frame) = self.check_schema(&request) {
            if request.request_id.is_some() {
                request.outbox.push_control(frame);
            }
            reject_subscription(&request);
            return;
        }
        let key = (request.connection_id, request.subscription_id);
        let placement = match self.durable.is_some() {
            true => match self.place_durable_subscriber(&request) {
                Ok(placement) => placement,
                Err(frame) => {
                    if request.request_id.is_some() {
                        request.outbox.push_control(frame);
                    }
                    reject_subscription(&request);
                    return;
                }
            },
            false => match request.start {
                liminal_protocol::StartPosition::Latest => crate::channels::durable::Placement::live(),
                ref other => {
                    if let Some(request_id) = request.request_id {
                        request.outbox.push_control(Frame::error(
                            Some(request_id),
                            ErrorCode::InvalidStartPosition,
                            format!(
                                "channel \"{}\" is ephemeral and keeps no history, so it cannot start at {}; subscribe from latest, or declare the channel with durable = true",
                                self.shared.config.name,
                                describe_start(other)
                            ),
                        ));
                    }
                    reject_subscription(&request);
                    return;
                }
            },
        };

        let cell_id = request.connection.get_id();
        self.monitored.entry(cell_id).or_insert_with(|| {
            myself.monitor(request.connection.clone());
            request.connection_id
        });
        let subscriber = Subscriber {
            outbox: request.outbox.clone(),
            mode: Mode::Live,
            generation: 0,
            consumer: placement.consumer.clone(),
            acked: placement.acked,
            replay_cancelled: None,
            resume_offset: request.resume_offset.clone(),
        };
        if let (Some(start_offset), true) = (placement.start_offset, self.durable.is_some()) {
            subscriber.resume_offset.fetch_max(start_offset, Ordering::Relaxed);
        }
        if self.subscribers.insert(key, subscriber).is_none() {
            self.shared.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        debug!(
            actor = %self.shared.path,
            conn_id = request.connection_id,
            subscription_id = request.subscription_id,
            reattach = request.request_id.is_none(),
            start_offset = placement.start_offset,
            "subscriber registered"
        );
        if let Some(request_id) = request.request_id {
            request.outbox.push_control(Frame::Subscribed {
                request_id,
                subscription_id: request.subscription_id,
                schema_id: self.shared.schema_id().map(str::to_owned),
                start_offset: placement.start_offset,
                truncated: placement.truncated,
            });
            request.answered.store(true, Ordering::Release);
        }
        if let Some(from) = placement.replay_from {
            self.start_replay(myself, key, from);
        }
    }

    fn check_schema(&self, request: &SubscribeRequest) -> Result<(), Frame> {
        let Some(accepted) = &request.accept_schemas else {
            return Ok(());
        };
        let channel_id = self.shared.schema_id();
        if channel_id.is_some_and(|id| accepted.iter().any(|candidate| candidate == id)) {
            return Ok(());
        }
        let described = channel_id.map_or_else(|| "no schema".to_owned(), |id| format!("schema {id}"));
        Err(Frame::error(
            request.request_id,
            ErrorCode::SchemaMismatch,
            format!(
                "channel \"{}\" has {described}, which is not among the accepted schemas {accepted:?}",
                self.shared.config.name
            ),
        ))
    }

    pub(crate) fn remove_subscriber(&mut self, key: SubscriberKey) -> Option<Subscriber> {
        let removed = self.subscribers.remove(&key)?;
        if let Some(cancelled) = &removed.replay_cancelled {
            *cancelled.lock().unwrap_or_else(|poison| poison.into_inner()) = true;
        }
        self.shared.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        Some(removed)
    }

    fn remove_connection(&mut self, connection_id: u64) {
        let keys: Vec<SubscriberKey> = self
            .subscribers
            .keys()
            .filter(|key| key.0 == connection_id)
            .copied()
            .collect();
        for key in keys {
            self.remove_subscriber(key);
        }
        debug!(actor = %self.shared.path, conn_id = connection_id, "connection gone, subscriptions removed");
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        self.shared
            .receipts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .purge(self.shared.config.dedup_window, now);
        if self.durable.is_some() {
            self.maintain_durable();
        }
    }
}

/// Notifies the connection that a subscription it registered was rejected,
/// so it removes the id (the client already got the `Error`).
fn reject_subscription(request: &SubscribeRequest) {
    request.answered.store(true, Ordering::Release);
    let _ = request
        .connection
        .send_message(crate::connections::connection::ConnectionMsg::SubscriptionRejected {
            subscription_id: request.subscription_id,
        });
}

/// Describes a start position in the words of the CLI flags.
fn describe_start(start: &liminal_protocol::StartPosition) -> String {
    match start {
        liminal_protocol::StartPosition::Latest => "latest".to_owned(),
        liminal_protocol::StartPosition::Earliest => "earliest".to_owned(),
        liminal_protocol::StartPosition::Offset(offset) => format!("offset {offset}"),
        liminal_protocol::StartPosition::Consumer(name) => format!("the position of named consumer \"{name}\""),
    }
}

/// Builds the ack for a publish whose idempotency key was already used.
pub(crate) fn duplicate_ack(request_id: u64, original_id: u64, offset: Option<u64>) -> Frame {
    Frame::PublishAck {
        request_id,
        message_id: original_id,
        delivered: false,
        offset,
        duplicate: true,
    }
}
