//! The single writer thread: group commit of queued commands into one
//! RocksDB write batch, durability according to [`FsyncPolicy`], and
//! completion of every request exactly once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use rocksdb::{DB, WriteOptions};

use crate::apply::apply;
use crate::command::{ApplyOutcome, Command};
use crate::error::{Result, StoreError};
use crate::pending::PendingBatch;

/// When the write-ahead log is synced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every batch is written with `sync = true` before its requests complete.
    Always,
    /// Batches are written without sync and complete at once. The writer
    /// thread syncs the WAL with `flush_wal(true)` at most once per interval,
    /// starting from the first unsynced write.
    Interval(Duration),
    /// The WAL is synced only at shutdown.
    Never,
}

/// Callback that receives the result of a submitted command.
///
/// It runs on the writer thread (or on the submitting thread when the command
/// is rejected before it is queued), so it must return quickly, typically by
/// sending into a channel. A panic in it is caught and logged.
pub type Completion = Box<dyn FnOnce(Result<ApplyOutcome>) + Send + 'static>;

/// Report of one written batch, passed to [`StoreOptions::on_batch`](crate::StoreOptions).
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// Commands in the batch, including rejected ones.
    pub commands: usize,
    /// Encoded size of the RocksDB write batch.
    pub bytes: usize,
    /// Time spent in `DB::write_opt`, including the sync under `FsyncPolicy::Always`.
    pub write_latency: Duration,
    /// Whether the write was synced before completion.
    pub synced: bool,
    /// Whether the write failed (every request of the batch got the error).
    pub failed: bool,
}

/// Observer of written batches, called on the writer thread. A panic in it is caught and logged.
pub type BatchObserver = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// Counters of the write path, read with [`Store::stats`](crate::Store::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write batches passed to RocksDB, failed ones included.
    pub batches: u64,
    /// Commands taken from the queue, rejected ones included.
    pub commands: u64,
    /// Commands that `apply` rejected (for example non-contiguous offsets).
    pub rejected_commands: u64,
    /// Batch writes that RocksDB failed.
    pub write_errors: u64,
    /// WAL syncs: synced batch writes plus `flush_wal(true)` calls.
    pub fsyncs: u64,
    /// Failed `flush_wal(true)` calls.
    pub fsync_errors: u64,
    /// Sum of batch write latencies in nanoseconds.
    pub write_nanos_total: u64,
    /// Sum of encoded batch sizes in bytes.
    pub bytes_written: u64,
}

#[derive(Default)]
pub(crate) struct StatsCounters {
    batches: AtomicU64,
    commands: AtomicU64,
    rejected_commands: AtomicU64,
    write_errors: AtomicU64,
    fsyncs: AtomicU64,
    fsync_errors: AtomicU64,
    write_nanos_total: AtomicU64,
    bytes_written: AtomicU64,
}

impl StatsCounters {
    pub(crate) fn snapshot(&self) -> StoreStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            batches: read(&self.batches),
            commands: read(&self.commands),
            rejected_commands: read(&self.rejected_commands),
            write_errors: read(&self.write_errors),
            fsyncs: read(&self.fsyncs),
            fsync_errors: read(&self.fsync_errors),
            write_nanos_total: read(&self.write_nanos_total),
            bytes_written: read(&self.bytes_written),
        }
    }
}

/// State shared by the `Store` handle and the writer thread.
pub(crate) struct Shared {
    /// The only sender of the queue. Taking it (shutdown, or writer exit)
    /// disconnects the queue, so the writer can drain it completely and no
    /// request can arrive afterwards.
    pub(crate) sender: RwLock<Option<Sender<Request>>>,
    pub(crate) stats: StatsCounters,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl Shared {
    pub(crate) fn new(sender: Sender<Request>) -> Shared {
        Shared {
            sender: RwLock::new(Some(sender)),
            stats: StatsCounters::default(),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    pub(crate) fn close_queue(&self) {
        let sender = self
            .sender
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(sender);
    }
}

/// Failures the crate's own tests inject into the writer thread.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) fail_next_write: std::sync::atomic::AtomicBool,
    pub(crate) panic_next_batch: std::sync::atomic::AtomicBool,
}

/// A queued command and its completion. Dropping a request that was never
/// completed (writer panic or exit) completes it with `WriterStopped`.
pub(crate) struct Request {
    command: Command,
    done: Option<Completion>,
}

impl Request {
    pub(crate) fn new(command: Command, done: Completion) -> Request {
        Request {
            command,
            done: Some(done),
        }
    }

    pub(crate) fn complete(mut self, result: Result<ApplyOutcome>) {
        if let Some(done) = self.done.take() {
            run_completion(done, result);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            run_completion(done, Err(StoreError::WriterStopped));
        }
    }
}

fn run_completion(done: Completion, result: Result<ApplyOutcome>) {
    if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        tracing::error!("store completion callback panicked; the panic was ignored");
    }
}

/// Configuration of the writer thread.
pub(crate) struct WriterConfig {
    pub(crate) policy: FsyncPolicy,
    pub(crate) max_batch_commands: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) on_batch: Option<BatchObserver>,
}

