//! The HTTP listener for operators: `/health`, `/ready`, `/metrics` and
//! `/supervision`, on its own port (`health_listen_address`).
//!
//! It starts before the broker, so `/health` responds while the store opens
//! and `/ready` reports what is still missing. Handlers reach the broker
//! through [`BrokerSlot`]; the server empties the slot before it stops the
//! broker, so no handler holds the broker during shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use liminal_broker::BrokerHandle;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{RwLock, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::metrics;

/// The broker as HTTP handlers see it: `None` before it started and after
/// the server took it back to stop it.
pub type BrokerSlot = Arc<RwLock<Option<Arc<BrokerHandle>>>>;

/// Readiness conditions that the broker handle cannot report itself.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Whether the broker opens a durable store when it starts.
    store_configured: bool,
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(store_configured: bool) -> Readiness {
        Readiness {
            store_configured,
            ..Readiness::default()
        }
    }

    /// Records that both listeners are bound and the client listener accepts.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    /// Records that a graceful drain started, so `/ready` returns 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct HttpState {
    broker: BrokerSlot,
    readiness: Arc<Readiness>,
}

/// The body of `/ready`.
#[derive(Debug, Serialize)]
struct ReadyReport {
    ready: bool,
    /// Names of the conditions that do not hold yet; empty when ready.
    unmet: Vec<&'static str>,
}

/// A running HTTP listener.
pub struct HttpServer {
    address: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Binds the HTTP listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the endpoints on `listener` until [`HttpServer::stop`].
pub fn serve(
    listener: TcpListener,
    broker: BrokerSlot,
    readiness: Arc<Readiness>,
) -> std::io::Result<HttpServer> {
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_page))
        .route("/supervision", get(supervision))
        .with_state(HttpState { broker, readiness });
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(error) = serving.await {
            error!(%error, "HTTP listener failed");
        }
    });
    info!(%address, "HTTP listener bound");
    Ok(HttpServer {
        address,
        shutdown,
        task,
    })
}

impl HttpServer {
    /// The bound address (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting HTTP connections and waits up to `grace` for
    /// requests in progress; connections still open after that are dropped.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "HTTP requests still open at shutdown; dropping them"
            );
            task.abort();
        }
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let broker = state.broker.read().await;
    let mut unmet = Vec::new();
    // The HTTP listener starts only after the configuration loaded, so
    // `config_loaded` is met whenever this handler runs.
    if !state.readiness.listeners_bound.load(Ordering::SeqCst) {
        unmet.push("listeners_bound");
    }
    match broker.as_ref() {
        // `BrokerHandle::start` opens the store before it returns, so a
        // broker in the slot means the store (when configured) is open.
        None => {
            unmet.push("broker_running");
            if state.readiness.store_configured {
                unmet.push("store_open");
            }
        }
        Some(broker) if !broker.is_running() => unmet.push("broker_running"),
        Some(_) => {}
    }
    if state.readiness.draining.load(Ordering::SeqCst) {
        unmet.push("not_draining");
    }
    let status = if unmet.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let report = ReadyReport {
        ready: unmet.is_empty(),
        unmet,
    };
    (status, Json(report)).into_response()
}

async fn metrics_page(State(state): State<HttpState>) -> Response {
    let broker = state.broker.read().await;
    let Some(broker) = broker.as_ref() else {
        return unavailable("the broker is not running");
    };
    match metrics::render(broker).await {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            warn!(%error, "failed to render metrics");
            unavailable(&error.to_string())
        }
    }
}

async fn supervision(State(state): State<HttpState>) -> Response {
    let broker = state.broker.read().await;
    let Some(broker) = broker.as_ref() else {
        return unavailable("the broker is not running");
    };
    match broker.tree().await {
        Ok(tree) => Json(tree).into_response(),
        Err(error) => unavailable(&error.to_string()),
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ready_report(state: HttpState) -> (StatusCode, serde_json::Value) {
        let response = ready(State(state)).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn not_ready_before_broker_starts() {
        let state = HttpState {
            broker: BrokerSlot::default(),
            readiness: Arc::new(Readiness::new(true)),
        };
        let (status, body) = ready_report(state).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(
            body["unmet"],
            serde_json::json!(["listeners_bound", "broker_running", "store_open"])
        );
    }

    #[tokio::test]
    async fn draining_makes_not_ready() {
        let readiness = Arc::new(Readiness::new(false));
        readiness.set_listeners_bound();
        readiness.set_draining();
        let state = HttpState {
            broker: BrokerSlot::default(),
            readiness,
        };
        let (status, body) = ready_report(state).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["unmet"],
            serde_json::json!(["broker_running", "not_draining"])
        );
    }
}
