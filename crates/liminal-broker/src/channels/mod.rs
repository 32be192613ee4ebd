//! `broker/channels`: the supervisor of all channel actors and the registry
//! that maps channel names to them.
//!
//! Channel actors are permanent children: a crashed channel is restarted at
//! once, within the restart intensity. Past the intensity the supervisor
//! stops every channel and fails, which escalates to `broker`. Connections
//! ask this actor for a channel once and then keep the reference, so the
//! registry is off the per-message path.

pub mod channel;
mod dedup;
pub mod durable;
pub mod messages;
mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use liminal_store::{GroupId, Store};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::config::{BrokerConfig, ChannelConfig};
use crate::supervision::{RestartBudget, TreeNode};
use channel::{ChannelActor, ChannelShared, ChannelStats};
use durable::DurableBinding;
use messages::ChannelMsg;

/// The replication group of every channel on a single node. With clustering,
/// channels are spread over several groups, each one Raft state machine.
pub const LOCAL_GROUP: GroupId = GroupId(0);

/// What a connection keeps for a channel it uses: the actor to send to and
/// the shared data it needs before sending (the schema).
#[derive(Debug, Clone)]
pub struct ChannelHandle {
    pub actor: ActorRef<ChannelMsg>,
    pub shared: Arc<ChannelShared>,
}

/// Why a channel could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown channel \"{0}\": it is not declared in the configuration and auto_create_channels is off")]
    Unknown(String),
    #[error("channel \"{0}\" is unavailable: its actor could not be started")]
    Unavailable(String),
}

/// The messages of the channels supervisor.
#[derive(Debug)]
pub enum ChannelsMsg {
    /// Returns the channel's actor, creating the channel if it is undeclared
    /// and automatic creation is on.
    Resolve {
        name: String,
        reply: RpcReplyPort<Result<ChannelHandle, ResolveError>>,
    },
    /// Returns the channel's current actor without creating anything; used
    /// by subscribers to re-attach after a channel restart.
    Lookup {
        name: String,
        reply: RpcReplyPort<Option<ChannelHandle>>,
    },
    /// Returns the shared state of every channel (for metrics).
    Channels(RpcReplyPort<Vec<Arc<ChannelShared>>>),
    /// Returns this subtree of the supervision tree.
    Tree(RpcReplyPort<TreeNode>),
}

struct ChannelEntry {
    shared: Arc<ChannelShared>,
    actor: ActorRef<ChannelMsg>,
    budget: RestartBudget,
}

impl ChannelEntry {
    fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            actor: self.actor.clone(),
            shared: self.shared.clone(),
        }
    }
}

pub struct ChannelsState {
    config: Arc<BrokerConfig>,
    store: Option<Arc<Store>>,
    path: String,
    entries: HashMap<String, ChannelEntry>,
    by_actor: HashMap<ActorId, String>,
}

pub struct ChannelsSupervisor;

