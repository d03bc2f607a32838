//! `/v1.0/chats...`: customer-level chat management.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use common::resources::{ChatJson, ListJson};
use proto::chat::v1 as pb;
use serde::Deserialize;

use utoipa::{OpenApi, ToSchema};

use super::{IdParam, PageParams, required};
use crate::app::{AppState, CallMeta, CustomerAdmin, PathId, QueryParams, RequestId, path_uuid};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chats", get(list).post(create))
        .route("/chats/{id}", get(read).put(update).delete(remove))
        .route("/chats/{id}/owner_id", put(change_owner))
        .route("/chats/{id}/room_owner_id", put(change_room_owner))
        .route("/chats/{id}/participant_ids", post(add_participant))
        .route(
            "/chats/{id}/participant_ids/{participant_id}",
            delete(remove_participant),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    create,
    list,
    read,
    update,
    remove,
    change_owner,
    change_room_owner,
    add_participant,
    remove_participant
))]
pub(super) struct Api;

type ChatReply = Result<Json<ChatJson>, ApiError>;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ChatTypeJson {
    Normal,
    Group,
}

#[derive(Debug, Deserialize, ToSchema)]
struct CreateChat {
    /// `normal` (two participants) or `group`.
    #[serde(rename = "type")]
    #[schema(value_type = ChatTypeJson, required = true)]
    chat_type: Option<ChatTypeJson>,
    #[schema(value_type = uuid::Uuid, required = true)]
    owner_id: Option<uuid::Uuid>,
    /// The agents in the chat, the owner among them (at most 1,000).
    #[schema(value_type = Vec<uuid::Uuid>, required = true, min_items = 1, max_items = 1000)]
    participant_ids: Option<Vec<uuid::Uuid>>,
    #[schema(max_length = 1000)]
    name: Option<String>,
    #[schema(max_length = 10000)]
    detail: Option<String>,
}

#[utoipa::path(post, path = "/v1.0/chats", tag = "chats", request_body = CreateChat,
    responses((status = 200, description = "The chat, with a chatroom for each participant", body = ChatJson)))]

async fn create(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChat>,
) -> ChatReply {
    let chat_type = match required("type", body.chat_type)? {
        ChatTypeJson::Normal => pb::ChatType::Normal,
        ChatTypeJson::Group => pb::ChatType::Group,
    };
    let req = pb::CreateChatRequest {
        customer_id: caller.customer_id.to_string(),
        r#type: chat_type as i32,
        owner_id: required("owner_id", body.owner_id)?.to_string(),
        participant_ids: required("participant_ids", body.participant_ids)?
            .iter()
            .map(uuid::Uuid::to_string)
            .collect(),
        name: body.name.unwrap_or_default(),
        detail: body.detail.unwrap_or_default(),
    };
    let chat = app
        .chat
        .clone()
        .create_chat(meta.grpc(req, &caller))
        .await?;
    Ok(Json(chat.into_inner().into()))
}

#[utoipa::path(get, path = "/v1.0/chats", tag = "chats", params(PageParams),
    responses((status = 200, description = "A page of the customer's chats, newest first", body = ListJson<ChatJson>)))]
async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatJson>>, ApiError> {
    let req = pb::ListChatsRequest {
        customer_id: caller.customer_id.to_string(),
        page: Some(query.page()?),
    };
    let res = app
        .chat
        .clone()
        .list_chats(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res.chats.into_iter().map(ChatJson::from).collect(),
        next_page_token: res.next_page_token,
    }))
}

#[utoipa::path(get, path = "/v1.0/chats/{id}", tag = "chats", params(IdParam),
    responses((status = 200, description = "The chat (deleted ones too, with `tm_delete` set)", body = ChatJson)))]
async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatReply {
    let req = pb::GetChatRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let chat = app.chat.clone().get_chat(rid.grpc(req)).await?;
    Ok(Json(chat.into_inner().into()))
}

/// Fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
struct UpdateChat {
    #[schema(max_length = 1000)]
    name: Option<String>,
    #[schema(max_length = 10000)]
    detail: Option<String>,
}

