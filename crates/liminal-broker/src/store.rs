//! `broker/store`: the actor that owns the durable store.
//!
//! It opens the RocksDB store before any channel starts, and on stop it
//! shuts the store down: the writer applies every queued command and syncs
//! the write-ahead log, so a graceful stop loses nothing that was acked.
//! Channel actors hold the store directly (an `Arc<Store>`) and submit
//! writes to its writer thread; this actor is not on the message path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use liminal_store::{BatchReport, Store, StoreOptions};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::info;

use crate::config::PersistenceConfig;

pub struct StoreActor;

pub struct StoreState {
    store: Arc<Store>,
    path: String,
}

/// Messages of the store actor; it only answers who owns the store.
#[derive(Debug)]
pub enum StoreMsg {}

/// Upper bounds, in seconds, of the write latency histogram buckets: from
/// 50 µs (a write without sync) to 1 s (a sync on a busy disk).
pub const WRITE_LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.25, 1.0,
];

/// Histogram of store batch write latencies (including the sync under
/// `fsync = "always"`), filled by the writer thread after every batch.
#[derive(Debug, Default)]
pub struct WriteLatency {
    /// Cumulative counts: `buckets[i]` counts writes of at most `WRITE_LATENCY_BUCKETS[i]`.
    pub buckets: [AtomicU64; WRITE_LATENCY_BUCKETS.len()],
    pub count: AtomicU64,
    pub sum_nanos: AtomicU64,
}

impl WriteLatency {
    fn observe(&self, report: &BatchReport) {
        let seconds = report.write_latency.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(WRITE_LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(report.write_latency.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Opens the store on a blocking thread, recording write latencies into `latency`.
pub async fn open(
    config: &PersistenceConfig,
    latency: Arc<WriteLatency>,
) -> Result<Arc<Store>, liminal_store::StoreError> {
    let path = config.path.clone();
    let options = StoreOptions {
        fsync: config.fsync,
        on_batch: Some(Arc::new(move |report: &BatchReport| latency.observe(report))),
        ..StoreOptions::default()
    };
    tokio::task::spawn_blocking(move || Store::open(path, options).map(Arc::new))
        .await
        .unwrap_or_else(|join_error| {
            Err(liminal_store::StoreError::Open {
                path: config.path.clone(),
                reason: format!("opening the store panicked: {join_error}"),
            })
        })
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = (Arc<Store>, String);

    async fn pre_start(
        &self,
        _myself: ActorRef<StoreMsg>,
        (store, path): (Arc<Store>, String),
    ) -> Result<StoreState, ActorProcessingErr> {
        info!(actor = %path, store = %store.path().display(), "actor started");
        Ok(StoreState { store, path })
    }

    async fn post_stop(&self, _myself: ActorRef<StoreMsg>, state: &mut StoreState) -> Result<(), ActorProcessingErr> {
        let store = state.store.clone();
        // Shutdown joins the writer thread after its final sync.
        let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
        info!(actor = %state.path, "store flushed and closed; actor stopped");
        Ok(())
    }
}
