//! `/v1.0/chatrooms...`: customer-level chatroom management.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{ChatroomJson, ListJson};
use proto::chat::v1 as pb;
use serde::Deserialize;

use crate::app::{AppState, CustomerAdmin, PathId, QueryParams, RequestId};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chatrooms", get(list))
        .route("/chatrooms/{id}", get(read).put(update).delete(remove))
}

type ChatroomReply = Result<Json<ChatroomJson>, ApiError>;

async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroomJson>>, ApiError> {
    let req = pb::ListChatroomsRequest {
        customer_id: caller.customer_id.to_string(),
        owner_id: query.uuid("owner_id")?,
        page: Some(query.page()?),
    };
    let res = app
        .chat
        .clone()
        .list_chatrooms(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res.chatrooms.into_iter().map(ChatroomJson::from).collect(),
        next_page_token: res.next_page_token,
    }))
}

async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    let req = pb::GetChatroomRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        owner_id: None,
    };
    let room = app.chat.clone().get_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}

#[derive(Debug, Deserialize)]
struct UpdateChatroom {
    name: Option<String>,
    detail: Option<String>,
}

async fn update(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateChatroom>,
) -> ChatroomReply {
    let req = pb::UpdateChatroomRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        owner_id: None,
        name: body.name,
        detail: body.detail,
    };
    let room = app.chat.clone().update_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}

async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    let req = pb::DeleteChatroomRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        owner_id: None,
    };
    let room = app.chat.clone().delete_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}
