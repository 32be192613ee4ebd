//! The async client: one TCP connection, a writer task that coalesces
//! outgoing frames and a reader task that routes incoming frames to the
//! request, subscription or event they belong to.
//!
//! Requests are pipelined: [`Client::publish_pipelined`] queues a publish and
//! returns a future for its ack, so a caller can keep many in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use liminal_protocol::{DEFAULT_MAX_FRAME_BYTES, ErrorCode, Frame, FrameCodec, Headers, PROTOCOL_VERSION, StartPosition, encode_frame_into};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead};

use crate::ClientError;

/// Connection options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name the server logs for this client.
    pub name: String,
    /// Token for servers that require authentication.
    pub token: Option<String>,
    /// How long connecting and the handshake may take.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            name: "liminal-client".to_owned(),
            token: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The server's acknowledgement of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    pub message_id: u64,
    pub delivered: bool,
    pub offset: Option<u64>,
    pub duplicate: bool,
}

/// A publish with every optional field.
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    pub channel: String,
    pub payload: Bytes,
    pub headers: Option<Headers>,
    pub idempotency_key: Option<String>,
}

/// Subscription options.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    pub start: StartPosition,
    pub accept_schemas: Option<Vec<String>>,
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_id: u64,
    pub payload: Bytes,
    pub headers: Option<Headers>,
}

/// An event a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionEvent {
    Message(Message),
    /// The server dropped this many of the subscription's oldest pending
    /// messages because the client read too slowly.
    Dropped(u64),
    /// The subscription ended without the client asking.
    Lost(String),
}

/// Frames the server sends without a request: notices about the connection,
/// conversation traffic and worker assignments.
pub type ServerEvent = Frame;

#[derive(Default)]
struct Routes {
    pending: HashMap<u64, oneshot::Sender<Result<Frame, ClientError>>>,
    /// Subscription senders waiting for their `Subscribed`, by request id.
    pending_subscriptions: HashMap<u64, mpsc::UnboundedSender<SubscriptionEvent>>,
    subscriptions: HashMap<u64, mpsc::UnboundedSender<SubscriptionEvent>>,
    conversations: crate::conversation::ConversationTable,
    workers: crate::worker::WorkerTable,
    closed: Option<ClientError>,
    /// Set by `Draining`: the server is shutting down and will close the connection.
    draining: bool,
}

struct Shared {
    routes: Mutex<Routes>,
    events: mpsc::UnboundedSender<ServerEvent>,
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A connected, greeted client. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct Client {
    outbound: mpsc::UnboundedSender<Frame>,
    shared: Arc<Shared>,
    next_request_id: Arc<AtomicU64>,
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerEvent>>>,
    server_id: Arc<str>,
    max_frame_bytes: u32,
}

/// A live subscription; dropping it does not unsubscribe (use [`Client::unsubscribe`]).
pub struct Subscription {
    pub subscription_id: u64,
    pub schema_id: Option<String>,
    pub start_offset: Option<u64>,
    pub truncated: bool,
    receiver: mpsc::UnboundedReceiver<SubscriptionEvent>,
}

impl Subscription {
    /// Waits for the next event; returns `None` once the subscription or connection ended.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.receiver.recv().await
    }

    /// Returns the next event if one has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<SubscriptionEvent> {
        self.receiver.try_recv().ok()
    }

    /// Waits up to `timeout` for the next event.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Result<Option<SubscriptionEvent>, ClientError> {
        tokio::time::timeout(timeout, self.receiver.recv())
            .await
            .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))
    }
}

fn closed_error(routes: &Routes) -> ClientError {
    routes
        .closed
        .clone()
        .unwrap_or_else(|| ClientError::Closed("connection closed".to_owned()))
}

impl Client {
    /// Connects to `address` (HOST:PORT) and performs the handshake.
    pub async fn connect(address: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let timeout = options.connect_timeout;
        tokio::time::timeout(timeout, Client::connect_inner(address, options))
            .await
            .map_err(|_| ClientError::Connect {
                address: address.to_owned(),
                reason: format!("no answer within {} ms", timeout.as_millis()),
            })?
    }

