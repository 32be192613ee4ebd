//! `broker/store`: the actor that owns the durable store.
//!
//! It opens the RocksDB store before any channel starts, and on stop it
//! shuts the store down: the writer applies every queued command and syncs
//! the write-ahead log, so a graceful stop loses nothing that was acked.
//! Channel actors hold the store directly (an `Arc<Store>`) and submit
//! writes to its writer thread; this actor is not on the message path.

use std::sync::Arc;

use liminal_store::{Store, StoreOptions};
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

/// Opens the store on a blocking thread.
pub async fn open(config: &PersistenceConfig) -> Result<Arc<Store>, liminal_store::StoreError> {
    let path = config.path.clone();
    let options = StoreOptions {
        fsync: config.fsync,
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
