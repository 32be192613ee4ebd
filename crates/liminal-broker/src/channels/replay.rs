//! Replay of stored messages to one subscriber of a durable channel.
//!
//! A replay task reads the stream in bounded batches on a blocking thread
//! and queues them in the subscriber's outbox, waiting while the outbox is
//! more than half full, so a slow reader holds at most one batch plus half
//! an outbox in memory. It stops at `ceiling`, the last offset written when
//! it started, and reports back; the channel actor then either switches the
//! subscriber to live delivery or starts another replay for what was
//! written meanwhile. Live publishing never waits for a replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use liminal_protocol::{Frame, Headers};
use ractor::ActorRef;

use crate::channels::channel::SubscriberKey;
use crate::channels::durable::DurableBinding;
use crate::channels::messages::ChannelMsg;
use crate::outbox::Outbox;

/// Most records read from the store per batch.
const REPLAY_BATCH_RECORDS: u64 = 512;
/// Most payload bytes read from the store per batch.
const REPLAY_BATCH_BYTES: usize = 1024 * 1024;
/// How long a replay waits before checking a full outbox again.
const BACKOFF: Duration = Duration::from_millis(2);

pub(crate) struct ReplayJob {
    /// Set by the channel actor when the subscription ends; checked under
    /// its lock around each push.
    pub cancelled: Arc<std::sync::Mutex<bool>>,
    pub binding: DurableBinding,
    pub outbox: Arc<Outbox>,
    /// Advanced past each batch queued, like live delivery does.
    pub resume_offset: Arc<AtomicU64>,
    pub key: SubscriberKey,
    pub from: u64,
    pub ceiling: u64,
    pub generation: u64,
    pub actor: ActorRef<ChannelMsg>,
}

pub(crate) async fn replay(job: ReplayJob) {
    let mut next = job.from;
    while next <= job.ceiling {
        while job.outbox.queued_bytes() > job.outbox.max_bytes() / 2 {
            if job.outbox.is_closing() {
                return;
            }
            tokio::time::sleep(BACKOFF).await;
        }
        let count = (job.ceiling - next + 1).min(REPLAY_BATCH_RECORDS) as usize;
        let binding = job.binding.clone();
        let read = tokio::task::spawn_blocking(move || {
            binding
                .store
                .read(binding.group, binding.channel, next, count, REPLAY_BATCH_BYTES)
        })
        .await;
        let records = match read {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => return report_failure(&job, error.to_string()),
            Err(error) => return report_failure(&job, error.to_string()),
        };
        let Some(last) = records.last().map(|record| record.offset) else {
            // Retention removed the rest of the range.
            next = job.ceiling + 1;
            break;
        };
        let frames = records
            .into_iter()
            .filter(|record| record.offset <= job.ceiling)
            .map(|record| Frame::Deliver {
                subscription_id: job.key.1,
                message_id: record.offset,
                headers: (!record.headers.is_empty()).then(|| record.headers.into_iter().collect::<Headers>()),
                payload: record.payload,
            });
        {
            let cancelled = job.cancelled.lock().unwrap_or_else(|poison| poison.into_inner());
            if *cancelled || job.outbox.push_replay(frames).is_none() {
                return;
            }
            // Under the lock, so a re-attach after a crash (which cancels under
            // it) never reads a resume offset older than what was queued.
            job.resume_offset.fetch_max(last.min(job.ceiling) + 1, Ordering::Relaxed);
        }
        next = last.min(job.ceiling) + 1;
    }
    let _ = job.actor.send_message(ChannelMsg::ReplayDone {
        key: job.key,
        generation: job.generation,
        next_offset: next,
    });
}

fn report_failure(job: &ReplayJob, reason: String) {
    let _ = job.actor.send_message(ChannelMsg::ReplayFailed {
        key: job.key,
        generation: job.generation,
        reason,
    });
}
