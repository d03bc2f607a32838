//! Thin gRPC handlers: map requests to domain calls, results to replies, errors to `Status`
//! (via `From<ChatError>`).

use common::RequestMeta;
use common::idempotency::IdempotencyKey;
use common::page::Page;
use proto::chat::v1 as pb;
use proto::chat::v1::chat_service_server::ChatService;
use tonic::{Request, Response, Status};

use crate::ChatManager;
use crate::chatrooms;
use crate::chats::{self, ChatType, NewChat};
use crate::error::{ChatError, parse_id};

#[derive(Debug, Clone)]
pub struct ChatGrpc {
    manager: ChatManager,
}

impl ChatGrpc {
    pub fn new(manager: ChatManager) -> Self {
        ChatGrpc { manager }
    }
}

fn idempotency_key<T: prost::Message>(
    req: &Request<T>,
    customer_id: &str,
    method: &str,
) -> Result<Option<IdempotencyKey>, ChatError> {
    Ok(IdempotencyKey::of_request(req, customer_id, method)?)
}

fn request_meta<T>(req: &Request<T>) -> RequestMeta {
    RequestMeta::from_metadata(req.metadata())
}

fn page(p: Option<pb::PageRequest>) -> Result<Page, ChatError> {
    let p = p.unwrap_or_default();
    Ok(Page::new(p.page_size, &p.page_token)?)
}

fn optional_id(field: &str, v: Option<String>) -> Result<Option<String>, ChatError> {
    v.filter(|s| !s.is_empty())
        .map(|s| parse_id(field, &s))
        .transpose()
}

