//! `broker`: the root supervisor, and the handle through which the server
//! (or an embedding application) drives it.
//!
//! The root starts its child supervisors in order and watches them. A child
//! supervisor fails only after exhausting its own restart intensity; the
//! root then stops the whole broker, and the process that owns it decides
//! what to do (the server exits with an error), as an OTP application does
//! when its top supervisor gives up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::channels::channel::ChannelShared;
use crate::channels::{ChannelsMsg, ChannelsSupervisor};
use crate::config::BrokerConfig;
use crate::connections::context::ConnectionContext;
use crate::connections::{ConnectionStats, ConnectionsMsg, ConnectionsSupervisor};
use crate::supervision::TreeNode;

/// Path of the root supervisor in the tree.
pub const ROOT_PATH: &str = "broker";

/// Errors from starting or querying the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("failed to start the broker's actors: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("the broker is not running")]
    NotRunning,
}

/// The messages of the root supervisor.
#[derive(Debug)]
pub enum BrokerMsg {
    Tree(RpcReplyPort<TreeNode>),
}

struct Children {
    channels: ActorRef<ChannelsMsg>,
    connections: ActorRef<ConnectionsMsg>,
}

pub struct BrokerState {
    children: Children,
}

struct BrokerActor;

struct BrokerArgs {
    config: Arc<BrokerConfig>,
    connection_stats: Arc<ConnectionStats>,
    ready: tokio::sync::oneshot::Sender<(ActorRef<ChannelsMsg>, ActorRef<ConnectionsMsg>)>,
}

impl Actor for BrokerActor {
    type Msg = BrokerMsg;
    type State = BrokerState;
    type Arguments = BrokerArgs;

    async fn pre_start(&self, myself: ActorRef<BrokerMsg>, args: BrokerArgs) -> Result<BrokerState, ActorProcessingErr> {
        info!(actor = ROOT_PATH, "actor started");
        let (channels, _) = Actor::spawn_linked(
            None,
            ChannelsSupervisor,
            (args.config.clone(), format!("{ROOT_PATH}/channels")),
            myself.get_cell(),
        )
        .await?;
        let context = Arc::new(ConnectionContext {
            config: args.config.clone(),
            channels: channels.clone(),
        });
        let (connections, _) = Actor::spawn_linked(
            None,
            ConnectionsSupervisor,
            (context, args.connection_stats, format!("{ROOT_PATH}/connections")),
            myself.get_cell(),
        )
        .await?;
        let _ = args.ready.send((channels.clone(), connections.clone()));
        Ok(BrokerState {
            children: Children { channels, connections },
        })
    }

    async fn post_stop(&self, _myself: ActorRef<BrokerMsg>, _state: &mut BrokerState) -> Result<(), ActorProcessingErr> {
        info!(actor = ROOT_PATH, "actor stopped");
        Ok(())
    }

    async fn handle(&self, _myself: ActorRef<BrokerMsg>, message: BrokerMsg, state: &mut BrokerState) -> Result<(), ActorProcessingErr> {
        match message {
            BrokerMsg::Tree(reply) => {
                let _ = reply.send(state.tree().await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<BrokerMsg>,
        event: SupervisionEvent,
        _state: &mut BrokerState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                error!(actor = ROOT_PATH, child = ?cell.get_id(), reason = %reason, "child supervisor failed; stopping the broker");
                myself.stop_children(Some("broker stopping".to_owned()));
                return Err(format!("child supervisor failed: {reason}").into());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                info!(actor = ROOT_PATH, child = ?cell.get_id(), reason = ?reason, "child supervisor stopped");
            }
            _ => {}
        }
        Ok(())
    }
}

impl BrokerState {
    async fn tree(&self) -> TreeNode {
        let mut children = Vec::new();
        if let Ok(ractor::rpc::CallResult::Success(node)) =
            self.children.channels.call(ChannelsMsg::Tree, Some(Duration::from_secs(2))).await
        {
            children.push(node);
        }
        if let Ok(ractor::rpc::CallResult::Success(node)) =
            self.children.connections.call(ConnectionsMsg::Tree, Some(Duration::from_secs(2))).await
        {
            children.push(node);
        }
        TreeNode {
            path: ROOT_PATH.to_owned(),
            kind: "supervisor",
            state: "running",
            restarts: 0,
            children,
        }
    }
}

/// A running broker. Dropping the handle does not stop the broker; call
/// [`BrokerHandle::shutdown`].
pub struct BrokerHandle {
    root: ActorRef<BrokerMsg>,
    join: Option<JoinHandle<()>>,
    channels: ActorRef<ChannelsMsg>,
    connections: ActorRef<ConnectionsMsg>,
    config: Arc<BrokerConfig>,
    connection_stats: Arc<ConnectionStats>,
}

impl BrokerHandle {
    /// Starts the supervision tree.
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        let config = Arc::new(config);
        let connection_stats = Arc::new(ConnectionStats::default());
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        let args = BrokerArgs {
            config: config.clone(),
            connection_stats: connection_stats.clone(),
            ready: ready_sender,
        };
        let (root, join) = Actor::spawn(None, BrokerActor, args).await?;
        let (channels, connections) = ready.await.map_err(|_| BrokerError::NotRunning)?;
        Ok(BrokerHandle {
            root,
            join: Some(join),
            channels,
            connections,
            config,
            connection_stats,
        })
    }

    /// Hands an accepted TCP connection to the broker.
    pub fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), BrokerError> {
        self.connections
            .send_message(ConnectionsMsg::Accept { stream, peer })
            .map_err(|_| BrokerError::NotRunning)
    }

    /// The live supervision tree.
    pub async fn tree(&self) -> Result<TreeNode, BrokerError> {
        match self.root.call(BrokerMsg::Tree, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(tree)) => Ok(tree),
            _ => Err(BrokerError::NotRunning),
        }
    }

    /// Shared state of every channel, for metrics.
    pub async fn channels(&self) -> Result<Vec<Arc<ChannelShared>>, BrokerError> {
        match self.channels.call(ChannelsMsg::Channels, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(channels)) => Ok(channels),
            _ => Err(BrokerError::NotRunning),
        }
    }

    /// Connection counters, for metrics.
    pub fn connection_stats(&self) -> &ConnectionStats {
        &self.connection_stats
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Whether the root supervisor is still running.
    pub fn is_running(&self) -> bool {
        self.root.get_status() == ractor::ActorStatus::Running
    }

    /// Waits until the broker stops, whether asked to or because a child
    /// supervisor escalated.
    pub async fn stopped(&mut self) {
        if let Some(join) = self.join.as_mut() {
            let _ = join.await;
            self.join = None;
        }
    }

    /// Stops the whole tree and waits for it.
    pub async fn shutdown(mut self) {
        self.root.stop_children(Some("shutdown".to_owned()));
        self.root.stop(Some("shutdown".to_owned()));
        self.stopped().await;
    }
}
