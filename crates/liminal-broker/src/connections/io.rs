//! The socket tasks of a connection: the reader decodes frames and hands
//! them to the connection actor in batches; the writer drains the outbox
//! and coalesces frames into few large socket writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use liminal_protocol::{CodecError, ErrorCode, Frame, FrameCodec, encode_frame_into};
use ractor::ActorRef;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use crate::connections::connection::ConnectionMsg;
use crate::connections::context::ConnectionContext;
use crate::connections::validation::{SchemaValidation, Verdicts};
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
///
/// Publishes to channels with a schema are validated here, before the actor
/// receives them, on `validation`'s pool for large chunks. Up to
/// `MAX_PENDING_CHUNKS` chunks are validated at once, and the actor receives
/// them in the order they were read. Only chunks read while
/// `accepting_publishes` is set are validated here, and the actor checks the
/// others itself once it accepted them.
pub async fn read_frames(
    read_half: OwnedReadHalf,
    max_frame_bytes: usize,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    actor: ActorRef<ConnectionMsg>,
    context: Arc<ConnectionContext>,
    accepting_publishes: Arc<AtomicBool>,
) {
    // A chunk never holds more publishes than there are permits in total.
    let chunk_size = READ_BATCH.min(max_inflight).max(1);
    let mut chunks = FramedRead::new(read_half, FrameCodec::new(max_frame_bytes)).ready_chunks(chunk_size);
    let validation = context.validation.as_ref();
    let mut pending = FuturesOrdered::new();
    let mut reading = true;

    while reading || !pending.is_empty() {
        tokio::select! {
            // Handing over a finished chunk comes first: it frees a place in
            // `pending`, and the actor's replies to publishes return the permits
            // that later chunks wait for.
            biased;
            Some(outcome) = pending.next(), if !pending.is_empty() => {
                if !hand_over(outcome, &actor) {
                    return;
                }
            }
            chunk = chunks.next(), if reading && pending.len() < MAX_PENDING_CHUNKS => {
                let Some(chunk) = chunk else {
                    reading = false;
                    continue;
                };
                let mut frames = Vec::with_capacity(chunk.len());
                let mut failure = None;
                for item in chunk {
                    match item {
                        Ok(frame) => frames.push(frame),
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                // Nothing after an invalid frame can be trusted, so reading stops.
                reading = failure.is_none();
                // The actor rejects the publishes of a connection that has not authenticated or
                // is draining. Validating them first would let such a connection spend the
                // pool's CPU for nothing.
                let validation = validation.filter(|_| accepting_publishes.load(Ordering::Acquire));
                pending.push_back(prepare_chunk(frames, failure, &inflight, validation));
            }
        }
    }
    let _ = actor.send_message(ConnectionMsg::PeerClosed("peer closed the connection".to_owned()));
}

/// Chunks that may be waiting for permits or validation at once, per connection.
const MAX_PENDING_CHUNKS: usize = 4;

/// A chunk of frames on its way from the socket to the connection actor.
enum ChunkOutcome {
    Ready {
        frames: Vec<Frame>,
        verdicts: Verdicts,
        /// The decode error that ended the chunk, reported after its frames.
        failure: Option<CodecError>,
    },
    /// The connection is closing: its permits were closed.
    Closed,
    /// A schema validation panicked.
    Aborted,
}

/// Takes the chunk's publish permits, then validates its schema-checked publishes.
async fn prepare_chunk(
    frames: Vec<Frame>,
    failure: Option<CodecError>,
    inflight: &Semaphore,
    validation: Option<&SchemaValidation>,
) -> ChunkOutcome {
    let publishes = frames.iter().filter(|frame| matches!(frame, Frame::Publish { .. })).count();
    if publishes > 0 {
        // The permits are handed back one by one by `InflightPermit`.
        match inflight.acquire_many(publishes as u32).await {
            Ok(permits) => permits.forget(),
            Err(_) => return ChunkOutcome::Closed,
        }
    }
    let verdicts = match validation {
        Some(validation) => match validation.check(&frames).await {
            Ok(verdicts) => verdicts,
            Err(_) => return ChunkOutcome::Aborted,
        },
        None => Vec::new(),
    };
    ChunkOutcome::Ready {
        frames,
        verdicts,
        failure,
    }
}

/// Sends a prepared chunk to the actor, and then the error that ended it, if
/// any. Returns whether the reader should go on.
fn hand_over(outcome: ChunkOutcome, actor: &ActorRef<ConnectionMsg>) -> bool {
    let (frames, verdicts, failure) = match outcome {
        ChunkOutcome::Ready {
            frames,
            verdicts,
            failure,
        } => (frames, verdicts, failure),
        ChunkOutcome::Closed => return false,
        ChunkOutcome::Aborted => {
            let _ = actor.send_message(ConnectionMsg::ProtocolViolation {
                code: ErrorCode::Internal,
                message: "schema validation failed unexpectedly; closing the connection".to_owned(),
            });
            return false;
        }
    };
    if !frames.is_empty() && actor.send_message(ConnectionMsg::Frames { frames, verdicts }).is_err() {
        return false;
    }
    let Some(error) = failure else {
        return true;
    };
    let (code, message) = match &error {
        CodecError::FrameTooLarge { .. } => (ErrorCode::FrameTooLarge, error.to_string()),
        CodecError::Io(_) => {
            let _ = actor.send_message(ConnectionMsg::PeerClosed(error.to_string()));
            return false;
        }
        _ => (ErrorCode::MalformedFrame, error.to_string()),
    };
    let _ = actor.send_message(ConnectionMsg::ProtocolViolation { code, message });
    false
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
