//! Thin gRPC handlers: map requests to domain calls, results to replies, errors to `Status`
//! (via `From<MessageError>`).

use common::RequestMeta;
use common::idempotency::IdempotencyKey;
use common::page::Page;
use proto::message::v1 as pb;
use proto::message::v1::message_service_server::MessageService;
use tonic::{Request, Response, Status};

use crate::MessageManager;
use crate::chatmessages::{self, MessageType, NewMessage};
use crate::chatroommessages;
use crate::error::{MessageError, parse_id};
use crate::reads;

#[derive(Debug, Clone)]
pub struct MessageGrpc {
    manager: MessageManager,
}

impl MessageGrpc {
    pub fn new(manager: MessageManager) -> Self {
        MessageGrpc { manager }
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl MessageGrpc {
    /// The live chatroom `room_id` of `owner_id` (NOT_FOUND for anyone else's).
    async fn own_room(
        &self,
        customer_id: &str,
        owner_id: &str,
        room_id: &str,
        meta: &RequestMeta,
    ) -> Result<crate::db::models::MemberChatroom, MessageError> {
        let customer = parse_id("customer_id", customer_id)?;
        let owner = parse_id("owner_id", owner_id)?;
        let room_id = parse_id("chatroom_id", room_id)?;
        let room = self
            .manager
            .room(&customer, &room_id, meta.request_id.as_deref())
            .await?;
        reads::own_room(room, &owner)
    }
}

fn page(p: Option<pb::PageRequest>) -> Result<Page, MessageError> {
    let p = p.unwrap_or_default();
    Ok(Page::new(p.page_size, &p.page_token)?)
}

fn optional_id(field: &str, v: Option<String>) -> Result<Option<String>, MessageError> {
    v.filter(|s| !s.is_empty())
        .map(|s| parse_id(field, &s))
        .transpose()
}

fn message_type(t: i32) -> Result<MessageType, MessageError> {
    match pb::MessageType::try_from(t) {
        Ok(pb::MessageType::Normal) => Ok(MessageType::Normal),
        Ok(pb::MessageType::System) => Ok(MessageType::System),
        _ => Err(MessageError::invalid("type: must be normal or system")),
    }
}

fn key<T: prost::Message>(
    req: &Request<T>,
    customer: &str,
    method: &str,
) -> Result<Option<IdempotencyKey>, MessageError> {
    Ok(IdempotencyKey::of_request(req, customer, method)?)
}

#[tonic::async_trait]
impl MessageService for MessageGrpc {
    async fn create_chatmessage(
        &self,
        req: Request<pb::CreateChatmessageRequest>,
    ) -> Reply<pb::Chatmessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let key = key(&req, &req.get_ref().customer_id, "CreateChatmessage")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let chat_id = parse_id("chat_id", &r.chat_id)?;
        let new = NewMessage {
            message_type: message_type(r.r#type)?,
            source: r.source.unwrap_or_default(),
            customer_id: customer.clone(),
            chat_id: chat_id.clone(),
            text: r.text,
            medias: r.medias,
        };
        let message = self
            .manager
            .send(new, rid, key, |message, _| {
                Ok(chatmessages::to_proto(message))
            })
            .await?;
        Ok(Response::new(message))
    }

    async fn get_chatmessage(
        &self,
        req: Request<pb::GetChatmessageRequest>,
    ) -> Reply<pb::Chatmessage> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let row = self
            .manager
            .store()
            .read(move |c| chatmessages::get(c, &customer, &id))
            .await?;
        Ok(Response::new(chatmessages::to_proto(&row)))
    }

    async fn list_chatmessages(
        &self,
        req: Request<pb::ListChatmessagesRequest>,
    ) -> Reply<pb::ListChatmessagesResponse> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let chat_id = parse_id("chat_id", &r.chat_id)?;
        let page = page(r.page)?;
        let members = self
            .manager
            .members(&customer, &chat_id, rid.request_id.as_deref())
            .await?;
        let (rows, next) = self
            .manager
            .store()
            .read(move |c| chatmessages::list(c, &members, &page))
            .await?;
        Ok(Response::new(pb::ListChatmessagesResponse {
            chatmessages: rows.iter().map(chatmessages::to_proto).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_chatmessage(
        &self,
        req: Request<pb::DeleteChatmessageRequest>,
    ) -> Reply<pb::Chatmessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let row = self
            .manager
            .store()
            .write(rid, move |c| chatmessages::delete(c, &customer, &id))
            .await?;
        Ok(Response::new(chatmessages::to_proto(&row)))
    }

    async fn update_chatmessage(
        &self,
        req: Request<pb::UpdateChatmessageRequest>,
    ) -> Reply<pb::Chatmessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let edit = chatmessages::Edit {
            text: r.text,
            medias: r.medias.map(|m| m.medias),
        };
        let row = self
            .manager
            .store()
            .write(rid, move |c| {
                chatmessages::update(c, &customer, &id, edit.clone())
            })
            .await?;
        Ok(Response::new(chatmessages::to_proto(&row)))
    }

    async fn create_chatroommessage(
        &self,
        req: Request<pb::CreateChatroommessageRequest>,
    ) -> Reply<pb::Chatroommessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let key = key(&req, &req.get_ref().customer_id, "CreateChatroommessage")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let room_id = parse_id("chatroom_id", &r.chatroom_id)?;
        let owner = parse_id("owner_id", &r.owner_id)?;
        let room = self
            .manager
            .room(&customer, &room_id, rid.request_id.as_deref())
            .await?;
        if room.owner_id != owner || room.tm_delete != common::time::live() {
            return Err(MessageError::not_found("chatroom").into());
        }
        let new = NewMessage {
            customer_id: customer,
            chat_id: room.chat_id.clone(),
            source: pb::Address {
                r#type: "agent".into(),
                target: owner,
                target_name: r.owner_name,
                name: String::new(),
                detail: String::new(),
            },
            message_type: MessageType::Normal,
            text: r.text,
            medias: r.medias,
        };
        let copy = self
            .manager
            .send(new, rid, key, move |message, members| {
                let own = members
                    .rooms
                    .iter()
                    .find(|r| r.id == room_id && r.holds_copy_of(message.tm_create))
                    .ok_or_else(|| {
                        MessageError::Internal("no copy in the sender's chatroom".into())
                    })?;
                Ok(chatroommessages::to_proto(message, own, None))
            })
            .await?;
        Ok(Response::new(copy))
    }

    async fn get_chatroommessage(
        &self,
        req: Request<pb::GetChatroommessageRequest>,
    ) -> Reply<pb::Chatroommessage> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let found = self
            .manager
            .store()
            .read(move |c| chatroommessages::get(c, &customer, &id, owner.as_deref()))
            .await?;
        Ok(Response::new(found.to_proto()))
    }

