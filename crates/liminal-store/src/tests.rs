//! Writer failure tests. They need the crate-internal fault switches, so they
//! live inside the crate rather than under `tests/`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::{
    AppendRecord, ApplyOutcome, ChannelId, Command, FsyncPolicy, GroupId, Result, Store,
    StoreError, StoreOptions,
};

const GROUP: GroupId = GroupId(0);

fn open(dir: &std::path::Path, max_batch_commands: usize) -> Store {
    Store::open(
        dir,
        StoreOptions {
            fsync: FsyncPolicy::Always,
            max_batch_commands,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn channel_with_one_record(store: &Store) -> ChannelId {
    let channel = store.channel_id(GROUP, "c").unwrap();
    store
        .submit_blocking(Command::Append {
            group: GROUP,
            channel,
            records: vec![AppendRecord {
                offset: 1,
                timestamp_ms: 1,
                headers: vec![],
                payload: Bytes::from_static(b"x"),
                idempotency_key: None,
            }],
            dedup_window_ms: u64::MAX,
        })
        .unwrap();
    channel
}

fn set_cursor(channel: ChannelId, consumer: usize) -> Command {
    Command::SetCursor {
        group: GROUP,
        channel,
        consumer: format!("consumer-{consumer}"),
        offset: 1,
    }
}

/// Occupies the writer thread inside a completion callback until the returned
/// sender is dropped, so commands submitted meanwhile queue up and form one batch.
fn hold_writer(store: &Store, channel: ChannelId) -> Sender<()> {
    let (release, released) = crossbeam_channel::bounded::<()>(0);
    let (entered, entered_receiver) = crossbeam_channel::bounded::<()>(1);
    store.submit(
        set_cursor(channel, 999),
        Box::new(move |_| {
            entered.send(()).unwrap();
            let _ = released.recv();
        }),
    );
    entered_receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("writer entered the holding callback");
    release
}

fn submit_cursors(
    store: &Store,
    channel: ChannelId,
    count: usize,
) -> Receiver<(usize, Result<ApplyOutcome>)> {
    let (sender, receiver) = crossbeam_channel::unbounded();
    for consumer in 0..count {
        let sender = sender.clone();
        store.submit(
            set_cursor(channel, consumer),
            Box::new(move |result| sender.send((consumer, result)).unwrap()),
        );
    }
    receiver
}

#[test]
fn write_failure_fails_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1024);
    let channel = channel_with_one_record(&store);

    let release = hold_writer(&store, channel);
    let results = submit_cursors(&store, channel, 20);
    store
        .shared()
        .faults
        .fail_next_write
        .store(true, Ordering::SeqCst);
    drop(release);

    for _ in 0..20 {
        let (consumer, result) = results.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(result, Err(StoreError::Db { .. })),
            "consumer {consumer}: {result:?}"
        );
        let cursor = store
            .cursor(GROUP, channel, &format!("consumer-{consumer}"))
            .unwrap();
        assert_eq!(cursor, None, "a failed batch writes nothing");
    }
    assert_eq!(store.stats().write_errors, 1);

    // The writer keeps running after a failed write.
    assert_eq!(
        store.submit_blocking(set_cursor(channel, 0)).unwrap(),
        ApplyOutcome::CursorSet
    );
    assert_eq!(store.cursor(GROUP, channel, "consumer-0").unwrap(), Some(1));
}

#[test]
fn writer_panic_fails_pending_and_later_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2);
    let channel = channel_with_one_record(&store);

    let release = hold_writer(&store, channel);
    let results = submit_cursors(&store, channel, 10);
    store
        .shared()
        .faults
        .panic_next_batch
        .store(true, Ordering::SeqCst);
    drop(release);

    for _ in 0..10 {
        let (consumer, result) = results.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(result, Err(StoreError::WriterStopped)),
            "consumer {consumer}: {result:?}"
        );
    }
    let later = store.submit_blocking(set_cursor(channel, 0));
    assert!(matches!(later, Err(StoreError::WriterStopped)));
    // Reads keep working without the writer.
    assert_eq!(store.bounds(GROUP, channel).unwrap(), Some((1, 1)));
}
