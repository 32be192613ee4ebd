//! A connection's outbound queue: frames waiting for the writer task.
//!
//! Channel actors, conversation actors and the connection actor push frames
//! here directly, so a delivered message reaches the socket without passing
//! through the connection actor's mailbox. The queue is bounded in bytes:
//! deliveries beyond the bound follow the channel's slow-consumer policy,
//! so a subscriber that stops reading never stalls a channel or grows the
//! server's memory without bound. Each connection has its own lock; nothing
//! here is shared between connections.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};

use liminal_protocol::{ErrorCode, Frame};
use tokio::sync::Notify;
use tracing::warn;

use crate::config::SlowConsumerPolicy;

/// Control frames (acks, errors, replies) may use this many times the
/// delivery bound before the connection counts as a slow consumer, because
/// they respond to the client's own requests and must not be dropped.
const CONTROL_HEADROOM_FACTOR: usize = 4;

/// The result of offering a delivery to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The frame is queued for the socket.
    Accepted,
    /// The connection is closing or closed; the frame was discarded.
    Closed,
}

/// Slow-consumer counters for the metrics endpoint. One instance may be
/// shared by every outbox of a broker, so the counts are server-wide.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// `Deliver` frames discarded under the `drop` policy.
    pub dropped_messages: AtomicU64,
    /// Connections closed with `slow_consumer`.
    pub slow_consumer_disconnects: AtomicU64,
}

#[derive(Debug)]
struct Queued {
    frame: Frame,
    bytes: usize,
    /// Whether the `drop` slow-consumer policy may discard this frame: true
    /// only for deliveries of ephemeral channels. Durable deliveries and
    /// control frames are never dropped, because the subscription's resume
    /// offset is already past them and no replay would bring them back.
    droppable: bool,
}

#[derive(Debug, Default)]
struct OutboxState {
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Messages dropped per subscription since the writer last reported them.
    dropped: BTreeMap<u64, u64>,
    /// Set once no more frames may be queued; the writer sends what is
    /// queued, then closes the socket.
    closing: bool,
    /// Whether the first drop was logged; later drops are only counted.
    drop_logged: bool,
}

/// A bounded, multi-producer queue of frames for one connection's writer.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    wake: Notify,
    max_bytes: usize,
    stats: Arc<OutboxStats>,
    /// Actor path of the owning connection, for logs; empty when unknown.
    owner: String,
}

/// A rough encoded size of a frame, used for the byte bound.
pub fn estimated_size(frame: &Frame) -> usize {
    const OVERHEAD: usize = 48;
    match frame {
        Frame::Deliver {
            payload, headers, ..
        } => {
            let header_bytes = headers
                .as_ref()
                .map(|headers| headers.iter().map(|(key, value)| key.len() + value.len() + 4).sum())
                .unwrap_or(0);
            OVERHEAD + payload.len() + header_bytes
        }
        Frame::ConversationReply { payload, .. }
        | Frame::ConversationMessage { payload, .. }
        | Frame::WorkerMessage { payload, .. } => OVERHEAD + payload.len(),
        Frame::Error { message, .. } => OVERHEAD + message.len(),
        _ => OVERHEAD,
    }
}

