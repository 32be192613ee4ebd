//! Channel lookups and subscription handling of the connection actor,
//! including re-attaching subscriptions after a channel actor restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use liminal_protocol::{ErrorCode, Frame, StartPosition};
use liminal_schema::ValidationFailure;
use ractor::ActorRef;
use tracing::{info, warn};

use crate::channels::messages::{ChannelMsg, SubscribeRequest};
use crate::channels::{ChannelHandle, ChannelsMsg, ResolveError};
use crate::connections::connection::{ConnectionMsg, ConnectionState, Subscription};

/// Maximum time a connection waits for the channels supervisor to respond.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reason a channel could not be reached, ready to become an `Error` frame.
#[derive(Debug, Clone)]
pub(crate) struct ChannelFailure {
    code: ErrorCode,
    message: String,
}

impl ChannelFailure {
    pub(crate) fn frame(&self, request_id: Option<u64>) -> Frame {
        Frame::error(request_id, self.code, self.message.clone())
    }
}

impl From<ResolveError> for ChannelFailure {
    fn from(error: ResolveError) -> ChannelFailure {
        let code = match error {
            ResolveError::Unknown(_) => ErrorCode::UnknownChannel,
            ResolveError::Unavailable(_) => ErrorCode::ChannelUnavailable,
        };
        ChannelFailure {
            code,
            message: error.to_string(),
        }
    }
}

impl ConnectionState {
    /// Returns the channel's actor from the cache or from the registry.
    pub(crate) async fn channel_actor(&mut self, name: &str) -> Result<ActorRef<ChannelMsg>, ChannelFailure> {
        self.channel_handle(name).await.map(|handle| handle.actor)
    }

    /// Returns the channel's handle from the cache or from the registry.
    pub(crate) async fn channel_handle(&mut self, name: &str) -> Result<ChannelHandle, ChannelFailure> {
        if let Some(handle) = self.channels.get(name) {
            return Ok(handle.clone());
        }
        let answer = self
            .context
            .channels
            .call(
                |reply| ChannelsMsg::Resolve {
                    name: name.to_owned(),
                    reply,
                },
                Some(REGISTRY_TIMEOUT),
            )
            .await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(Ok(handle))) => {
                self.channels.insert(name.to_owned(), handle.clone());
                Ok(handle)
            }
            Ok(ractor::rpc::CallResult::Success(Err(error))) => Err(error.into()),
            _ => Err(ChannelFailure {
                code: ErrorCode::ChannelUnavailable,
                message: format!("channel registry did not respond for channel \"{name}\"; retry later"),
            }),
        }
    }

    pub(crate) async fn subscribe(
        &mut self,
        myself: &ActorRef<ConnectionMsg>,
        request_id: u64,
        channel: String,
        start: StartPosition,
        accept_schemas: Option<Vec<String>>,
    ) {
        if let Err(message) = crate::names::validate_channel_name(&channel) {
            self.outbox
                .push_control(Frame::error(Some(request_id), ErrorCode::InvalidRequest, message));
            return;
        }
        let limit = self.context.config.limits.max_subscriptions_per_connection;
        if self.subscriptions.len() >= limit {
            self.outbox.push_control(Frame::error(
                Some(request_id),
                ErrorCode::TooManySubscriptions,
                format!("this connection already has {limit} subscriptions, the maximum (limits.max_subscriptions_per_connection)"),
            ));
            return;
        }
        let actor = match self.channel_actor(&channel).await {
            Ok(actor) => actor,
            Err(failure) => {
                self.outbox.push_control(failure.frame(Some(request_id)));
                return;
            }
        };
        let subscription_id = self.next_subscription_id;
        self.next_subscription_id += 1;
        self.watch(myself, &actor, &channel);
        let resume_offset = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicBool::new(false));
        let request = SubscribeRequest {
            request_id: Some(request_id),
            connection: myself.get_cell(),
            connection_id: self.id,
            subscription_id,
            outbox: self.outbox.clone(),
            start: start.clone(),
            accept_schemas: accept_schemas.clone(),
            resume_offset: resume_offset.clone(),
            answered: answered.clone(),
        };
        self.subscriptions.insert(
            subscription_id,
            Subscription {
                channel: channel.clone(),
                request: start,
                accept_schemas,
                resume_offset,
                request_id,
                answered,
            },
        );
        if actor.send_message(ChannelMsg::Subscribe(request)).is_err() {
            // The channel died between lookup and send; the monitor event
            // that follows re-attaches this subscription or reports it lost.
            info!(actor = %self.path, channel, "channel stopped while subscribing; re-attach pending");
        }
    }

    pub(crate) fn unsubscribe(&mut self, request_id: u64, subscription_id: u64) {
        let Some(subscription) = self.subscriptions.remove(&subscription_id) else {
            self.outbox.push_control(unknown_subscription(Some(request_id), subscription_id));
            return;
        };
        let message = ChannelMsg::Unsubscribe {
            connection_id: self.id,
            subscription_id,
            request_id: Some(request_id),
            outbox: self.outbox.clone(),
        };
        let sent = self
            .channels
            .get(&subscription.channel)
            .map(|handle| handle.actor.send_message(message).is_ok())
            .unwrap_or(false);
        if !sent {
            // The channel is gone, so no delivery can follow this response.
            self.outbox.push_control(Frame::Unsubscribed {
                request_id,
                subscription_id,
            });
        }
    }

    pub(crate) fn ack(&mut self, subscription_id: u64, offset: u64) {
        let Some(subscription) = self.subscriptions.get(&subscription_id) else {
            self.outbox.push_control(unknown_subscription(None, subscription_id));
            return;
        };
        if let Some(handle) = self.channels.get(&subscription.channel) {
            let _ = handle.actor.send_message(ChannelMsg::Ack {
                connection_id: self.id,
                subscription_id,
                offset,
            });
        }
    }

    /// Monitors a channel actor once, so its exit reaches this connection.
    fn watch(&mut self, myself: &ActorRef<ConnectionMsg>, actor: &ActorRef<ChannelMsg>, channel: &str) {
        if !self.watched.contains_key(&actor.get_id()) {
            myself.monitor(actor.get_cell());
            self.watched.insert(actor.get_id(), channel.to_owned());
        }
    }

    /// Handles the exit of a channel actor this connection subscribes to:
    /// re-registers every subscription with the restarted actor, or sends
    /// the client `SubscriptionLost` when the channel did not come back.
    pub(crate) async fn reattach(&mut self, myself: &ActorRef<ConnectionMsg>, channel: &str) {
        self.channels.remove(channel);
        let handle = self.lookup_restarted(channel).await;
        let affected: Vec<u64> = self
            .subscriptions
            .iter()
            .filter(|(_, subscription)| subscription.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        let Some(handle) = handle else {
            for subscription_id in affected {
                self.subscriptions.remove(&subscription_id);
                warn!(actor = %self.path, conn_id = self.id, channel, subscription_id, "subscription lost");
                self.outbox.push_control(Frame::SubscriptionLost {
                    subscription_id,
                    reason: format!("channel \"{channel}\" stopped and was not restarted"),
                });
            }
            return;
        };
        let actor = handle.actor.clone();
        self.channels.insert(channel.to_owned(), handle);
        self.watch(myself, &actor, channel);
        for subscription_id in affected {
            let subscription = &self.subscriptions[&subscription_id];
            // A request the crashed channel never replied to is sent again
            // with its id, so the client still gets its `Subscribed` or `Error`.
            let unanswered = !subscription.answered.load(Ordering::Acquire);
            let request = SubscribeRequest {
                request_id: unanswered.then_some(subscription.request_id),
                connection: myself.get_cell(),
                connection_id: self.id,
                subscription_id,
                outbox: self.outbox.clone(),
                start: reattach_start(subscription),
                accept_schemas: subscription.accept_schemas.clone(),
                resume_offset: subscription.resume_offset.clone(),
                answered: subscription.answered.clone(),
            };
            let _ = actor.send_message(ChannelMsg::Subscribe(request));
        }
        info!(actor = %self.path, conn_id = self.id, channel, "subscriptions re-attached to restarted channel");
    }
}

