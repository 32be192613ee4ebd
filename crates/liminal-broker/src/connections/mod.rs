//! `broker/connections`: the supervisor of all connection actors.
//!
//! Connections are temporary children: one that crashes is logged with its
//! path and reason and is not restarted, because its socket is gone with
//! it. The supervisor enforces the connection limit at accept time and
//! runs the connection side of a graceful drain.

pub mod connection;
pub mod context;
pub(crate) mod io;
mod subscriptions;
pub mod validation;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use liminal_protocol::{ErrorCode, Frame, encode_frame};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::outbox::OutboxStats;
use crate::supervision::TreeNode;
use connection::{ConnectionActor, ConnectionArgs, ConnectionMsg};
use context::ConnectionContext;

/// The messages of the connections supervisor.
#[derive(Debug)]
pub enum ConnectionsMsg {
    /// A new TCP connection from the listener.
    Accept { stream: TcpStream, peer: SocketAddr },
    /// Returns this subtree of the supervision tree.
    Tree(RpcReplyPort<TreeNode>),
    /// Starts a graceful drain: later accepts are rejected, and every live
    /// connection sends `Draining`, rejects new work and reports when its
    /// in-flight publishes have their acks or errors queued. Replies with
    /// one receiver per connection. A receiver also completes (with an
    /// error) when its connection stops first.
    Drain {
        deadline_ms: u64,
        reply: RpcReplyPort<Vec<tokio::sync::oneshot::Receiver<()>>>,
    },
    /// Closes every connection once its queued frames are written, and
    /// replies when no connection is left.
    CloseAll(RpcReplyPort<()>),
}

/// Counters shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub crashed: AtomicU64,
    /// Slow-consumer counters of all connections' outboxes.
    pub outboxes: Arc<OutboxStats>,
}

/// A running connection actor, as the supervisor tracks it.
struct LiveConnection {
    id: u64,
    path: String,
    actor: ActorRef<ConnectionMsg>,
}

pub struct ConnectionsState {
    path: String,
    context: Arc<ConnectionContext>,
    stats: Arc<ConnectionStats>,
    next_id: u64,
    live: HashMap<ActorId, LiveConnection>,
    /// Set by `Drain`; new connections are turned away from then on.
    draining: bool,
    /// `CloseAll` callers waiting for the last connection to stop.
    close_waiters: Vec<RpcReplyPort<()>>,
}

pub struct ConnectionsSupervisor;

impl Actor for ConnectionsSupervisor {
    type Msg = ConnectionsMsg;
    type State = ConnectionsState;
    type Arguments = (Arc<ConnectionContext>, Arc<ConnectionStats>, String);

    async fn pre_start(
        &self,
        _myself: ActorRef<ConnectionsMsg>,
        (context, stats, path): Self::Arguments,
    ) -> Result<ConnectionsState, ActorProcessingErr> {
        info!(actor = %path, "actor started");
        Ok(ConnectionsState {
            path,
            context,
            stats,
            next_id: 1,
            live: HashMap::new(),
            draining: false,
            close_waiters: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectionsMsg>,
        state: &mut ConnectionsState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectionsMsg>,
        message: ConnectionsMsg,
        state: &mut ConnectionsState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionsMsg::Accept { stream, peer } => state.accept(&myself, stream, peer).await,
            ConnectionsMsg::Tree(reply) => {
                let _ = reply.send(state.tree());
            }
            ConnectionsMsg::Drain { deadline_ms, reply } => {
                let _ = reply.send(state.drain(deadline_ms));
            }
            ConnectionsMsg::CloseAll(reply) => state.close_all(reply),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ConnectionsMsg>,
        event: SupervisionEvent,
        state: &mut ConnectionsState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(connection) = state.live.remove(&cell.get_id()) {
                    state.stats.open.fetch_sub(1, Ordering::Relaxed);
                    state.stats.crashed.fetch_add(1, Ordering::Relaxed);
                    warn!(actor = %connection.path, conn_id = connection.id, reason = %reason, "actor crashed; connection closed, not restarted");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(connection) = state.live.remove(&cell.get_id()) {
                    state.stats.open.fetch_sub(1, Ordering::Relaxed);
                    info!(actor = %connection.path, conn_id = connection.id, reason = reason.as_deref().unwrap_or("normal"), "connection closed");
                }
            }
            _ => {}
        }
        if state.live.is_empty() {
            for waiter in state.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        Ok(())
    }
}

impl ConnectionsState {
    async fn accept(&mut self, myself: &ActorRef<ConnectionsMsg>, stream: TcpStream, peer: SocketAddr) {
        if self.draining {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            info!(actor = %self.path, %peer, "connection rejected: the server is draining");
            let frame = Frame::error(None, ErrorCode::Draining, "the server is shutting down; connect to another server or retry later");
            tokio::spawn(reject(stream, frame));
            return;
        }
        let limit = self.context.config.limits.max_connections;
        if self.live.len() >= limit {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(actor = %self.path, %peer, limit, "connection rejected: too many connections");
            let frame = Frame::error(
                None,
                ErrorCode::TooManyConnections,
                format!("the server already has {limit} connections, the maximum (limits.max_connections); try again later"),
            );
            tokio::spawn(reject(stream, frame));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let path = format!("{}/{id}", self.path);
        let args = ConnectionArgs {
            stream,
            peer,
            id,
            path: path.clone(),
            context: self.context.clone(),
            outbox_stats: self.stats.outboxes.clone(),
        };
        match Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.live.insert(actor.get_id(), LiveConnection { id, path, actor });
                self.stats.open.fetch_add(1, Ordering::Relaxed);
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => warn!(actor = %path, %peer, %error, "failed to start connection actor"),
        }
    }

    fn tree(&self) -> TreeNode {
        let mut children: Vec<(u64, TreeNode)> = self
            .live
            .values()
            .map(|connection| (connection.id, TreeNode::leaf(connection.path.clone(), "connection", 0)))
            .collect();
        children.sort_by_key(|(id, _)| *id);
        TreeNode {
            path: self.path.clone(),
            kind: "supervisor",
            state: "running",
            restarts: 0,
            children: children.into_iter().map(|(_, node)| node).collect(),
        }
    }

    fn drain(&mut self, deadline_ms: u64) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        self.draining = true;
        let mut receivers = Vec::with_capacity(self.live.len());
        for connection in self.live.values() {
            let (drained, receiver) = tokio::sync::oneshot::channel();
            // A connection that already stopped drops `drained`, which
            // completes its receiver: it has nothing left in flight.
            let _ = connection.actor.send_message(ConnectionMsg::Drain { deadline_ms, drained });
            receivers.push(receiver);
        }
        info!(actor = %self.path, connections = receivers.len(), "draining connections");
        receivers
    }

    fn close_all(&mut self, reply: RpcReplyPort<()>) {
        if self.live.is_empty() {
            let _ = reply.send(());
            return;
        }
        for connection in self.live.values() {
            let _ = connection.actor.send_message(ConnectionMsg::Close);
        }
        self.close_waiters.push(reply);
    }
}

/// Sends `frame` to a connection that is turned away, then closes it.
async fn reject(mut stream: TcpStream, frame: Frame) {
    if let Ok(bytes) = encode_frame(&frame) {
        let _ = stream.write_all(&bytes).await;
    }
    let _ = stream.shutdown().await;
}