fn chat_type(t: i32) -> Result<ChatType, ChatError> {
    match pb::ChatType::try_from(t) {
        Ok(pb::ChatType::Normal) => Ok(ChatType::Normal),
        Ok(pb::ChatType::Group) => Ok(ChatType::Group),
        _ => Err(ChatError::invalid("type: must be normal or group")),
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ChatService for ChatGrpc {
    async fn create_chat(&self, req: Request<pb::CreateChatRequest>) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let key = idempotency_key(&req, &req.get_ref().customer_id, "CreateChat")?;
        let r = req.into_inner();
        let new = NewChat {
            customer_id: parse_id("customer_id", &r.customer_id)?,
            chat_type: chat_type(r.r#type)?,
            owner_id: parse_id("owner_id", &r.owner_id)?,
            participant_ids: r
                .participant_ids
                .iter()
                .enumerate()
                .map(|(i, p)| parse_id(&format!("participant_ids[{i}]"), p))
                .collect::<Result<_, _>>()?,
            name: r.name,
            detail: r.detail,
        };
        let chat = self
            .manager
            .create(rid, key, move |c| {
                let (chat, events) = chats::create(c, new.clone())?;
                Ok::<_, ChatError>((chats::to_proto(&chat), events))
            })
            .await?;
        Ok(Response::new(chat))
    }

    async fn get_chat(&self, req: Request<pb::GetChatRequest>) -> Reply<pb::Chat> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let chat = self
            .manager
            .read(move |c| chats::get(c, &customer, &id))
            .await?;
        Ok(Response::new(chats::to_proto(&chat)))
    }

    async fn list_chats(&self, req: Request<pb::ListChatsRequest>) -> Reply<pb::ListChatsResponse> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let page = page(r.page)?;
        let (rows, next) = self
            .manager
            .read(move |c| chats::list(c, &customer, &page))
            .await?;
        Ok(Response::new(pb::ListChatsResponse {
            chats: rows.iter().map(chats::to_proto).collect(),
            next_page_token: next,
        }))
    }

    async fn update_chat(&self, req: Request<pb::UpdateChatRequest>) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let chat = self
            .manager
            .write(rid, move |c| {
                chats::update(c, &customer, &id, r.name, r.detail)
            })
            .await?;
        Ok(Response::new(chats::to_proto(&chat)))
    }

    async fn delete_chat(&self, req: Request<pb::DeleteChatRequest>) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let chat = self
            .manager
            .write(rid, move |c| chats::delete(c, &customer, &id))
            .await?;
        Ok(Response::new(chats::to_proto(&chat)))
    }

    async fn update_chat_owner(&self, req: Request<pb::UpdateChatOwnerRequest>) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = parse_id("owner_id", &r.owner_id)?;
        let chat = self
            .manager
            .write(rid, move |c| chats::change_owner(c, &customer, &id, owner))
            .await?;
        Ok(Response::new(chats::to_proto(&chat)))
    }

    async fn add_participant(&self, req: Request<pb::AddParticipantRequest>) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let key = idempotency_key(&req, &req.get_ref().customer_id, "AddParticipant")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let participant = parse_id("participant_id", &r.participant_id)?;
        let chat = self
            .manager
            .create(rid, key, move |c| {
                let (chat, events) =
                    chats::add_participant(c, &customer, &id, participant.clone())?;
                Ok::<_, ChatError>((chats::to_proto(&chat), events))
            })
            .await?;
        Ok(Response::new(chat))
    }

    async fn remove_participant(
        &self,
        req: Request<pb::RemoveParticipantRequest>,
    ) -> Reply<pb::Chat> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let participant = parse_id("participant_id", &r.participant_id)?;
        let chat = self
            .manager
            .write(rid, move |c| {
                chats::remove_participant(c, &customer, &id, &participant)
            })
            .await?;
        Ok(Response::new(chats::to_proto(&chat)))
    }

    async fn get_chatroom(&self, req: Request<pb::GetChatroomRequest>) -> Reply<pb::Chatroom> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let room = self
            .manager
            .read(move |c| chatrooms::get(c, &customer, &id, owner.as_deref()))
            .await?;
        Ok(Response::new(chatrooms::to_proto(&room)))
    }

    async fn list_chatrooms(
        &self,
        req: Request<pb::ListChatroomsRequest>,
    ) -> Reply<pb::ListChatroomsResponse> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let page = page(r.page)?;
        let (rows, next) = self
            .manager
            .read(move |c| chatrooms::list(c, &customer, owner.as_deref(), &page))
            .await?;
        Ok(Response::new(pb::ListChatroomsResponse {
            chatrooms: rows.iter().map(chatrooms::to_proto).collect(),
            next_page_token: next,
        }))
    }

    async fn update_chatroom(
        &self,
        req: Request<pb::UpdateChatroomRequest>,
    ) -> Reply<pb::Chatroom> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let room = self
            .manager
            .write(rid, move |c| {
                chatrooms::update(c, &customer, &id, owner.as_deref(), r.name, r.detail)
            })
            .await?;
        Ok(Response::new(chatrooms::to_proto(&room)))
    }

    async fn delete_chatroom(
        &self,
        req: Request<pb::DeleteChatroomRequest>,
    ) -> Reply<pb::Chatroom> {
        let rid = request_meta(&req);
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let owner = optional_id("owner_id", r.owner_id)?;
        let room = self
            .manager
            .write(rid, move |c| {
                chatrooms::delete(c, &customer, &id, owner.as_deref())
            })
            .await?;
        Ok(Response::new(chatrooms::to_proto(&room)))
    }

    async fn create_chatroom(
        &self,
        req: Request<pb::CreateChatroomRequest>,
    ) -> Reply<pb::Chatroom> {
        let rid = request_meta(&req);
        let key = idempotency_key(&req, &req.get_ref().customer_id, "CreateChatroom")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let agent = parse_id("agent_id", &r.agent_id)?;
        let participants: Vec<String> = r
            .participant_ids
            .iter()
            .enumerate()
            .map(|(i, p)| parse_id(&format!("participant_ids[{i}]"), p))
            .collect::<Result<_, _>>()?;
        let create = move |c: &mut common::db::DbConnection| {
            let (room, events) = chatrooms::create_for_agent(
                c,
                &customer,
                &agent,
                participants.clone(),
                r.name.clone(),
                r.detail.clone(),
            )?;
            Ok::<_, ChatError>((chatrooms::to_proto(&room), events))
        };
        // Two agents opening the same pair at once: the loser of the unique index finds the
        // winner's chat on a second try.
        let room = match self
            .manager
            .create(rid.clone(), key.clone(), create.clone())
            .await
        {
            Err(ChatError::Conflict(_)) => self.manager.create(rid, key, create).await?,
            other => other?,
        };
        Ok(Response::new(room))
    }

    async fn get_chat_members(&self, req: Request<pb::GetChatRequest>) -> Reply<pb::ChatMembers> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let (chat, rooms) = self
            .manager
            .read(move |c| chats::members(c, &customer, &id))
            .await?;
        Ok(Response::new(pb::ChatMembers {
            chat: Some(chats::to_proto(&chat)),
            // The participants are the chat's, sent once (see ChatMembers).
            chatrooms: rooms
                .iter()
                .map(|room| pb::Chatroom {
                    participant_ids: Vec::new(),
                    ..chatrooms::to_proto(room)
                })
                .collect(),
        }))
    }
}
