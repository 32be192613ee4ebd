//! Durable storage for the Liminal broker, on RocksDB.
//!
//! - Streams: append-only records per channel, addressed by a contiguous
//!   offset that starts at 1 and is also the message id.
//! - Cursors: the last offset each consumer acknowledged.
//! - Receipts: idempotency key → stored message, for publish deduplication.
//!
//! Every state change is a [`Command`]. [`apply`] turns a command into writes
//! on a [`PendingBatch`] deterministically (no clock, no randomness), so a Raft
//! state machine can later call it unchanged. [`Store`] runs a single writer
//! thread that applies every queued command into one RocksDB write batch
//! (group commit) and syncs the WAL according to [`FsyncPolicy`]. Reads are
//! synchronous. See `docs/storage.md` for the on-disk layout and durability.

mod apply;
mod codec;
mod command;
mod error;
mod keys;
mod pending;
mod read;
mod retention;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use apply::{MAX_CHANNEL_NAME_LEN, apply};
pub use codec::{Receipt, StoredMessage};
pub use command::{AppendRecord, ApplyOutcome, Command, DuplicateKey};
pub use error::{Result, StoreError};
pub use pending::PendingBatch;
pub use retention::RETENTION_AGE_SCAN_LIMIT;
pub use store::{FORMAT_VERSION, Store, StoreOptions};
pub use writer::{BatchObserver, BatchReport, Completion, FsyncPolicy, StoreStats};

/// Re-export so callers of [`apply`] name the same RocksDB types.
pub use rocksdb;

/// Replication group. A single node uses group 0; with clustering each group
/// is one Raft state machine whose data is the key range with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// Channel id assigned by the store per (group, channel name). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);
