//! `/v1.0/chatmessages...`: customer-level messages of a chat.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{AddressJson, ChatmessageJson, ListJson, MediaJson};
use proto::message::v1 as pb;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{IdParam, PageParams};
use crate::app::{AppState, CallMeta, CustomerAdmin, PathId, QueryParams, RequestId};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chatmessages", get(list).post(create))
        .route("/chatmessages/{id}", get(read).put(update).delete(remove))
}

#[derive(OpenApi)]
#[openapi(paths(create, list, read, update, remove))]
pub(super) struct Api;

type MessageReply = Result<Json<ChatmessageJson>, ApiError>;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum MessageTypeJson {
    Normal,
    System,
}

/// A message needs `text` or `medias`.
#[derive(Debug, Deserialize, ToSchema)]
struct CreateChatmessage {
    #[schema(value_type = uuid::Uuid, required = true)]
    chat_id: Option<uuid::Uuid>,
    /// Who it is from: for an `agent` source, a participant of the chat.
    source: Option<AddressJson>,
    /// `normal` unless given.
    #[serde(rename = "type")]
    message_type: Option<MessageTypeJson>,
    #[schema(max_length = 65536)]
    text: Option<String>,
    #[schema(max_items = 20)]
    medias: Option<Vec<MediaJson>>,
}

/// Which chat's messages to list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ChatFilter {
    chat_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/v1.0/chatmessages", tag = "chatmessages", request_body = CreateChatmessage,
    responses((status = 200, description = "The message; a copy is in every live chatroom of the chat", body = ChatmessageJson)))]

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

#[utoipa::path(get, path = "/v1.0/chatmessages", tag = "chatmessages", params(ChatFilter, PageParams),
    responses((status = 200, description = "A page of the chat's messages, newest first", body = ListJson<ChatmessageJson>)))]
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

#[utoipa::path(get, path = "/v1.0/chatmessages/{id}", tag = "chatmessages", params(IdParam),
    responses((status = 200, description = "The message", body = ChatmessageJson)))]
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

/// New content, checked as on creation; fields left out stay (a message keeps text or medias).
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct EditMessage {
    #[schema(max_length = 65536)]
    pub text: Option<String>,
    /// Replaces the medias as a whole.
    #[schema(max_items = 20)]
    pub medias: Option<Vec<MediaJson>>,
}

impl EditMessage {
    pub fn into_parts(self) -> (Option<String>, Option<pb::Medias>) {
        let medias = self.medias.map(|m| pb::Medias {
            medias: m.into_iter().map(pb::Media::from).collect(),
        });
        (self.text, medias)
    }
}

#[utoipa::path(put, path = "/v1.0/chatmessages/{id}", tag = "chatmessages", params(IdParam), request_body = EditMessage,
    responses((status = 200, description = "The edited message; every live copy of it changed with it", body = ChatmessageJson)))]
async fn update(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<EditMessage>,
) -> MessageReply {
    let (text, medias) = body.into_parts();
    let req = pb::UpdateChatmessageRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        text,
        medias,
    };
    let message = app
        .message
        .clone()
        .update_chatmessage(rid.grpc(req))
        .await?;
    Ok(Json(message.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1.0/chatmessages/{id}", tag = "chatmessages", params(IdParam),
    responses((status = 200, description = "The deleted message, with `tm_delete` set", body = ChatmessageJson)))]
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
