//! Write path, read path, persistence and format checks through the public API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{GROUP, append, append_many, offsets, open, record};
use liminal_store::{
    ApplyOutcome, ChannelId, Command, FORMAT_VERSION, FsyncPolicy, GroupId, Store, StoreError,
    StoreOptions,
};

#[test]
fn append_then_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Always);
    let channel = store.channel_id(GROUP, "orders").unwrap();

    let outcome = store
        .submit_blocking(append(
            channel,
            vec![
                record(1, 100, "one", Some("k1")),
                record(2, 101, "two", None),
                record(3, 102, "three", None),
            ],
        ))
        .unwrap();
    assert_eq!(
        outcome,
        ApplyOutcome::Appended {
            first_offset: 1,
            last_offset: 3,
            duplicate_keys: vec![]
        }
    );

    let messages = store.read(GROUP, channel, 1, 10, usize::MAX).unwrap();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
    assert_eq!(messages[0].offset, 1);
    assert_eq!(messages[0].timestamp_ms, 100);
    assert_eq!(
        messages[0].headers,
        vec![("h".to_string(), "v1".to_string())]
    );
    assert_eq!(messages[0].idempotency_key.as_deref(), Some("k1"));
    assert_eq!(messages[2].offset, 3);

    let from_two = store.read(GROUP, channel, 2, 1, usize::MAX).unwrap();
    assert_eq!(from_two.len(), 1);
    assert_eq!(from_two[0].offset, 2);
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((1, 3)));
}

#[test]
fn read_respects_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    append_many(&store, channel, 1, 5);

    // Each record counts "h" + "vN" + "pN" = 5 bytes.
    let limited = store.read(GROUP, channel, 1, 100, 12).unwrap();
    assert_eq!(limited.len(), 2);
    let tiny = store.read(GROUP, channel, 1, 100, 1).unwrap();
    assert_eq!(
        tiny.len(),
        1,
        "the first record is returned even when larger than max_bytes"
    );
    assert!(store.read(GROUP, channel, 6, 100, 100).unwrap().is_empty());
    assert!(
        store
            .read(GROUP, ChannelId(99), 1, 100, 100)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn channels_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let first = store.channel_id(GROUP, "a").unwrap();
    let second = store.channel_id(GROUP, "b").unwrap();
    let other_group = store.channel_id(GroupId(1), "a").unwrap();
    assert_ne!(first, second);
    assert_eq!(store.channel_id(GROUP, "a").unwrap(), first);

    append_many(&store, first, 1, 3);
    append_many(&store, second, 1, 1);
    assert_eq!(offsets(&store, first), vec![1, 2, 3]);
    assert_eq!(offsets(&store, second), vec![1]);
    assert_eq!(store.bounds(GroupId(1), other_group).unwrap(), None);
    assert_eq!(
        store.channels(GROUP).unwrap(),
        vec![("a".to_string(), first), ("b".to_string(), second)]
    );
}

#[test]
fn concurrent_channel_creation_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), FsyncPolicy::Never));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.channel_id(GROUP, "shared").unwrap())
        })
        .collect();
    let ids: Vec<ChannelId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "ids differ: {ids:?}");
    assert_eq!(store.channels(GROUP).unwrap().len(), 1);
}

#[test]
fn reopen_keeps_data_cursors_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let channel = {
        let store = open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(5)));
        let channel = store.channel_id(GROUP, "events").unwrap();
        store
            .submit_blocking(append(
                channel,
                vec![record(1, 10, "a", Some("key-a")), record(2, 20, "b", None)],
            ))
            .unwrap();
        store
            .submit_blocking(Command::SetCursor {
                group: GROUP,
                channel,
                consumer: "worker".to_string(),
                offset: 1,
            })
            .unwrap();
        channel
    };

    let store = open(dir.path(), FsyncPolicy::Always);
    assert_eq!(offsets(&store, channel), vec![1, 2]);
    assert_eq!(store.cursor(GROUP, channel, "worker").unwrap(), Some(1));
    assert_eq!(store.cursor(GROUP, channel, "nobody").unwrap(), None);
    let receipt = store.receipt(GROUP, channel, "key-a").unwrap().unwrap();
    assert_eq!(receipt.offset, 1);
    assert_eq!(receipt.timestamp_ms, 10);
    assert_eq!(
        store.lookup_channel(GROUP, "events").unwrap(),
        Some(channel)
    );
    assert_ne!(store.channel_id(GROUP, "new").unwrap(), channel);

    append_many(&store, channel, 3, 1);
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((1, 3)));
}

