//! The channel actor: owns one channel's subscriber set and fans published
//! messages out to it.
//!
//! Supervised by `broker/channels` (permanent child: restarted on a crash
//! within the restart intensity). The actor's state is rebuilt on restart:
//! the message id counter lives in [`ChannelShared`], which outlives each
//! incarnation, and subscribers re-attach themselves because every
//! subscribing connection monitors the channel actor (see the connection
//! actor). While the channel is down, publishes to it are answered with
//! `channel_unavailable`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use liminal_protocol::{ErrorCode, Frame};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{debug, info};

use crate::channels::messages::{ChannelMsg, PublishBatch, SubscribeRequest};
use crate::config::{ChannelConfig, SlowConsumerPolicy};
use crate::outbox::Outbox;

/// Channel data that survives restarts of the channel actor.
#[derive(Debug)]
pub struct ChannelShared {
    pub config: ChannelConfig,
    pub path: String,
    pub slow_consumer: SlowConsumerPolicy,
    /// The id the next published message gets. Ids start at 1 and never
    /// go back, even across restarts of the actor.
    pub next_message_id: AtomicU64,
    pub stats: ChannelStats,
}

/// Per-channel counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub published_messages: AtomicU64,
    pub published_bytes: AtomicU64,
    pub delivered_messages: AtomicU64,
    pub delivered_bytes: AtomicU64,
    pub subscriptions: AtomicU64,
}

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
}

/// Subscriptions keyed by (connection id, subscription id).
type SubscriberKey = (u64, u64);

pub struct ChannelState {
    shared: Arc<ChannelShared>,
    subscribers: HashMap<SubscriberKey, Subscriber>,
    /// Connection actors this channel monitors, with their subscription count.
    monitored: HashMap<ActorId, (u64, usize)>,
}

pub struct ChannelActor;

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = Arc<ChannelShared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<ChannelMsg>,
        shared: Arc<ChannelShared>,
    ) -> Result<ChannelState, ActorProcessingErr> {
        info!(actor = %shared.path, channel = %shared.config.name, "actor started");
        Ok(ChannelState {
            shared,
            subscribers: HashMap::new(),
            monitored: HashMap::new(),
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
            ChannelMsg::Publish(batch) => state.publish(batch),
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
            ChannelMsg::Ack { .. } => {
                // Ephemeral channels keep no consumer positions.
            }
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
            if let Some((connection_id, _)) = state.monitored.remove(&cell.get_id()) {
                myself.unmonitor(cell);
                state.remove_connection(connection_id);
            }
        }
        Ok(())
    }
}

impl ChannelState {
    fn publish(&mut self, mut batch: PublishBatch) {
        let items = batch.take_items();
        let first_id = self
            .shared
            .next_message_id
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let payload_bytes: u64 = items.iter().map(|item| item.payload.len() as u64).sum();
        let stats = &self.shared.stats;
        stats.published_messages.fetch_add(items.len() as u64, Ordering::Relaxed);
        stats.published_bytes.fetch_add(payload_bytes, Ordering::Relaxed);

        // deliveries[i] counts the subscribers that accepted message i.
        let mut deliveries = vec![0u32; items.len()];
        let mut dead = Vec::new();
        for (key, subscriber) in &self.subscribers {
            let frames = items.iter().enumerate().map(|(index, item)| Frame::Deliver {
                subscription_id: key.1,
                message_id: first_id + index as u64,
                payload: item.payload.clone(),
                headers: item.headers.clone(),
            });
            match subscriber.outbox.push_deliveries(frames, self.shared.slow_consumer) {
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

        for (index, item) in items.into_iter().enumerate() {
            batch.reply.push_control(Frame::PublishAck {
                request_id: item.request_id,
                message_id: first_id + index as u64,
                delivered: deliveries[index] > 0,
                offset: None,
                duplicate: false,
            });
        }
    }

    fn subscribe(&mut self, myself: &ActorRef<ChannelMsg>, request: SubscribeRequest) {
        let key = (request.connection_id, request.subscription_id);
        if let Some(accepted) = &request.accept_schemas {
            // Ephemeral channels without a schema have no id to match.
            if !accepted.is_empty() {
                if let Some(request_id) = request.request_id {
                    request.outbox.push_control(Frame::error(
                        Some(request_id),
                        ErrorCode::SchemaMismatch,
                        format!(
                            "channel \"{}\" has no schema, but the subscription accepts only {:?}",
                            self.shared.config.name, accepted
                        ),
                    ));
                }
                return;
            }
        }
        let cell_id = request.connection.get_id();
        let entry = self.monitored.entry(cell_id).or_insert_with(|| {
            myself.monitor(request.connection.clone());
            (request.connection_id, 0)
        });
        if self.subscribers.insert(key, Subscriber { outbox: request.outbox.clone() }).is_none() {
            entry.1 += 1;
            self.shared.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        debug!(
            actor = %self.shared.path,
            conn_id = request.connection_id,
            subscription_id = request.subscription_id,
            reattach = request.request_id.is_none(),
            "subscriber registered"
        );
        if let Some(request_id) = request.request_id {
            request.outbox.push_control(Frame::Subscribed {
                request_id,
                subscription_id: request.subscription_id,
                schema_id: None,
                start_offset: None,
                truncated: false,
            });
        }
    }

    fn remove_subscriber(&mut self, key: SubscriberKey) -> Option<Subscriber> {
        let removed = self.subscribers.remove(&key)?;
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
}
