//! The frames of protocol version 1.
//!
//! A frame is encoded as a MessagePack map with a single key, the frame name
//! (for example `"Publish"`), whose value is a map from field name to value.
//! Optional fields may be omitted; readers ignore unknown fields so that later
//! versions can add fields without breaking older peers.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Message headers: string keys to string values, sorted by key.
pub type Headers = BTreeMap<String, String>;

/// Where a subscription starts reading a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Only messages published after the subscription is registered.
    #[default]
    Latest,
    /// The oldest message the channel still keeps (durable channels).
    Earliest,
    /// The message with this offset, or the oldest kept one if retention removed it.
    Offset(u64),
    /// The named durable consumer's position: just after its last acknowledged offset.
    Consumer(String),
}

/// One protocol frame, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    // -- handshake and keepalive --------------------------------------------
    /// Client → server, first frame of every connection.
    Hello {
        versions: Vec<u16>,
        client_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Server → client, successful handshake.
    Welcome {
        version: u16,
        server_id: String,
        max_frame_bytes: u32,
    },
    /// Either direction; the peer answers with `Pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// Answer to `Ping`.
    Pong { nonce: u64 },
    /// Server → client: a request failed, or the connection is about to close.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<u64>,
        code: String,
        message: String,
        /// The conversation an error without request id is about, for errors
        /// rejecting `ConversationMessage` or `CloseConversation`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<u64>,
    },
    /// Server → client: the server is shutting down; finish up and reconnect later.
    Draining { deadline_ms: u64 },

    // -- publish / subscribe -----------------------------------------------
    /// Client → server: publish one message to a channel.
    Publish {
        request_id: u64,
        channel: String,
        payload: Bytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        headers: Option<Headers>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// Server → client: the outcome of a `Publish`.
    PublishAck {
        request_id: u64,
        message_id: u64,
        delivered: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default)]
        duplicate: bool,
    },
    /// Client → server: start receiving a channel's messages.
    Subscribe {
        request_id: u64,
        channel: String,
        #[serde(default)]
        start: StartPosition,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept_schemas: Option<Vec<String>>,
    },
    /// Server → client: the subscription is live.
    Subscribed {
        request_id: u64,
        subscription_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema_id: Option<String>,
        /// First offset this subscription will receive (durable channels).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_offset: Option<u64>,
        /// True when the requested offset was already removed by retention.
        #[serde(default)]
        truncated: bool,
    },
    /// Client → server: stop a subscription.
    Unsubscribe { request_id: u64, subscription_id: u64 },
    /// Server → client: the subscription is gone; no `Deliver` for it follows.
    Unsubscribed { request_id: u64, subscription_id: u64 },
    /// Server → client: one message for a subscription.
    Deliver {
        subscription_id: u64,
        message_id: u64,
        payload: Bytes,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        headers: Option<Headers>,
    },
    /// Client → server: a named consumer has processed every message up to
    /// and including `offset` (cumulative).
    Ack { subscription_id: u64, offset: u64 },
    /// Server → client: a subscription ended without the client asking.
    SubscriptionLost { subscription_id: u64, reason: String },
    /// Server → client: the subscription lost `count` of its oldest pending
    /// messages because the client did not read fast enough.
    MessagesDropped { subscription_id: u64, count: u64 },

    // -- conversations -----------------------------------------------------
    /// Client → server: open a conversation on a subject.
    OpenConversation { request_id: u64, subject: String },
    /// Server → client: the conversation and its participant are running.
    ConversationOpened { request_id: u64, conversation_id: u64 },
    /// Client → server: one message to the participant.
    ConversationMessage {
        conversation_id: u64,
        message_id: u64,
        payload: Bytes,
    },
    /// Server → client: a participant's reply to one message.
    ConversationReply {
        conversation_id: u64,
        in_reply_to: u64,
        payload: Bytes,
    },
    /// Server → client: the participant was replaced after a crash (`restart` policy).
    ConversationNotice { conversation_id: u64, notice: String },
    /// Client → server: end a conversation.
    CloseConversation { conversation_id: u64 },
    /// Server → client: the conversation ended normally.
    ConversationClosed { conversation_id: u64, reason: String },
    /// Server → client: the conversation ended because its participant failed.
    ConversationFailed { conversation_id: u64, reason: String },

    // -- remote workers ----------------------------------------------------
    /// Worker → server: serve conversations on a subject.
    RegisterResponder { request_id: u64, subject: String },
    /// Server → worker: the registration is active.
    ResponderRegistered { request_id: u64, subject: String },
    /// Worker → server: stop serving a subject.
    UnregisterResponder { request_id: u64, subject: String },
    /// Server → worker: the registration is gone.
    ResponderUnregistered { request_id: u64, subject: String },
    /// Server → worker: a conversation was assigned to this worker.
    WorkerOpen { conversation_id: u64, subject: String },
    /// Server → worker: a message of an assigned conversation.
    WorkerMessage {
        conversation_id: u64,
        message_id: u64,
        payload: Bytes,
    },
    /// Worker → server: a reply within an assigned conversation.
    WorkerReply {
        conversation_id: u64,
        in_reply_to: u64,
        payload: Bytes,
    },
    /// Server → worker: an assigned conversation ended.
    WorkerClose { conversation_id: u64, reason: String },
    /// Worker → server: the worker cannot handle an assigned conversation;
    /// the conversation fails as if its participant had crashed.
    WorkerFail { conversation_id: u64, reason: String },

    // -- testing and operations -------------------------------------------
    /// Client → server: make an actor crash, for fault-tolerance tests. Only
    /// accepted when the server runs with `fault_injection = true`.
    InjectFault { request_id: u64, target: String },
    /// Server → client: the fault was injected.
    FaultInjected { request_id: u64, target: String },
}

