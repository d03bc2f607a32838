//! `GET /v1.0/ws`: events pushed to clients as they are committed. A client subscribes to
//! topics (see `topic`); the hub (see `hub`) feeds every socket of this process.

pub mod hub;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use common::grpc_client::ChatClient;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppState, Authenticated, RequestId};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rate_limit::CallerKey;
use hub::{EventHub, HubMessage, Registration};
use pipeline::typing::{TypingSignal, TypingState};
use topic::{Refusal, Topic};

/// Tuning of the WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// How often the server pings; a socket silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// How long one frame may take to go out before the socket is dropped as stuck.
    pub send_timeout: Duration,
    /// How many events may wait in a socket's queue before it is dropped as too slow.
    pub buffer_events: usize,
    /// How long the hub stays subscribed after its last socket closed: a client that
    /// reconnects at once finds the subscription in place.
    pub idle_unsubscribe_after: Duration,
    /// Sockets one caller (an agent, or a customer-level token) may hold open (0: no limit).
    pub max_sockets_per_caller: u32,
    /// Frames a socket may send per second, sustained, and at once: a subscribe frame may ask
    /// chat-manager about a hundred topics.
    pub frames_per_second: u32,
    pub frame_burst: u32,
    /// How long a typing `start` holds without another one: then the others are told `stop`.
    pub typing_lapse: Duration,
}

/// Sockets per caller unless configured: an agent's tabs and devices.
pub const DEFAULT_MAX_SOCKETS_PER_CALLER: u32 = 20;

/// The default queue per socket, in events (each with the resources of it the socket wants:
/// one message to a 1,000-person chat is one entry, its frames made as they go out). An entry
/// is a pointer to an event shared by every socket and a list of its items, so a long queue
/// costs little.
pub const DEFAULT_BUFFER_EVENTS: usize = 1_024;

/// Largest frame (and message) a client may send; subscribe frames are small.
pub const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

/// Bytes read from a client at a time. Clients send a few small frames; tungstenite zeroes
/// this much buffer on each read attempt, which the socket's loop makes once per event sent,
/// so its 128 KiB default cost more than the events themselves.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Events whose frames go out in one write at most: the events queued behind the first are
/// sent with it, flushed once.
const EVENTS_PER_WRITE: usize = 64;
/// Most topics one socket may hold.
pub const MAX_TOPICS: usize = 100;
/// Typing signals of one chatroom go out at most this often from one socket (a change from
/// `start` to `stop` goes at once).
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);
/// How long a socket trusts what it learnt of a chatroom it types in (its chat's rooms).
const TYPING_ROOM_CHECKED_FOR: Duration = Duration::from_secs(30);
/// Chatrooms one socket keeps typing state of.
const MAX_TYPING_ROOMS: usize = 100;
/// How long a socket the server closes waits for the client's close reply before dropping the
/// connection. Dropping it at once, with the client's replies unread, could reset it and lose
/// the frames the client has not read yet, the close frame among them.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a subscribe frame waits for the hub's subscription to the broker before it is
/// answered anyway (the socket is then told to resync once the subscription is in place).
pub const FEED_WAIT: Duration = Duration::from_secs(5);

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            ping_interval: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            buffer_events: DEFAULT_BUFFER_EVENTS,
            idle_unsubscribe_after: Duration::from_secs(30),
            max_sockets_per_caller: DEFAULT_MAX_SOCKETS_PER_CALLER,
            frames_per_second: 10,
            frame_burst: 50,
            typing_lapse: Duration::from_secs(10),
        }
    }
}

/// Close codes the server uses (4000-4999 are the application's).
pub const CLOSE_TOO_SLOW: u16 = 4000;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
pub const CLOSE_UNRESPONSIVE: u16 = 4002;
/// The gateway is shutting down (RFC 6455 "going away").
pub const CLOSE_SHUTTING_DOWN: u16 = close_code::AWAY;
/// A client frame over `MAX_CLIENT_FRAME_BYTES` (RFC 6455 "message too big").
pub const CLOSE_FRAME_TOO_BIG: u16 = close_code::SIZE;

