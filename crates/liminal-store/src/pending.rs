//! The batch under construction plus the state changes it contains.
//!
//! A RocksDB `WriteBatch` cannot be read back, yet a command applied after
//! another in the same batch must see its effects (an append after an append
//! checks contiguity against the first one). `PendingBatch` therefore records
//! every value that `apply` may read later in the same batch. Reads consult
//! this overlay first and the database second, so the outcome of a command
//! never depends on how commands were grouped into batches.

use std::collections::{BTreeMap, HashMap, HashSet};

use rocksdb::{DB, WriteBatch};

use crate::codec::{ChannelState, Receipt, decode_msgpack, decode_u32};
use crate::error::{Result, StoreError};
use crate::keys;
use crate::store::column_family;
use crate::{ChannelId, GroupId};

/// A write batch being filled by [`apply`](crate::apply), with the overlay of
/// values it writes.
#[derive(Default)]
pub struct PendingBatch {
    pub(crate) batch: WriteBatch,
    commands: usize,
    channel_states: HashMap<(GroupId, ChannelId), ChannelState>,
    channel_ids: HashMap<(GroupId, String), ChannelId>,
    next_channel_ids: HashMap<GroupId, u32>,
    /// Receipt key → receipt written (`Some`) or deleted (`None`) in this batch.
    receipts: HashMap<Vec<u8>, Option<Receipt>>,
    /// Receipt expiry index entries written in this batch, sorted like the column family.
    expiry_added: BTreeMap<[u8; 24], String>,
    /// Receipt expiry index entries of the database deleted in this batch.
    expiry_deleted: HashSet<[u8; 24]>,
}

impl PendingBatch {
    pub fn new() -> PendingBatch {
        PendingBatch::default()
    }

    /// Returns how many commands were applied successfully into this batch.
    pub fn commands(&self) -> usize {
        self.commands
    }

    /// Returns whether the batch changes nothing, as after a purge that found
    /// no expired receipt.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Returns the encoded size of the batch in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    /// Consumes the overlay and returns the batch to pass to `DB::write_opt`.
    pub fn into_write_batch(self) -> WriteBatch {
        self.batch
    }

    pub(crate) fn count_command(&mut self) {
        self.commands += 1;
    }

    /// Returns the state of a registered channel, or `UnknownChannel`.
    pub(crate) fn channel_state(
        &self,
        db: &DB,
        group: GroupId,
        channel: ChannelId,
    ) -> Result<ChannelState> {
        if let Some(state) = self.channel_states.get(&(group, channel)) {
            return Ok(*state);
        }
        read_channel_state(db, group, channel)?.ok_or(StoreError::UnknownChannel {
            group: group.0,
            channel: channel.0,
        })
    }

    pub(crate) fn put_channel_state(
        &mut self,
        db: &DB,
        group: GroupId,
        channel: ChannelId,
        state: ChannelState,
    ) -> Result<()> {
        let meta = column_family(db, keys::CF_META)?;
        self.batch.put_cf(
            meta,
            keys::channel_state_key(group, channel),
            state.encode(),
        );
        self.channel_states.insert((group, channel), state);
        Ok(())
    }

    pub(crate) fn channel_id(
        &self,
        db: &DB,
        group: GroupId,
        name: &str,
    ) -> Result<Option<ChannelId>> {
        if let Some(id) = self.channel_ids.get(&(group, name.to_string())) {
            return Ok(Some(*id));
        }
        read_channel_id(db, group, name)
    }

    pub(crate) fn next_channel_id(&self, db: &DB, group: GroupId) -> Result<u32> {
        if let Some(next) = self.next_channel_ids.get(&group) {
            return Ok(*next);
        }
        let meta = column_family(db, keys::CF_META)?;
        let key = keys::next_channel_id_key(group);
        match db.get_pinned_cf(meta, key).map_err(StoreError::db("get"))? {
            Some(value) => decode_u32("next channel id", &key, &value),
            // Id 0 is never assigned, so a zero id in a message is always a bug.
            None => Ok(1),
        }
    }

    pub(crate) fn register_channel(
        &mut self,
        db: &DB,
        group: GroupId,
        name: &str,
        channel: ChannelId,
        next: u32,
    ) -> Result<()> {
        let meta = column_family(db, keys::CF_META)?;
        self.batch.put_cf(
            meta,
            keys::channel_by_name_key(group, name),
            channel.0.to_be_bytes(),
        );
        self.batch.put_cf(
            meta,
            keys::channel_name_key(group, channel),
            name.as_bytes(),
        );
        self.batch
            .put_cf(meta, keys::next_channel_id_key(group), next.to_be_bytes());
        self.channel_ids.insert((group, name.to_string()), channel);
        self.next_channel_ids.insert(group, next);
        self.put_channel_state(db, group, channel, ChannelState::NEW)
    }