impl Frame {
    /// The frame's name as it appears on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Error { .. } => "Error",
            Frame::Draining { .. } => "Draining",
            Frame::Publish { .. } => "Publish",
            Frame::PublishAck { .. } => "PublishAck",
            Frame::Subscribe { .. } => "Subscribe",
            Frame::Subscribed { .. } => "Subscribed",
            Frame::Unsubscribe { .. } => "Unsubscribe",
            Frame::Unsubscribed { .. } => "Unsubscribed",
            Frame::Deliver { .. } => "Deliver",
            Frame::Ack { .. } => "Ack",
            Frame::SubscriptionLost { .. } => "SubscriptionLost",
            Frame::MessagesDropped { .. } => "MessagesDropped",
            Frame::OpenConversation { .. } => "OpenConversation",
            Frame::ConversationOpened { .. } => "ConversationOpened",
            Frame::ConversationMessage { .. } => "ConversationMessage",
            Frame::ConversationReply { .. } => "ConversationReply",
            Frame::ConversationNotice { .. } => "ConversationNotice",
            Frame::CloseConversation { .. } => "CloseConversation",
            Frame::ConversationClosed { .. } => "ConversationClosed",
            Frame::ConversationFailed { .. } => "ConversationFailed",
            Frame::RegisterResponder { .. } => "RegisterResponder",
            Frame::ResponderRegistered { .. } => "ResponderRegistered",
            Frame::UnregisterResponder { .. } => "UnregisterResponder",
            Frame::ResponderUnregistered { .. } => "ResponderUnregistered",
            Frame::WorkerOpen { .. } => "WorkerOpen",
            Frame::WorkerMessage { .. } => "WorkerMessage",
            Frame::WorkerReply { .. } => "WorkerReply",
            Frame::WorkerClose { .. } => "WorkerClose",
            Frame::WorkerFail { .. } => "WorkerFail",
            Frame::InjectFault { .. } => "InjectFault",
            Frame::FaultInjected { .. } => "FaultInjected",
        }
    }

    /// Builds an `Error` frame from a code and a message.
    pub fn error(request_id: Option<u64>, code: crate::ErrorCode, message: impl Into<String>) -> Frame {
        Frame::Error {
            request_id,
            code: code.as_str().to_owned(),
            message: message.into(),
            conversation_id: None,
        }
    }

    /// Builds an `Error` frame about one conversation, for a frame that has no request id.
    pub fn conversation_error(conversation_id: u64, code: crate::ErrorCode, message: impl Into<String>) -> Frame {
        Frame::Error {
            request_id: None,
            code: code.as_str().to_owned(),
            message: message.into(),
            conversation_id: Some(conversation_id),
        }
    }
}
