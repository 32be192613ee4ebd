//! Random interleavings of appends, bad appends and truncations, submitted
//! without waiting so the writer groups them into batches, keep every stream
//! contiguous from its first to its last offset.

mod common;

use common::{GROUP, append, offsets, open, record};
use liminal_store::{ApplyOutcome, Command, FsyncPolicy, StoreError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: u64,
    },
    /// An append that skips `skip` offsets and must be rejected.
    GapAppend {
        skip: u64,
    },
    /// Truncate below `first + ahead`; may reach past the end.
    Truncate {
        ahead: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..5).prop_map(|count| Op::Append { count }),
        1 => (1u64..3).prop_map(|skip| Op::GapAppend { skip }),
        2 => (0u64..8).prop_map(|ahead| Op::Truncate { ahead }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn offsets_stay_contiguous(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), FsyncPolicy::Never);
        let channel = store.channel_id(GROUP, "p").unwrap();

        // Model of the stream and the result each command must produce.
        let (mut first, mut last) = (1u64, 0u64);
        let mut expected: Vec<Result<ApplyOutcome, ()>> = Vec::new();
        let (sender, receiver) = crossbeam_channel::unbounded();
        for (index, op) in ops.iter().enumerate() {
            let command = match *op {
                Op::Append { count } => {
                    let records = (last + 1..=last + count)
                        .map(|o| record(o, o, "x", None))
                        .collect();
                    expected.push(Ok(ApplyOutcome::Appended {
                        first_offset: last + 1,
                        last_offset: last + count,
                        duplicate_keys: vec![],
                    }));
                    last += count;
                    append(channel, records)
                }
                Op::GapAppend { skip } => {
                    expected.push(Err(()));
                    append(channel, vec![record(last + 1 + skip, 0, "gap", None)])
                }
                Op::Truncate { ahead } => {
                    let requested = first + ahead;
                    let below = requested.min(last + 1);
                    let removed = below.saturating_sub(first);
                    first = first.max(below);
                    expected.push(Ok(ApplyOutcome::Truncated { first_offset: first, removed }));
                    Command::Truncate { group: GROUP, channel, below_offset: requested }
                }
            };
            let sender = sender.clone();
            store.submit(command, Box::new(move |result| sender.send((index, result)).unwrap()));
        }

        let mut results: Vec<_> = (0..ops.len()).map(|_| receiver.recv().unwrap()).collect();
        results.sort_by_key(|(index, _)| *index);
        for ((index, result), expected) in results.into_iter().zip(expected) {
            match (result, expected) {
                (Ok(outcome), Ok(expected)) => prop_assert_eq!(outcome, expected, "command {}", index),
                (Err(StoreError::NonContiguousOffset { .. }), Err(())) => {}
                (result, expected) => prop_assert!(false, "command {index}: got {result:?}, expected {expected:?}"),
            }
        }

        let bounds = store.bounds(GROUP, channel).unwrap();
        if last == 0 {
            prop_assert_eq!(bounds, None);
        } else {
            prop_assert_eq!(bounds, Some((first, last)));
        }
        prop_assert_eq!(offsets(&store, channel), (first..=last).collect::<Vec<_>>());
    }
}