    async fn connect_inner(address: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(address).await.map_err(|error| ClientError::Connect {
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
        stream.set_nodelay(true).ok();
        let mut framed = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES as usize * 64));
        let hello = Frame::Hello {
            versions: vec![PROTOCOL_VERSION],
            client_name: options.name.clone(),
            token: options.token.clone(),
        };
        framed
            .send(&hello)
            .await
            .map_err(|error| ClientError::Closed(error.to_string()))?;
        let (server_id, max_frame_bytes) = match framed.next().await {
            Some(Ok(Frame::Welcome {
                server_id,
                max_frame_bytes,
                ..
            })) => (server_id, max_frame_bytes),
            Some(Ok(Frame::Error { code, message, .. })) => return Err(ClientError::Server { code, message }),
            Some(Ok(other)) => return Err(ClientError::Protocol(format!("expected Welcome, got {}", other.name()))),
            Some(Err(error)) => {
                return Err(ClientError::Protocol(format!(
                    "{address} did not respond to Hello with a Liminal frame ({error}); check that it is the broker's client port (default 7400), not its HTTP port"
                )));
            }
            None => return Err(ClientError::Closed("server closed the connection during the handshake".to_owned())),
        };
        let parts = framed.into_parts();
        let (read_half, write_half) = parts.io.into_split();
        let mut reader = FramedRead::new(read_half, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES as usize * 64));
        reader.read_buffer_mut().extend_from_slice(&parts.read_buf);

