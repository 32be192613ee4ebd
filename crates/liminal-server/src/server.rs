//! A running server: the broker plus its TCP and HTTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use liminal_broker::BrokerHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Settings;

/// Errors from starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {key} {address}: {source}")]
    Bind {
        key: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] liminal_broker::BrokerError),
}

/// A started server. Stop it with [`Server::shutdown`].
pub struct Server {
    broker: Arc<BrokerHandle>,
    client_address: SocketAddr,
    accepting: Arc<AtomicBool>,
    accept_task: JoinHandle<()>,
}

impl Server {
    /// Binds the listeners and starts the broker.
    pub async fn start(settings: &Settings) -> Result<Server, StartError> {
        let listen = settings.server.listen_address;
        let listener = TcpListener::bind(listen).await.map_err(|source| StartError::Bind {
            key: "listen_address",
            address: listen,
            source,
        })?;
        let client_address = listener.local_addr().map_err(|source| StartError::Bind {
            key: "listen_address",
            address: listen,
            source,
        })?;
        let broker = Arc::new(BrokerHandle::start(settings.broker.clone()).await?);
        let accepting = Arc::new(AtomicBool::new(true));
        let accept_task = tokio::spawn(accept_loop(listener, broker.clone(), accepting.clone()));
        info!(address = %client_address, "client listener bound");
        Ok(Server {
            broker,
            client_address,
            accepting,
            accept_task,
        })
    }

    /// The bound client address (useful with port 0).
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// The broker behind this server.
    pub fn broker(&self) -> &Arc<BrokerHandle> {
        &self.broker
    }

    /// Stops accepting connections, then stops the broker.
    pub async fn shutdown(self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.accept_task.abort();
        match Arc::try_unwrap(self.broker) {
            Ok(broker) => broker.shutdown().await,
            Err(_) => warn!("broker handle still shared at shutdown; actors stop with the process"),
        }
    }
}

async fn accept_loop(listener: TcpListener, broker: Arc<BrokerHandle>, accepting: Arc<AtomicBool>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if !accepting.load(Ordering::SeqCst) {
                    break;
                }
                if broker.accept(stream, peer).is_err() {
                    warn!(%peer, "broker is not running; dropping connection");
                    break;
                }
            }
            Err(error) => {
                // Accept errors (for example EMFILE) are usually transient.
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