impl Actor for ChannelsSupervisor {
    type Msg = ChannelsMsg;
    type State = ChannelsState;
    type Arguments = (Arc<BrokerConfig>, Option<Arc<Store>>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<ChannelsMsg>,
        (config, store, path): Self::Arguments,
    ) -> Result<ChannelsState, ActorProcessingErr> {
        info!(actor = %path, "actor started");
        let mut state = ChannelsState {
            config: config.clone(),
            store,
            path,
            entries: HashMap::new(),
            by_actor: HashMap::new(),
        };
        for channel in &config.channels {
            state.start_channel(&myself, channel.clone()).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ChannelsMsg>,
        state: &mut ChannelsState,
    ) -> Result<(), ActorProcessingErr> {
        info!(actor = %state.path, "actor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ChannelsMsg>,
        message: ChannelsMsg,
        state: &mut ChannelsState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChannelsMsg::Resolve { name, reply } => {
                let result = state.resolve(&myself, &name).await;
                let _ = reply.send(result);
            }
            ChannelsMsg::Lookup { name, reply } => {
                let _ = reply.send(state.entries.get(&name).map(ChannelEntry::handle));
            }
            ChannelsMsg::Channels(reply) => {
                let _ = reply.send(state.entries.values().map(|entry| entry.shared.clone()).collect());
            }
            ChannelsMsg::Tree(reply) => {
                let _ = reply.send(state.tree());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ChannelsMsg>,
        event: SupervisionEvent,
        state: &mut ChannelsState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                let Some(name) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.restart_channel(&myself, &name, &reason.to_string()).await?;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A channel stops normally only when the broker shuts down.
                if let Some(name) = state.by_actor.remove(&cell.get_id()) {
                    state.entries.remove(&name);
                    info!(actor = %format!("{}/{name}", state.path), reason = ?reason, "channel stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ChannelsState {
    async fn start_channel(
        &mut self,
        myself: &ActorRef<ChannelsMsg>,
        config: ChannelConfig,
    ) -> Result<ChannelHandle, ActorProcessingErr> {
        let name = config.name.clone();
        let durable = if config.durable {
            Some(self.bind_durable(&name).await?)
        } else {
            None
        };
        let shared = Arc::new(ChannelShared {
            path: format!("{}/{name}", self.path),
            slow_consumer: config.slow_consumer.unwrap_or(self.config.slow_consumer),
            schema: config.schema.clone(),
            config,
            next_message_id: AtomicU64::new(1),
            stats: ChannelStats::default(),
            durable,
            receipts: Mutex::default(),
        });
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, shared.clone(), myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), name.clone());
        let entry = ChannelEntry {
            shared,
            actor,
            budget: RestartBudget::new(self.config.restart_intensity),
        };
        let handle = entry.handle();
        self.entries.insert(name, entry);
        Ok(handle)
    }

    /// Finds (or registers) a durable channel's id in the store.
    async fn bind_durable(&self, name: &str) -> Result<DurableBinding, ActorProcessingErr> {
        let Some(store) = self.store.clone() else {
            return Err(format!("channel \"{name}\" is durable, but the broker runs without a store").into());
        };
        let lookup_store = store.clone();
        let lookup_name = name.to_owned();
        let channel = tokio::task::spawn_blocking(move || lookup_store.channel_id(LOCAL_GROUP, &lookup_name)).await??;
        Ok(DurableBinding {
            store,
            group: LOCAL_GROUP,
            channel,
            name: name.to_owned(),
        })
    }

    async fn resolve(&mut self, myself: &ActorRef<ChannelsMsg>, name: &str) -> Result<ChannelHandle, ResolveError> {
        if let Some(entry) = self.entries.get(name) {
            return Ok(entry.handle());
        }
        if !self.config.auto_create_channels {
            return Err(ResolveError::Unknown(name.to_owned()));
        }
        match self.start_channel(myself, ChannelConfig::ephemeral(name)).await {
            Ok(handle) => {
                info!(actor = %format!("{}/{name}", self.path), channel = name, "channel created on first use");
                Ok(handle)
            }
            Err(spawn_error) => {
                error!(channel = name, error = %spawn_error, "failed to start channel actor");
                Err(ResolveError::Unavailable(name.to_owned()))
            }
        }
    }

    /// Restarts a crashed channel, or escalates when its restart budget is spent.
    async fn restart_channel(
        &mut self,
        myself: &ActorRef<ChannelsMsg>,
        name: &str,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(entry) = self.entries.get_mut(name) else {
            return Ok(());
        };
        let path = entry.shared.path.clone();
        warn!(actor = %path, channel = name, reason, "actor crashed");
        if !entry.budget.allow_restart(Instant::now()) {
            error!(
                actor = %path,
                max_restarts = self.config.restart_intensity.max_restarts,
                within_ms = self.config.restart_intensity.within.as_millis() as u64,
                "restart intensity exceeded, escalating"
            );
            myself.stop_children(Some("supervisor escalated".to_owned()));
            return Err(format!("channel \"{name}\" exceeded its restart intensity").into());
        }
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, entry.shared.clone(), myself.get_cell()).await?;
        entry.actor = actor.clone();
        info!(actor = %path, channel = name, restarts = entry.budget.total_restarts(), "actor restarted");
        self.by_actor.insert(actor.get_id(), name.to_owned());
        Ok(())
    }

    fn tree(&self) -> TreeNode {
        let mut children: Vec<TreeNode> = self
            .entries
            .values()
            .map(|entry| TreeNode::leaf(entry.shared.path.clone(), "channel", entry.budget.total_restarts()))
            .collect();
        children.sort_by(|left, right| left.path.cmp(&right.path));
        TreeNode {
            path: self.path.clone(),
            kind: "supervisor",
            state: "running",
            restarts: 0,
            children,
        }
    }
}