    /// Returns the receipt stored under `receipt_key`, including receipts
    /// written or deleted earlier in this batch.
    pub(crate) fn receipt(&self, db: &DB, receipt_key: &[u8]) -> Result<Option<Receipt>> {
        if let Some(entry) = self.receipts.get(receipt_key) {
            return Ok(*entry);
        }
        read_receipt(db, receipt_key)
    }

    pub(crate) fn put_receipt(
        &mut self,
        db: &DB,
        receipt_key: Vec<u8>,
        encoded: Vec<u8>,
        receipt: Receipt,
        expiry_key: [u8; 24],
        idempotency_key: &str,
    ) -> Result<()> {
        let receipts = column_family(db, keys::CF_RECEIPTS)?;
        let expiry = column_family(db, keys::CF_RECEIPT_EXPIRY)?;
        self.batch.put_cf(receipts, &receipt_key, encoded);
        self.batch
            .put_cf(expiry, expiry_key, idempotency_key.as_bytes());
        self.receipts.insert(receipt_key, Some(receipt));
        self.expiry_deleted.remove(&expiry_key);
        self.expiry_added
            .insert(expiry_key, idempotency_key.to_string());
        Ok(())
    }

    pub(crate) fn delete_receipt(
        &mut self,
        db: &DB,
        receipt_key: Vec<u8>,
        expiry_key: [u8; 24],
    ) -> Result<()> {
        let receipts = column_family(db, keys::CF_RECEIPTS)?;
        let expiry = column_family(db, keys::CF_RECEIPT_EXPIRY)?;
        self.batch.delete_cf(receipts, &receipt_key);
        self.batch.delete_cf(expiry, expiry_key);
        self.receipts.insert(receipt_key, None);
        if self.expiry_added.remove(&expiry_key).is_none() {
            self.expiry_deleted.insert(expiry_key);
        }
        Ok(())
    }

    /// Returns up to `limit` expiry index entries in `[from, to)`, in key order,
    /// merging the database with this batch's additions and deletions.
    pub(crate) fn expiry_entries(
        &self,
        db: &DB,
        from: [u8; 24],
        to: [u8; 24],
        limit: usize,
    ) -> Result<Vec<([u8; 24], String)>> {
        let mut entries: BTreeMap<[u8; 24], String> = self
            .expiry_added
            .range(from..to)
            .take(limit)
            .map(|(k, v)| (*k, v.clone()))
            .collect();

        let expiry = column_family(db, keys::CF_RECEIPT_EXPIRY)?;
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_lower_bound(from.to_vec());
        options.set_iterate_upper_bound(to.to_vec());
        let mut iter = db.raw_iterator_cf_opt(expiry, options);
        iter.seek(from);
        let mut taken = 0;
        while taken < limit {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            let index_key = <[u8; 24]>::try_from(key).map_err(|_| StoreError::Decode {
                what: "receipt expiry key",
                key: key.to_vec(),
                reason: format!("expected 24 bytes, found {}", key.len()),
            })?;
            if !self.expiry_deleted.contains(&index_key) {
                let idempotency_key =
                    String::from_utf8(value.to_vec()).map_err(|e| StoreError::Decode {
                        what: "receipt expiry entry",
                        key: key.to_vec(),
                        reason: e.to_string(),
                    })?;
                entries.insert(index_key, idempotency_key);
                taken += 1;
            }
            iter.next();
        }
        iter.status()
            .map_err(StoreError::db("iterate receipt expiry"))?;

        Ok(entries.into_iter().take(limit).collect())
    }
}

pub(crate) fn read_channel_state(
    db: &DB,
    group: GroupId,
    channel: ChannelId,
) -> Result<Option<ChannelState>> {
    let meta = column_family(db, keys::CF_META)?;
    let key = keys::channel_state_key(group, channel);
    match db.get_pinned_cf(meta, key).map_err(StoreError::db("get"))? {
        Some(value) => Ok(Some(ChannelState::decode(&key, &value)?)),
        None => Ok(None),
    }
}

pub(crate) fn read_channel_id(db: &DB, group: GroupId, name: &str) -> Result<Option<ChannelId>> {
    let meta = column_family(db, keys::CF_META)?;
    let key = keys::channel_by_name_key(group, name);
    match db
        .get_pinned_cf(meta, &key)
        .map_err(StoreError::db("get"))?
    {
        Some(value) => Ok(Some(ChannelId(decode_u32("channel id", &key, &value)?))),
        None => Ok(None),
    }
}

pub(crate) fn read_receipt(db: &DB, receipt_key: &[u8]) -> Result<Option<Receipt>> {
    let receipts = column_family(db, keys::CF_RECEIPTS)?;
    match db
        .get_pinned_cf(receipts, receipt_key)
        .map_err(StoreError::db("get"))?
    {
        Some(value) => Ok(Some(decode_msgpack("receipt", receipt_key, &value)?)),
        None => Ok(None),
    }
}
