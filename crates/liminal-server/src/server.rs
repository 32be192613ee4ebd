//! A running server: the broker plus its TCP and HTTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use liminal_broker::BrokerHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Settings;
use crate::http::{self, BrokerSlot, HttpServer, Readiness};

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

/// A started server. Stop it with [`crate::drain::drain`] (graceful) or
/// [`Server::shutdown`] (immediate).
pub struct Server {
    pub(crate) broker: Arc<BrokerHandle>,
    client_address: SocketAddr,
    pub(crate) accepting: Arc<AtomicBool>,
    pub(crate) accept_task: JoinHandle<()>,
    pub(crate) http: HttpServer,
    /// The HTTP handlers' reference to the broker, emptied before the broker stops.
    pub(crate) http_broker: BrokerSlot,
    pub(crate) readiness: Arc<Readiness>,
}

impl Server {
    /// Binds the listeners, serves HTTP and starts the broker. The HTTP
    /// endpoints answer from before the broker starts, so `/ready` can
    /// report that the store is still opening.
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
        let health = settings.server.health_listen_address;
        let bind_error = |source| StartError::Bind {
            key: "health_listen_address",
            address: health,
            source,
        };
        let http_listener = http::bind(health).await.map_err(bind_error)?;
        let http_broker = BrokerSlot::default();
        let readiness = Arc::new(Readiness::new(settings.broker.persistence.is_some()));
        let http = http::serve(http_listener, http_broker.clone(), readiness.clone()).map_err(bind_error)?;

        let broker = match BrokerHandle::start(settings.broker.clone()).await {
            Ok(broker) => Arc::new(broker),
            Err(error) => {
                http.stop(std::time::Duration::from_secs(1)).await;
                return Err(error.into());
            }
        };
        *http_broker.write().await = Some(broker.clone());
        let accepting = Arc::new(AtomicBool::new(true));
        let accept_task = tokio::spawn(accept_loop(listener, broker.clone(), accepting.clone()));
        info!(address = %client_address, "client listener bound");
        readiness.set_listeners_bound();
        Ok(Server {
            broker,
            client_address,
            accepting,
            accept_task,
            http,
            http_broker,
            readiness,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_address(&self) -> SocketAddr {
        self.http.address()
    }

    /// The bound client address (useful with port 0).
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// The broker behind this server.
    pub fn broker(&self) -> &Arc<BrokerHandle> {
        &self.broker
    }

    /// Stops accepting connections, then stops the broker and the HTTP
    /// listener without draining.
    pub async fn shutdown(self) {
        self.stop_accepting();
        let http = self.stop_broker().await;
        http.stop(std::time::Duration::from_secs(1)).await;
    }

    /// Closes the client listener; connections already accepted stay open.
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.accept_task.abort();
    }

    /// Takes the broker back from the HTTP handlers (waiting for requests
    /// that use it) and stops it, which flushes the store. Returns the HTTP
    /// listener, which keeps answering `/health` until it is stopped.
    pub(crate) async fn stop_broker(self) -> HttpServer {
        let Server {
            broker,
            http,
            http_broker,
            ..
        } = self;
        http_broker.write().await.take();
        match Arc::try_unwrap(broker) {
            Ok(broker) => broker.shutdown().await,
            Err(_) => warn!("broker handle still shared at shutdown; actors stop with the process"),
        }
        http
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