pub async fn upgrade(
    State(app): State<AppState>,
    Authenticated(caller): Authenticated,
    request: RequestId,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Some(hub) = app.hub.clone() else {
        return Err(ApiError::Unavailable(
            "real-time events are not configured".into(),
        ));
    };
    let seat = app
        .sockets
        .take(CallerKey::of(&caller), app.ws.max_sockets_per_caller)
        .ok_or_else(|| {
            ApiError::TooManySockets(format!(
                "at most {} WebSockets per caller are open at once; close one first",
                app.ws.max_sockets_per_caller
            ))
        })?;
    let connection = Connection {
        customer_id: caller.customer_id.to_string(),
        caller,
        hub,
        chat: app.chat.clone(),
        request,
        settings: app.ws.clone(),
        topics: BTreeMap::new(),
        typing: HashMap::new(),
    };
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            connection.serve(socket).await;
            drop(seat);
        }))
}

/// The open sockets of each caller, to cap them.
#[derive(Debug, Clone, Default)]
pub struct SocketCounts(Arc<Mutex<HashMap<CallerKey, u32>>>);

/// One open socket of a caller; the count goes down when it drops (also if the upgrade never
/// happens).
#[derive(Debug)]
pub struct Seat {
    counts: SocketCounts,
    caller: CallerKey,
}

impl SocketCounts {
    /// A seat for one more socket of `caller`, unless it holds `max` already (0: no limit).
    pub fn take(&self, caller: CallerKey, max: u32) -> Option<Seat> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(caller).or_insert(0);
        if max != 0 && *open >= max {
            return None;
        }
        *open += 1;
        Some(Seat {
            counts: self.clone(),
            caller,
        })
    }

    /// Sockets open for `caller`.
    pub fn open(&self, caller: CallerKey) -> u32 {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&caller).copied().unwrap_or(0)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// Frames a socket may still send now: a token bucket refilled at `frames_per_second`.
struct FrameBudget {
    tokens: f64,
    at: tokio::time::Instant,
    per_second: f64,
    burst: f64,
}

impl FrameBudget {
    fn new(settings: &WsSettings) -> Self {
        FrameBudget {
            tokens: f64::from(settings.frame_burst.max(1)),
            at: tokio::time::Instant::now(),
            per_second: f64::from(settings.frames_per_second),
            burst: f64::from(settings.frame_burst.max(1)),
        }
    }

    /// Whether one more frame may be handled now.
    fn take(&mut self) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + (now - self.at).as_secs_f64() * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    topics: Option<Vec<String>>,
    /// Of a typing frame.
    chatroom_id: Option<String>,
    state: Option<String>,
}

/// A chatroom the socket's agent types in: its chat's rooms (whom to tell), and what was sent.
struct TypingRoom {
    chat_id: String,
    chatrooms: Vec<(String, String)>,
    checked_at: tokio::time::Instant,
    /// The last signal sent, and when.
    sent: Option<(TypingState, tokio::time::Instant)>,
    /// When the agent last said `start` (cleared by `stop` or the lapse).
    started_at: Option<tokio::time::Instant>,
}

struct Connection {
    caller: Caller,
    customer_id: String,
    hub: EventHub,
    /// Checks what a topic's narrowing id names.
    chat: ChatClient,
    /// The upgrade request's id, carried into those checks.
    request: RequestId,
    settings: WsSettings,
    /// Accepted topics, by their text.
    topics: BTreeMap<String, Topic>,
    /// Chatrooms the agent types in, by id.
    typing: HashMap<String, TypingRoom>,
}

