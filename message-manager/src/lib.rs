//! message-manager: chatmessages and their per-chatroom copies, over gRPC
//! (`message.v1.MessageService`).
//!
//! It learns chats, participants and chatrooms from chat-manager's events (`events`) into a
//! local view (`membership`), and asks chat-manager over gRPC when the view has not caught up.
//! `service()` builds the gRPC service, its outbox relay and the consumer; `main.rs` serves it
//! on a socket, and the gateway's embedded default calls it in-process.

pub mod chatmessages;
pub mod chatroommessages;
pub mod config;
pub mod content;
pub mod db;
pub mod error;
pub mod events;
pub mod grpc;
pub mod membership;
pub mod reads;

use std::sync::Arc;

use common::RequestMeta;
use common::db::Db;
use common::grpc_client::ChatClient;
use common::idempotency::IdempotencyKey;
use diesel::Connection;
use pipeline::bus::{EventBus, Subscription};
use pipeline::{Relay, RelaySignal, Store};
use proto::chat::v1 as chat_pb;
use proto::message::v1::message_service_server::MessageServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chatmessages::Change;
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::error::MessageError;
use crate::events::MessageRecord;
use crate::membership::Members;

/// CloudEvents `source` of message-manager's events.
pub const EVENT_SOURCE: &str = "message-manager";
/// The exchange message-manager publishes to, unless configured otherwise.
pub const DEFAULT_EXCHANGE: &str = pipeline::topology::MESSAGE_EXCHANGE;
/// message-manager's durable queue of chat-manager's events.
pub const DEFAULT_CHAT_EVENTS_QUEUE: &str = pipeline::topology::CHAT_EVENTS_QUEUE;

/// The domain entry point: the store, and chat-manager for what the view does not know yet
/// (or has not confirmed for `membership_max_age`).
#[derive(Debug, Clone)]
pub struct MessageManager {
    store: Store<MessageRecord>,
    chat: Option<ChatClient>,
    membership_max_age: std::time::Duration,
}

impl MessageManager {
    pub fn new(store: Store<MessageRecord>, chat: Option<ChatClient>) -> Self {
        MessageManager {
            store,
            chat,
            membership_max_age: membership::MAX_AGE,
        }
    }

