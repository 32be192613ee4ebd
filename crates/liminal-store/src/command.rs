//! Commands accepted by the write path and what applying them produced.

use bytes::Bytes;

use crate::codec::Receipt;
use crate::{ChannelId, GroupId};

/// One state change. Commands carry every input that `apply` needs, including
/// offsets and timestamps, so applying the same sequence of commands to the
/// same starting state always produces the same state (a Raft log can replay
/// them on every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Registers `name` in `group` and assigns it the next channel id, or
    /// returns the existing id when the name is already registered.
    CreateChannel { group: GroupId, name: String },
    /// Appends records whose offsets are `last + 1, last + 2, ...`.
    Append {
        group: GroupId,
        channel: ChannelId,
        records: Vec<AppendRecord>,
        /// The channel's dedup window in milliseconds. A receipt that is older
        /// than this, measured from the new record's timestamp, has expired:
        /// a record with its key takes the receipt over. `u64::MAX` keeps
        /// every receipt until it is purged.
        dedup_window_ms: u64,
    },
    /// Stores `offset` as the last acknowledged offset of `consumer`.
    /// Offset 0 means nothing is acknowledged. Cursors may move backwards (rewind).
    SetCursor {
        group: GroupId,
        channel: ChannelId,
        consumer: String,
        offset: u64,
    },
    /// Deletes every record with an offset below `below_offset` (retention).
    /// Values past `last + 1` are clamped to `last + 1`, so offsets are never
    /// reused: the next append still continues at `last + 1`.
    Truncate {
        group: GroupId,
        channel: ChannelId,
        below_offset: u64,
    },
    /// Deletes at most `max` receipts whose timestamp is below `older_than_ms`,
    /// oldest first.
    PurgeReceipts {
        group: GroupId,
        channel: ChannelId,
        older_than_ms: u64,
        max: usize,
    },
}

impl Command {
    /// Returns the replication group the command changes.
    pub fn group(&self) -> GroupId {
        match self {
            Command::CreateChannel { group, .. }
            | Command::Append { group, .. }
            | Command::SetCursor { group, .. }
            | Command::Truncate { group, .. }
            | Command::PurgeReceipts { group, .. } => *group,
        }
    }
}

/// A record to append, with its offset already assigned by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub idempotency_key: Option<String>,
}

/// Result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    ChannelCreated {
        channel: ChannelId,
        /// False when the name was already registered and the existing id is returned.
        created: bool,
    },
    Appended {
        first_offset: u64,
        last_offset: u64,
        /// Records whose idempotency key already had a receipt. The record is
        /// stored anyway (its offset is taken) but the existing receipt is kept.
        duplicate_keys: Vec<DuplicateKey>,
    },
    CursorSet,
    Truncated {
        /// First offset kept after the command; equals `last + 1` when the stream is empty.
        first_offset: u64,
        /// Number of records deleted by this command.
        removed: u64,
    },
    ReceiptsPurged {
        removed: usize,
        /// True when more receipts older than the limit remain after `max` were removed.
        more: bool,
    },
}

/// An appended record whose idempotency key was already claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub offset: u64,
    pub key: String,
    /// The receipt that was kept.
    pub existing: Receipt,
}
