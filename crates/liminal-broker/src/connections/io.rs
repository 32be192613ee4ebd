//! The socket tasks of a connection: the reader decodes frames and hands
//! them to the connection actor in batches; the writer drains the outbox
//! and coalesces frames into few large socket writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use liminal_protocol::{CodecError, ErrorCode, Frame, FrameCodec, encode_frame_into};
use ractor::ActorRef;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use crate::connections::connection::ConnectionMsg;
use crate::outbox::Outbox;

/// Most frames handed to the actor in one message.
const READ_BATCH: usize = 256;
/// Encoded bytes gathered before one socket write.
const WRITE_CHUNK: usize = 256 * 1024;

/// Aborts a task when dropped, so a connection actor that crashes takes its
/// socket tasks (and so the socket) with it.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames until the peer closes, the socket fails or a frame is
/// invalid. Before forwarding publishes, the reader takes one permit per
/// publish from `inflight`; permits come back as publishes are answered, so
/// a client that publishes faster than the broker acknowledges is slowed
/// down by TCP backpressure instead of growing the broker's memory.
pub async fn read_frames(
    read_half: OwnedReadHalf,
    max_frame_bytes: usize,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    actor: ActorRef<ConnectionMsg>,
) {
    // A chunk never holds more publishes than there are permits in total.
    let chunk_size = READ_BATCH.min(max_inflight).max(1);
    let mut frames = FramedRead::new(read_half, FrameCodec::new(max_frame_bytes)).ready_chunks(chunk_size);
    while let Some(chunk) = frames.next().await {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut failure = None;
        for item in chunk {
            match item {
                Ok(frame) => batch.push(frame),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let publishes = batch.iter().filter(|frame| matches!(frame, Frame::Publish { .. })).count();
        if publishes > 0 {
            // The permits are handed back one by one by `InflightPermit`.
            match inflight.acquire_many(publishes as u32).await {
                Ok(permits) => permits.forget(),
                Err(_) => return,
            }
        }
        if !batch.is_empty() && actor.send_message(ConnectionMsg::Frames(batch)).is_err() {
            return;
        }
        if let Some(error) = failure {
            let (code, message) = match &error {
                CodecError::FrameTooLarge { .. } => (ErrorCode::FrameTooLarge, error.to_string()),
                CodecError::Io(_) => {
                    let _ = actor.send_message(ConnectionMsg::PeerClosed(error.to_string()));
                    return;
                }
                _ => (ErrorCode::MalformedFrame, error.to_string()),
            };
            let _ = actor.send_message(ConnectionMsg::ProtocolViolation { code, message });
            return;
        }
    }
    let _ = actor.send_message(ConnectionMsg::PeerClosed("peer closed the connection".to_owned()));
}

/// Writes queued frames until the outbox closes or the socket fails, then
/// tells the actor. A write that makes no progress for `write_timeout`
/// (the peer stopped reading and its socket buffers are full) ends the
/// connection as a slow consumer, so a stalled peer cannot hold the writer,
/// the socket and the queued frames forever.
pub async fn write_frames(
    mut write_half: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    actor: ActorRef<ConnectionMsg>,
    write_timeout: Duration,
) {
    let mut batch = Vec::with_capacity(READ_BATCH);
    let mut buffer = BytesMut::with_capacity(WRITE_CHUNK);
    let mut outcome = "outbox closed".to_owned();
    'outer: while outbox.next_batch(&mut batch).await {
        for frame in batch.drain(..) {
            if let Err(error) = encode_frame_into(&frame, &mut buffer) {
                warn!(frame = frame.name(), %error, "failed to encode an outbound frame; skipped");
                continue;
            }
            if buffer.len() >= WRITE_CHUNK {
                if let Err(failure) = write_within(&mut write_half, &buffer, write_timeout, &outbox).await {
                    outcome = failure;
                    break 'outer;
                }
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            if let Err(failure) = write_within(&mut write_half, &buffer, write_timeout, &outbox).await {
                outcome = failure;
                break;
            }
            buffer.clear();
        }
    }
    outbox.close(None);
    let _ = write_half.shutdown().await;
    debug!(%outcome, "writer finished");
    let _ = actor.send_message(ConnectionMsg::WriterFinished(outcome));
}

/// Writes `buffer`, failing when the socket fails or accepts nothing more
/// within `write_timeout`.
async fn write_within(
    write_half: &mut OwnedWriteHalf,
    buffer: &[u8],
    write_timeout: Duration,
    outbox: &Outbox,
) -> Result<(), String> {
    match tokio::time::timeout(write_timeout, write_half.write_all(buffer)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("socket write failed: {error}")),
        Err(_) => {
            // An outbox already closing was counted when the policy closed it.
            if !outbox.is_closing() {
                outbox.stats().slow_consumer_disconnects.fetch_add(1, Ordering::Relaxed);
            }
            warn!(
                write_timeout_ms = write_timeout.as_millis() as u64,
                "closing slow consumer: the peer read nothing within the write timeout"
            );
            Err(format!(
                "slow consumer: the peer read nothing for {} ms (limits.write_timeout_ms)",
                write_timeout.as_millis()
            ))
        }
    }
}
