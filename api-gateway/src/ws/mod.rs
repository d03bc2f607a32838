//! `GET /v1.0/ws`: events pushed to clients as they are committed. A client subscribes to
//! topics (see `topic`); the hub (see `hub`) feeds every socket of this process.

pub mod hub;
pub mod topic;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppState, Authenticated};
use crate::auth::Caller;
use crate::error::ApiError;
use hub::{EventHub, HubMessage};
use topic::Topic;

/// Tuning of the WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// How often the server pings; a socket silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// How long one frame may take to go out before the socket is dropped as stuck.
    pub send_timeout: Duration,
    /// How many events may wait in a socket's queue before it is dropped as too slow.
    pub buffer_events: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            ping_interval: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            buffer_events: 1024,
        }
    }
}

/// Close codes the server uses (4000-4999 are the application's).
pub const CLOSE_TOO_SLOW: u16 = 4000;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
pub const CLOSE_UNRESPONSIVE: u16 = 4002;

pub async fn upgrade(
    State(app): State<AppState>,
    Authenticated(caller): Authenticated,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Some(hub) = app.hub.clone() else {
        return Err(ApiError::Unavailable(
            "real-time events are not configured".into(),
        ));
    };
    let settings = app.ws.clone();
    Ok(ws.on_upgrade(move |socket| Connection::new(caller, hub, settings).serve(socket)))
}

#[derive(Debug, Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    topics: Vec<String>,
}

struct Connection {
    caller: Caller,
    customer_id: String,
    hub: EventHub,
    settings: WsSettings,
    /// Accepted topics, by their text.
    topics: BTreeMap<String, Topic>,
}

fn error_frame(code: &str, message: &str) -> Message {
    Message::Text(
        json!({"type": "error", "error": {"code": code, "message": message}})
            .to_string()
            .into(),
    )
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
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
    Stuck,
    Done,
}

impl Connection {
    fn new(caller: Caller, hub: EventHub, settings: WsSettings) -> Self {
        Connection {
            customer_id: caller.customer_id.to_string(),
            caller,
            hub,
            settings,
            topics: BTreeMap::new(),
        }
    }

    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.settings.send_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::Stuck),
        }
    }

    async fn serve(mut self, mut socket: WebSocket) {
        let _open = OpenSocket::count();
        let end = self.run(&mut socket).await;
        match end {
            Err(End::Stuck) => {
                tracing::info!(customer = %self.customer_id, "websocket dropped: not reading")
            }
            Err(End::ClientGone) | Ok(()) | Err(End::Done) => {}
        }
    }

    async fn run(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let mut registration = self.hub.register(&self.customer_id);
        let expires_in = Duration::from_secs(
            u64::try_from(self.caller.expires_at - chrono::Utc::now().timestamp()).unwrap_or(0),
        );
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.tick().await;
        let mut heard_since_ping = true;
        let mut unanswered_pings = 0u32;

        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let Some(Ok(message)) = incoming else { return Err(End::ClientGone) };
                    heard_since_ping = true;
                    match message {
                        Message::Text(text) => {
                            let replies = self.handle_frame(text.as_str());
                            registration.set_topics(self.topics.values().cloned().collect());
                            for reply in replies {
                                self.send(socket, reply).await?;
                            }
                        }
                        Message::Binary(_) => {
                            self.send(socket, error_frame("invalid_argument", "frames are JSON text")).await?;
                        }
                        Message::Close(_) => return Err(End::ClientGone),
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                event = registration.events.recv() => {
                    if registration.lagged.load(std::sync::atomic::Ordering::Relaxed) {
                        let message = "this connection fell too far behind and is closed; reconnect and list again to catch up";
                        let _ = self.send(socket, error_frame("lagged", message)).await;
                        let _ = self.send(socket, close(CLOSE_TOO_SLOW, "too slow")).await;
                        return Err(End::Done);
                    }
                    match event {
                        // The hub routed it here: it matches a topic of this socket.
                        Some(HubMessage::Event(event)) => {
                            self.send(socket, Message::Text(event.frame.as_ref().into())).await?;
                        }
                        Some(HubMessage::Resync) => {
                            let frame = json!({"type": "resync", "reason": "the event stream was interrupted; events may have been missed: list again to catch up"});
                            self.send(socket, Message::Text(frame.to_string().into())).await?;
                        }
                        None => {
                            let _ = self.send(socket, close(1001, "server shutting down")).await;
                            return Err(End::Done);
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard_since_ping {
                        unanswered_pings = 0;
                    } else {
                        unanswered_pings += 1;
                    }
                    if unanswered_pings >= 2 {
                        let _ = self.send(socket, close(CLOSE_UNRESPONSIVE, "no pong")).await;
                        return Err(End::ClientGone);
                    }
                    heard_since_ping = false;
                    self.send(socket, Message::Ping(Default::default())).await?;
                }
                _ = &mut expiry => {
                    let _ = self.send(socket, error_frame("unauthenticated", "token: expired")).await;
                    let _ = self.send(socket, close(CLOSE_TOKEN_EXPIRED, "token expired")).await;
                    return Ok(());
                }
            }
        }
    }

    /// Applies a client frame; returns the frames to answer with.
    fn handle_frame(&mut self, text: &str) -> Vec<Message> {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                return vec![error_frame(
                    "invalid_argument",
                    &format!("frame: not a subscribe or unsubscribe frame: {e}"),
                )];
            }
        };
        let mut replies = Vec::new();
        let mut done = Vec::new();
        match frame.kind.as_str() {
            "subscribe" => {
                for text in frame.topics {
                    match Topic::parse(&text)
                        .and_then(|t| t.authorize(&text, &self.caller).map(|()| t))
                    {
                        Ok(topic) => {
                            self.topics.insert(text.clone(), topic);
                            done.push(text);
                        }
                        Err((code, message)) => replies.push(error_frame(code, &message)),
                    }
                }
                if !done.is_empty() {
                    replies.insert(
                        0,
                        Message::Text(
                            json!({"type": "subscribed", "topics": done})
                                .to_string()
                                .into(),
                        ),
                    );
                }
            }
            "unsubscribe" => {
                for text in frame.topics {
                    self.topics.remove(&text);
                    done.push(text);
                }
                replies.push(Message::Text(
                    json!({"type": "unsubscribed", "topics": done})
                        .to_string()
                        .into(),
                ));
            }
            other => replies.push(error_frame(
                "invalid_argument",
                &format!("type: {other:?} is not subscribe or unsubscribe"),
            )),
        }
        replies
    }
}
