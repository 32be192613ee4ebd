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
use crate::connections::validation::SchemaValidation;
use crate::connections::{ConnectionStats, ConnectionsMsg, ConnectionsSupervisor};
use crate::conversations::responder::ResponderRegistry;
use crate::conversations::{ConversationsArgs, ConversationsHandle, ConversationsMsg, ConversationsSupervisor};
use crate::store::{StoreActor, WriteLatency};
use crate::supervision::TreeNode;
use liminal_store::{Store, StoreStats};

/// Path of the root supervisor in the tree.
pub const ROOT_PATH: &str = "broker";

/// Errors from starting or querying the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("failed to start the broker's actors: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("the broker is not running")]
    NotRunning,
    #[error("failed to open the durable store: {0}")]
    Store(#[from] liminal_store::StoreError),
}

/// The messages of the root supervisor.
#[derive(Debug)]
pub enum BrokerMsg {
    Tree(RpcReplyPort<TreeNode>),
}

struct Children {
    /// Whether a `store` child runs (the broker has durable channels).
    store: bool,
    channels: ActorRef<ChannelsMsg>,
    connections: ActorRef<ConnectionsMsg>,
    conversations: ActorRef<ConversationsMsg>,
}

pub struct BrokerState {
    children: Children,
}

struct BrokerActor;

struct BrokerArgs {
    config: Arc<BrokerConfig>,
    store: Option<Arc<Store>>,
    connection_stats: Arc<ConnectionStats>,
    responders: ResponderRegistry,
    ready: tokio::sync::oneshot::Sender<(ActorRef<ChannelsMsg>, ActorRef<ConnectionsMsg>, ConversationsHandle)>,
}

impl Actor for BrokerActor {
    type Msg = BrokerMsg;
    type State = BrokerState;
    type Arguments = BrokerArgs;

    async fn pre_start(&self, myself: ActorRef<BrokerMsg>, args: BrokerArgs) -> Result<BrokerState, ActorProcessingErr> {
        info!(actor = ROOT_PATH, "actor started");
        if let Some(store) = &args.store {
            Actor::spawn_linked(
                None,
                StoreActor,
                (store.clone(), format!("{ROOT_PATH}/store")),
                myself.get_cell(),
            )
            .await?;
        }
        let (channels, _) = Actor::spawn_linked(
            None,
            ChannelsSupervisor,
            (args.config.clone(), args.store.clone(), format!("{ROOT_PATH}/channels")),
            myself.get_cell(),
        )
        .await?;
        let (conversations_ready, conversations) = tokio::sync::oneshot::channel();
        let conversations_args = ConversationsArgs {
            config: args.config.clone(),
            responders: args.responders,
            path: format!("{ROOT_PATH}/conversations"),
            ready: conversations_ready,
        };
        Actor::spawn_linked(None, ConversationsSupervisor, conversations_args, myself.get_cell()).await?;
        let conversations = conversations.await?;
        let context = Arc::new(ConnectionContext {
            config: args.config.clone(),
            channels: channels.clone(),
            conversations: conversations.clone(),
            validation: start_validation_pool(&args.config)?,
        });
        let (connections, _) = Actor::spawn_linked(
            None,
            ConnectionsSupervisor,
            (context, args.connection_stats, format!("{ROOT_PATH}/connections")),
            myself.get_cell(),
        )
        .await?;
        let _ = args.ready.send((channels.clone(), connections.clone(), conversations.clone()));
        Ok(BrokerState {
            children: Children {
                store: args.store.is_some(),
                channels,
                connections,
                conversations: conversations.supervisor,
            },
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
        if self.children.store {
            children.push(TreeNode::leaf(format!("{ROOT_PATH}/store"), "store", 0));
        }
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
        if let Ok(ractor::rpc::CallResult::Success(node)) =
            self.children.conversations.call(ConversationsMsg::Tree, Some(Duration::from_secs(2))).await
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
    store: Option<Arc<Store>>,
    write_latency: Arc<WriteLatency>,
    conversations: ConversationsHandle,
    responders: ResponderRegistry,
}

impl BrokerHandle {
    /// Starts the supervision tree.
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        BrokerHandle::start_with_responders(config, ResponderRegistry::new()).await
    }

    /// Starts the supervision tree with in-process responders already
    /// registered. The registry stays shared with the broker, so later
    /// changes through it (or [`BrokerHandle::responders`]) apply to
    /// conversations opened afterwards.
    pub async fn start_with_responders(
        config: BrokerConfig,
        responders: ResponderRegistry,
    ) -> Result<BrokerHandle, BrokerError> {
        let config = Arc::new(config);
        let write_latency = Arc::new(WriteLatency::default());
        let store = match &config.persistence {
            Some(persistence) => Some(crate::store::open(persistence, write_latency.clone()).await?),
            None => None,
        };
        let connection_stats = Arc::new(ConnectionStats::default());
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        let args = BrokerArgs {
            config: config.clone(),
            store: store.clone(),
            connection_stats: connection_stats.clone(),
            responders: responders.clone(),
            ready: ready_sender,
        };
        let (root, join) = Actor::spawn(None, BrokerActor, args).await?;
        let (channels, connections, conversations) = ready.await.map_err(|_| BrokerError::NotRunning)?;
        Ok(BrokerHandle {
            root,
            join: Some(join),
            channels,
            connections,
            config,
            connection_stats,
            store,
            write_latency,
            conversations,
            responders,
        })
    }

    /// The in-process responders by subject. Registering or unregistering
    /// through it applies to conversations opened afterwards.
    pub fn responders(&self) -> &ResponderRegistry {
        &self.responders
    }

    /// Closes every open conversation with `reason` (the requester gets
    /// `ConversationClosed`, a remote worker `WorkerClose`), rejects new
    /// opens from then on, and waits until the conversation actors stopped
    /// or `conversations::SHUTDOWN_CLOSE_TIMEOUT` passed.
    pub async fn close_conversations(&self, reason: &str) -> Result<(), BrokerError> {
        let answer = self
            .conversations
            .supervisor
            .call(
                |reply| ConversationsMsg::CloseAll {
                    reason: reason.to_owned(),
                    reply,
                },
                Some(crate::conversations::SHUTDOWN_CLOSE_TIMEOUT),
            )
            .await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(())) => Ok(()),
            Ok(ractor::rpc::CallResult::Timeout) => {
                tracing::warn!(actor = "broker/conversations", "conversations did not all close in time; stopping them");
                Ok(())
            }
            _ => Err(BrokerError::NotRunning),
        }
    }