        let (events_sender, events_receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            events: events_sender,
        });
        let (outbound, outbound_receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write_half, outbound_receiver));
        tokio::spawn(read_loop(reader, shared.clone()));
        Ok(Client {
            outbound,
            shared,
            next_request_id: Arc::new(AtomicU64::new(1)),
            events: Arc::new(tokio::sync::Mutex::new(events_receiver)),
            server_id: server_id.into(),
            max_frame_bytes,
        })
    }

    /// Returns the server id from `Welcome`.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Returns the server's maximum frame size from `Welcome`.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Returns a fresh request id.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a frame that expects no response.
    pub fn send(&self, frame: Frame) -> Result<(), ClientError> {
        if let Some(error) = &self.shared.routes().closed {
            return Err(error.clone());
        }
        self.outbound
            .send(frame)
            .map_err(|_| ClientError::Closed("connection closed".to_owned()))
    }

    /// Sends a frame and returns a receiver for the response carrying `request_id`.
    pub fn request(&self, request_id: u64, frame: Frame) -> Result<oneshot::Receiver<Result<Frame, ClientError>>, ClientError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut routes = self.shared.routes();
            if routes.closed.is_some() {
                return Err(closed_error(&routes));
            }
            routes.pending.insert(request_id, sender);
        }
        if self.outbound.send(frame).is_err() {
            self.shared.routes().pending.remove(&request_id);
            return Err(ClientError::Closed("connection closed".to_owned()));
        }
        Ok(receiver)
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, request_id: u64, frame: Frame) -> Result<Frame, ClientError> {
        let receiver = self.request(request_id, frame)?;
        receiver
            .await
            .unwrap_or_else(|_| Err(ClientError::Closed("connection closed".to_owned())))
    }

    /// Publishes and waits for the ack.
    pub async fn publish(&self, channel: &str, payload: impl Into<Bytes>) -> Result<PublishAck, ClientError> {
        self.publish_with(PublishRequest {
            channel: channel.to_owned(),
            payload: payload.into(),
            ..PublishRequest::default()
        })
        .await
    }

    /// Publishes with headers or an idempotency key and waits for the ack.
    pub async fn publish_with(&self, request: PublishRequest) -> Result<PublishAck, ClientError> {
        self.publish_pipelined(request)?.await
    }

    /// Queues a publish and returns a future for its ack, so that many
    /// publishes can be in flight at once.
    pub fn publish_pipelined(
        &self,
        request: PublishRequest,
    ) -> Result<impl std::future::Future<Output = Result<PublishAck, ClientError>> + use<>, ClientError> {
        let request_id = self.next_request_id();
        let receiver = self.request(
            request_id,
            Frame::Publish {
                request_id,
                channel: request.channel,
                payload: request.payload,
                headers: request.headers,
                idempotency_key: request.idempotency_key,
            },
        )?;
        Ok(async move {
            match receiver.await {
                Ok(Ok(Frame::PublishAck {
                    message_id,
                    delivered,
                    offset,
                    duplicate,
                    ..
                })) => Ok(PublishAck {
                    message_id,
                    delivered,
                    offset,
                    duplicate,
                }),
                Ok(Ok(other)) => Err(ClientError::Protocol(format!("expected PublishAck, got {}", other.name()))),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(ClientError::Closed("connection closed".to_owned())),
            }
        })
    }

    /// Subscribes to a channel from its latest message.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, ClientError> {
        self.subscribe_with(channel, SubscribeOptions::default()).await
    }

    /// Subscribes with a start position or accepted schema ids.
    pub async fn subscribe_with(&self, channel: &str, options: SubscribeOptions) -> Result<Subscription, ClientError> {
        let request_id = self.next_request_id();
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.routes().pending_subscriptions.insert(request_id, sender);
        let answer = self
            .call(
                request_id,
                Frame::Subscribe {
                    request_id,
                    channel: channel.to_owned(),
                    start: options.start,
                    accept_schemas: options.accept_schemas,
                },
            )
            .await;
        self.shared.routes().pending_subscriptions.remove(&request_id);
        match answer? {
            Frame::Subscribed {
                subscription_id,
                schema_id,
                start_offset,
                truncated,
                ..
            } => Ok(Subscription {
                subscription_id,
                schema_id,
                start_offset,
                truncated,
                receiver,
            }),
            other => Err(ClientError::Protocol(format!("expected Subscribed, got {}", other.name()))),
        }
    }

    /// Ends a subscription. Its receiver yields `None` after the last message.
    pub async fn unsubscribe(&self, subscription_id: u64) -> Result<(), ClientError> {
        let request_id = self.next_request_id();
        self.call(
            request_id,
            Frame::Unsubscribe {
                request_id,
                subscription_id,
            },
        )
        .await?;
        Ok(())
    }

    /// Acknowledges every message up to `offset` for a named consumer.
    pub fn ack(&self, subscription_id: u64, offset: u64) -> Result<(), ClientError> {
        self.send(Frame::Ack {
            subscription_id,
            offset,
        })
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let nonce = self.next_request_id();
        let started = std::time::Instant::now();
        self.call(nonce, Frame::Ping { nonce }).await?;
        Ok(started.elapsed())
    }

    /// The next frame the server sent on its own (conversation traffic,
    /// worker assignments, `Draining`, connection-level `Error`).
    pub async fn next_event(&self) -> Option<ServerEvent> {
        self.events.lock().await.recv().await
    }

    /// The reason the connection closed, if it did.
    pub fn closed_reason(&self) -> Option<ClientError> {
        self.shared.routes().closed.clone()
    }

    pub(crate) fn with_conversation_table<T>(
        &self,
        change: impl FnOnce(&mut crate::conversation::ConversationTable) -> T,
    ) -> T {
        change(&mut self.shared.routes().conversations)
    }

    pub(crate) fn with_worker_table<T>(&self, change: impl FnOnce(&mut crate::worker::WorkerTable) -> T) -> T {
        change(&mut self.shared.routes().workers)
    }
}

async fn write_loop(mut write_half: OwnedWriteHalf, mut outbound: mpsc::UnboundedReceiver<Frame>) {
    const WRITE_CHUNK: usize = 256 * 1024;
    let mut buffer = BytesMut::with_capacity(WRITE_CHUNK);
    while let Some(frame) = outbound.recv().await {
        let _ = encode_frame_into(&frame, &mut buffer);
        while buffer.len() < WRITE_CHUNK {
            match outbound.try_recv() {
                Ok(frame) => {
                    let _ = encode_frame_into(&frame, &mut buffer);
                }
                Err(_) => break,
            }
        }
        if write_half.write_all(&buffer).await.is_err() {
            return;
        }
        buffer.clear();
    }
    let _ = write_half.shutdown().await;
}

