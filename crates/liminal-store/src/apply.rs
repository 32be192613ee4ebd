//! The deterministic state transition: one [`Command`] into a [`PendingBatch`].
//!
//! `apply` reads only the database and the batch overlay and takes every time
//! and offset from the command, never from the clock, so a Raft state machine
//! can call it unchanged on every replica. A command is validated completely
//! before its first write, so a rejected command leaves the batch untouched.

use std::collections::HashSet;

use rocksdb::DB;

use crate::codec::{ChannelState, Receipt, StoredRecordRef, encode_msgpack, record_size};
use crate::command::{AppendRecord, ApplyOutcome, Command, DuplicateKey};
use crate::error::{Result, StoreError};
use crate::keys;
use crate::pending::PendingBatch;
use crate::store::column_family;
use crate::{ChannelId, GroupId};

/// Maximum channel name length in bytes; names are part of `meta` keys.
pub const MAX_CHANNEL_NAME_LEN: usize = 1024;

/// Applies `cmd` to `batch`, reading current state from `db` and from
/// commands applied earlier into the same batch.
///
/// Nothing is durable until the caller writes `batch.into_write_batch()`.
///
/// Idempotency receipts follow a first-writer-wins rule within the dedup
/// window. An appended record whose key already has an unexpired receipt (in
/// the database, earlier in this batch or earlier in the same append) is
/// stored but does not replace the receipt. It is listed in
/// `ApplyOutcome::Appended::duplicate_keys` instead. A record whose key has
/// only an expired receipt replaces it, together with its expiry entry, so a
/// later purge of the old entry cannot delete the new receipt.
pub fn apply(db: &DB, batch: &mut PendingBatch, cmd: &Command) -> Result<ApplyOutcome> {
    let outcome = match cmd {
        Command::CreateChannel { group, name } => create_channel(db, batch, *group, name)?,
        Command::Append {
            group,
            channel,
            records,
            dedup_window_ms,
        } => append(db, batch, *group, *channel, records, *dedup_window_ms)?,
        Command::SetCursor {
            group,
            channel,
            consumer,
            offset,
        } => set_cursor(db, batch, *group, *channel, consumer, *offset)?,
        Command::Truncate {
            group,
            channel,
            below_offset,
        } => truncate(db, batch, *group, *channel, *below_offset)?,
        Command::PurgeReceipts {
            group,
            channel,
            older_than_ms,
            max,
        } => purge_receipts(db, batch, *group, *channel, *older_than_ms, *max)?,
    };
    batch.count_command();
    Ok(outcome)
}

fn create_channel(
    db: &DB,
    batch: &mut PendingBatch,
    group: GroupId,
    name: &str,
) -> Result<ApplyOutcome> {
    let invalid = |reason| StoreError::InvalidChannelName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(invalid("the name is longer than 1024 bytes"));
    }

    if let Some(channel) = batch.channel_id(db, group, name)? {
        return Ok(ApplyOutcome::ChannelCreated {
            channel,
            created: false,
        });
    }
    let id = batch.next_channel_id(db, group)?;
    let next = id
        .checked_add(1)
        .ok_or(StoreError::ChannelIdsExhausted { group: group.0 })?;
    let channel = ChannelId(id);
    batch.register_channel(db, group, name, channel, next)?;
    Ok(ApplyOutcome::ChannelCreated {
        channel,
        created: true,
    })
}

/// A receipt to write for one appended record.
struct NewReceipt {
    receipt_key: Vec<u8>,
    encoded: Vec<u8>,
    receipt: Receipt,
    expiry_key: [u8; 24],
    idempotency_key: String,
    /// Expiry entry of the expired receipt this one replaces.
    replaces_expiry_key: Option<[u8; 24]>,
}

fn append(
    db: &DB,
    batch: &mut PendingBatch,
    group: GroupId,
    channel: ChannelId,
    records: &[AppendRecord],
    dedup_window_ms: u64,
) -> Result<ApplyOutcome> {
    let state = batch.channel_state(db, group, channel)?;
    check_offsets(group, channel, &state, records)?;

    // Validate and encode everything before the first write.
    let mut end_position = state.end_position;
    let mut encoded_records = Vec::with_capacity(records.len());
    for record in records {
        end_position += record_size(
            &record.headers,
            &record.payload,
            record.idempotency_key.as_deref(),
        );
        let value = encode_msgpack(
            "stream record",
            &StoredRecordRef {
                timestamp_ms: record.timestamp_ms,
                headers: &record.headers,
                payload: &record.payload,
                idempotency_key: &record.idempotency_key,
                end_position,
            },
        )?;
        encoded_records.push((keys::stream_key(group, channel, record.offset), value));
    }
    let (new_receipts, duplicate_keys) =
        plan_receipts(db, batch, group, channel, records, dedup_window_ms)?;

    let streams = column_family(db, keys::CF_STREAMS)?;
    for (key, value) in encoded_records {
        batch.batch.put_cf(streams, key, value);
    }
    for receipt in new_receipts {
        if let Some(expired) = receipt.replaces_expiry_key {
            batch.delete_receipt(db, receipt.receipt_key.clone(), expired)?;
        }
        batch.put_receipt(
            db,
            receipt.receipt_key,
            receipt.encoded,
            receipt.receipt,
            receipt.expiry_key,
            &receipt.idempotency_key,
        )?;
    }
    let last_offset = state.last + records.len() as u64;
    batch.put_channel_state(
        db,
        group,
        channel,
        ChannelState {
            first: state.first,
            last: last_offset,
            end_position,
        },
    )?;

    Ok(ApplyOutcome::Appended {
        first_offset: state.last + 1,
        last_offset,
        duplicate_keys,
    })
}