#[test]
fn append_rejects_offset_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    append_many(&store, channel, 1, 2);

    let gap = store.submit_blocking(append(channel, vec![record(4, 0, "x", None)]));
    assert!(matches!(
        gap,
        Err(StoreError::NonContiguousOffset {
            expected: 3,
            found: 4,
            ..
        })
    ));
    let repeat = store.submit_blocking(append(channel, vec![record(2, 0, "x", None)]));
    assert!(matches!(
        repeat,
        Err(StoreError::NonContiguousOffset {
            expected: 3,
            found: 2,
            ..
        })
    ));
    let inner_gap = store.submit_blocking(append(
        channel,
        vec![record(3, 0, "x", None), record(5, 0, "y", None)],
    ));
    assert!(matches!(
        inner_gap,
        Err(StoreError::OffsetsNotSequential {
            index: 1,
            expected: 4,
            found: 5,
            ..
        })
    ));
    let empty = store.submit_blocking(append(channel, vec![]));
    assert!(matches!(empty, Err(StoreError::EmptyAppend { .. })));
    let unknown = store.submit_blocking(append(ChannelId(77), vec![record(1, 0, "x", None)]));
    assert!(matches!(
        unknown,
        Err(StoreError::UnknownChannel { channel: 77, .. })
    ));

    assert_eq!(offsets(&store, channel), vec![1, 2]);
    assert_eq!(store.stats().rejected_commands, 5);
}

#[test]
fn cursor_past_end_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    append_many(&store, channel, 1, 2);
    let set = |offset| {
        store.submit_blocking(Command::SetCursor {
            group: GROUP,
            channel,
            consumer: "c1".to_string(),
            offset,
        })
    };
    assert!(matches!(
        set(3),
        Err(StoreError::CursorBeyondEnd { last: 2, .. })
    ));
    assert_eq!(set(2).unwrap(), ApplyOutcome::CursorSet);
    assert_eq!(
        set(0).unwrap(),
        ApplyOutcome::CursorSet,
        "cursors may rewind"
    );
    assert_eq!(store.cursor(GROUP, channel, "c1").unwrap(), Some(0));
}

#[test]
fn record_and_receipt_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Always);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let before = store.stats().batches;
    store
        .submit_blocking(append(channel, vec![record(1, 55, "x", Some("k"))]))
        .unwrap();

    assert_eq!(
        store.stats().batches,
        before + 1,
        "one batch holds both writes"
    );
    assert_eq!(offsets(&store, channel), vec![1]);
    let receipt = store.receipt(GROUP, channel, "k").unwrap().unwrap();
    assert_eq!((receipt.offset, receipt.timestamp_ms), (1, 55));
}

#[test]
fn duplicate_key_keeps_first_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let outcome = store
        .submit_blocking(append(
            channel,
            vec![record(1, 10, "a", Some("k")), record(2, 20, "b", Some("k"))],
        ))
        .unwrap();
    let ApplyOutcome::Appended { duplicate_keys, .. } = outcome else {
        panic!("unexpected outcome {outcome:?}");
    };
    assert_eq!(duplicate_keys.len(), 1);
    assert_eq!(duplicate_keys[0].offset, 2);
    assert_eq!(duplicate_keys[0].existing.offset, 1);

    let later = store
        .submit_blocking(append(channel, vec![record(3, 30, "c", Some("k"))]))
        .unwrap();
    let ApplyOutcome::Appended { duplicate_keys, .. } = later else {
        panic!("unexpected outcome {later:?}");
    };
    assert_eq!(duplicate_keys.len(), 1);
    assert_eq!(
        store.receipt(GROUP, channel, "k").unwrap().unwrap().offset,
        1
    );
    assert_eq!(
        offsets(&store, channel),
        vec![1, 2, 3],
        "duplicates are still stored"
    );
}