async fn read_loop(mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>, shared: Arc<Shared>) {
    let reason = loop {
        match reader.next().await {
            Some(Ok(frame)) => route(&shared, frame),
            // A server past its drain deadline closes sockets with frames
            // still in flight, which the codec reports as a truncated frame.
            Some(Err(error)) if shared.routes().draining => {
                break ClientError::Closed(format!(
                    "the server closed the connection at the end of its graceful drain ({error}); reconnect when it is back"
                ));
            }
            Some(Err(error)) => break ClientError::Protocol(error.to_string()),
            None if shared.routes().draining => {
                break ClientError::Closed("the server shut down after a graceful drain; reconnect when it is back".to_owned());
            }
            None => break ClientError::Closed("server closed the connection".to_owned()),
        }
    };
    let mut routes = shared.routes();
    let reason = routes.closed.clone().unwrap_or(reason);
    routes.closed = Some(reason.clone());
    for (_, sender) in routes.pending.drain() {
        let _ = sender.send(Err(reason.clone()));
    }
    routes.subscriptions.clear();
    routes.pending_subscriptions.clear();
    routes.conversations.clear();
    routes.workers.clear();
}

fn answer(shared: &Shared, request_id: u64, result: Result<Frame, ClientError>) {
    if let Some(sender) = shared.routes().pending.remove(&request_id) {
        let _ = sender.send(result);
    }
}

/// Codes of `Error` frames without request id after which the server keeps
/// the connection open (see the error table in docs/protocol.md).
const NON_CLOSING_CODES: &[ErrorCode] = &[
    ErrorCode::UnknownSubscription,
    ErrorCode::UnknownConversation,
    ErrorCode::ConversationQueueFull,
];

fn route(shared: &Shared, frame: Frame) {
    let frame = {
        let mut routes = shared.routes();
        let Some(frame) = routes.conversations.route(frame) else {
            return;
        };
        let Some(frame) = routes.workers.route(frame) else {
            return;
        };
        frame
    };
    match frame {
        Frame::Deliver {
            subscription_id,
            message_id,
            payload,
            headers,
        } => {
            if let Some(sender) = shared.routes().subscriptions.get(&subscription_id) {
                let _ = sender.send(SubscriptionEvent::Message(Message {
                    message_id,
                    payload,
                    headers,
                }));
            }
        }
        Frame::PublishAck { request_id, .. } => answer(shared, request_id, Ok(frame)),
        Frame::Subscribed {
            request_id,
            subscription_id,
            ..
        } => {
            {
                let mut routes = shared.routes();
                if let Some(sender) = routes.pending_subscriptions.remove(&request_id) {
                    routes.subscriptions.insert(subscription_id, sender);
                }
            }
            answer(shared, request_id, Ok(frame));
        }
        Frame::Unsubscribed {
            request_id,
            subscription_id,
        } => {
            shared.routes().subscriptions.remove(&subscription_id);
            answer(shared, request_id, Ok(frame));
        }
        Frame::MessagesDropped {
            subscription_id,
            count,
        } => {
            if let Some(sender) = shared.routes().subscriptions.get(&subscription_id) {
                let _ = sender.send(SubscriptionEvent::Dropped(count));
            }
        }
        Frame::SubscriptionLost {
            subscription_id,
            reason,
        } => {
            if let Some(sender) = shared.routes().subscriptions.remove(&subscription_id) {
                let _ = sender.send(SubscriptionEvent::Lost(reason));
            }
        }
        Frame::Pong { nonce } => answer(shared, nonce, Ok(frame)),
        Frame::Error {
            request_id: Some(request_id),
            code,
            message,
            ..
        } => answer(shared, request_id, Err(ClientError::Server { code, message })),
        Frame::Error {
            request_id: None,
            ref code,
            ref message,
            conversation_id,
        } => {
            let mut routes = shared.routes();
            if routes.conversations.route_error(code, message, conversation_id) {
                return;
            }
            let closes = !NON_CLOSING_CODES.iter().any(|known| known.as_str() == code);
            if closes {
                routes.closed = Some(ClientError::Server {
                    code: code.clone(),
                    message: message.clone(),
                });
            }
            drop(routes);
            let _ = shared.events.send(frame);
        }
        Frame::ConversationOpened { request_id, .. }
        | Frame::ResponderRegistered { request_id, .. }
        | Frame::ResponderUnregistered { request_id, .. }
        | Frame::FaultInjected { request_id, .. } => answer(shared, request_id, Ok(frame)),
        Frame::Draining { .. } => {
            shared.routes().draining = true;
            let _ = shared.events.send(frame);
        }
        other => {
            let _ = shared.events.send(other);
        }
    }
}
