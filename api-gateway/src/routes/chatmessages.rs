//! `/v1.0/chatmessages...`: customer-level messages of a chat.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{AddressJson, ChatmessageJson, ListJson, MediaJson};
use proto::message::v1 as pb;
use serde::Deserialize;

use crate::app::{AppState, CallMeta, CustomerAdmin, PathId, QueryParams, RequestId};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chatmessages", get(list).post(create))
        .route("/chatmessages/{id}", get(read).delete(remove))
}

type MessageReply = Result<Json<ChatmessageJson>, ApiError>;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MessageTypeJson {
    Normal,
    System,
}

#[derive(Debug, Deserialize)]
struct CreateChatmessage {
    chat_id: Option<uuid::Uuid>,
    source: Option<AddressJson>,
    /// `normal` unless given.
    #[serde(rename = "type")]
    message_type: Option<MessageTypeJson>,
    text: Option<String>,
    medias: Option<Vec<MediaJson>>,
}

async fn create(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChatmessage>,
) -> MessageReply {
    let message_type = match body.message_type.unwrap_or(MessageTypeJson::Normal) {
        MessageTypeJson::Normal => pb::MessageType::Normal,
        MessageTypeJson::System => pb::MessageType::System,
    };
    let req = pb::CreateChatmessageRequest {
        customer_id: caller.customer_id.to_string(),
        chat_id: super::required("chat_id", body.chat_id)?.to_string(),
        source: Some(body.source.unwrap_or_default().into()),
        r#type: message_type as i32,
        text: body.text.unwrap_or_default(),
        medias: body
            .medias
            .unwrap_or_default()
            .into_iter()
            .map(pb::Media::from)
            .collect(),
    };
    let message = app
        .message
        .clone()
        .create_chatmessage(meta.grpc(req, &caller))
        .await?;
    Ok(Json(message.into_inner().into()))
}

async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatmessageJson>>, ApiError> {
    let req = pb::ListChatmessagesRequest {
        customer_id: caller.customer_id.to_string(),
        chat_id: query.required_uuid("chat_id")?,
        page: Some(query.message_page()?),
    };
    let res = app
        .message
        .clone()
        .list_chatmessages(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res
            .chatmessages
            .into_iter()
            .map(ChatmessageJson::from)
            .collect(),
        next_page_token: res.next_page_token,
    }))
}

async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> MessageReply {
    let req = pb::GetChatmessageRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let message = app.message.clone().get_chatmessage(rid.grpc(req)).await?;
    Ok(Json(message.into_inner().into()))
}

async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> MessageReply {
    let req = pb::DeleteChatmessageRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let message = app
        .message
        .clone()
        .delete_chatmessage(rid.grpc(req))
        .await?;
    Ok(Json(message.into_inner().into()))
}
