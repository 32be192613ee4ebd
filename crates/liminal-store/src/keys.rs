//! Column family names and the byte layout of every key.
//!
//! Every key in the data column families starts with the replication group id
//! as a big-endian `u32`, so one group's data is a contiguous key range in each
//! column family and a Raft snapshot of a group is a range scan. Big-endian
//! integers make byte order equal numeric order, so iterators return offsets
//! in ascending order.

use crate::{ChannelId, GroupId};

/// Stream records: `group ++ channel ++ offset` → MessagePack `StoredRecord`.
pub const CF_STREAMS: &str = "streams";
/// Consumer cursors: `group ++ channel ++ consumer name` → last acked offset (`u64` BE).
pub const CF_CURSORS: &str = "cursors";
/// Idempotency receipts: `group ++ channel ++ key` → MessagePack `Receipt`.
pub const CF_RECEIPTS: &str = "receipts";
/// Receipts ordered by time for bounded purging:
/// `group ++ channel ++ timestamp_ms ++ offset` → idempotency key bytes.
pub const CF_RECEIPT_EXPIRY: &str = "receipt_expiry";
/// Channel registry and per-channel stream state, see the `META_*` tags.
pub const CF_META: &str = "meta";

/// The data column families, in the order they are opened.
pub const DATA_COLUMN_FAMILIES: [&str; 5] = [
    CF_STREAMS,
    CF_CURSORS,
    CF_RECEIPTS,
    CF_RECEIPT_EXPIRY,
    CF_META,
];

/// Store-wide key in the `default` column family; it is the only key without a group prefix.
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// `meta`: `group ++ 0x01 ++ name` → channel id (`u32` BE).
const META_CHANNEL_BY_NAME: u8 = 0x01;
/// `meta`: `group ++ 0x02 ++ channel` → channel name (UTF-8).
const META_CHANNEL_NAME: u8 = 0x02;
/// `meta`: `group ++ 0x03` → next channel id to assign (`u32` BE).
const META_NEXT_CHANNEL_ID: u8 = 0x03;
/// `meta`: `group ++ 0x04 ++ channel` → `ChannelState` (three `u64` BE).
const META_CHANNEL_STATE: u8 = 0x04;

/// Length of the `group ++ channel` prefix shared by stream, cursor and receipt keys.
pub const CHANNEL_PREFIX_LEN: usize = 8;

pub fn channel_prefix(group: GroupId, channel: ChannelId) -> [u8; CHANNEL_PREFIX_LEN] {
    let mut key = [0u8; CHANNEL_PREFIX_LEN];
    key[..4].copy_from_slice(&group.0.to_be_bytes());
    key[4..].copy_from_slice(&channel.0.to_be_bytes());
    key
}

pub fn stream_key(group: GroupId, channel: ChannelId, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&channel_prefix(group, channel));
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// Extracts the offset from a `streams` key, or `None` when the key is malformed.
pub fn stream_key_offset(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(CHANNEL_PREFIX_LEN..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn cursor_key(group: GroupId, channel: ChannelId, consumer: &str) -> Vec<u8> {
    prefixed(&channel_prefix(group, channel), consumer.as_bytes())
}

pub fn receipt_key(group: GroupId, channel: ChannelId, idempotency_key: &str) -> Vec<u8> {
    prefixed(&channel_prefix(group, channel), idempotency_key.as_bytes())
}

pub fn receipt_expiry_key(
    group: GroupId,
    channel: ChannelId,
    timestamp_ms: u64,
    offset: u64,
) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&channel_prefix(group, channel));
    key[8..16].copy_from_slice(&timestamp_ms.to_be_bytes());
    key[16..].copy_from_slice(&offset.to_be_bytes());
    key
}

pub fn channel_by_name_key(group: GroupId, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + name.len());
    key.extend_from_slice(&group.0.to_be_bytes());
    key.push(META_CHANNEL_BY_NAME);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of every name → id entry of `group`, for listing channels.
pub fn channel_by_name_prefix(group: GroupId) -> [u8; 5] {
    tagged(group, META_CHANNEL_BY_NAME)
}

pub fn channel_name_key(group: GroupId, channel: ChannelId) -> [u8; 9] {
    tagged_channel(group, META_CHANNEL_NAME, channel)
}

pub fn next_channel_id_key(group: GroupId) -> [u8; 5] {
    tagged(group, META_NEXT_CHANNEL_ID)
}

pub fn channel_state_key(group: GroupId, channel: ChannelId) -> [u8; 9] {
    tagged_channel(group, META_CHANNEL_STATE, channel)
}

/// Returns the smallest key greater than every key that starts with `prefix`,
/// or `None` when no such key exists (the prefix is all `0xff`).
/// Used as an exclusive iterator upper bound.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last != u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

fn prefixed(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + suffix.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(suffix);
    key
}

fn tagged(group: GroupId, tag: u8) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[..4].copy_from_slice(&group.0.to_be_bytes());
    key[4] = tag;
    key
}

fn tagged_channel(group: GroupId, tag: u8, channel: ChannelId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..5].copy_from_slice(&tagged(group, tag));
    key[5..].copy_from_slice(&channel.0.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_sort_by_offset() {
        let low = stream_key(GroupId(0), ChannelId(1), 255);
        let high = stream_key(GroupId(0), ChannelId(1), 256);
        assert!(low < high);
        assert_eq!(stream_key_offset(&high), Some(256));
    }

    #[test]
    fn every_key_starts_with_group() {
        let group = GroupId(0x0102_0304);
        let channel = ChannelId(7);
        let expected = group.0.to_be_bytes();
        assert_eq!(stream_key(group, channel, 1)[..4], expected);
        assert_eq!(cursor_key(group, channel, "c")[..4], expected);
        assert_eq!(receipt_key(group, channel, "k")[..4], expected);
        assert_eq!(receipt_expiry_key(group, channel, 1, 1)[..4], expected);
        assert_eq!(channel_by_name_key(group, "n")[..4], expected);
        assert_eq!(channel_name_key(group, channel)[..4], expected);
        assert_eq!(next_channel_id_key(group)[..4], expected);
        assert_eq!(channel_state_key(group, channel)[..4], expected);
    }

    #[test]
    fn prefix_successor_carries() {
        assert_eq!(prefix_successor(&[0, 1]), Some(vec![0, 2]));
        assert_eq!(prefix_successor(&[0, 0xff]), Some(vec![1]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
