//! `broker/connections`: the supervisor of all connection actors.
//!
//! Connections are temporary children: one that crashes is logged with its
//! path and reason and is not restarted, because its socket is gone with
//! it. The supervisor enforces the connection limit at accept time.

pub mod connection;
pub mod context;
mod io;
mod subscriptions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use liminal_protocol::{ErrorCode, Frame, encode_frame};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::supervision::TreeNode;
use connection::{ConnectionActor, ConnectionArgs};
use context::ConnectionContext;

/// The messages of the connections supervisor.
#[derive(Debug)]
pub enum ConnectionsMsg {
    /// A new TCP connection from the listener.
    Accept { stream: TcpStream, peer: SocketAddr },
    /// Returns this subtree of the supervision tree.
    Tree(RpcReplyPort<TreeNode>),
}

/// Counters shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub crashed: AtomicU64,
}

pub struct ConnectionsState {
    path: String,
    context: Arc<ConnectionContext>,
    stats: Arc<ConnectionStats>,
    next_id: u64,
    live: HashMap<ActorId, (u64, String)>,
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
                if let Some((conn_id, path)) = state.live.remove(&cell.get_id()) {
                    state.stats.open.fetch_sub(1, Ordering::Relaxed);
                    state.stats.crashed.fetch_add(1, Ordering::Relaxed);
                    warn!(actor = %path, conn_id, reason = %reason, "actor crashed; connection closed, not restarted");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some((conn_id, path)) = state.live.remove(&cell.get_id()) {
                    state.stats.open.fetch_sub(1, Ordering::Relaxed);
                    info!(actor = %path, conn_id, reason = reason.as_deref().unwrap_or("normal"), "connection closed");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ConnectionsState {
    async fn accept(&mut self, myself: &ActorRef<ConnectionsMsg>, stream: TcpStream, peer: SocketAddr) {
        let limit = self.context.config.limits.max_connections;
        if self.live.len() >= limit {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(actor = %self.path, %peer, limit, "connection rejected: too many connections");
            tokio::spawn(reject(stream, limit));
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
        };
        match Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.live.insert(actor.get_id(), (id, path));
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
            .map(|(id, path)| (*id, TreeNode::leaf(path.clone(), "connection", 0)))
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
}

/// Answers a connection over the limit with an `Error` frame and closes it.
async fn reject(mut stream: TcpStream, limit: usize) {
    let frame = Frame::error(
        None,
        ErrorCode::TooManyConnections,
        format!("the server already has {limit} connections, the maximum (limits.max_connections); try again later"),
    );
    if let Ok(bytes) = encode_frame(&frame) {
        let _ = stream.write_all(&bytes).await;
    }
    let _ = stream.shutdown().await;
}
