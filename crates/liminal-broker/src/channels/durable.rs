//! Durable channels: publishes are acknowledged only after the store wrote
//! them, subscribers can start from any stored offset, and named consumers
//! resume after their last acknowledged offset.
//!
//! Offsets are assigned here, by the channel actor, and handed to the store
//! in `Command::Append`. The store rejects a non-contiguous append, so a gap
//! can never be written. Appends are pipelined: the actor keeps handling
//! publishes while earlier batches are being written, and delivers and
//! acknowledges each batch when the store's completion comes back through
//! the mailbox (`ChannelMsg::Appended`), in offset order because the store's
//! writer is FIFO. A failed append crashes the actor on purpose: the restart
//! re-reads the end of the stream, which is the only state that matters.
//!
//! Idempotency: a key is claimed when its record is handed to the store
//! (`inflight_keys`) and becomes a receipt in the same write batch as the
//! record. A repeat of an in-flight key waits for the original's outcome
//! and is answered as a duplicate only if the original was written; if the
//! write failed, the crash drops the claim, so a retry can succeed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use liminal_protocol::{ErrorCode, Frame, StartPosition};
use liminal_store::{AppendRecord, ChannelId, Command, GroupId, Store};
use ractor::{ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use crate::channels::channel::{ChannelState, Mode, SubscriberKey, duplicate_ack};
use crate::channels::messages::{ChannelMsg, InflightPermit, PublishBatch, SubscribeRequest};
use crate::channels::replay;
use crate::outbox::Outbox;

/// Most expired receipts one maintenance pass removes.
const RECEIPT_PURGE_BATCH: usize = 10_000;

/// Location of a durable channel in the store.
#[derive(Clone)]
pub struct DurableBinding {
    pub store: Arc<Store>,
    pub group: GroupId,
    pub channel: ChannelId,
    pub name: String,
}

impl std::fmt::Debug for DurableBinding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DurableBinding")
            .field("store", &self.store.path())
            .field("group", &self.group)
            .field("channel", &self.channel)
            .field("name", &self.name)
            .finish()
    }
}

/// A publish whose key was in flight when it arrived. It is acked when the
/// original publish's write completes.
#[derive(Debug)]
struct WaitingDuplicate {
    request_id: u64,
    reply: Arc<Outbox>,
    _permit: InflightPermit,
}

/// The durable part of a channel actor's state.
#[derive(Debug)]
pub struct DurableState {
    pub binding: DurableBinding,
    /// Highest offset the store confirmed written.
    pub last_appended: u64,
    /// Offset the next accepted publish gets.
    next_offset: u64,
    /// Idempotency keys handed to the store but not yet confirmed, with their offset.
    inflight_keys: HashMap<String, u64>,
    /// Cursors of named consumers handed to the store but not yet confirmed
    /// written. A consumer that subscribes again meanwhile starts after
    /// these, not after the older cursor the store still returns.
    pending_cursors: HashMap<String, u64>,
    waiting_duplicates: HashMap<u64, Vec<WaitingDuplicate>>,
    maintenance_running: Arc<AtomicBool>,
}

/// Classification of a new publish's idempotency key.
enum KeyClaim {
    /// Never used within the window: store the message and claim the key.
    Fresh,
    /// Already stored at this offset within the window.
    Stored(u64),
    /// Claimed by a message at this offset that is still being written.
    InFlight(u64),
    /// The receipt could not be read.
    Failed(String),
}

/// Starting point of a new subscriber.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    pub start_offset: Option<u64>,
    pub truncated: bool,
    /// Set when stored messages must be replayed first.
    pub replay_from: Option<u64>,
    pub consumer: Option<String>,
    pub acked: u64,
}

impl Placement {
    pub(crate) fn live() -> Placement {
        Placement::default()
    }
}