pub(crate) struct Writer {
    db: Arc<DB>,
    receiver: Receiver<Request>,
    shared: Arc<Shared>,
    config: WriterConfig,
    last_sync: Instant,
    /// True when a batch was written without sync since the last WAL sync.
    unsynced: bool,
}

/// On writer exit, normal or by panic: disconnects the queue and fails every
/// request still in it, so no caller waits forever.
struct StopGuard {
    shared: Arc<Shared>,
    receiver: Receiver<Request>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("store writer thread panicked; failing queued commands");
        }
        self.shared.close_queue();
        let mut failed = 0usize;
        while let Ok(request) = self.receiver.try_recv() {
            request.complete(Err(StoreError::WriterStopped));
            failed += 1;
        }
        if failed > 0 {
            tracing::warn!(failed, "store writer stopped with queued commands");
        }
    }
}

impl Writer {
    pub(crate) fn new(
        db: Arc<DB>,
        receiver: Receiver<Request>,
        shared: Arc<Shared>,
        config: WriterConfig,
    ) -> Writer {
        Writer {
            db,
            receiver,
            shared,
            config,
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    pub(crate) fn run(mut self) {
        let _guard = StopGuard {
            shared: Arc::clone(&self.shared),
            receiver: self.receiver.clone(),
        };
        while let Some(first) = self.next_request() {
            self.process_batch(first);
            if let FsyncPolicy::Interval(interval) = self.config.policy
                && self.unsynced
                && self.last_sync.elapsed() >= interval
            {
                self.sync_wal();
            }
        }
        if self.unsynced {
            self.sync_wal();
        }
        tracing::info!("store writer thread stopped");
    }

    /// Waits for the next request, syncing the WAL when the interval expires
    /// while idle. Returns `None` once the queue is closed and empty.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let deadline = match self.config.policy {
                FsyncPolicy::Interval(interval) if self.unsynced => Some(self.last_sync + interval),
                _ => None,
            };
            let received = match deadline {
                Some(deadline) => self.receiver.recv_deadline(deadline),
                None => self
                    .receiver
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Timeout) => self.sync_wal(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Applies `first` and every further queued request (up to the caps) into
    /// one batch, writes it, then completes every request.
    fn process_batch(&mut self, first: Request) {
        let mut pending = PendingBatch::new();
        let mut requests = Vec::new();
        let mut results = Vec::new();

        let mut next = Some(first);
        while let Some(request) = next.take() {
            results.push(apply(&self.db, &mut pending, &request.command));
            requests.push(request);
            if requests.len() >= self.config.max_batch_commands
                || pending.size_in_bytes() >= self.config.max_batch_bytes
            {
                break;
            }
            match self.receiver.try_recv() {
                Ok(request) => next = Some(request),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }

        let stats = &self.shared.stats;
        let rejected = results.iter().filter(|r| r.is_err()).count() as u64;
        stats
            .commands
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        stats
            .rejected_commands
            .fetch_add(rejected, Ordering::Relaxed);

        if pending.commands() > 0
            && let Err(error) = self.write(pending, requests.len())
        {
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        for (request, result) in requests.into_iter().zip(results) {
            request.complete(result);
        }
    }

    fn write(&mut self, pending: PendingBatch, commands: usize) -> Result<()> {
        #[cfg(test)]
        if self
            .shared
            .faults
            .panic_next_batch
            .swap(false, Ordering::SeqCst)
        {
            panic!("injected store writer panic");
        }

        // Periodic maintenance of an idle channel applies commands that change
        // nothing. Writing their empty batch would still cost a sync.
        if pending.is_empty() {
            return Ok(());
        }

        let synced = self.config.policy == FsyncPolicy::Always;
        let mut options = WriteOptions::default();
        options.set_sync(synced);
        #[cfg(test)]
        if self
            .shared
            .faults
            .fail_next_write
            .swap(false, Ordering::SeqCst)
        {
            // RocksDB rejects a synced write without a WAL, which gives a real write error.
            options.set_sync(true);
            options.disable_wal(true);
        }

        let bytes = pending.size_in_bytes();
        let started = Instant::now();
        let written = self.db.write_opt(pending.into_write_batch(), &options);
        let write_latency = started.elapsed();

        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        stats
            .write_nanos_total
            .fetch_add(write_latency.as_nanos() as u64, Ordering::Relaxed);
        if let Some(observer) = &self.config.on_batch {
            let report = BatchReport {
                commands,
                bytes,
                write_latency,
                synced,
                failed: written.is_err(),
            };
            if catch_unwind(AssertUnwindSafe(|| observer(&report))).is_err() {
                tracing::error!("store batch observer panicked; the panic was ignored");
            }
        }

        match written {
            Ok(()) => {
                if synced {
                    stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.last_sync = Instant::now();
                } else {
                    self.unsynced = true;
                }
                Ok(())
            }
            Err(source) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %source, commands, bytes, "store batch write failed");
                Err(StoreError::Db {
                    operation: "write batch",
                    source,
                })
            }
        }
    }

    fn sync_wal(&mut self) {
        let stats = &self.shared.stats;
        match self.db.flush_wal(true) {
            Ok(()) => {
                stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.unsynced = false;
            }
            Err(error) => {
                // Keep `unsynced` so the next interval retries.
                stats.fsync_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "store WAL sync failed");
            }
        }
        self.last_sync = Instant::now();
    }
}