fn text_frame(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_frame(code: &str, message: &str) -> Message {
    text_frame(json!({"type": "error", "error": {"code": code, "message": message}}))
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Whether a read failed on the frame size limit. axum does not export tungstenite's error
/// type, so this reads its message (`Space limit exceeded: Message too long: ...`); the test
/// of the limit (close code 1009) notices if that ever changes.
fn is_over_size_limit(error: &axum::Error) -> bool {
    error.to_string().starts_with("Space limit exceeded")
}

/// One open socket in the `websocket_connections` gauge, for as long as it lives (also when
/// its task is cancelled).
struct OpenSocket;

impl OpenSocket {
    fn count() -> Self {
        common::metrics::metrics().websocket_connections.inc();
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        common::metrics::metrics().websocket_connections.dec();
    }
}

/// Why a connection ended, for the log.
enum End {
    ClientGone,
    /// A frame could not go out within the send timeout: no frame can reach the client, so
    /// the connection is dropped without a close frame.
    Stuck,
    /// The server closed it (with a close frame).
    Closed,
}

impl Connection {
    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        self.within_send_timeout(socket.send(message)).await
    }

    /// Queues `message` to be written with the next flush (written now if the buffer is full).
    async fn feed(&self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        self.within_send_timeout(socket.feed(message)).await
    }

    async fn within_send_timeout(
        &self,
        write: impl Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), End> {
        match tokio::time::timeout(self.settings.send_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::Stuck),
        }
    }

    /// Sends a close frame, then reads (and discards) what the client still sends until its
    /// close reply, for at most `CLOSE_GRACE`.
    async fn close(&self, socket: &mut WebSocket, code: u16, reason: &'static str) -> End {
        if let Err(end) = self.send(socket, close_frame(code, reason)).await {
            return end;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
        End::Closed
    }

    async fn serve(mut self, mut socket: WebSocket) {
        let _open = OpenSocket::count();
        let mut registration = self.hub.register(&self.customer_id);
        let end = self.run(&mut socket, &mut registration).await;
        // The others stop seeing this agent type once it is gone.
        self.stop_typing(|_| true).await;
        if let End::Stuck = end {
            tracing::info!(customer = %self.customer_id, "websocket dropped: not reading");
        }
    }

    async fn run(&mut self, socket: &mut WebSocket, registration: &mut Registration) -> End {
        let expires_in = Duration::from_secs(
            u64::try_from(self.caller.expires_at - chrono::Utc::now().timestamp()).unwrap_or(0),
        );
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.tick().await;
        let mut heard_since_ping = true;
        let mut unanswered_pings = 0u32;
        let mut budget = FrameBudget::new(&self.settings);
        let mut typing_tick = tokio::time::interval(TYPING_INTERVAL);
        typing_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(e)) if is_over_size_limit(&e) => {
                            let why = format!("frame: over {MAX_CLIENT_FRAME_BYTES} bytes, the most a client frame may have");
                            if let Err(end) = self.send(socket, error_frame("invalid_argument", &why)).await {
                                return end;
                            }
                            if let Err(end) = self.send(socket, close_frame(CLOSE_FRAME_TOO_BIG, "frame too big")).await {
                                return end;
                            }
                            // The rest of the frame cannot be read any more, and closing now
                            // could reset the connection before the client reads the close.
                            tokio::time::sleep(CLOSE_GRACE).await;
                            return End::Closed;
                        }
                        Some(Err(_)) | None => return End::ClientGone,
                    };
                    heard_since_ping = true;
                    match message {
                        Message::Text(_) if !budget.take() => {
                            let why = format!("frame: at most {} frames a second (bursts of {}); this one was not handled", self.settings.frames_per_second, self.settings.frame_burst);
                            if let Err(end) = self.send(socket, error_frame("rate_limited", &why)).await {
                                return end;
                            }
                        }
                        Message::Text(text) => {
                            let replies = self.handle_frame(text.as_str()).await;
                            // Routed, and the hub subscribed, before the answer goes out: every
                            // event committed after the client reads "subscribed" reaches it.
                            registration.set_topics(self.topics.values().cloned().collect());
                            if !self.topics.is_empty() {
                                registration.wait_for_feed(FEED_WAIT).await;
                            }
                            for reply in replies {
                                if let Err(end) = self.send(socket, reply).await {
                                    return end;
                                }
                            }
                        }
                        Message::Binary(_) => {
                            if let Err(end) = self.send(socket, error_frame("invalid_argument", "frame: frames are JSON text")).await {
                                return end;
                            }
                        }
                        Message::Close(_) => return End::ClientGone,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                event = registration.events.recv() => {
                    // This event and those queued behind it, in one write.
                    let mut next = event;
                    for sent in 1.. {
                        if registration.is_lagged() {
                            let message = format!("this connection fell more than {} events behind and is closed; reconnect and list again to catch up", self.settings.buffer_events);
                            if let Err(end) = self.send(socket, error_frame("lagged", &message)).await {
                                return end;
                            }
                            return self.close(socket, CLOSE_TOO_SLOW, "too slow").await;
                        }
                        match next {
                            // The hub routed it here: these resources of it match this
                            // socket's topics. Their frames are made as they go out.
                            Some(HubMessage::Event { event, items }) => {
                                for n in items {
                                    let Some(frame) = event.item_frame(n as usize) else {
                                        continue;
                                    };
                                    if let Err(end) = self.feed(socket, Message::Text(frame.into())).await {
                                        return end;
                                    }
                                }
                            }
                            Some(HubMessage::Frame(frame)) => {
                                if let Err(end) = self.feed(socket, Message::Text(frame.as_ref().into())).await {
                                    return end;
                                }
                            }
                            Some(HubMessage::Resync) => {
                                let frame = text_frame(json!({"type": "resync", "reason": "the event stream was interrupted; events may have been missed: list again to catch up"}));
                                if let Err(end) = self.feed(socket, frame).await {
                                    return end;
                                }
                            }
                            // The hub is gone (its registration keeps the sender, so only in a
                            // teardown): as a shutdown.
                            None => return self.close(socket, CLOSE_SHUTTING_DOWN, "server shutting down").await,
                        }
                        if sent == EVENTS_PER_WRITE {
                            break;
                        }
                        match registration.events.try_recv() {
                            Ok(message) => next = Some(message),
                            Err(_) => break,
                        }
                    }
                    if let Err(end) = self.within_send_timeout(socket.flush()).await {
                        return end;
                    }
                }
                // (The watch's reply borrows it: awaited inside, so nothing outlives the branch.)
                () = async { let _ = registration.shutdown.wait_for(|down| *down).await; } => {
                    return self.close(socket, CLOSE_SHUTTING_DOWN, "server shutting down").await;
                }
                _ = typing_tick.tick(), if !self.typing.is_empty() => {
                    let lapse = self.settings.typing_lapse;
                    self.stop_typing(|started| started.elapsed() >= lapse).await;
                }
                _ = ping.tick() => {
                    if heard_since_ping {
                        unanswered_pings = 0;
                    } else {
                        unanswered_pings += 1;
                    }
                    if unanswered_pings >= 2 {
                        return self.close(socket, CLOSE_UNRESPONSIVE, "no pong").await;
                    }
                    heard_since_ping = false;
                    if let Err(end) = self.send(socket, Message::Ping(Default::default())).await {
                        return end;
                    }
                }
                _ = &mut expiry => {
                    if let Err(end) = self.send(socket, error_frame("unauthenticated", "token: expired")).await {
                        return end;
                    }
                    return self.close(socket, CLOSE_TOKEN_EXPIRED, "token expired").await;
                }
            }
        }
    }

    /// Applies a client frame; returns the frames to answer with.
    async fn handle_frame(&mut self, text: &str) -> Vec<Message> {
        let frame: ClientFrame = match crate::json::parse_as(text.as_bytes(), "frame") {
            Ok(frame) => frame,
            Err(e) => return vec![error_frame(e.code(), &e.to_string())],
        };
        if frame.kind == "typing" {
            return match self.typing_frame(frame).await {
                Ok(()) => Vec::new(),
                Err((code, message)) => vec![error_frame(code, &message)],
            };
        }
        if !matches!(frame.kind.as_str(), "subscribe" | "unsubscribe") {
            return vec![error_frame(
                "invalid_argument",
                &format!(
                    "type: {:?} is not subscribe, unsubscribe or typing",
                    frame.kind
                ),
            )];
        }
        let topics = match frame.topics {
            Some(topics) if !topics.is_empty() => distinct(topics),
            _ => {
                return vec![error_frame(
                    "invalid_argument",
                    "topics: required, a non-empty list of topics",
                )];
            }
        };
        if frame.kind == "unsubscribe" {
            for text in &topics {
                self.topics.remove(text);
            }
            return vec![text_frame(
                json!({"type": "unsubscribed", "topics": topics}),
            )];
        }
        let adding = topics
            .iter()
            .filter(|t| !self.topics.contains_key(*t))
            .count();
        if self.topics.len() + adding > MAX_TOPICS {
            return vec![error_frame(
                "invalid_argument",
                &format!(
                    "topics: at most {MAX_TOPICS} per connection; {} held and {adding} more asked for, so none of these was subscribed",
                    self.topics.len()
                ),
            )];
        }
        let mut accepted = Vec::new();
        let mut refusals = Vec::new();
        for text in topics {
            match self.admit(&text).await {
                Ok(topic) => {
                    self.topics.insert(text.clone(), topic);
                    accepted.push(text);
                }
                Err((code, message)) => refusals.push(error_frame(code, &message)),
            }
        }
        let mut replies = Vec::with_capacity(1 + refusals.len());
        if !accepted.is_empty() {
            replies.push(text_frame(
                json!({"type": "subscribed", "topics": accepted}),
            ));
        }
        replies.extend(refusals);
        replies
    }

    /// `{"type": "typing", "chatroom_id", "state"}`: the agent types (or stopped) in its own
    /// chatroom; the chat's other participants are told through whichever gateway holds their
    /// sockets. Nothing is answered unless it is refused.
    async fn typing_frame(&mut self, frame: ClientFrame) -> Result<(), Refusal> {
        let Some(agent) = self.caller.agent.as_ref().map(|a| a.id.to_string()) else {
            return Err((
                "permission_denied",
                "typing: only an agent types (the token has no agent identity)".into(),
            ));
        };
        let room_id = frame
            .chatroom_id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .map(|id| id.hyphenated().to_string())
            .ok_or_else(|| {
                (
                    "invalid_argument",
                    "chatroom_id: required, the id of one of your chatrooms".to_owned(),
                )
            })?;
        let state = frame
            .state
            .as_deref()
            .and_then(TypingState::parse)
            .ok_or_else(|| {
                (
                    "invalid_argument",
                    "state: must be start or stop".to_owned(),
                )
            })?;
        let now = tokio::time::Instant::now();
        let fresh = self
            .typing
            .get(&room_id)
            .is_some_and(|r| now - r.checked_at < TYPING_ROOM_CHECKED_FOR);
        if !fresh {
            let (chat_id, chatrooms) = self.chat_of_room(&room_id, &agent).await?;
            if !self.typing.contains_key(&room_id) && self.typing.len() >= MAX_TYPING_ROOMS {
                return Err((
                    "invalid_argument",
                    format!("chatroom_id: typing in at most {MAX_TYPING_ROOMS} chatrooms at once"),
                ));
            }
            let room = self.typing.entry(room_id.clone()).or_insert(TypingRoom {
                chat_id: chat_id.clone(),
                chatrooms: Vec::new(),
                checked_at: now,
                sent: None,
                started_at: None,
            });
            room.chat_id = chat_id;
            room.chatrooms = chatrooms;
            room.checked_at = now;
        }
        let room = self.typing.get_mut(&room_id).expect("just checked");
        room.started_at = (state == TypingState::Start).then_some(now);
        let repeat = room
            .sent
            .is_some_and(|(sent, at)| sent == state && now - at < TYPING_INTERVAL);
        if repeat || (state == TypingState::Stop && room.sent.is_none()) {
            return Ok(());
        }
        room.sent = Some((state, now));
        let signal = TypingSignal {
            v: TypingSignal::VERSION,
            customer_id: self.customer_id.clone(),
            chat_id: room.chat_id.clone(),
            agent_id: agent,
            state,
            chatrooms: room.chatrooms.clone(),
        };
        self.hub.publish_typing(&signal).await.map_err(|e| {
            tracing::warn!(error = %e, "typing: publishing failed");
            (
                "unavailable",
                "typing: the signal could not be sent; try again".to_owned(),
            )
        })
    }

    /// The chat of the agent's own live chatroom `room_id`, and the chat's live chatrooms
    /// (`[id, owner]`); not found for anyone else's.
    async fn chat_of_room(
        &self,
        room_id: &str,
        agent: &str,
    ) -> Result<(String, Vec<(String, String)>), Refusal> {
        let unavailable = |s: tonic::Status| -> Refusal {
            match s.code() {
                tonic::Code::NotFound => (
                    "not_found",
                    "chatroom_id: no such chatroom of yours".to_owned(),
                ),
                _ => (
                    "unavailable",
                    "chatroom_id: could not be checked; try again".to_owned(),
                ),
            }
        };
        let request = self.request.grpc(proto::chat::v1::GetChatroomRequest {
            customer_id: self.customer_id.clone(),
            id: room_id.to_owned(),
            owner_id: Some(agent.to_owned()),
        });
        let room = self
            .chat
            .clone()
            .get_chatroom(request)
            .await
            .map_err(unavailable)?
            .into_inner();
        if room.tm_delete != common::time::LIVE {
            return Err(("not_found", "chatroom_id: no such chatroom of yours".into()));
        }
        let request = self.request.grpc(proto::chat::v1::GetChatRequest {
            customer_id: self.customer_id.clone(),
            id: room.chat_id.clone(),
        });
        let members = self
            .chat
            .clone()
            .get_chat_members(request)
            .await
            .map_err(unavailable)?
            .into_inner();
        let chatrooms = members
            .chatrooms
            .into_iter()
            .filter(|r| r.tm_delete == common::time::LIVE)
            .map(|r| (r.id, r.owner_id))
            .collect();
        Ok((room.chat_id, chatrooms))
    }

    /// Tells the others `stop` for every chatroom the agent was typing in whose last `start`
    /// passes `lapsed`, and forgets chatrooms with nothing more to say.
    async fn stop_typing(&mut self, lapsed: impl Fn(tokio::time::Instant) -> bool) {
        let Some(agent) = self.caller.agent.as_ref().map(|a| a.id.to_string()) else {
            return;
        };
        let mut signals = Vec::new();
        for room in self.typing.values_mut() {
            match room.started_at {
                Some(started) if lapsed(started) => {
                    room.started_at = None;
                    room.sent = Some((TypingState::Stop, tokio::time::Instant::now()));
                    signals.push(TypingSignal {
                        v: TypingSignal::VERSION,
                        customer_id: self.customer_id.clone(),
                        chat_id: room.chat_id.clone(),
                        agent_id: agent.clone(),
                        state: TypingState::Stop,
                        chatrooms: room.chatrooms.clone(),
                    });
                }
                _ => {}
            }
        }
        // A room's state is kept while its start holds, or for the interval after a signal.
        self.typing.retain(|_, r| {
            r.started_at.is_some() || r.sent.is_some_and(|(_, at)| at.elapsed() < TYPING_INTERVAL)
        });
        for signal in signals {
            if let Err(e) = self.hub.publish_typing(&signal).await {
                tracing::warn!(error = %e, "typing: publishing a stop failed");
            }
        }
    }

    /// A topic the caller may see, or why not.
    async fn admit(&self, text: &str) -> Result<Topic, Refusal> {
        let topic = Topic::parse(text)?;
        topic.authorize(text, &self.caller)?;
        topic
            .check_visible(text, &self.customer_id, &self.chat, &self.request)
            .await?;
        Ok(topic)
    }
}

/// The topics in their order, each once.
fn distinct(topics: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    topics
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}
