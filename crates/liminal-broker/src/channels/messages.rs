//! Messages a channel actor accepts, and the guards that make sure every
//! publish gets an answer even if the channel dies before handling it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use bytes::Bytes;
use liminal_protocol::{ErrorCode, Frame, Headers, StartPosition};
use ractor::ActorCell;
use tokio::sync::Semaphore;

use crate::outbox::Outbox;

/// Returns one in-flight publish permit to its connection's reader when
/// dropped, whether the publish was acknowledged or failed.
#[derive(Debug)]
pub struct InflightPermit(Arc<Semaphore>);

impl InflightPermit {
    /// Wraps a permit the reader already took (and forgot) from `semaphore`.
    pub fn adopt(semaphore: Arc<Semaphore>) -> InflightPermit {
        InflightPermit(semaphore)
    }
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// One message to publish.
#[derive(Debug)]
pub struct PublishItem {
    pub request_id: u64,
    pub payload: Bytes,
    pub headers: Option<Headers>,
    pub idempotency_key: Option<String>,
    pub permit: InflightPermit,
}

/// Publishes from one connection to one channel, answered through `reply`.
///
/// If the batch is dropped with items still in it (the channel actor
/// crashed or stopped with the batch in its mailbox), each remaining item is
/// answered with `channel_unavailable`, so a publisher never waits forever
/// for an ack and never mistakes a lost message for a delivered one.
#[derive(Debug)]
pub struct PublishBatch {
    pub channel: String,
    pub items: Vec<PublishItem>,
    pub reply: Arc<Outbox>,
}

impl PublishBatch {
    /// Takes the items out, so that dropping the batch answers nothing.
    pub fn take_items(&mut self) -> Vec<PublishItem> {
        std::mem::take(&mut self.items)
    }
}

impl Drop for PublishBatch {
    fn drop(&mut self) {
        for item in self.items.drain(..) {
            self.reply.push_control(Frame::error(
                Some(item.request_id),
                ErrorCode::ChannelUnavailable,
                format!(
                    "channel \"{}\" stopped before acknowledging the publish, so it may or may not have been delivered or stored; retry it, with an idempotency key to avoid a duplicate",
                    self.channel
                ),
            ));
        }
    }
}

/// A subscriber registering with a channel, either new (with a request id
/// to answer) or re-attaching after the channel actor was restarted.
#[derive(Debug)]
pub struct SubscribeRequest {
    /// `None` when re-attaching: the client already has its `Subscribed`.
    pub request_id: Option<u64>,
    pub connection: ActorCell,
    pub connection_id: u64,
    pub subscription_id: u64,
    pub outbox: Arc<Outbox>,
    pub start: StartPosition,
    pub accept_schemas: Option<Vec<String>>,
    /// Offset of the next message this subscription has not been given yet,
    /// or 0 before a durable channel placed it. The channel advances it as
    /// it queues messages for the subscription. The connection owns it, so
    /// that after a crash of the channel actor it can re-attach the
    /// subscription exactly where it stopped.
    pub resume_offset: Arc<AtomicU64>,
    /// Set once the channel queued its reply (`Subscribed` or `Error`) to
    /// `request_id`. If the channel crashes before that, the request was
    /// lost with its mailbox, and the re-attach sends the request id again.
    pub answered: Arc<AtomicBool>,
}

/// The messages of a channel actor.
#[derive(Debug)]
pub enum ChannelMsg {
    Publish(PublishBatch),
    Subscribe(SubscribeRequest),
    /// Removes a subscription. The channel answers `Unsubscribed` through
    /// `outbox` when `request_id` is set, after its last `Deliver` for it.
    Unsubscribe {
        connection_id: u64,
        subscription_id: u64,
        request_id: Option<u64>,
        outbox: Arc<Outbox>,
    },
    /// A named consumer acknowledged everything up to `offset`.
    Ack {
        connection_id: u64,
        subscription_id: u64,
        offset: u64,
    },
    /// The store finished writing a durable batch whose first record has
    /// `first_offset`; `result` carries the store's error text on failure.
    Appended {
        batch: PublishBatch,
        first_offset: u64,
        result: Result<(), String>,
    },
    /// A replay task sent every stored message below `next_offset`.
    ReplayDone {
        key: (u64, u64),
        generation: u64,
        next_offset: u64,
    },
    /// A replay task could not read the store.
    ReplayFailed {
        key: (u64, u64),
        generation: u64,
        reason: String,
    },
    /// The store wrote `offset` as the cursor of named consumer `consumer`.
    CursorStored { consumer: String, offset: u64 },
    /// A connection this channel monitored stopped; its subscriptions end.
    ConnectionGone { connection_id: u64 },
    /// Periodic maintenance: receipt expiry and retention.
    Tick,
    /// Fault injection: the channel actor panics on receipt.
    Crash,
}