    /// Counters of conversation lifecycles since the broker started.
    pub fn conversation_stats(&self) -> &crate::conversations::ConversationStats {
        &self.conversations.routing.stats
    }

    /// Counters of the durable store's write path, when the broker has a store.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.store.as_ref().map(|store| store.stats())
    }

    /// Store batch write latencies, when the broker has a store.
    pub fn store_write_latency(&self) -> Option<&WriteLatency> {
        self.store.as_ref().map(|_| self.write_latency.as_ref())
    }

    /// Returns the durable store, when the broker has one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Hands an accepted TCP connection to the broker.
    pub fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), BrokerError> {
        self.connections
            .send_message(ConnectionsMsg::Accept { stream, peer })
            .map_err(|_| BrokerError::NotRunning)
    }

    /// Returns the live supervision tree.
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

    /// First phase of a graceful drain: turns away new connections, sends
    /// every connection `Draining { deadline_ms }`, rejects new work with the
    /// `draining` code, and waits until every publish already received has
    /// its ack or error queued for the socket. Returns the number
    /// of connections drained. The caller bounds the wait with a timeout.
    pub async fn drain_connections(&self, deadline_ms: u64) -> Result<usize, BrokerError> {
        let receivers = match self
            .connections
            .call(|reply| ConnectionsMsg::Drain { deadline_ms, reply }, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(receivers)) => receivers,
            _ => return Err(BrokerError::NotRunning),
        };
        let count = receivers.len();
        // An error means the connection stopped before it finished, which
        // also leaves nothing in flight on it.
        futures::future::join_all(receivers).await;
        Ok(count)
    }

    /// Second phase of a graceful drain: every connection writes what is
    /// queued (acks and deliveries included) and closes its socket. Returns
    /// once no connection is left; the caller bounds the wait.
    pub async fn close_connections(&self) -> Result<(), BrokerError> {
        // Conversations close first, so their `ConversationClosed` frames
        // are queued before each connection writes its last frames.
        self.close_conversations("shutdown").await?;
        match self.connections.call(ConnectionsMsg::CloseAll, None).await {
            Ok(ractor::rpc::CallResult::Success(())) => Ok(()),
            _ => Err(BrokerError::NotRunning),
        }
    }

    /// Connection counters, for metrics.
    pub fn connection_stats(&self) -> &ConnectionStats {
        &self.connection_stats
    }

    /// Returns the configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Returns whether the root supervisor is still running.
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
        // Connections and channels stop first, so nothing submits to the
        // store after it flushed; the store actor flushes when the root stops
        // its remaining children.
        let reason = Some("shutdown".to_owned());
        let wait = Some(Duration::from_secs(10));
        // Without a drain first, the requesters' connections close right
        // after this, so a `ConversationClosed` may not reach the socket.
        let _ = self.close_conversations("shutdown").await;
        let _ = self.connections.stop_and_wait(reason.clone(), wait).await;
        let _ = self.channels.stop_and_wait(reason.clone(), wait).await;
        self.root.stop_children(reason.clone());
        self.root.stop(reason);
        self.stopped().await;
    }
}

/// Starts the schema validation pool when a declared channel has a schema.
fn start_validation_pool(config: &BrokerConfig) -> Result<Option<SchemaValidation>, ActorProcessingErr> {
    let threads = match config.schema_validation_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    let validation = SchemaValidation::start(&config.channels, threads)?;
    if let Some(validation) = &validation {
        info!(actor = ROOT_PATH, threads = validation.threads(), "started schema validation pool");
    }
    Ok(validation)
}