    /// How long the membership view vouches for a chat it has not confirmed.
    pub fn with_membership_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.membership_max_age = max_age;
        self
    }

    pub fn store(&self) -> &Store<MessageRecord> {
        &self.store
    }

    /// The chat and its live chatrooms. The view answers when it knows the chat fully and
    /// confirmed it within `membership_max_age`; a miss, a participant without a live chatroom
    /// (its event may still be on the way) or an unconfirmed chat asks chat-manager and fills
    /// the view. With chat-manager unreachable, what the view knows is used: messages to known
    /// chats are still accepted.
    pub async fn members(
        &self,
        customer_id: &str,
        chat_id: &str,
        request_id: Option<&str>,
    ) -> Result<Members, MessageError> {
        self.members_checked(customer_id, chat_id, request_id, false)
            .await
    }

    /// As `members`; with `refresh`, asks chat-manager even when the view looks complete (the
    /// view may not have caught up with a change yet).
    pub async fn members_checked(
        &self,
        customer_id: &str,
        chat_id: &str,
        request_id: Option<&str>,
        refresh: bool,
    ) -> Result<Members, MessageError> {
        let (c, id) = (customer_id.to_owned(), chat_id.to_owned());
        let known = self
            .store
            .read(move |conn| membership::load(conn, &c, &id))
            .await?;
        if let Some(m) = &known
            && !refresh
            && (!m.is_live()
                || (m.is_complete() && !m.is_stale(common::time::now(), self.membership_max_age)))
        {
            return Ok(known.expect("checked"));
        }
        let req = chat_pb::GetChatRequest {
            customer_id: customer_id.to_owned(),
            id: chat_id.to_owned(),
        };
        let answer = match self.ask_chat_manager(req, request_id).await {
            Ok(answer) => answer,
            Err(MessageError::Unavailable(why)) => {
                return known.ok_or(MessageError::Unavailable(why));
            }
            Err(e) => return Err(e),
        };
        // Rooms the view has live that chat-manager no longer lists: their deletion did not
        // arrive (yet). Each is asked for, for the time it ended.
        let listed: std::collections::HashSet<&str> =
            answer.chatrooms.iter().map(|r| r.id.as_str()).collect();
        let (c, id) = (customer_id.to_owned(), chat_id.to_owned());
        let live_in_view = self
            .store
            .read(move |conn| membership::live_room_ids(conn, &c, &id))
            .await?;
        let mut retired = Vec::new();
        for room in live_in_view {
            if !listed.contains(room.as_str()) {
                match self.chatroom(customer_id, &room, request_id).await {
                    Ok(ended) => retired.push(ended),
                    Err(MessageError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !retired.is_empty() {
            tracing::info!(chat = %chat_id, rooms = retired.len(), "membership view: chatrooms retired whose deletion had not arrived");
        }
        let (c, id) = (customer_id.to_owned(), chat_id.to_owned());
        self.store
            .read(move |conn| {
                conn.transaction(|conn| {
                    membership::fill(conn, &answer, &retired)?;
                    membership::load(conn, &c, &id)
                })
            })
            .await?
            .ok_or_else(|| MessageError::not_found("chat"))
    }

    /// chat-manager's chatroom of the tenant (live or deleted).
    async fn chatroom(
        &self,
        customer_id: &str,
        room_id: &str,
        request_id: Option<&str>,
    ) -> Result<chat_pb::Chatroom, MessageError> {
        let Some(client) = &self.chat else {
            return Err(MessageError::Unavailable(
                "no chat-manager configured".into(),
            ));
        };
        let mut request = tonic::Request::new(chat_pb::GetChatroomRequest {
            customer_id: customer_id.to_owned(),
            id: room_id.to_owned(),
            owner_id: None,
        });
        if let Some(v) = request_id.and_then(|r| r.parse().ok()) {
            request.metadata_mut().insert(common::REQUEST_ID_HEADER, v);
        }
        match client.clone().get_chatroom(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(MessageError::not_found("chatroom")),
            Err(s) => Err(MessageError::Unavailable(format!(
                "chat-manager: {}",
                s.message()
            ))),
        }
    }

    async fn ask_chat_manager(
        &self,
        req: chat_pb::GetChatRequest,
        request_id: Option<&str>,
    ) -> Result<chat_pb::ChatMembers, MessageError> {
        let Some(client) = &self.chat else {
            return Err(MessageError::Unavailable(
                "no chat-manager configured".into(),
            ));
        };
        let mut request = tonic::Request::new(req);
        if let Some(v) = request_id.and_then(|r| r.parse().ok()) {
            request.metadata_mut().insert(common::REQUEST_ID_HEADER, v);
        }
        match client.clone().get_chat_members(request).await {
            Ok(res) => Ok(res.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(MessageError::not_found("chat")),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                Err(MessageError::InvalidArgument(s.message().to_owned()))
            }
            Err(s) => Err(MessageError::Unavailable(format!(
                "chat-manager: {}",
                s.message()
            ))),
        }
    }

    /// The chat's members, for a send of `new`, which must pass `chatmessages::check`: when the
    /// view does not know the sender as a participant (say, one added a moment ago), the view is
    /// refreshed from chat-manager before the message is refused.
    pub async fn members_for_send(
        &self,
        new: &chatmessages::NewMessage,
        request_id: Option<&str>,
    ) -> Result<Members, MessageError> {
        let members = self
            .members(&new.customer_id, &new.chat_id, request_id)
            .await?;
        let members = if members.is_live() && chatmessages::sender_unknown(&members, new) {
            self.members_checked(&new.customer_id, &new.chat_id, request_id, true)
                .await?
        } else {
            members
        };
        chatmessages::check(&members, new)?;
        Ok(members)
    }

    /// Sends `new`: the message (whose copies the chat's live chatrooms then hold), committed
    /// with its events, honouring the idempotency key; `reply` makes the answer from the
    /// message and the rooms holding its copies. Usually two statements on one connection:
    /// the view is read, then the message and its outbox record are written in one statement
    /// (in a transaction instead when an idempotency key must be claimed with them). Only when
    /// the view cannot vouch for the send (the chat unknown or incomplete, the sender not
    /// among its participants) is it refreshed from chat-manager first.
    pub async fn send<P, F>(
        &self,
        new: chatmessages::NewMessage,
        meta: RequestMeta,
        key: Option<IdempotencyKey>,
        reply: F,
    ) -> Result<P, MessageError>
    where
        P: prost::Message + Default + Send + 'static,
        F: Fn(&ChatmessageRow, &Members) -> Result<P, MessageError> + Send + Sync + 'static,
    {
        let reply = Arc::new(reply);
        let (n, r) = (new.clone(), reply.clone());
        let max_age = self.membership_max_age;
        let fast = match &key {
            // No key to claim: the view is read, then the message and its outbox row are
            // written in one statement.
            None => {
                self.store
                    .write_statement(meta.clone(), move |c, outbox_row| {
                        let members = membership::vouching_for(c, &n, max_age)?;
                        let (message, _) = with_fresh_id(&members, &n, |message, events| {
                            let row = outbox_row(events);
                            db::queries::insert_message_and_outbox(c, message, &row)
                        })?;
                        r(&message, &members)
                    })
                    .await
            }
            Some(_) => {
                self.store
                    .create(meta.clone(), key.clone(), move |c| {
                        let members = membership::vouching_for(c, &n, max_age)?;
                        let (message, events) = create_with_fresh_id(c, &members, &n)?;
                        Ok((r(&message, &members)?, events))
                    })
                    .await
            }
        };
        if !matches!(fast, Err(MessageError::Stale(_))) {
            return fast;
        }
        let members = self
            .members_for_send(&new, meta.request_id.as_deref())
            .await?;
        self.store
            .create(meta, key, move |c| {
                let (message, events) = create_with_fresh_id(c, &members, &new)?;
                Ok((reply(&message, &members)?, events))
            })
            .await
    }

    /// The chatroom of the tenant, from the view or, on a miss, from chat-manager. A live room
    /// of a chat the view has not confirmed within `membership_max_age` is checked first (the
    /// chat's members are refreshed: the room may have been deleted without the view hearing).
    pub async fn room(
        &self,
        customer_id: &str,
        room_id: &str,
        request_id: Option<&str>,
    ) -> Result<MemberChatroom, MessageError> {
        let (c, id) = (customer_id.to_owned(), room_id.to_owned());
        let known = self
            .store
            .read(move |conn| membership::load_room(conn, &c, &id))
            .await?;
        if let Some(room) = known {
            if room.tm_delete != common::time::live() {
                return Ok(room);
            }
            // Refreshes the chat when it is stale (otherwise answers from the view).
            self.members(customer_id, &room.chat_id, request_id).await?;
            let (c, id) = (customer_id.to_owned(), room_id.to_owned());
            return self
                .store
                .read(move |conn| membership::load_room(conn, &c, &id))
                .await?
                .ok_or_else(|| MessageError::not_found("chatroom"));
        }
        let room = self.chatroom(customer_id, room_id, request_id).await?;
        // Learn the whole chat, then store this room (it may be a deleted one, which the
        // chat's live list leaves out).
        let row = membership::member_room_from_proto(&room)?;
        self.members(customer_id, &room.chat_id, request_id).await?;
        self.store
            .read(move |conn| {
                db::queries::upsert_member_room(conn, &row)?;
                db::queries::tenant_room(conn, &row.customer_id, &row.id)?
                    .ok_or_else(|| MessageError::Internal("chatroom not stored".into()))
            })
            .await
    }
}

/// A message's number comes from its random id and must be unique: on the (vanishingly rare)
/// clash with an earlier message, the write is tried again with a fresh id.
const FRESH_ID_ATTEMPTS: usize = 4;

fn number_taken(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Prepares the message from `new` and writes it with `write`, again with a fresh id while
/// the number is taken.
fn with_fresh_id(
    members: &Members,
    new: &chatmessages::NewMessage,
    mut write: impl FnMut(&mut ChatmessageRow, &[MessageRecord]) -> diesel::QueryResult<()>,
) -> Result<Change<ChatmessageRow>, MessageError> {
    for _ in 0..FRESH_ID_ATTEMPTS {
        let (mut message, events) = chatmessages::prepare(members, new.clone())?;
        match write(&mut message, &events) {
            Ok(()) => return Ok((message, events)),
            Err(e) if number_taken(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MessageError::Internal(
        "no free message number after several fresh ids".into(),
    ))
}

/// Writes the message inside a transaction, in a savepoint, so that a clash of message
/// numbers leaves the transaction usable for another try.
fn create_with_fresh_id(
    conn: &mut common::db::DbConnection,
    members: &Members,
    new: &chatmessages::NewMessage,
) -> Result<Change<ChatmessageRow>, MessageError> {
    with_fresh_id(members, new, |message, _| {
        conn.transaction(|c| db::queries::insert_message(c, message))
    })
}

/// Subscribes to chat-manager's events. Done before chat-manager's relay starts in the
/// embedded default, whose in-process bus keeps nothing for late subscribers.
pub async fn subscribe_chat_events(
    bus: &EventBus,
    chat_exchange: &str,
    queue: &str,
) -> Result<Subscription, pipeline::bus::BusError> {
    events::subscribe_with_dead_letters(bus, events::subscription_spec(chat_exchange, queue)).await
}

/// The relay publishing message-manager's outbox to `exchange`.
pub fn relay(db: Db, bus: EventBus, exchange: &str, signal: RelaySignal) -> Relay<MessageRecord> {
    Relay::new(db, bus, exchange, signal, EVENT_SOURCE)
}

/// Where message-manager's events go and where chat-manager's come from.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub chat_exchange: String,
    pub chat_events_queue: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            exchange: DEFAULT_EXCHANGE.into(),
            chat_exchange: pipeline::topology::CHAT_EXCHANGE.into(),
            chat_events_queue: DEFAULT_CHAT_EVENTS_QUEUE.into(),
        }
    }
}

/// The gRPC service over `db`, its relay, and the consumer of chat-manager's events
/// (`subscription`, made by `subscribe_chat_events`; `None`: the consumer subscribes in the
/// background, with backoff), until `shutdown` turns true. `chat` is asked what the
/// membership view does not know, or has not confirmed within `membership_max_age`.
pub fn service(
    db: Db,
    bus: EventBus,
    topology: Topology,
    subscription: impl Into<Option<Subscription>>,
    chat: Option<(ChatClient, std::time::Duration)>,
    shutdown: watch::Receiver<bool>,
) -> (MessageServiceServer<grpc::MessageGrpc>, Vec<JoinHandle<()>>) {
    let signal = RelaySignal::default();
    let relay = relay(db.clone(), bus.clone(), &topology.exchange, signal.clone());
    let relay_task = relay.spawn(shutdown.clone());
    pipeline::bus::watch_queue_depth(bus.clone(), &topology.chat_events_queue, shutdown.clone());
    let consumer = events::ChatEventConsumer {
        db: db.clone(),
        bus,
        spec: events::subscription_spec(&topology.chat_exchange, &topology.chat_events_queue),
    };
    let consumer_task = tokio::spawn(consumer.run(subscription, shutdown.clone()));
    let jobs = vec![
        pipeline::outbox::HOUSEKEEPING,
        common::housekeeping::IDEMPOTENCY_KEYS,
        ("processed chat event ids", db::queries::purge_processed),
    ];
    tokio::spawn(common::housekeeping::run(
        db.clone(),
        std::time::Duration::from_secs(3600),
        jobs,
        shutdown,
    ));
    let store = Store::new(db, signal);
    let manager = match chat {
        Some((client, max_age)) => {
            MessageManager::new(store, Some(client)).with_membership_max_age(max_age)
        }
        None => MessageManager::new(store, None),
    };
    (
        MessageServiceServer::new(grpc::MessageGrpc::new(manager)),
        vec![relay_task, consumer_task],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chatmessages::{MessageType, NewMessage};
    use crate::db::models::MemberChat;

    fn members_and_message() -> (Members, NewMessage) {
        let (agent, now) = ("a-1".to_owned(), common::time::now());
        let chat = MemberChat {
            id: "c-1".into(),
            customer_id: "t-1".into(),
            participant_ids: format!("[\"{agent}\"]"),
            tm_update: now,
            tm_delete: common::time::live(),
            tm_checked: now,
        };
        let new = NewMessage {
            customer_id: chat.customer_id.clone(),
            chat_id: chat.id.clone(),
            source: proto::message::v1::Address {
                r#type: "agent".into(),
                target: agent,
                ..Default::default()
            },
            message_type: MessageType::Normal,
            text: "hello".into(),
            medias: Vec::new(),
        };
        let members = Members {
            chat,
            rooms: Vec::new(),
        };
        (members, new)
    }

    fn taken() -> diesel::result::Error {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate key".to_owned()),
        )
    }

    /// A taken number is tried again with a fresh id, up to FRESH_ID_ATTEMPTS times; any other
    /// failure is returned at once.
    #[test]
    fn a_taken_number_is_retried_with_a_fresh_id_and_other_errors_are_not() {
        let (members, new) = members_and_message();
        let mut tried = Vec::new();
        let (message, events) = with_fresh_id(&members, &new, |m, _| {
            tried.push((m.id.clone(), m.no));
            if tried.len() < 3 {
                Err(taken())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert_eq!((message.id.clone(), message.no), tried[2]);
        assert!(!events.is_empty());
        let ids: std::collections::HashSet<_> = tried.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 3, "each try has a fresh id: {tried:?}");

        let mut attempts = 0;
        let err = with_fresh_id(&members, &new, |_, _| {
            attempts += 1;
            Err(taken())
        })
        .unwrap_err();
        assert_eq!(attempts, FRESH_ID_ATTEMPTS);
        assert!(matches!(err, MessageError::Internal(_)), "{err:?}");

        let mut attempts = 0;
        let err = with_fresh_id(&members, &new, |_, _| {
            attempts += 1;
            Err(diesel::result::Error::BrokenTransactionManager)
        })
        .unwrap_err();
        assert_eq!(attempts, 1);
        assert!(
            !matches!(err, MessageError::Internal(ref m) if m.contains("fresh")),
            "{err:?}"
        );
    }
}