/// Milliseconds since the Unix epoch, the store's timestamp unit.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl DurableState {
    /// Reads where the stream ends. A barrier command goes through the
    /// writer first, so appends queued by a crashed predecessor of this
    /// actor are applied before the end is read.
    pub async fn recover(binding: &DurableBinding) -> Result<DurableState, ActorProcessingErr> {
        let lookup = binding.clone();
        let last = tokio::task::spawn_blocking(move || -> Result<u64, liminal_store::StoreError> {
            lookup.store.submit_blocking(Command::CreateChannel {
                group: lookup.group,
                name: lookup.name.clone(),
            })?;
            Ok(lookup.store.bounds(lookup.group, lookup.channel)?.map_or(0, |(_, last)| last))
        })
        .await??;
        Ok(DurableState {
            binding: binding.clone(),
            last_appended: last,
            next_offset: last + 1,
            inflight_keys: HashMap::new(),
            pending_cursors: HashMap::new(),
            waiting_duplicates: HashMap::new(),
            maintenance_running: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl ChannelState {
    pub(crate) fn publish_durable(&mut self, myself: &ActorRef<ChannelMsg>, mut batch: PublishBatch) {
        let now = now_ms();
        let mut records = Vec::new();
        let mut kept = Vec::new();
        for item in batch.take_items() {
            if let Some(key) = &item.idempotency_key {
                match self.claim_key(key, now) {
                    KeyClaim::Fresh => {}
                    KeyClaim::Stored(offset) => {
                        batch
                            .reply
                            .push_control(duplicate_ack(item.request_id, offset, Some(offset)));
                        continue;
                    }
                    KeyClaim::InFlight(offset) => {
                        let durable = self.durable.as_mut().expect("durable channel");
                        durable.waiting_duplicates.entry(offset).or_default().push(WaitingDuplicate {
                            request_id: item.request_id,
                            reply: batch.reply.clone(),
                            _permit: item.permit,
                        });
                        continue;
                    }
                    KeyClaim::Failed(reason) => {
                        batch
                            .reply
                            .push_control(Frame::error(Some(item.request_id), ErrorCode::StorageFailed, reason));
                        continue;
                    }
                }
            }
            let durable = self.durable.as_mut().expect("durable channel");
            if let Some(key) = &item.idempotency_key {
                durable.inflight_keys.insert(key.clone(), durable.next_offset);
            }
            records.push(AppendRecord {
                offset: durable.next_offset,
                timestamp_ms: now,
                headers: item
                    .headers
                    .as_ref()
                    .map(|headers| headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                payload: item.payload.clone(),
                idempotency_key: item.idempotency_key.clone(),
            });
            kept.push(item);
            durable.next_offset += 1;
        }
        if kept.is_empty() {
            return;
        }
        batch.items = kept;
        self.submit_append(myself, batch, records);
    }

    /// Decides what a keyed publish is: new, a repeat of a stored message,
    /// or a repeat of a message still being written.
    fn claim_key(&self, key: &str, now: u64) -> KeyClaim {
        let durable = self.durable.as_ref().expect("durable channel");
        let binding = &durable.binding;
        if let Some(&offset) = durable.inflight_keys.get(key) {
            self.shared.stats.dedup_hits.fetch_add(1, Ordering::Relaxed);
            return KeyClaim::InFlight(offset);
        }
        let window_ms = self.shared.config.dedup_window.as_millis() as u64;
        // NOTE: a point read on the actor's thread; RocksDB serves it from
        // the memtable or block cache in microseconds, which is cheaper
        // than a round trip through a blocking pool.
        match binding.store.receipt(binding.group, binding.channel, key) {
            Ok(Some(receipt)) if receipt.timestamp_ms.saturating_add(window_ms) >= now => {
                self.shared.stats.dedup_hits.fetch_add(1, Ordering::Relaxed);
                KeyClaim::Stored(receipt.offset)
            }
            Ok(_) => KeyClaim::Fresh,
            Err(error) => KeyClaim::Failed(format!("failed to check idempotency key {key:?}: {error}")),
        }
    }

    /// Hands records to the store; the completion comes back as `Appended`.
    fn submit_append(&self, myself: &ActorRef<ChannelMsg>, batch: PublishBatch, records: Vec<AppendRecord>) {
        let binding = &self.durable.as_ref().expect("durable channel").binding;
        let first_offset = records[0].offset;
        let actor = myself.clone();
        binding.store.submit(
            Command::Append {
                group: binding.group,
                channel: binding.channel,
                records,
                dedup_window_ms: self.shared.config.dedup_window.as_millis() as u64,
            },
            Box::new(move |result| {
                let result = result.map(|_| ()).map_err(|error| error.to_string());
                // If the actor is gone, dropping the batch replies to every
                // publish in it with `channel_unavailable`.
                let _ = actor.send_message(ChannelMsg::Appended {
                    batch,
                    first_offset,
                    result,
                });
            }),
        );
    }

    /// Delivers and acknowledges a written batch, or fails the actor when
    /// the write failed.
    pub(crate) fn appended(
        &mut self,
        myself: &ActorRef<ChannelMsg>,
        mut batch: PublishBatch,
        first_offset: u64,
        result: Result<(), String>,
    ) -> Result<(), ActorProcessingErr> {
        let items = batch.take_items();
        let last_offset = first_offset + items.len() as u64 - 1;
        let durable = self.durable.as_mut().expect("durable channel");
        for item in &items {
            if let Some(key) = &item.idempotency_key {
                durable.inflight_keys.remove(key);
            }
        }
        let waiting: Vec<(u64, Vec<WaitingDuplicate>)> = (first_offset..=last_offset)
            .filter_map(|offset| durable.waiting_duplicates.remove(&offset).map(|list| (offset, list)))
            .collect();

        if let Err(reason) = result {
            let message = format!(
                "channel \"{}\": the store failed to write the message, so it was not acknowledged: {reason}",
                self.shared.config.name
            );
            for item in &items {
                batch
                    .reply
                    .push_control(Frame::error(Some(item.request_id), ErrorCode::StorageFailed, message.clone()));
            }
            for duplicate in waiting.into_iter().flat_map(|(_, list)| list) {
                duplicate
                    .reply
                    .push_control(Frame::error(Some(duplicate.request_id), ErrorCode::StorageFailed, message.clone()));
            }
            return Err(format!("durable append at offset {first_offset} failed: {reason}").into());
        }

        durable.last_appended = last_offset;
        self.count_published(&items);
        let mut lagging = Vec::new();
        let deliveries = self.fan_out(&items, first_offset, Some(&mut lagging));
        for (key, from) in lagging {
            debug!(actor = %self.shared.path, conn_id = key.0, subscription_id = key.1, from, "subscriber lags; catching up from the store");
            self.start_replay(myself, key, from);
        }
        let acks = items.into_iter().enumerate().map(|(index, item)| {
            let offset = first_offset + index as u64;
            Frame::PublishAck {
                request_id: item.request_id,
                message_id: offset,
                delivered: deliveries[index] > 0,
                offset: Some(offset),
                duplicate: false,
            }
        });
        batch.reply.push_controls(acks);
        for (offset, list) in waiting {
            for duplicate in list {
                duplicate
                    .reply
                    .push_control(duplicate_ack(duplicate.request_id, offset, Some(offset)));
            }
        }
        Ok(())
    }

    /// Resolves a subscribe start position against the stored stream.
    pub(crate) fn place_durable_subscriber(&self, request: &SubscribeRequest) -> Result<Placement, Frame> {
        let durable = self.durable.as_ref().expect("durable channel");
        let binding = &durable.binding;
        let storage_error = |error: liminal_store::StoreError| {
            Frame::error(
                request.request_id,
                ErrorCode::StorageFailed,
                format!("failed to read channel \"{}\": {error}", binding.name),
            )
        };
        let last = durable.last_appended;
        let first = binding
            .store
            .bounds(binding.group, binding.channel)
            .map_err(storage_error)?
            .map_or(1, |(first, _)| first);
        let (requested, consumer, acked) = match &request.start {
            StartPosition::Latest => {
                return Ok(Placement {
                    start_offset: Some(last + 1),
                    ..Placement::default()
                });
            }
            StartPosition::Earliest => (first, None, 0),
            StartPosition::Offset(offset) => {
                if *offset > last + 1 {
                    return Err(Frame::error(
                        request.request_id,
                        ErrorCode::InvalidStartPosition,
                        format!(
                            "offset {offset} is beyond the end of channel \"{}\" (last offset {last}); use latest or an offset up to {}",
                            binding.name,
                            last + 1
                        ),
                    ));
                }
                ((*offset).max(1), None, 0)
            }
            StartPosition::Consumer(name) => {
                if let Err(reason) = crate::names::validate_consumer_name(name) {
                    return Err(Frame::error(request.request_id, ErrorCode::InvalidRequest, reason));
                }
                let stored = binding
                    .store
                    .cursor(binding.group, binding.channel, name)
                    .map_err(storage_error)?;
                let cursor = stored.max(durable.pending_cursors.get(name).copied());
                // A consumer seen for the first time starts at the oldest message.
                let requested = cursor.map_or(first, |acked| acked + 1);
                (requested, Some(name.clone()), cursor.unwrap_or(0))
            }
        };
        let from = requested.max(first);
        Ok(Placement {
            start_offset: Some(from),
            truncated: requested < first,
            replay_from: (from <= last).then_some(from),
            consumer,
            acked,
        })
    }

    /// Starts (or restarts) replaying stored messages to a subscriber, up
    /// to the last offset written so far.
    pub(crate) fn start_replay(&mut self, myself: &ActorRef<ChannelMsg>, key: SubscriberKey, from: u64) {
        let Some(durable) = self.durable.as_ref() else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&key) else {
            return;
        };
        subscriber.mode = Mode::CatchingUp;
        subscriber.generation += 1;
        let cancelled = Arc::new(std::sync::Mutex::new(false));
        subscriber.replay_cancelled = Some(cancelled.clone());
        tokio::spawn(replay::replay(replay::ReplayJob {
            cancelled,
            binding: durable.binding.clone(),
            outbox: subscriber.outbox.clone(),
            resume_offset: subscriber.resume_offset.clone(),
            key,
            from,
            ceiling: durable.last_appended,
            generation: subscriber.generation,
            actor: myself.clone(),
        }));
    }

    /// Handles a replay that reached `next_offset`. If nothing was written since it
    /// started, the subscriber goes live: the next `Appended` delivers to it
    /// directly, with no gap and no repeat at the seam.
    pub(crate) fn replay_done(&mut self, myself: &ActorRef<ChannelMsg>, key: SubscriberKey, generation: u64, next_offset: u64) {
        let Some(last) = self.durable.as_ref().map(|durable| durable.last_appended) else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&key) else {
            return;
        };
        if subscriber.generation != generation {
            return;
        }
        if next_offset > last {
            subscriber.mode = Mode::Live;
        } else {
            self.start_replay(myself, key, next_offset);
        }
    }

    pub(crate) fn replay_failed(&mut self, key: SubscriberKey, generation: u64, reason: &str) {
        if self.subscribers.get(&key).is_none_or(|subscriber| subscriber.generation != generation) {
            return;
        }
        if let Some(subscriber) = self.remove_subscriber(key) {
            warn!(actor = %self.shared.path, conn_id = key.0, subscription_id = key.1, reason, "replay failed; subscription lost");
            subscriber.outbox.push_control(Frame::SubscriptionLost {
                subscription_id: key.1,
                reason: format!("failed to read stored messages: {reason}"),
            });
        }
    }

    /// Records a named consumer's cumulative acknowledgement.
    pub(crate) fn ack(&mut self, myself: &ActorRef<ChannelMsg>, key: SubscriberKey, offset: u64) {
        let Some(durable) = self.durable.as_mut() else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&key) else {
            return;
        };
        let Some(consumer) = subscriber.consumer.clone() else {
            return;
        };
        // Acks never move a cursor backwards or past what was written.
        if offset <= subscriber.acked || offset > durable.last_appended {
            return;
        }
        subscriber.acked = offset;
        let pending = durable.pending_cursors.entry(consumer.clone()).or_insert(0);
        *pending = (*pending).max(offset);
        let binding = &durable.binding;
        let path = self.shared.path.clone();
        let actor = myself.clone();
        binding.store.submit(
            Command::SetCursor {
                group: binding.group,
                channel: binding.channel,
                consumer: consumer.clone(),
                offset,
            },
            Box::new(move |result| {
                if let Err(error) = &result {
                    warn!(actor = %path, consumer, offset, %error, "failed to store consumer cursor");
                }
                // Also after a failure, so the entry cannot outlive the actor's
                // interest in it; the next ack of this consumer writes again.
                let _ = actor.send_message(ChannelMsg::CursorStored { consumer, offset });
            }),
        );
    }

    /// Forgets a pending cursor once the store wrote it, unless a later ack
    /// of the same consumer is still on its way.
    pub(crate) fn cursor_stored(&mut self, consumer: &str, offset: u64) {
        let Some(durable) = self.durable.as_mut() else {
            return;
        };
        if durable.pending_cursors.get(consumer).is_some_and(|pending| *pending <= offset) {
            durable.pending_cursors.remove(consumer);
        }
    }

    /// Applies retention and purges expired receipts on a blocking thread;
    /// at most one pass runs at a time, so a slow pass never piles up.
    pub(crate) fn maintain_durable(&mut self) {
        let Some(durable) = self.durable.as_ref() else {
            return;
        };
        if durable.maintenance_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = durable.maintenance_running.clone();
        let binding = durable.binding.clone();
        let retention = self.shared.config.retention.clone();
        let window_ms = self.shared.config.dedup_window.as_millis() as u64;
        let path = self.shared.path.clone();
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let store = &binding.store;
            let has_retention =
                retention.max_messages.is_some() || retention.max_bytes.is_some() || retention.max_age.is_some();
            if has_retention {
                let plan = store.plan_retention(
                    binding.group,
                    binding.channel,
                    retention.max_messages,
                    retention.max_bytes,
                    retention.max_age.map(|age| age.as_millis() as u64),
                    now,
                );
                match plan {
                    Ok(Some(below_offset)) => {
                        let truncate = Command::Truncate {
                            group: binding.group,
                            channel: binding.channel,
                            below_offset,
                        };
                        match store.submit_blocking(truncate) {
                            Ok(outcome) => debug!(actor = %path, ?outcome, "retention applied"),
                            Err(error) => warn!(actor = %path, %error, "retention failed"),
                        }
                    }
                    Ok(None) => {}
                    Err(error) => warn!(actor = %path, %error, "retention planning failed"),
                }
            }
            let purge = Command::PurgeReceipts {
                group: binding.group,
                channel: binding.channel,
                older_than_ms: now.saturating_sub(window_ms),
                max: RECEIPT_PURGE_BATCH,
            };
            if let Err(error) = store.submit_blocking(purge) {
                warn!(actor = %path, %error, "receipt purge failed");
            }
            running.store(false, Ordering::Release);
        });
    }
}
