//! A running server: the broker plus its TCP and HTTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use liminal_broker::{BrokerHandle, RegistryError, ResponderFactory, ResponderRegistry};
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
    #[error(transparent)]
    Responder(#[from] RegistryError),
}

/// Collects in-process responders for [`Server::builder`].
pub struct ServerBuilder {
    settings: Settings,
    responders: ResponderRegistry,
    /// The first registration that failed; `start` returns it.
    invalid: Option<RegistryError>,
}

impl ServerBuilder {
    /// Serves conversations on `subject` with a responder made by
    /// `factory`, one per conversation. A later call for the same subject
    /// replaces the factory. An invalid subject makes `start` fail.
    pub fn responder(self, subject: impl Into<String>, factory: impl ResponderFactory) -> ServerBuilder {
        let outcome = self.responders.register(subject, factory);
        self.record(outcome.err())
    }

    /// Uses `registry` (and the responders already in it) instead of an
    /// empty one; keep a clone to register or unregister at runtime.
    pub fn responders(mut self, registry: ResponderRegistry) -> ServerBuilder {
        for subject in self.responders.subjects() {
            if let Some(factory) = self.responders.get(&subject) {
                let outcome = registry.register_shared(subject, factory);
                self = self.record(outcome.err());
            }
        }
        self.responders = registry;
        self
    }

    fn record(mut self, error: Option<RegistryError>) -> ServerBuilder {
        if self.invalid.is_none() {
            self.invalid = error;
        }
        self
    }

    /// Binds the listeners and starts the broker, as [`Server::start`] does.
    pub async fn start(self) -> Result<Server, StartError> {
        if let Some(error) = self.invalid {
            return Err(error.into());
        }
        Server::start_with_responders(&self.settings, self.responders).await
    }
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
    /// endpoints respond from before the broker starts, so `/ready` can
    /// report that the store is still opening.
    pub async fn start(settings: &Settings) -> Result<Server, StartError> {
        Server::start_with_responders(settings, ResponderRegistry::new()).await
    }

    /// A builder for a server embedded in an application, with in-process
    /// responders:
    ///
    /// ```no_run
    /// # async fn demo(settings: liminal_server::Settings) -> Result<(), liminal_server::StartError> {
    /// use liminal_broker::EchoResponder;
    /// let server = liminal_server::Server::builder(settings)
    ///     .responder("echo", |_: &liminal_broker::ConversationInfo| EchoResponder)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(settings: Settings) -> ServerBuilder {
        ServerBuilder {
            settings,
            responders: ResponderRegistry::new(),
            invalid: None,
        }
    }

    /// Like [`Server::start`], with in-process responders. The registry stays
    /// shared with the broker, so the application can change it at runtime.
    pub async fn start_with_responders(settings: &Settings, responders: ResponderRegistry) -> Result<Server, StartError> {
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

        let broker = match BrokerHandle::start_with_responders(settings.broker.clone(), responders).await {
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
    /// listener, which keeps serving `/health` until it is stopped.
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