fn check_offsets(
    group: GroupId,
    channel: ChannelId,
    state: &ChannelState,
    records: &[AppendRecord],
) -> Result<()> {
    let Some(first) = records.first() else {
        return Err(StoreError::EmptyAppend {
            group: group.0,
            channel: channel.0,
        });
    };
    let expected = state.last + 1;
    if first.offset != expected {
        return Err(StoreError::NonContiguousOffset {
            group: group.0,
            channel: channel.0,
            expected,
            found: first.offset,
        });
    }
    for (index, record) in records.iter().enumerate() {
        let expected = expected + index as u64;
        if record.offset != expected {
            return Err(StoreError::OffsetsNotSequential {
                group: group.0,
                channel: channel.0,
                index,
                expected,
                found: record.offset,
            });
        }
    }
    Ok(())
}

/// Decides which records get a receipt under the first-writer-wins rule.
fn plan_receipts(
    db: &DB,
    batch: &PendingBatch,
    group: GroupId,
    channel: ChannelId,
    records: &[AppendRecord],
    dedup_window_ms: u64,
) -> Result<(Vec<NewReceipt>, Vec<DuplicateKey>)> {
    let mut new_receipts: Vec<NewReceipt> = Vec::new();
    let mut claimed_here: HashSet<&str> = HashSet::new();
    let mut duplicates = Vec::new();

    for record in records {
        let Some(key) = record.idempotency_key.as_deref() else {
            continue;
        };
        let receipt_key = keys::receipt_key(group, channel, key);
        let existing = if claimed_here.contains(key) {
            new_receipts
                .iter()
                .rev()
                .find(|r| r.idempotency_key == key)
                .map(|r| r.receipt)
        } else {
            batch.receipt(db, &receipt_key)?
        };
        let expired = existing.filter(|receipt| {
            receipt.timestamp_ms.saturating_add(dedup_window_ms) < record.timestamp_ms
        });
        if let Some(existing) = existing.filter(|_| expired.is_none()) {
            duplicates.push(DuplicateKey {
                offset: record.offset,
                key: key.to_string(),
                existing,
            });
            continue;
        }

        let receipt = Receipt {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
        };
        claimed_here.insert(key);
        new_receipts.push(NewReceipt {
            receipt_key,
            encoded: encode_msgpack("receipt", &receipt)?,
            receipt,
            expiry_key: keys::receipt_expiry_key(
                group,
                channel,
                record.timestamp_ms,
                record.offset,
            ),
            idempotency_key: key.to_string(),
            replaces_expiry_key: expired.map(|receipt| {
                keys::receipt_expiry_key(group, channel, receipt.timestamp_ms, receipt.offset)
            }),
        });
    }
    Ok((new_receipts, duplicates))
}

fn set_cursor(
    db: &DB,
    batch: &mut PendingBatch,
    group: GroupId,
    channel: ChannelId,
    consumer: &str,
    offset: u64,
) -> Result<ApplyOutcome> {
    let state = batch.channel_state(db, group, channel)?;
    if offset > state.last {
        return Err(StoreError::CursorBeyondEnd {
            group: group.0,
            channel: channel.0,
            consumer: consumer.to_string(),
            offset,
            last: state.last,
        });
    }
    let cursors = column_family(db, keys::CF_CURSORS)?;
    batch.batch.put_cf(
        cursors,
        keys::cursor_key(group, channel, consumer),
        offset.to_be_bytes(),
    );
    Ok(ApplyOutcome::CursorSet)
}

fn truncate(
    db: &DB,
    batch: &mut PendingBatch,
    group: GroupId,
    channel: ChannelId,
    below_offset: u64,
) -> Result<ApplyOutcome> {
    let state = batch.channel_state(db, group, channel)?;
    let below = below_offset.min(state.last + 1);
    if below <= state.first {
        return Ok(ApplyOutcome::Truncated {
            first_offset: state.first,
            removed: 0,
        });
    }

    let streams = column_family(db, keys::CF_STREAMS)?;
    // One range tombstone regardless of how many records it covers.
    batch.batch.delete_range_cf(
        streams,
        keys::stream_key(group, channel, state.first),
        keys::stream_key(group, channel, below),
    );
    batch.put_channel_state(
        db,
        group,
        channel,
        ChannelState {
            first: below,
            ..state
        },
    )?;
    Ok(ApplyOutcome::Truncated {
        first_offset: below,
        removed: below - state.first,
    })
}

fn purge_receipts(
    db: &DB,
    batch: &mut PendingBatch,
    group: GroupId,
    channel: ChannelId,
    older_than_ms: u64,
    max: usize,
) -> Result<ApplyOutcome> {
    batch.channel_state(db, group, channel)?;
    let from = keys::receipt_expiry_key(group, channel, 0, 0);
    let to = keys::receipt_expiry_key(group, channel, older_than_ms, 0);
    // One extra entry shows whether expired receipts remain after this purge.
    let mut entries = batch.expiry_entries(db, from, to, max.saturating_add(1))?;
    let more = entries.len() > max;
    entries.truncate(max);

    let removed = entries.len();
    for (expiry_key, idempotency_key) in entries {
        let receipt_key = keys::receipt_key(group, channel, &idempotency_key);
        batch.delete_receipt(db, receipt_key, expiry_key)?;
    }
    Ok(ApplyOutcome::ReceiptsPurged { removed, more })
}
