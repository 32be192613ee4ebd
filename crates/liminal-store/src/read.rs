//! Synchronous read path. Every call is a RocksDB point lookup or a bounded
//! range scan, safe to run from many threads at once. Async callers run them
//! in `spawn_blocking`.

use rocksdb::ReadOptions;

use crate::codec::{
    Receipt, StoredMessage, StoredRecord, decode_msgpack, decode_u32, decode_u64, record_size,
};
use crate::command::{ApplyOutcome, Command};
use crate::error::{Result, StoreError};
use crate::keys;
use crate::pending::{read_channel_id, read_channel_state, read_receipt};
use crate::store::{Store, column_family};
use crate::{ChannelId, GroupId};

impl Store {
    /// Reads records in offset order starting at `from_offset` (0 reads from
    /// the first kept record).
    ///
    /// Stops after `max_records` records, or before the record that would
    /// take the total size (as counted by retention: payload, headers and
    /// idempotency key) past `max_bytes`. The first record is always returned
    /// when one exists, so a record larger than `max_bytes` cannot stall a
    /// consumer. An unknown channel reads as empty.
    pub fn read(
        &self,
        group: GroupId,
        channel: ChannelId,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>> {
        let mut messages = Vec::new();
        if max_records == 0 {
            return Ok(messages);
        }
        let streams = column_family(&self.db, keys::CF_STREAMS)?;
        let prefix = keys::channel_prefix(group, channel);
        let mut options = ReadOptions::default();
        if let Some(upper) = keys::prefix_successor(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db.raw_iterator_cf_opt(streams, options);
        iter.seek(keys::stream_key(group, channel, from_offset.max(1)));

        let mut total_bytes = 0usize;
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(&prefix) {
                break;
            }
            let offset = keys::stream_key_offset(key).ok_or_else(|| StoreError::Decode {
                what: "stream key",
                key: key.to_vec(),
                reason: "expected 16 bytes".to_string(),
            })?;
            let record: StoredRecord = decode_msgpack("stream record", key, value)?;
            let size = record_size(
                &record.headers,
                &record.payload,
                record.idempotency_key.as_deref(),
            ) as usize;
            if !messages.is_empty() && total_bytes.saturating_add(size) > max_bytes {
                break;
            }
            total_bytes = total_bytes.saturating_add(size);
            messages.push(StoredMessage {
                offset,
                timestamp_ms: record.timestamp_ms,
                headers: record.headers,
                payload: record.payload,
                idempotency_key: record.idempotency_key,
            });
            if messages.len() >= max_records {
                break;
            }
            iter.next();
        }
        iter.status().map_err(StoreError::db("iterate stream"))?;
        Ok(messages)
    }

    /// Returns `(first kept offset, last written offset)`, or `None` when the
    /// channel is unknown or nothing was ever appended to it.
    ///
    /// After retention removed every record the result is `(last + 1, last)`:
    /// the range `first..=last` is empty, and the next append uses `last + 1`.
    pub fn bounds(&self, group: GroupId, channel: ChannelId) -> Result<Option<(u64, u64)>> {
        let state = read_channel_state(&self.db, group, channel)?;
        Ok(state
            .filter(|state| state.last > 0)
            .map(|state| (state.first, state.last)))
    }

    /// Returns the last offset acknowledged by `consumer`, or `None` when it never acknowledged.
    pub fn cursor(
        &self,
        group: GroupId,
        channel: ChannelId,
        consumer: &str,
    ) -> Result<Option<u64>> {
        let cursors = column_family(&self.db, keys::CF_CURSORS)?;
        let key = keys::cursor_key(group, channel, consumer);
        match self
            .db
            .get_pinned_cf(cursors, &key)
            .map_err(StoreError::db("get cursor"))?
        {
            Some(value) => Ok(Some(decode_u64("cursor", &key, &value)?)),
            None => Ok(None),
        }
    }

    /// Returns the receipt of idempotency key `key`, or `None` when it was
    /// never used or its receipt was purged.
    pub fn receipt(
        &self,
        group: GroupId,
        channel: ChannelId,
        key: &str,
    ) -> Result<Option<Receipt>> {
        read_receipt(&self.db, &keys::receipt_key(group, channel, key))
    }

    /// Returns the id of channel `name`, creating it when missing.
    ///
    /// Creation is a `CreateChannel` command through the writer thread, so ids
    /// are assigned in one place and concurrent callers get the same id. That
    /// path blocks until the batch is written: call this from a blocking thread,
    /// never from a completion callback.
    pub fn channel_id(&self, group: GroupId, name: &str) -> Result<ChannelId> {
        if let Some(channel) = read_channel_id(&self.db, group, name)? {
            return Ok(channel);
        }
        let outcome = self.submit_blocking(Command::CreateChannel {
            group,
            name: name.to_string(),
        })?;
        match outcome {
            ApplyOutcome::ChannelCreated { channel, .. } => Ok(channel),
            other => unreachable!("CreateChannel produced {other:?}"),
        }
    }

    /// Returns the id of channel `name` without creating it.
    pub fn lookup_channel(&self, group: GroupId, name: &str) -> Result<Option<ChannelId>> {
        read_channel_id(&self.db, group, name)
    }

    /// Lists every channel of `group` as `(name, id)`, sorted by name bytes.
    pub fn channels(&self, group: GroupId) -> Result<Vec<(String, ChannelId)>> {
        let meta = column_family(&self.db, keys::CF_META)?;
        let prefix = keys::channel_by_name_prefix(group);
        let mut options = ReadOptions::default();
        if let Some(upper) = keys::prefix_successor(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db.raw_iterator_cf_opt(meta, options);
        iter.seek(prefix);

        let mut channels = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8(key[prefix.len()..].to_vec()).map_err(|e| {
                StoreError::Decode {
                    what: "channel name",
                    key: key.to_vec(),
                    reason: e.to_string(),
                }
            })?;
            channels.push((name, ChannelId(decode_u32("channel id", key, value)?)));
            iter.next();
        }
        iter.status().map_err(StoreError::db("iterate channels"))?;
        Ok(channels)
    }
}
