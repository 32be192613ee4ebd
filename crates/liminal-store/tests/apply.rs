//! `apply` must give the same result however commands are grouped into
//! batches, because Raft replicas will group them differently.

mod common;

use common::{GROUP, append, open, record};
use liminal_store::rocksdb::{DB, IteratorMode};
use liminal_store::{
    ApplyOutcome, ChannelId, Command, FsyncPolicy, PendingBatch, Result, Store, apply,
};

const COLUMN_FAMILIES: [&str; 6] = [
    "default",
    "streams",
    "cursors",
    "receipts",
    "receipt_expiry",
    "meta",
];

fn commands() -> Vec<Command> {
    let channel = ChannelId(1);
    vec![
        Command::CreateChannel {
            group: GROUP,
            name: "c".to_string(),
        },
        Command::CreateChannel {
            group: GROUP,
            name: "c".to_string(),
        },
        append(
            channel,
            vec![record(1, 1, "a", Some("k1")), record(2, 2, "b", Some("k2"))],
        ),
        append(channel, vec![record(3, 3, "c", Some("k1"))]),
        append(channel, vec![record(5, 5, "gap", None)]),
        Command::SetCursor {
            group: GROUP,
            channel,
            consumer: "w".to_string(),
            offset: 3,
        },
        Command::PurgeReceipts {
            group: GROUP,
            channel,
            older_than_ms: 2,
            max: 10,
        },
        append(channel, vec![record(4, 4, "d", Some("k1"))]),
        Command::Truncate {
            group: GROUP,
            channel,
            below_offset: 3,
        },
        Command::PurgeReceipts {
            group: GROUP,
            channel,
            older_than_ms: 100,
            max: 1,
        },
        append(channel, vec![record(5, 6, "e", Some("k2"))]),
        Command::CreateChannel {
            group: GROUP,
            name: "second".to_string(),
        },
    ]
}

fn dump(db: &DB) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut entries = Vec::new();
    for name in COLUMN_FAMILIES {
        let cf = db.cf_handle(name).unwrap();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.unwrap();
            entries.push((name.to_string(), key.to_vec(), value.to_vec()));
        }
    }
    entries
}

fn apply_grouped(
    store: &Store,
    commands: &[Command],
    group_size: usize,
) -> Vec<Result<ApplyOutcome>> {
    let db = store.db();
    let mut outcomes = Vec::new();
    for chunk in commands.chunks(group_size) {
        let mut batch = PendingBatch::new();
        for command in chunk {
            outcomes.push(apply(db, &mut batch, command));
        }
        db.write(batch.into_write_batch()).unwrap();
    }
    outcomes
}

#[test]
fn apply_independent_of_batching() {
    let commands = commands();
    let dir_single = tempfile::tempdir().unwrap();
    let dir_grouped = tempfile::tempdir().unwrap();
    let single = open(dir_single.path(), FsyncPolicy::Never);
    let grouped = open(dir_grouped.path(), FsyncPolicy::Never);

    let single_outcomes = apply_grouped(&single, &commands, 1);
    let grouped_outcomes = apply_grouped(&grouped, &commands, commands.len());

    let describe = |outcomes: &[Result<ApplyOutcome>]| -> Vec<String> {
        outcomes.iter().map(|o| format!("{o:?}")).collect()
    };
    assert_eq!(describe(&single_outcomes), describe(&grouped_outcomes));
    assert_eq!(dump(single.db()), dump(grouped.db()));

    // Spot checks that the sequence exercised what it claims.
    assert!(single_outcomes[4].is_err(), "gap append rejected");
    assert!(matches!(
        &single_outcomes[3],
        Ok(ApplyOutcome::Appended { duplicate_keys, .. }) if duplicate_keys.len() == 1
    ));
    assert!(
        matches!(
            &single_outcomes[7],
            Ok(ApplyOutcome::Appended { duplicate_keys, .. }) if duplicate_keys.is_empty()
        ),
        "k1 was purged, so a new receipt is written"
    );
    assert_eq!(
        single
            .receipt(GROUP, ChannelId(1), "k1")
            .unwrap()
            .unwrap()
            .offset,
        4
    );
    assert_eq!(single.bounds(GROUP, ChannelId(1)).unwrap(), Some((3, 5)));
    assert_eq!(
        single.lookup_channel(GROUP, "second").unwrap(),
        Some(ChannelId(2))
    );
}
