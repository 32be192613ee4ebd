//! `broker/channels`: the supervisor of all channel actors and the registry
//! that maps channel names to them.
//!
//! Channel actors are permanent children: a crashed channel is restarted at
//! once, within the restart intensity. Past the intensity the supervisor
//! stops every channel and fails, which escalates to `broker`. Connections
//! ask this actor for a channel once and then keep the reference, so the
//! registry is off the per-message path.

pub mod channel;
pub mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::config::{BrokerConfig, ChannelConfig};
use crate::supervision::{RestartBudget, TreeNode};
use channel::{ChannelActor, ChannelShared, ChannelStats};
use messages::ChannelMsg;

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
        reply: RpcReplyPort<Result<ActorRef<ChannelMsg>, ResolveError>>,
    },
    /// Returns the channel's current actor without creating anything; used
    /// by subscribers to re-attach after a channel restart.
    Lookup {
        name: String,
        reply: RpcReplyPort<Option<ActorRef<ChannelMsg>>>,
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

pub struct ChannelsState {
    config: Arc<BrokerConfig>,
    path: String,
    entries: HashMap<String, ChannelEntry>,
    by_actor: HashMap<ActorId, String>,
}

pub struct ChannelsSupervisor;

impl Actor for ChannelsSupervisor {
    type Msg = ChannelsMsg;
    type State = ChannelsState;
    type Arguments = (Arc<BrokerConfig>, String);

    async fn pre_start(
        &self,
        myself: ActorRef<ChannelsMsg>,
        (config, path): (Arc<BrokerConfig>, String),
    ) -> Result<ChannelsState, ActorProcessingErr> {
        info!(actor = %path, "actor started");
        let mut state = ChannelsState {
            config: config.clone(),
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
                let _ = reply.send(state.entries.get(&name).map(|entry| entry.actor.clone()));
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
    ) -> Result<ActorRef<ChannelMsg>, ActorProcessingErr> {
        let name = config.name.clone();
        let shared = Arc::new(ChannelShared {
            path: format!("{}/{name}", self.path),
            slow_consumer: config.slow_consumer.unwrap_or(self.config.slow_consumer),
            config,
            next_message_id: AtomicU64::new(1),
            stats: ChannelStats::default(),
        });
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, shared.clone(), myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), name.clone());
        self.entries.insert(
            name,
            ChannelEntry {
                shared,
                actor: actor.clone(),
                budget: RestartBudget::new(self.config.restart_intensity),
            },
        );
        Ok(actor)
    }

    async fn resolve(
        &mut self,
        myself: &ActorRef<ChannelsMsg>,
        name: &str,
    ) -> Result<ActorRef<ChannelMsg>, ResolveError> {
        if let Some(entry) = self.entries.get(name) {
            return Ok(entry.actor.clone());
        }
        if !self.config.auto_create_channels {
            return Err(ResolveError::Unknown(name.to_owned()));
        }
        match self.start_channel(myself, ChannelConfig::ephemeral(name)).await {
            Ok(actor) => {
                info!(actor = %format!("{}/{name}", self.path), channel = name, "channel created on first use");
                Ok(actor)
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
