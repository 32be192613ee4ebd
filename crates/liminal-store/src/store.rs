//! Opening the database, the format version check, and the `Store` handle
//! that owns the writer thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::TrySendError;
use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteOptions};

use crate::codec::decode_u32;
use crate::command::{ApplyOutcome, Command};
use crate::error::{Result, StoreError};
use crate::keys;
use crate::writer::{
    BatchObserver, Completion, FsyncPolicy, Request, Shared, StoreStats, Writer, WriterConfig,
};

/// On-disk format version written by this release. Bump it when a key layout
/// or value encoding changes, and teach `Store::open` to migrate older data.
pub const FORMAT_VERSION: u32 = 1;

/// Settings for [`Store::open`].
#[derive(Clone)]
pub struct StoreOptions {
    pub fsync: FsyncPolicy,
    /// Commands the queue accepts before `submit` fails with `QueueFull`.
    pub queue_capacity: usize,
    /// Maximum number of commands applied into one write batch.
    pub max_batch_commands: usize,
    /// A batch stops taking commands once its encoded size reaches this many bytes.
    pub max_batch_bytes: usize,
    /// Called on the writer thread after every batch write, for latency metrics.
    pub on_batch: Option<BatchObserver>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
            queue_capacity: 65_536,
            max_batch_commands: 1024,
            max_batch_bytes: 8 << 20,
            on_batch: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("fsync", &self.fsync)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch_commands", &self.max_batch_commands)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("on_batch", &self.on_batch.is_some())
            .finish()
    }
}

/// Durable storage for streams, cursors and idempotency receipts.
///
/// Writes go through [`Store::submit`] to a single writer thread and never
/// block the caller. Reads are synchronous RocksDB calls, safe from any
/// number of threads; async callers run them in `spawn_blocking`.
pub struct Store {
    pub(crate) db: Arc<DB>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    queue_capacity: usize,
}

impl Store {
    /// Opens the store at `path`, creating the directory and database when missing.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&path).map_err(|e| open_error(e.to_string()))?;

        let db = open_db(&path).map_err(|e| open_error(e.into_string()))?;
        check_format_version(&db)?;
        let db = Arc::new(db);

        let (sender, receiver) = crossbeam_channel::bounded(options.queue_capacity.max(1));
        let shared = Arc::new(Shared::new(sender));
        let writer = Writer::new(
            Arc::clone(&db),
            receiver,
            Arc::clone(&shared),
            WriterConfig {
                policy: options.fsync,
                max_batch_commands: options.max_batch_commands.max(1),
                max_batch_bytes: options.max_batch_bytes.max(1),
                on_batch: options.on_batch.clone(),
            },
        );
        let handle = std::thread::Builder::new()
            .name("liminal-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| open_error(format!("failed to start the writer thread: {e}")))?;

        tracing::info!(path = %path.display(), format_version = FORMAT_VERSION, fsync = ?options.fsync, "store opened");
        Ok(Store {
            db,
            shared,
            writer: Mutex::new(Some(handle)),
            path,
            queue_capacity: options.queue_capacity.max(1),
        })
    }

    /// Returns the data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `command` for the writer thread without blocking.
    ///
    /// `done` is called exactly once: on the writer thread after the batch
    /// containing the command is written (and synced, under `FsyncPolicy::Always`),
    /// or on the calling thread with `QueueFull` or `WriterStopped` when the
    /// command cannot be queued.
    pub fn submit(&self, command: Command, done: Completion) {
        let request = Request::new(command, done);
        let slot = self
            .shared
            .sender
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let rejected = match slot.as_ref() {
            None => Some((request, StoreError::WriterStopped)),
            Some(sender) => match sender.try_send(request) {
                Ok(()) => None,
                Err(TrySendError::Full(request)) => Some((
                    request,
                    StoreError::QueueFull {
                        capacity: self.queue_capacity,
                    },
                )),
                Err(TrySendError::Disconnected(request)) => {
                    Some((request, StoreError::WriterStopped))
                }
            },
        };
        // Release the lock first: the callback may submit again.
        drop(slot);
        if let Some((request, error)) = rejected {
            request.complete(Err(error));
        }
    }

    /// Submits `command` and blocks until it is applied. Not for async tasks:
    /// call it from a blocking thread. Calling it from a completion callback
    /// deadlocks, because that callback runs on the writer thread.
    pub fn submit_blocking(&self, command: Command) -> Result<ApplyOutcome> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.submit(
            command,
            Box::new(move |result| {
                // The receiver only disappears if the caller stopped waiting.
                let _ = sender.send(result);
            }),
        );
        receiver.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    /// Returns the underlying database, for callers of [`apply`](crate::apply)
    /// that manage their own batches (a Raft state machine, tests). Writing
    /// through it while the writer thread runs bypasses the writer's ordering,
    /// so offsets and channel ids may then collide.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Returns a snapshot of the write path counters.
    pub fn stats(&self) -> StoreStats {
        self.shared.stats.snapshot()
    }

    /// Stops accepting commands, lets the writer apply every queued one, syncs
    /// the WAL and joins the writer thread. Later submits fail with
    /// `WriterStopped`. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.shared.close_queue();
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(handle) = handle else {
            return;
        };
        // A completion callback that drops the last `Store` runs on the writer
        // thread itself, which cannot join itself.
        if handle.thread().id() == std::thread::current().id() {
            return;
        }
        if handle.join().is_err() {
            tracing::error!(path = %self.path.display(), "store writer thread had panicked");
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Returns the handle of a column family that `Store::open` always creates.
pub(crate) fn column_family<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| StoreError::Open {
        path: db.path().to_path_buf(),
        reason: format!("column family {name} is missing"),
    })
}

fn open_db(path: &Path) -> std::result::Result<DB, rocksdb::Error> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_keep_log_file_num(8);

    let mut names: Vec<String> = DB::list_cf(&options, path).unwrap_or_default();
    for name in keys::DATA_COLUMN_FAMILIES {
        if !names.iter().any(|existing| existing == name) {
            names.push(name.to_string());
        }
    }
    // Column families unknown to this release (from a newer one) are opened
    // too, so the format version check can report the real problem.
    let descriptors = names.into_iter().map(|name| {
        let mut cf_options = Options::default();
        if name == keys::CF_STREAMS {
            cf_options.set_compression_type(DBCompressionType::Lz4);
        }
        if name == keys::CF_RECEIPTS {
            // Almost every receipt lookup is for a key never seen before
            // (a fresh idempotency key), so bloom filters let the memtable
            // and SST files answer "absent" without a search.
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            cf_options.set_block_based_table_factory(&table);
            cf_options.set_memtable_prefix_bloom_ratio(0.1);
            cf_options.set_memtable_whole_key_filtering(true);
        }
        ColumnFamilyDescriptor::new(name, cf_options)
    });
    DB::open_cf_descriptors(&options, path, descriptors)
}

fn check_format_version(db: &DB) -> Result<()> {
    let stored = db
        .get(keys::FORMAT_VERSION_KEY)
        .map_err(StoreError::db("get format version"))?;
    match stored {
        Some(value) => {
            let found = decode_u32("format version", keys::FORMAT_VERSION_KEY, &value)?;
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found < FORMAT_VERSION {
                return Err(StoreError::OlderFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            let mut options = WriteOptions::default();
            options.set_sync(true);
            db.put_opt(
                keys::FORMAT_VERSION_KEY,
                FORMAT_VERSION.to_be_bytes(),
                &options,
            )
            .map_err(StoreError::db("put format version"))
        }
    }
}
