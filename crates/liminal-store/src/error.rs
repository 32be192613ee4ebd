//! The typed error returned by every store operation.

use std::path::PathBuf;

/// Errors from opening, writing to or reading from the store.
///
/// The type is `Clone` because the writer fans one batch failure out to every
/// request of that batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or RocksDB failed to open it.
    #[error("failed to open store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },

    /// The directory holds data written by a newer release of this crate.
    #[error(
        "store format version {found} is newer than the supported version {supported}; \
         upgrade liminal before opening this data directory"
    )]
    NewerFormat { found: u32, supported: u32 },

    /// The directory holds data in a format this release can no longer read.
    #[error(
        "store format version {found} is older than the supported version {supported} \
         and no migration exists for it"
    )]
    OlderFormat { found: u32, supported: u32 },

    /// A RocksDB call failed.
    #[error("rocksdb {operation} failed: {source}")]
    Db {
        operation: &'static str,
        #[source]
        source: rocksdb::Error,
    },

    /// A stored value could not be decoded. This means corruption or a format bug.
    #[error("failed to decode {what} stored under key {key:02x?}: {reason}")]
    Decode {
        what: &'static str,
        key: Vec<u8>,
        reason: String,
    },

    /// A value could not be encoded as MessagePack.
    #[error("failed to encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },

    /// An append whose first offset does not directly follow the last written one.
    #[error(
        "append to group {group} channel {channel} must start at offset {expected}, \
         got {found}"
    )]
    NonContiguousOffset {
        group: u32,
        channel: u32,
        expected: u64,
        found: u64,
    },

    /// An append whose records are not numbered first, first+1, first+2, ...
    #[error(
        "append to group {group} channel {channel} has offset {found} at position {index}, \
         expected {expected}"
    )]
    OffsetsNotSequential {
        group: u32,
        channel: u32,
        index: usize,
        expected: u64,
        found: u64,
    },

    /// An append with no records.
    #[error("append to group {group} channel {channel} contains no records")]
    EmptyAppend { group: u32, channel: u32 },

    /// A command names a channel id that was never created in that group.
    #[error("channel {channel} does not exist in group {group}")]
    UnknownChannel { group: u32, channel: u32 },

    /// A cursor past the last written offset of its channel.
    #[error(
        "cursor {offset} for consumer {consumer:?} on group {group} channel {channel} is past \
         the last written offset {last}"
    )]
    CursorBeyondEnd {
        group: u32,
        channel: u32,
        consumer: String,
        offset: u64,
        last: u64,
    },

    /// A channel name that the store cannot register.
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidChannelName { name: String, reason: &'static str },

    /// Every channel id of the group has been assigned.
    #[error("group {group} has no channel ids left to assign")]
    ChannelIdsExhausted { group: u32 },

    /// The bounded command queue is full. The caller should retry later or shed load.
    #[error("store write queue is full ({capacity} commands); retry later")]
    QueueFull { capacity: usize },

    /// The writer thread has stopped (shutdown or panic), so the command was not applied.
    #[error("store writer thread has stopped; the command was not applied")]
    WriterStopped,
}

impl StoreError {
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
        move |source| StoreError::Db { operation, source }
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