#[utoipa::path(put, path = "/v1.0/chats/{id}", tag = "chats", params(IdParam), request_body = UpdateChat,
    responses((status = 200, description = "The renamed chat", body = ChatJson)))]

async fn update(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateChat>,
) -> ChatReply {
    let req = pb::UpdateChatRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        name: body.name,
        detail: body.detail,
    };
    let chat = app.chat.clone().update_chat(rid.grpc(req)).await?;
    Ok(Json(chat.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1.0/chats/{id}", tag = "chats", params(IdParam),
    responses((status = 200, description = "The deleted chat, with `tm_delete` set; its chatrooms are deleted too", body = ChatJson)))]
async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatReply {
    let req = pb::DeleteChatRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let chat = app.chat.clone().delete_chat(rid.grpc(req)).await?;
    Ok(Json(chat.into_inner().into()))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ChangeOwner {
    /// A participant of the chat.
    #[schema(value_type = uuid::Uuid, required = true)]
    owner_id: Option<uuid::Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct ChangeRoomOwner {
    /// A participant of the chat.
    #[schema(value_type = uuid::Uuid, required = true)]
    room_owner_id: Option<uuid::Uuid>,
}

async fn set_owner(
    app: AppState,
    caller: crate::auth::Caller,
    rid: RequestId,
    id: String,
    owner: uuid::Uuid,
) -> ChatReply {
    let req = pb::UpdateChatOwnerRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        owner_id: owner.to_string(),
    };
    let chat = app.chat.clone().update_chat_owner(rid.grpc(req)).await?;
    Ok(Json(chat.into_inner().into()))
}

#[utoipa::path(put, path = "/v1.0/chats/{id}/owner_id", tag = "chats", params(IdParam), request_body = ChangeOwner,
    responses((status = 200, description = "The chat with its new owner", body = ChatJson)))]
async fn change_owner(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<ChangeOwner>,
) -> ChatReply {
    let owner = required("owner_id", body.owner_id)?;
    set_owner(app, caller, rid, id, owner).await
}

/// The same as `change_owner`, under the name later VoIPbin clients use.
#[utoipa::path(put, path = "/v1.0/chats/{id}/room_owner_id", tag = "chats", params(IdParam), request_body = ChangeRoomOwner,
    responses((status = 200, description = "The chat with its new owner", body = ChatJson)))]
async fn change_room_owner(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<ChangeRoomOwner>,
) -> ChatReply {
    let owner = required("room_owner_id", body.room_owner_id)?;
    set_owner(app, caller, rid, id, owner).await
}

#[derive(Debug, Deserialize, ToSchema)]
struct AddParticipant {
    #[schema(value_type = uuid::Uuid, required = true)]
    participant_id: Option<uuid::Uuid>,
}

#[utoipa::path(post, path = "/v1.0/chats/{id}/participant_ids", tag = "chats", params(IdParam), request_body = AddParticipant,
    responses((status = 200, description = "The chat with the participant added (a normal chat becomes a group)", body = ChatJson)))]

async fn add_participant(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    PathId(id): PathId,
    JsonBody(body): JsonBody<AddParticipant>,
) -> ChatReply {
    let req = pb::AddParticipantRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        participant_id: required("participant_id", body.participant_id)?.to_string(),
    };
    let chat = app
        .chat
        .clone()
        .add_participant(meta.grpc(req, &caller))
        .await?;
    Ok(Json(chat.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1.0/chats/{id}/participant_ids/{participant_id}", tag = "chats",
    params(IdParam, ("participant_id" = uuid::Uuid, Path, description = "The participant to remove")),
    responses((status = 200, description = "The chat without the participant; its chatroom is deleted", body = ChatJson)))]
async fn remove_participant(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    Path((id, participant_id)): Path<(String, String)>,
) -> ChatReply {
    let req = pb::RemoveParticipantRequest {
        customer_id: caller.customer_id.to_string(),
        id: path_uuid("id", &id)?,
        participant_id: path_uuid("participant_id", &participant_id)?,
    };
    let chat = app.chat.clone().remove_participant(rid.grpc(req)).await?;
    Ok(Json(chat.into_inner().into()))
}
