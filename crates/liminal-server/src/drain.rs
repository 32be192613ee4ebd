//! Graceful drain after SIGINT or SIGTERM.
//!
//! Phases, each logged:
//!
//! 1. Stop accepting client connections, and `/ready` returns 503.
//! 2. Every connection gets `Draining { deadline_ms }` and from then on
//!    rejects publishes, subscribes and conversation opens with the
//!    `draining` code. The drain waits until every publish already received
//!    is answered, so each acked publish had its ack queued before exit.
//! 3. For a short notice period the connections stay open and keep
//!    rejecting new work, so frames a client sent before it saw `Draining`
//!    get a `draining` error instead of a closed socket.
//! 4. Every connection writes what is queued (acks, deliveries) and closes.
//! 5. The broker stops: channels, then conversations (closed with reason
//!    `shutdown`), then the store, which syncs its write-ahead log.
//! 6. The HTTP listener stops.
//!
//! Phases 2 to 4 share the `drain_timeout_ms` budget. When it runs out, the
//! remaining connections are cut off, and phase 5 still runs in full.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::server::Server;

/// How long the HTTP listener may finish requests in progress at the end.
const HTTP_STOP_GRACE: Duration = Duration::from_millis(500);

/// Maximum notice period (phase 3), which is also at most a quarter of
/// the drain timeout. A client that pipelines requests has about this long
/// after `Draining` for its frames in flight to be answered.
const MAX_NOTICE: Duration = Duration::from_millis(250);

/// Outcome of a drain, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that were open when the drain started.
    pub connections: usize,
    /// Whether phases 2 to 4 finished within the timeout.
    pub completed: bool,
    pub elapsed: Duration,
}

/// Drains `server` and stops it. Phases 2 to 4 are bounded by `timeout`;
/// stopping the broker is not, because cutting off the store's final sync
/// could lose acknowledged messages.
// NOTE: with a slow store the process can therefore exit somewhat after
// `timeout`; a second signal still exits at once.
pub async fn drain(server: Server, timeout: Duration) -> DrainReport {
    let started = Instant::now();
    let deadline_ms = timeout.as_millis() as u64;
    info!(deadline_ms, "drain started");

    server.readiness.set_draining();
    server.stop_accepting();
    info!("drain: stopped accepting client connections");

    let connection_phases = async {
        let connections = match server.broker.drain_connections(deadline_ms).await {
            Ok(count) => count,
            Err(error) => {
                warn!(%error, "drain: the broker did not take the drain request");
                return 0;
            }
        };
        info!(
            connections,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain: in-flight publishes answered"
        );
        let notice = (timeout / 4).min(MAX_NOTICE);
        info!(
            notice_ms = notice.as_millis() as u64,
            "drain: rejecting new work before closing connections"
        );
        tokio::time::sleep(notice).await;
        if let Err(error) = server.broker.close_connections().await {
            warn!(%error, "drain: the broker did not close its connections");
        }
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain: client connections closed"
        );
        connections
    };
    let (connections, completed) = match tokio::time::timeout(timeout, connection_phases).await {
        Ok(connections) => (connections, true),
        Err(_) => {
            let open = server
                .broker
                .connection_stats()
                .open
                .load(std::sync::atomic::Ordering::Relaxed);
            warn!(
                deadline_ms,
                open, "drain: timed out; closing the remaining connections"
            );
            (open as usize, false)
        }
    };

    let http = server.stop_broker().await;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "drain: broker stopped and store flushed"
    );
    http.stop(HTTP_STOP_GRACE).await;
    let report = DrainReport {
        connections,
        completed,
        elapsed: started.elapsed(),
    };
    info!(
        connections = report.connections,
        completed = report.completed,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "drain finished"
    );
    report
}