/// Returns where a subscription continues on a restarted channel.
///
/// On a durable channel that placed the subscription, it continues at the
/// first offset it was not given, so it receives no message twice and has no
/// gap, even for messages published while the channel restarted. Messages
/// already queued in this connection's outbox are still written, because
/// the outbox belongs to the connection. A named consumer continues at its
/// cursor instead: it receives again what it was given but did not
/// acknowledge, as at-least-once delivery promises. An ephemeral channel
/// keeps no history, so its subscribers continue with new messages.
fn reattach_start(subscription: &Subscription) -> StartPosition {
    let resume_offset = subscription.resume_offset.load(Ordering::Relaxed);
    match &subscription.request {
        StartPosition::Consumer(_) => subscription.request.clone(),
        _ if resume_offset > 0 => StartPosition::Offset(resume_offset),
        other => other.clone(),
    }
}

/// Attempts and backoff for looking up a restarted channel. The supervisor
/// may not have handled the crash yet at the first lookup, and it restarts a
/// channel within milliseconds.
const REATTACH_ATTEMPTS: u32 = 20;
const REATTACH_BACKOFF: Duration = Duration::from_millis(25);

impl ConnectionState {
    /// Returns the running actor of `channel` after its previous actor
    /// exited, or `None` if no new actor appears within the attempts.
    async fn lookup_restarted(&self, channel: &str) -> Option<ChannelHandle> {
        for _attempt in 0..REATTACH_ATTEMPTS {
            let current = self
                .context
                .channels
                .call(
                    |reply| ChannelsMsg::Lookup {
                        name: channel.to_owned(),
                        reply,
                    },
                    Some(REGISTRY_TIMEOUT),
                )
                .await;
            match current {
                Ok(ractor::rpc::CallResult::Success(Some(handle)))
                    if handle.actor.get_status() == ractor::ActorStatus::Running =>
                {
                    return Some(handle);
                }
                Ok(ractor::rpc::CallResult::Success(Some(_))) => tokio::time::sleep(REATTACH_BACKOFF).await,
                // The channel is gone from the registry, or the registry itself is down.
                _ => return None,
            }
        }
        None
    }
}

fn unknown_subscription(request_id: Option<u64>, subscription_id: u64) -> Frame {
    Frame::error(
        request_id,
        ErrorCode::UnknownSubscription,
        format!("subscription {subscription_id} is not an active subscription of this connection"),
    )
}

/// Builds the `schema_validation_failed` error for a publish the channel's schema rejected.
pub(crate) fn schema_error(request_id: u64, channel: &str, failure: &ValidationFailure) -> Frame {
    Frame::error(
        Some(request_id),
        ErrorCode::SchemaValidationFailed,
        format!("channel \"{channel}\": {failure}"),
    )
}
