//! Schema validation of publishes before they reach the connection actor.
//!
//! A connection's reader task checks each chunk of decoded frames against the schemas of the
//! channels they publish to, and hands the frames to the connection actor together with the
//! results. Chunks with enough schema-checked publishes are validated on a shared pool of
//! threads, and the reader keeps several chunks in flight, so one publisher's validations spread
//! over the pool's threads while its frames still reach the actor in order.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use liminal_protocol::Frame;
use liminal_schema::{ChannelSchema, ValidationFailure};
use tracing::error;

use crate::config::ChannelConfig;

/// Minimum number of schema-checked publishes in one chunk for the pool. Below it, the hand-off
/// between threads costs about as much as the validations it would move.
const MIN_POOLED_VALIDATIONS: usize = 8;

/// Payload bytes in one chunk above which its validations go to the pool however few they are.
/// Checking 64 KiB of JSON takes roughly half a millisecond (estimated from the measured 2 µs per
/// 219-byte order), too long for a runtime thread that also serves other connections' sockets.
const MIN_POOLED_BYTES: usize = 64 * 1024;

/// Results of schema validation for a chunk of frames, one entry per frame: `None` for frames
/// that were not checked. An empty list means the reader checked no frame of the chunk, for
/// example because the connection had not completed its handshake yet.
pub type Verdicts = Vec<Option<Result<(), ValidationFailure>>>;

/// Validation failed to produce a result, because a validation panicked on a pool thread.
#[derive(Debug, thiserror::Error)]
#[error("schema validation stopped unexpectedly on a pool thread")]
pub struct ValidationAborted;

/// The schemas of the declared channels and the threads that check payloads against them.
///
/// Schemas come only from the configuration, and channels created on first use have none, so
/// this map is complete for the broker's lifetime.
#[derive(Debug)]
pub struct SchemaValidation {
    schemas: HashMap<String, Arc<ChannelSchema>>,
    pool: rayon::ThreadPool,
}

impl SchemaValidation {
    /// Starts a pool of `threads` threads, named `liminal-schema-N`, when a channel in `channels`
    /// has a schema; returns `None` otherwise.
    ///
    /// # Errors
    ///
    /// Returns the reason the operating system refused to start the threads.
    pub fn start(
        channels: &[ChannelConfig],
        threads: usize,
    ) -> Result<Option<SchemaValidation>, rayon::ThreadPoolBuildError> {
        let schemas: HashMap<String, Arc<ChannelSchema>> = channels
            .iter()
            .filter_map(|channel| Some((channel.name.clone(), channel.schema.clone()?)))
            .collect();
        if schemas.is_empty() {
            return Ok(None);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("liminal-schema-{index}"))
            // Without a handler, a panic on a pool thread aborts the process. With it, the waiting
            // reader sees `ValidationAborted` and closes only its own connection.
            .panic_handler(|_| error!("a schema validation panicked on a pool thread"))
            .build()?;
        Ok(Some(SchemaValidation { schemas, pool }))
    }

    /// Returns the number of threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Returns the schema of `channel`, if it has one.
    pub(crate) fn schema(&self, channel: &str) -> Option<&Arc<ChannelSchema>> {
        self.schemas.get(channel)
    }

    /// Validates the payload of every publish in `frames` to a channel with a schema.
    ///
    /// # Errors
    ///
    /// Returns [`ValidationAborted`] when a validation panicked.
    pub(crate) async fn check(&self, frames: &[Frame]) -> Result<Verdicts, ValidationAborted> {
        let mut jobs: Vec<(usize, Arc<ChannelSchema>, Bytes)> = Vec::new();
        for (index, frame) in frames.iter().enumerate() {
            if let Frame::Publish { channel, payload, .. } = frame {
                if let Some(schema) = self.schemas.get(channel) {
                    jobs.push((index, Arc::clone(schema), payload.clone()));
                }
            }
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }

        let payload_bytes: usize = jobs.iter().map(|(_, _, payload)| payload.len()).sum();
        let results = if jobs.len() < MIN_POOLED_VALIDATIONS && payload_bytes < MIN_POOLED_BYTES {
            jobs.into_iter()
                .map(|(index, schema, payload)| (index, schema.validate(&payload)))
                .collect()
        } else {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            self.pool.spawn(move || {
                let results: Vec<_> = jobs
                    .into_iter()
                    .map(|(index, schema, payload)| (index, schema.validate(&payload)))
                    .collect();
                let _ = sender.send(results);
            });
            receiver.await.map_err(|_| ValidationAborted)?
        };

        let mut verdicts: Verdicts = (0..frames.len()).map(|_| None).collect();
        for (index, result) in results {
            verdicts[index] = Some(result);
        }
        Ok(verdicts)
    }
}
