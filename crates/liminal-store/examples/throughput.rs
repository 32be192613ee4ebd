use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use liminal_store::*;

fn main() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Interval(Duration::from_millis(10)), FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions { fsync: policy, ..Default::default() }).unwrap());
        let threads = 4;
        let per_thread = 5_000u64;
        let channels: Vec<_> = (0..threads).map(|t| store.channel_id(GroupId(0), &format!("c{t}")).unwrap()).collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        let started = Instant::now();
        let handles: Vec<_> = channels.into_iter().map(|channel| {
            let store = store.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for offset in 1..=per_thread {
                    let tx = tx.clone();
                    store.submit(Command::Append { group: GroupId(0), channel, records: vec![AppendRecord { offset, timestamp_ms: offset, headers: vec![], payload: Bytes::from(vec![7u8; 100]), idempotency_key: Some(format!("k{offset}")) }] },
                        Box::new(move |r| { r.unwrap(); tx.send(()).unwrap(); }));
                }
            })
        }).collect();
        for h in handles { h.join().unwrap(); }
        for _ in 0..threads as u64 * per_thread { rx.recv().unwrap(); }
        let elapsed = started.elapsed();
        let stats = store.stats();
        println!("{policy:?}: {} appends in {:?} = {:.0}/s, batches {}, fsyncs {}, mean write {:?}", threads as u64 * per_thread, elapsed,
            (threads as u64 * per_thread) as f64 / elapsed.as_secs_f64(), stats.batches, stats.fsyncs, Duration::from_nanos(stats.write_nanos_total / stats.batches.max(1)));
    }
}