#[test]
fn expired_receipt_replaced_by_reused_key() {
    const WINDOW_MS: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let append_within_window = |records| Command::Append {
        group: GROUP,
        channel,
        records,
        dedup_window_ms: WINDOW_MS,
    };
    let duplicate_keys = |outcome: ApplyOutcome| match outcome {
        ApplyOutcome::Appended { duplicate_keys, .. } => duplicate_keys,
        other => panic!("unexpected outcome {other:?}"),
    };

    let first = store
        .submit_blocking(append_within_window(vec![record(1, 1_000, "a", Some("k"))]))
        .unwrap();
    assert!(duplicate_keys(first).is_empty());

    // 1,000 + 100 < 1,101: the first receipt has expired, so the key is claimed again.
    let reused = store
        .submit_blocking(append_within_window(vec![record(2, 1_101, "b", Some("k"))]))
        .unwrap();
    assert!(duplicate_keys(reused).is_empty(), "an expired receipt still counted");
    let receipt = store.receipt(GROUP, channel, "k").unwrap().unwrap();
    assert_eq!((receipt.offset, receipt.timestamp_ms), (2, 1_101));

    // Purging what expired before 1,101 must not remove the new receipt.
    store
        .submit_blocking(Command::PurgeReceipts {
            group: GROUP,
            channel,
            older_than_ms: 1_101,
            max: 100,
        })
        .unwrap();
    assert_eq!(store.receipt(GROUP, channel, "k").unwrap().unwrap().offset, 2);

    // Within the window of the new receipt, the key is a duplicate again.
    let repeated = store
        .submit_blocking(append_within_window(vec![record(3, 1_201, "c", Some("k"))]))
        .unwrap();
    let duplicates = duplicate_keys(repeated);
    assert_eq!(duplicates.len(), 1);
    assert_eq!(duplicates[0].existing.offset, 2);
}

#[test]
fn newer_format_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), FsyncPolicy::Always));
    {
        let mut options = liminal_store::rocksdb::Options::default();
        options.create_missing_column_families(true);
        let names = liminal_store::rocksdb::DB::list_cf(&options, dir.path()).unwrap();
        let db = liminal_store::rocksdb::DB::open_cf(&options, dir.path(), names).unwrap();
        db.put(b"format_version", (FORMAT_VERSION + 1).to_be_bytes())
            .unwrap();
    }

    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("newer format must be refused");
    assert!(matches!(
        error,
        StoreError::NewerFormat { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION
    ));
    assert!(error.to_string().contains("newer"), "{error}");
}

