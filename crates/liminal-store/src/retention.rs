//! Retention planning: which prefix of a stream the limits remove.
//!
//! Planning only reads, from one RocksDB snapshot so concurrent writes cannot
//! make it see a gap. The caller submits the resulting `Command::Truncate`,
//! which makes the decision part of the command log.

use rocksdb::{DB, ReadOptions, SnapshotWithThreadMode};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::codec::{ChannelState, StoredRecord, decode_msgpack, record_size};
use crate::error::{Result, StoreError};
use crate::keys;
use crate::store::{Store, column_family};
use crate::{ChannelId, GroupId};

/// Maximum records one `plan_retention` call inspects for the age limit.
/// When more records are expired, the plan covers the first ones and the
/// next call continues.
pub const RETENTION_AGE_SCAN_LIMIT: usize = 10_000;

/// Fields of a stored record that retention needs, decoded without copying the payload.
#[derive(Deserialize)]
struct RecordPosition {
    timestamp_ms: u64,
    _headers: IgnoredAny,
    _payload: IgnoredAny,
    _idempotency_key: IgnoredAny,
    end_position: u64,
}

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

impl Store {
    /// Returns the `below_offset` for a `Command::Truncate` that enforces the
    /// given limits, or `None` when nothing needs to be removed. Each limit
    /// that is `Some` is applied and the largest removal wins.
    ///
    /// - `max_messages`: keep at most this many of the newest records.
    /// - `max_bytes`: keep the newest records whose total size (payload,
    ///   headers, idempotency key) is at most this. A binary search finds the
    ///   boundary, so it reads O(log n) records.
    /// - `max_age_ms`: remove records with `timestamp_ms < now_ms - max_age_ms`,
    ///   scanning from the oldest and stopping at the first younger record or
    ///   after [`RETENTION_AGE_SCAN_LIMIT`] records.
    pub fn plan_retention(
        &self,
        group: GroupId,
        channel: ChannelId,
        max_messages: Option<u64>,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Option<u64>> {
        let snapshot = self.db.snapshot();
        let meta = column_family(&self.db, keys::CF_META)?;
        let state_key = keys::channel_state_key(group, channel);
        let Some(value) = snapshot
            .get_pinned_cf(meta, state_key)
            .map_err(StoreError::db("get channel state"))?
        else {
            return Ok(None);
        };
        let state = ChannelState::decode(&state_key, &value)?;
        if state.first > state.last {
            return Ok(None);
        }

        let mut below = state.first;
        if let Some(max) = max_messages {
            let count = state.last - state.first + 1;
            if count > max {
                below = below.max(state.last - max + 1);
            }
        }
        if let Some(max) = max_bytes {
            below = below.max(self.plan_by_bytes(&snapshot, group, channel, &state, max)?);
        }
        if let Some(max_age) = max_age_ms {
            let cutoff = now_ms.saturating_sub(max_age);
            below = below.max(self.plan_by_age(&snapshot, group, channel, &state, cutoff)?);
        }
        Ok((below > state.first).then_some(below))
    }

    fn plan_by_bytes(
        &self,
        snapshot: &Snapshot<'_>,
        group: GroupId,
        channel: ChannelId,
        state: &ChannelState,
        max_bytes: u64,
    ) -> Result<u64> {
        let streams = column_family(&self.db, keys::CF_STREAMS)?;
        let first_key = keys::stream_key(group, channel, state.first);
        let first: StoredRecord = match snapshot
            .get_pinned_cf(streams, first_key)
            .map_err(StoreError::db("get stream record"))?
        {
            Some(value) => decode_msgpack("stream record", &first_key, &value)?,
            None => return Err(missing_record(&first_key)),
        };
        let first_size = record_size(
            &first.headers,
            &first.payload,
            first.idempotency_key.as_deref(),
        );
        let start_position = first.end_position - first_size;
        if state.end_position - start_position <= max_bytes {
            return Ok(state.first);
        }

        // Keeping `o+1..=last` retains `end_position - end(o)` bytes, so find
        // the smallest `o` with `end(o) >= end_position - max_bytes`. `end` is
        // non-decreasing in `o`, and `o = last` always qualifies.
        let threshold = state.end_position - max_bytes;
        let (mut low, mut high) = (state.first, state.last);
        while low < high {
            let middle = low + (high - low) / 2;
            let key = keys::stream_key(group, channel, middle);
            let position: RecordPosition = match snapshot
                .get_pinned_cf(streams, key)
                .map_err(StoreError::db("get stream record"))?
            {
                Some(value) => decode_msgpack("stream record", &key, &value)?,
                None => return Err(missing_record(&key)),
            };
            if position.end_position >= threshold {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low + 1)
    }

    fn plan_by_age(
        &self,
        snapshot: &Snapshot<'_>,
        group: GroupId,
        channel: ChannelId,
        state: &ChannelState,
        cutoff_ms: u64,
    ) -> Result<u64> {
        let streams = column_family(&self.db, keys::CF_STREAMS)?;
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::stream_key(group, channel, state.last + 1).to_vec());
        let mut iter = snapshot.raw_iterator_cf_opt(streams, options);
        iter.seek(keys::stream_key(group, channel, state.first));

        let mut below = state.first;
        let mut scanned = 0usize;
        while scanned < RETENTION_AGE_SCAN_LIMIT {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            let position: RecordPosition = decode_msgpack("stream record", key, value)?;
            if position.timestamp_ms >= cutoff_ms {
                break;
            }
            let offset = keys::stream_key_offset(key).ok_or_else(|| missing_record(key))?;
            below = offset + 1;
            scanned += 1;
            iter.next();
        }
        iter.status().map_err(StoreError::db("iterate stream"))?;
        Ok(below)
    }
}

fn missing_record(key: &[u8]) -> StoreError {
    StoreError::Decode {
        what: "stream record",
        key: key.to_vec(),
        reason: "record inside the channel's offset range is missing".to_string(),
    }
}