    async fn list_chatroommessages(
        &self,
        req: Request<pb::ListChatroommessagesRequest>,
    ) -> Reply<pb::ListChatroommessagesResponse> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let room_id = parse_id("chatroom_id", &r.chatroom_id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let page = page(r.page)?;
        let room = self
            .manager
            .room(&customer, &room_id, rid.request_id.as_deref())
            .await?;
        if owner.is_some_and(|o| o != room.owner_id) {
            return Err(MessageError::not_found("chatroom").into());
        }
        let (rows, next) = self
            .manager
            .store()
            .read(move |c| chatroommessages::list(c, &room, &page))
            .await?;
        Ok(Response::new(pb::ListChatroommessagesResponse {
            chatroommessages: rows,
            next_page_token: next,
        }))
    }

    async fn delete_chatroommessage(
        &self,
        req: Request<pb::DeleteChatroommessageRequest>,
    ) -> Reply<pb::Chatroommessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let copy = self
            .manager
            .store()
            .write(rid, move |c| {
                chatroommessages::delete(c, &customer, &id, owner.as_deref())
            })
            .await?;
        Ok(Response::new(copy))
    }

    async fn update_chatroommessage(
        &self,
        req: Request<pb::UpdateChatroommessageRequest>,
    ) -> Reply<pb::Chatroommessage> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = parse_id("owner_id", &r.owner_id)?;
        let edit = chatmessages::Edit {
            text: r.text,
            medias: r.medias.map(|m| m.medias),
        };
        let copy = self
            .manager
            .store()
            .write(rid, move |c| {
                chatroommessages::update(c, &customer, &id, &owner, edit.clone())
            })
            .await?;
        Ok(Response::new(copy))
    }

    async fn get_read_state(&self, req: Request<pb::GetReadStateRequest>) -> Reply<pb::ReadState> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let room = self
            .own_room(&r.customer_id, &r.owner_id, &r.chatroom_id, &rid)
            .await?;
        let state = self
            .manager
            .store()
            .read(move |c| reads::get(c, &room))
            .await?;
        Ok(Response::new(state))
    }

    async fn mark_read(&self, req: Request<pb::MarkReadRequest>) -> Reply<pb::ReadState> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let message = optional_id("messagechat_id", r.messagechat_id)?;
        let room = self
            .own_room(&r.customer_id, &r.owner_id, &r.chatroom_id, &rid)
            .await?;
        let state = self
            .manager
            .store()
            .write(rid, move |c| reads::mark(c, &room, message.as_deref()))
            .await?;
        Ok(Response::new(state))
    }

    async fn list_read_states(
        &self,
        req: Request<pb::ListReadStatesRequest>,
    ) -> Reply<pb::ListReadStatesResponse> {
        let rid = RequestMeta::from_metadata(req.metadata());
        let r = req.into_inner();
        let room = self
            .own_room(&r.customer_id, &r.owner_id, &r.chatroom_id, &rid)
            .await?;
        let read_states = self
            .manager
            .store()
            .read(move |c| reads::list_for_chat(c, &room))
            .await?;
        Ok(Response::new(pb::ListReadStatesResponse { read_states }))
    }

    async fn get_unread(&self, req: Request<pb::GetUnreadRequest>) -> Reply<pb::Unread> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let owner = parse_id("owner_id", &r.owner_id)?;
        let unread = self
            .manager
            .store()
            .read(move |c| reads::unread(c, &customer, &owner))
            .await?;
        Ok(Response::new(unread))
    }
}