impl Outbox {
    /// Creates an empty outbox that holds at most `max_bytes` of deliveries.
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox::for_connection(max_bytes, Arc::default(), String::new())
    }

    /// Creates the outbox of the connection actor at path `owner`, which
    /// counts its slow-consumer events in `stats` and logs them with `owner`.
    pub fn for_connection(max_bytes: usize, stats: Arc<OutboxStats>, owner: String) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            wake: Notify::new(),
            max_bytes,
            stats,
            owner,
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single push, pop or swap), so poison is ignored.
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues a reply or notice for the client. Control frames are never
    /// dropped; a client that lets them pile up past the headroom is
    /// disconnected as a slow consumer. Returns false if the connection is closing.
    pub fn push_control(&self, frame: Frame) -> bool {
        self.push_controls(std::iter::once(frame))
    }

    /// Queues several control frames under one lock, with the same rules as
    /// [`Outbox::push_control`]. Returns false if the connection is closing.
    pub fn push_controls(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        let mut state = self.lock();
        for frame in frames {
            if state.closing {
                return false;
            }
            let bytes = estimated_size(&frame);
            if state.queued_bytes + bytes > self.max_bytes.saturating_mul(CONTROL_HEADROOM_FACTOR) {
                self.disconnect_slow_consumer(&mut state, "replies");
                drop(state);
                self.wake.notify_one();
                return false;
            }
            state.queued_bytes += bytes;
            state.queue.push_back(Queued { frame, bytes, droppable: false });
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Queues a batch of `Deliver` frames, applying
    /// `policy` when the queue is full. Returns how many were accepted, or
    /// `None` when the connection is closing (nothing was accepted).
    pub fn push_deliveries(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        policy: SlowConsumerPolicy,
    ) -> Option<usize> {
        let mut state = self.lock();
        if state.closing {
            return None;
        }
        let mut accepted = 0;
        for frame in frames {
            let bytes = estimated_size(&frame);
            if state.queued_bytes + bytes > self.max_bytes && !state.queue.is_empty() {
                match policy {
                    SlowConsumerPolicy::Disconnect => {
                        self.disconnect_slow_consumer(&mut state, "deliveries");
                        drop(state);
                        self.wake.notify_one();
                        return if accepted == 0 { None } else { Some(accepted) };
                    }
                    SlowConsumerPolicy::Drop => {
                        let dropped = drop_oldest_deliveries(&mut state, self.max_bytes / 2);
                        self.stats.dropped_messages.fetch_add(dropped, Ordering::Relaxed);
                        if !state.drop_logged {
                            state.drop_logged = true;
                            warn!(
                                actor = %self.owner,
                                dropped,
                                max_outbound_bytes = self.max_bytes,
                                "slow consumer: dropping its oldest deliveries; later drops are only counted"
                            );
                        }
                    }
                }
            }
            state.queued_bytes += bytes;
            state.queue.push_back(Queued { frame, bytes, droppable: true });
            accepted += 1;
        }
        drop(state);
        self.wake.notify_one();
        Some(accepted)
    }

    /// Queues `Deliver` frames while they fit within the bound and returns
    /// how many were accepted (at least one when the queue is empty), or
    /// `None` when the connection is closing. Nothing is dropped: durable
    /// channels use this and let a subscriber that does not keep up catch
    /// up from the store instead.
    pub fn push_deliveries_until_full(&self, frames: impl IntoIterator<Item = Frame>) -> Option<usize> {
        self.push_without_dropping(frames, Some(self.max_bytes))
    }

    /// Queues replayed `Deliver` frames regardless of the bound; the replay
    /// task limits itself by waiting on [`Outbox::queued_bytes`]. Returns
    /// `None` when the connection is closing.
    pub fn push_replay(&self, frames: impl IntoIterator<Item = Frame>) -> Option<usize> {
        self.push_without_dropping(frames, None)
    }

    /// Queues frames until one would take the queue past `bound` (never for
    /// `None`), and returns how many were queued.
    fn push_without_dropping(&self, frames: impl IntoIterator<Item = Frame>, bound: Option<usize>) -> Option<usize> {
        let mut state = self.lock();
        if state.closing {
            return None;
        }
        let mut accepted = 0;
        for frame in frames {
            let bytes = estimated_size(&frame);
            let full = bound.is_some_and(|bound| state.queued_bytes + bytes > bound && !state.queue.is_empty());
            if full {
                break;
            }
            state.queued_bytes += bytes;
            state.queue.push_back(Queued { frame, bytes, droppable: false });
            accepted += 1;
        }
        drop(state);
        self.wake.notify_one();
        Some(accepted)
    }

    /// Estimated bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued_bytes
    }

    /// The delivery bound this outbox was created with.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Queues `final_frame` (if any) and closes the outbox: the writer sends
    /// everything queued, then shuts the socket down.
    pub fn close(&self, final_frame: Option<Frame>) {
        let mut state = self.lock();
        if !state.closing {
            if let Some(frame) = final_frame {
                let bytes = estimated_size(&frame);
                state.queued_bytes += bytes;
                state.queue.push_back(Queued { frame, bytes, droppable: false });
            }
            state.closing = true;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Whether the outbox accepts no more frames.
    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Waits for frames and moves them into `batch`, `MessagesDropped`
    /// notices first. Returns false once the outbox is closing and drained.
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) -> bool {
        loop {
            {
                let mut state = self.lock();
                let dropped = std::mem::take(&mut state.dropped);
                for (subscription_id, count) in dropped {
                    batch.push(Frame::MessagesDropped {
                        subscription_id,
                        count,
                    });
                }
                if !state.queue.is_empty() {
                    state.queued_bytes = 0;
                    batch.extend(state.queue.drain(..).map(|queued| queued.frame));
                }
                if !batch.is_empty() {
                    return true;
                }
                if state.closing {
                    return false;
                }
            }
            self.wake.notified().await;
        }
    }
}

impl Outbox {
    // The writer still has to send the frames it already took and the final
    // error before it closes the socket. Against a peer that never reads
    // again, its write times out after `limits.write_timeout_ms` and the
    // socket closes then.
    fn disconnect_slow_consumer(&self, state: &mut OutboxState, queued: &str) {
        warn!(
            actor = %self.owner,
            queued_bytes = state.queued_bytes,
            max_outbound_bytes = self.max_bytes,
            "slow consumer: {queued} piled up past the bound; closing the connection with slow_consumer"
        );
        close_as_slow_consumer(state);
        self.stats.slow_consumer_disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn close_as_slow_consumer(state: &mut OutboxState) {
    state.queue.clear();
    state.dropped.clear();
    let frame = Frame::error(
        None,
        ErrorCode::SlowConsumer,
        "the connection did not read its messages fast enough and is being closed",
    );
    state.queued_bytes = estimated_size(&frame);
    state.queue.push_back(Queued {
        bytes: state.queued_bytes,
        frame,
        droppable: false,
    });
    state.closing = true;
}

/// Removes the oldest droppable `Deliver` frames until at most `target_bytes`
/// remain queued or none is left, recording the losses per subscription. Dropping down to half the
/// bound, not just enough for one frame, keeps a persistently slow consumer
/// from paying this pass on every message.
fn drop_oldest_deliveries(state: &mut OutboxState, target_bytes: usize) -> u64 {
    let mut dropped = 0;
    // Usual case: deliveries at the front leave without touching the rest
    // of the queue.
    while state.queued_bytes > target_bytes {
        let Some(Queued { droppable: true, .. }) = state.queue.front() else {
            break;
        };
        let queued = state.queue.pop_front().expect("the front exists");
        record_drop(state, &queued);
        dropped += 1;
    }
    if state.queued_bytes <= target_bytes || state.queue.is_empty() {
        return dropped;
    }
    // A frame that must stay is at the front: keep those frames in order and
    // drop the droppable deliveries among them, oldest first.
    let mut kept = VecDeque::with_capacity(state.queue.len());
    while let Some(queued) = state.queue.pop_front() {
        if state.queued_bytes <= target_bytes {
            kept.push_back(queued);
            kept.append(&mut state.queue);
            break;
        }
        if queued.droppable {
            record_drop(state, &queued);
            dropped += 1;
        } else {
            kept.push_back(queued);
        }
    }
    state.queue = kept;
    dropped
}

fn record_drop(state: &mut OutboxState, queued: &Queued) {
    if let Frame::Deliver { subscription_id, .. } = queued.frame {
        state.queued_bytes -= queued.bytes;
        *state.dropped.entry(subscription_id).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn deliver(subscription_id: u64, message_id: u64) -> Frame {
        Frame::Deliver {
            subscription_id,
            message_id,
            payload: Bytes::from(vec![0u8; 100]),
            headers: None,
        }
    }

    #[tokio::test]
    async fn drop_policy_drops_oldest_and_reports_count() {
        let outbox = Outbox::new(1_000);
        let frames = (1..=50).map(|id| deliver(7, id));
        assert_eq!(outbox.push_deliveries(frames, SlowConsumerPolicy::Drop), Some(50));

        let mut batch = Vec::new();
        assert!(outbox.next_batch(&mut batch).await);
        let Frame::MessagesDropped { subscription_id, count } = batch[0] else {
            panic!("expected MessagesDropped first, got {:?}", batch[0]);
        };
        assert_eq!(subscription_id, 7);
        let delivered: Vec<u64> = batch[1..]
            .iter()
            .map(|frame| match frame {
                Frame::Deliver { message_id, .. } => *message_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(count as usize + delivered.len(), 50);
        assert_eq!(*delivered.last().unwrap(), 50, "the newest message survives");
        assert!(delivered.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[tokio::test]
    async fn drop_policy_keeps_durable_deliveries() {
        let outbox = Outbox::new(1_000);
        // Durable deliveries fill the outbox; they must all survive.
        assert_eq!(outbox.push_deliveries_until_full((1..=5).map(|id| deliver(1, id))), Some(5));
        let ephemeral = (1..=20).map(|id| deliver(2, id));
        assert_eq!(outbox.push_deliveries(ephemeral, SlowConsumerPolicy::Drop), Some(20));

        let mut batch = Vec::new();
        assert!(outbox.next_batch(&mut batch).await);
        let durable: Vec<u64> = batch
            .iter()
            .filter_map(|frame| match frame {
                Frame::Deliver { subscription_id: 1, message_id, .. } => Some(*message_id),
                _ => None,
            })
            .collect();
        assert_eq!(durable, (1..=5).collect::<Vec<_>>());
        let dropped: u64 = batch
            .iter()
            .filter_map(|frame| match frame {
                Frame::MessagesDropped { subscription_id, count } => {
                    assert_eq!(*subscription_id, 2, "only the ephemeral subscription loses messages");
                    Some(*count)
                }
                _ => None,
            })
            .sum();
        assert!(dropped > 0);
    }

    #[tokio::test]
    async fn disconnect_policy_closes_with_slow_consumer() {
        let outbox = Outbox::new(1_000);
        let frames = (1..=50).map(|id| deliver(1, id));
        outbox.push_deliveries(frames, SlowConsumerPolicy::Disconnect);
        assert!(outbox.is_closing());

        let mut batch = Vec::new();
        assert!(outbox.next_batch(&mut batch).await);
        assert_eq!(batch.len(), 1);
        assert!(matches!(&batch[0], Frame::Error { code, .. } if code == "slow_consumer"));
        batch.clear();
        assert!(!outbox.next_batch(&mut batch).await);
    }

    #[tokio::test]
    async fn closed_outbox_rejects_frames() {
        let outbox = Outbox::new(1_000);
        outbox.close(None);
        assert!(!outbox.push_control(Frame::Pong { nonce: 1 }));
        assert_eq!(outbox.push_deliveries([deliver(1, 1)], SlowConsumerPolicy::Drop), None);
    }

    #[tokio::test]
    async fn drop_policy_keeps_control_frames_in_order() {
        let outbox = Outbox::new(1_000);
        assert!(outbox.push_control(Frame::Pong { nonce: 1 }));
        outbox.push_deliveries((1..=5).map(|id| deliver(3, id)), SlowConsumerPolicy::Drop);
        assert!(outbox.push_control(Frame::Pong { nonce: 2 }));
        outbox.push_deliveries((6..=50).map(|id| deliver(3, id)), SlowConsumerPolicy::Drop);

        let mut batch = Vec::new();
        assert!(outbox.next_batch(&mut batch).await);
        let Frame::MessagesDropped { count, .. } = batch[0] else {
            panic!("expected MessagesDropped first, got {:?}", batch[0]);
        };
        let pongs: Vec<u64> = batch
            .iter()
            .filter_map(|frame| match frame {
                Frame::Pong { nonce } => Some(*nonce),
                _ => None,
            })
            .collect();
        assert_eq!(pongs, vec![1, 2], "control frames are never dropped and keep their order");
        let delivered: Vec<u64> = batch
            .iter()
            .filter_map(|frame| match frame {
                Frame::Deliver { message_id, .. } => Some(*message_id),
                _ => None,
            })
            .collect();
        assert_eq!(count as usize + delivered.len(), 50);
        assert_eq!(*delivered.last().unwrap(), 50, "the newest message survives");
        assert!(delivered.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[tokio::test]
    async fn slow_consumer_events_counted_in_shared_stats() {
        let stats = Arc::new(OutboxStats::default());
        let dropping = Outbox::for_connection(1_000, stats.clone(), "broker/connections/1".to_owned());
        dropping.push_deliveries((1..=50).map(|id| deliver(7, id)), SlowConsumerPolicy::Drop);
        let closing = Outbox::for_connection(1_000, stats.clone(), "broker/connections/2".to_owned());
        closing.push_deliveries((1..=50).map(|id| deliver(1, id)), SlowConsumerPolicy::Disconnect);

        let mut batch = Vec::new();
        assert!(dropping.next_batch(&mut batch).await);
        let Frame::MessagesDropped { count, .. } = batch[0] else {
            panic!("expected MessagesDropped first, got {:?}", batch[0]);
        };
        assert_eq!(stats.dropped_messages.load(Ordering::Relaxed), count);
        assert_eq!(stats.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
    }
}
