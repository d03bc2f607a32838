//! `/v1.0/chats...`: customer-level chat management.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use common::resources::{ChatJson, ListJson};
use proto::chat::v1 as pb;
use serde::Deserialize;

use super::required;
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

type ChatReply = Result<Json<ChatJson>, ApiError>;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChatTypeJson {
    Normal,
    Group,
}

#[derive(Debug, Deserialize)]
struct CreateChat {
    #[serde(rename = "type")]
    chat_type: Option<ChatTypeJson>,
    owner_id: Option<uuid::Uuid>,
    participant_ids: Option<Vec<uuid::Uuid>>,
    name: Option<String>,
    detail: Option<String>,
}

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

#[derive(Debug, Deserialize)]
struct UpdateChat {
    name: Option<String>,
    detail: Option<String>,
}

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

#[derive(Debug, Deserialize)]
struct ChangeOwner {
    owner_id: Option<uuid::Uuid>,
}

#[derive(Debug, Deserialize)]
struct ChangeRoomOwner {
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

#[derive(Debug, Deserialize)]
struct AddParticipant {
    participant_id: Option<uuid::Uuid>,
}

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
