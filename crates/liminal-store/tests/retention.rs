//! Retention planning, truncation and receipt purging.

mod common;

use common::{GROUP, append, append_many, offsets, open, record};
use liminal_store::{
    ApplyOutcome, ChannelId, Command, FsyncPolicy, RETENTION_AGE_SCAN_LIMIT, Store,
};

/// Five records, offsets 1..=5, timestamps 10..=50, each counting 5 bytes.
fn five_records() -> (tempfile::TempDir, Store, ChannelId) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    append_many(&store, channel, 1, 5);
    (dir, store, channel)
}

fn truncate(store: &Store, channel: ChannelId, below_offset: u64) -> ApplyOutcome {
    store
        .submit_blocking(Command::Truncate {
            group: GROUP,
            channel,
            below_offset,
        })
        .unwrap()
}

#[test]
fn plan_by_message_count() {
    let (_dir, store, channel) = five_records();
    let plan = |max| {
        store
            .plan_retention(GROUP, channel, Some(max), None, None, 0)
            .unwrap()
    };
    assert_eq!(plan(2), Some(4));
    assert_eq!(plan(4), Some(2));
    assert_eq!(plan(5), None);
    assert_eq!(plan(0), Some(6));
}

#[test]
fn plan_by_bytes() {
    let (_dir, store, channel) = five_records();
    let plan = |max| {
        store
            .plan_retention(GROUP, channel, None, Some(max), None, 0)
            .unwrap()
    };
    assert_eq!(plan(25), None);
    assert_eq!(plan(24), Some(2));
    assert_eq!(plan(15), Some(3));
    assert_eq!(plan(12), Some(4));
    assert_eq!(
        plan(4),
        Some(6),
        "a record larger than the limit is removed"
    );

    // After truncation the plan measures from the new first record.
    truncate(&store, channel, 3);
    assert_eq!(plan(15), None);
    assert_eq!(plan(10), Some(4));
}

#[test]
fn plan_by_age() {
    let (_dir, store, channel) = five_records();
    let plan = |max_age, now| {
        store
            .plan_retention(GROUP, channel, None, None, Some(max_age), now)
            .unwrap()
    };
    // cutoff 35: timestamps 10, 20, 30 expire.
    assert_eq!(plan(65, 100), Some(4));
    assert_eq!(plan(100, 100), None);
    assert_eq!(plan(0, 1_000), Some(6));
}

#[test]
fn plan_takes_largest_removal() {
    let (_dir, store, channel) = five_records();
    let plan = store
        .plan_retention(GROUP, channel, Some(4), Some(100), Some(65), 100)
        .unwrap();
    assert_eq!(plan, Some(4));
    assert_eq!(
        store
            .plan_retention(GROUP, channel, None, None, None, 100)
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .plan_retention(GROUP, ChannelId(42), Some(0), None, None, 0)
            .unwrap(),
        None,
        "unknown channel"
    );
}

#[test]
fn age_scan_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let total = RETENTION_AGE_SCAN_LIMIT as u64 + 50;
    append_many(&store, channel, 1, total);

    let now = total * 10 + 1_000;
    let first_plan = store
        .plan_retention(GROUP, channel, None, None, Some(1), now)
        .unwrap();
    assert_eq!(first_plan, Some(RETENTION_AGE_SCAN_LIMIT as u64 + 1));
    truncate(&store, channel, first_plan.unwrap());
    let second_plan = store
        .plan_retention(GROUP, channel, None, None, Some(1), now)
        .unwrap();
    assert_eq!(second_plan, Some(total + 1));
}

#[test]
fn truncate_keeps_offsets_monotonic() {
    let (_dir, store, channel) = five_records();
    assert_eq!(
        truncate(&store, channel, 3),
        ApplyOutcome::Truncated {
            first_offset: 3,
            removed: 2
        }
    );
    assert_eq!(offsets(&store, channel), vec![3, 4, 5]);
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((3, 5)));
    assert_eq!(
        truncate(&store, channel, 2),
        ApplyOutcome::Truncated {
            first_offset: 3,
            removed: 0
        },
        "truncating below the first offset does nothing"
    );

    // Past the end is clamped: the stream empties but the next offset stays 6.
    assert_eq!(
        truncate(&store, channel, 100),
        ApplyOutcome::Truncated {
            first_offset: 6,
            removed: 3
        }
    );
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((6, 5)));
    assert!(offsets(&store, channel).is_empty());
    store
        .submit_blocking(append(channel, vec![record(6, 60, "again", None)]))
        .unwrap();
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((6, 6)));
    assert_eq!(offsets(&store, channel), vec![6]);
}

#[test]
fn receipt_purge_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let keys: Vec<String> = (1..=10).map(|i| format!("key-{i}")).collect();
    let records = (1..=10u64)
        .map(|offset| record(offset, offset, "x", Some(&keys[offset as usize - 1])))
        .collect();
    store.submit_blocking(append(channel, records)).unwrap();

    let purge = || {
        store
            .submit_blocking(Command::PurgeReceipts {
                group: GROUP,
                channel,
                older_than_ms: 8,
                max: 3,
            })
            .unwrap()
    };
    assert_eq!(
        purge(),
        ApplyOutcome::ReceiptsPurged {
            removed: 3,
            more: true
        }
    );
    assert_eq!(store.receipt(GROUP, channel, "key-3").unwrap(), None);
    assert!(store.receipt(GROUP, channel, "key-4").unwrap().is_some());
    assert_eq!(
        purge(),
        ApplyOutcome::ReceiptsPurged {
            removed: 3,
            more: true
        }
    );
    assert_eq!(
        purge(),
        ApplyOutcome::ReceiptsPurged {
            removed: 1,
            more: false
        }
    );
    assert_eq!(
        purge(),
        ApplyOutcome::ReceiptsPurged {
            removed: 0,
            more: false
        }
    );

    for (index, key) in keys.iter().enumerate() {
        let kept = store.receipt(GROUP, channel, key).unwrap().is_some();
        assert_eq!(kept, index + 1 >= 8, "receipt {key}");
    }
    assert_eq!(
        offsets(&store, channel).len(),
        10,
        "purging receipts keeps records"
    );
}
