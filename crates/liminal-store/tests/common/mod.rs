//! Helpers shared by the integration tests.

#![allow(dead_code)]

use bytes::Bytes;
use liminal_store::{AppendRecord, ChannelId, Command, FsyncPolicy, GroupId, Store, StoreOptions};

pub const GROUP: GroupId = GroupId(0);

pub fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Store {
    Store::open(
        dir,
        StoreOptions {
            fsync,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

pub fn record(offset: u64, timestamp_ms: u64, payload: &str, key: Option<&str>) -> AppendRecord {
    AppendRecord {
        offset,
        timestamp_ms,
        headers: vec![("h".to_string(), format!("v{offset}"))],
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        idempotency_key: key.map(str::to_string),
    }
}

pub fn append(channel: ChannelId, records: Vec<AppendRecord>) -> Command {
    Command::Append {
        group: GROUP,
        channel,
        records,
        dedup_window_ms: u64::MAX,
    }
}

/// Appends `count` records with payload `"p{offset}"` and timestamp `offset * 10`.
pub fn append_many(store: &Store, channel: ChannelId, first: u64, count: u64) {
    let records = (first..first + count)
        .map(|offset| record(offset, offset * 10, &format!("p{offset}"), None))
        .collect();
    store
        .submit_blocking(append(channel, records))
        .expect("append");
}

pub fn offsets(store: &Store, channel: ChannelId) -> Vec<u64> {
    store
        .read(GROUP, channel, 0, usize::MAX, usize::MAX)
        .expect("read")
        .iter()
        .map(|m| m.offset)
        .collect()
}