#[test]
fn unusable_path_error_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("store");

    let error = Store::open(&path, StoreOptions::default())
        .err()
        .expect("a path below a file cannot be created");
    assert!(matches!(error, StoreError::Open { .. }));
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn group_commit_batches_concurrent_submits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), FsyncPolicy::Always));
    let threads = 4u64;
    let per_thread = 250u64;
    let channels: Vec<ChannelId> = (0..threads)
        .map(|t| store.channel_id(GROUP, &format!("c{t}")).unwrap())
        .collect();
    let before = store.stats();

    let completed = Arc::new(AtomicUsize::new(0));
    let (done_sender, done_receiver) = crossbeam_channel::unbounded();
    let handles: Vec<_> = channels
        .iter()
        .map(|&channel| {
            let store = Arc::clone(&store);
            let completed = Arc::clone(&completed);
            let done_sender = done_sender.clone();
            std::thread::spawn(move || {
                for offset in 1..=per_thread {
                    let completed = Arc::clone(&completed);
                    let done_sender = done_sender.clone();
                    store.submit(
                        append(channel, vec![record(offset, offset, "x", None)]),
                        Box::new(move |result| {
                            result.expect("append");
                            if completed.fetch_add(1, Ordering::SeqCst) + 1 == 1000 {
                                done_sender.send(()).unwrap();
                            }
                        }),
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    done_receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("all 1000 appends complete");

    let after = store.stats();
    let commands = after.commands - before.commands;
    let batches = after.batches - before.batches;
    assert_eq!(commands, threads * per_thread);
    assert!(
        batches < commands,
        "{batches} batches for {commands} commands"
    );
    assert_eq!(
        after.fsyncs - before.fsyncs,
        batches,
        "Always syncs every batch"
    );
    for channel in channels {
        assert_eq!(
            offsets(&store, channel),
            (1..=per_thread).collect::<Vec<_>>()
        );
    }
}

#[test]
fn interval_policy_syncs_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(20)));
    let channel = store.channel_id(GROUP, "c").unwrap();
    append_many(&store, channel, 1, 1);
    std::thread::sleep(Duration::from_millis(200));

    let stats = store.stats();
    assert!(stats.fsyncs >= 1, "{stats:?}");
    assert!(stats.fsyncs <= stats.batches, "{stats:?}");
}

#[test]
fn submit_after_shutdown_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    store.shutdown();
    store.shutdown();
    let result = store.submit_blocking(append(channel, vec![record(1, 0, "x", None)]));
    assert!(matches!(result, Err(StoreError::WriterStopped)));
}

#[test]
fn shutdown_drains_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "c").unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    for offset in 1..=200 {
        let completed = Arc::clone(&completed);
        store.submit(
            append(channel, vec![record(offset, 0, "x", None)]),
            Box::new(move |result| {
                result.expect("queued append applied");
                completed.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    store.shutdown();
    assert_eq!(completed.load(Ordering::SeqCst), 200);
    drop(store);

    let store = open(dir.path(), FsyncPolicy::Never);
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((1, 200)));
}

#[test]
fn full_queue_rejects_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            fsync: FsyncPolicy::Always,
            queue_capacity: 1,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let channel = store.channel_id(GROUP, "c").unwrap();
    let full = Arc::new(AtomicUsize::new(0));
    for offset in 1..=500 {
        let full = Arc::clone(&full);
        store.submit(
            append(channel, vec![record(offset, 0, "x", None)]),
            Box::new(move |result| {
                if matches!(result, Err(StoreError::QueueFull { capacity: 1 })) {
                    full.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
    }
    store.shutdown();
    assert!(
        full.load(Ordering::SeqCst) > 0,
        "a queue of one must overflow"
    );
}

#[test]
fn payload_bytes_survive_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Never);
    let channel = store.channel_id(GROUP, "bin").unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut rec = record(1, 1, "", None);
    rec.payload = Bytes::from(payload.clone());
    rec.headers = vec![];
    store.submit_blocking(append(channel, vec![rec])).unwrap();
    let read = store.read(GROUP, channel, 1, 1, usize::MAX).unwrap();
    assert_eq!(read[0].payload.as_ref(), payload.as_slice());
    assert!(read[0].headers.is_empty());
}

#[test]
fn empty_purge_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncPolicy::Always);
    let channel = store.channel_id(GROUP, "idle").unwrap();
    let before = store.stats();

    let outcome = store
        .submit_blocking(Command::PurgeReceipts {
            group: GROUP,
            channel,
            older_than_ms: 1_000,
            max: 100,
        })
        .unwrap();
    assert_eq!(outcome, ApplyOutcome::ReceiptsPurged { removed: 0, more: false });

    let after = store.stats();
    assert_eq!(after.commands, before.commands + 1);
    assert_eq!(after.batches, before.batches, "an empty batch was written");
    assert_eq!(after.fsyncs, before.fsyncs, "an empty batch was synced");
}
