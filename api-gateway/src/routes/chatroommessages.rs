//! `/v1.0/chatroommessages...` (customer level) and `/v1.0/service_agents/chatroommessages...`
//! (the calling agent's own copies). Posting always posts as the calling agent, into one of
//! the agent's own chatrooms.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{ChatroommessageJson, ListJson, MediaJson};
use proto::message::v1 as pb;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{IdParam, PageParams, Scope};
use crate::app::{
    AdminAgent, AgentCaller, AppState, CallMeta, CustomerAdmin, PathId, QueryParams, RequestId,
};
use crate::auth::{AgentIdentity, Caller};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chatroommessages", get(list).post(create))
        .route("/chatroommessages/{id}", get(read).delete(remove))
        .route(
            "/service_agents/chatroommessages",
            get(agent_list).post(agent_create),
        )
        .route(
            "/service_agents/chatroommessages/{id}",
            get(agent_read).put(agent_update).delete(agent_remove),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    create,
    list,
    read,
    remove,
    agent_create,
    agent_list,
    agent_read,
    agent_update,
    agent_remove
))]
pub(super) struct Api;

type CopyReply = Result<Json<ChatroommessageJson>, ApiError>;

/// Posts as the calling agent into one of its chatrooms; a message needs `text` or `medias`.
#[derive(Debug, Deserialize, ToSchema)]
struct CreateChatroommessage {
    #[schema(value_type = uuid::Uuid, required = true)]
    chatroom_id: Option<uuid::Uuid>,
    #[schema(max_length = 65536)]
    text: Option<String>,
    #[schema(max_items = 20)]
    medias: Option<Vec<MediaJson>>,
}

/// Which chatroom's messages to list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ChatroomFilter {
    chatroom_id: uuid::Uuid,
}

async fn create_as(
    app: AppState,
    caller: Caller,
    agent: AgentIdentity,
    meta: CallMeta,
    body: CreateChatroommessage,
) -> CopyReply {
    let req = pb::CreateChatroommessageRequest {
        customer_id: caller.customer_id.to_string(),
        chatroom_id: super::required("chatroom_id", body.chatroom_id)?.to_string(),
        owner_id: agent.id.to_string(),
        owner_name: agent.name.clone(),
        text: body.text.unwrap_or_default(),
        medias: body
            .medias
            .unwrap_or_default()
            .into_iter()
            .map(pb::Media::from)
            .collect(),
    };
    let copy = app
        .message
        .clone()
        .create_chatroommessage(meta.grpc(req, &caller))
        .await?;
    Ok(Json(copy.into_inner().into()))
}

async fn list_in(
    app: AppState,
    scope: Scope,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroommessageJson>>, ApiError> {
    let req = pb::ListChatroommessagesRequest {
        customer_id: scope.customer_id,
        chatroom_id: query.required_uuid("chatroom_id")?,
        owner_id: scope.owner_id,
        page: Some(query.message_page()?),
    };
    let res = app
        .message
        .clone()
        .list_chatroommessages(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res
            .chatroommessages
            .into_iter()
            .map(ChatroommessageJson::from)
            .collect(),
        next_page_token: res.next_page_token,
    }))
}

async fn read_in(app: AppState, scope: Scope, rid: RequestId, id: String) -> CopyReply {
    let req = pb::GetChatroommessageRequest {
        customer_id: scope.customer_id,
        id,
        owner_id: scope.owner_id,
    };
    let copy = app
        .message
        .clone()
        .get_chatroommessage(rid.grpc(req))
        .await?;
    Ok(Json(copy.into_inner().into()))
}

async fn remove_in(app: AppState, scope: Scope, rid: RequestId, id: String) -> CopyReply {
    let req = pb::DeleteChatroommessageRequest {
        customer_id: scope.customer_id,
        id,
        owner_id: scope.owner_id,
    };
    let copy = app
        .message
        .clone()
        .delete_chatroommessage(rid.grpc(req))
        .await?;
    Ok(Json(copy.into_inner().into()))
}

// Customer level.

#[utoipa::path(post, path = "/v1.0/chatroommessages", tag = "chatroommessages", request_body = CreateChatroommessage,
    responses((status = 200, description = "The caller's copy of the new message", body = ChatroommessageJson)))]
async fn create(
    State(app): State<AppState>,
    AdminAgent(caller, agent): AdminAgent,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChatroommessage>,
) -> CopyReply {
    create_as(app, caller, agent, meta, body).await
}

#[utoipa::path(get, path = "/v1.0/chatroommessages", tag = "chatroommessages", params(ChatroomFilter, PageParams),
    responses((status = 200, description = "A page of the chatroom's messages, newest first", body = ListJson<ChatroommessageJson>)))]
async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroommessageJson>>, ApiError> {
    list_in(app, Scope::customer(&caller), rid, query).await
}

#[utoipa::path(get, path = "/v1.0/chatroommessages/{id}", tag = "chatroommessages", params(IdParam),
    responses((status = 200, description = "The chatroom's copy of a message", body = ChatroommessageJson)))]
async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> CopyReply {
    read_in(app, Scope::customer(&caller), rid, id).await
}

#[utoipa::path(delete, path = "/v1.0/chatroommessages/{id}", tag = "chatroommessages", params(IdParam),
    responses((status = 200, description = "The deleted copy, with `tm_delete` set", body = ChatroommessageJson)))]
async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> CopyReply {
    remove_in(app, Scope::customer(&caller), rid, id).await
}

// The calling agent's own.

#[utoipa::path(post, path = "/v1.0/service_agents/chatroommessages", tag = "service_agents", request_body = CreateChatroommessage,
    responses((status = 200, description = "The caller's copy of the new message", body = ChatroommessageJson)))]
async fn agent_create(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChatroommessage>,
) -> CopyReply {
    create_as(app, caller, agent, meta, body).await
}

#[utoipa::path(get, path = "/v1.0/service_agents/chatroommessages", tag = "service_agents", params(ChatroomFilter, PageParams),
    responses((status = 200, description = "A page of the calling agent's chatroom's messages, newest first", body = ListJson<ChatroommessageJson>)))]
async fn agent_list(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroommessageJson>>, ApiError> {
    list_in(app, Scope::agent(&caller, &agent), rid, query).await
}

#[utoipa::path(get, path = "/v1.0/service_agents/chatroommessages/{id}", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The calling agent's copy", body = ChatroommessageJson)))]
async fn agent_read(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> CopyReply {
    read_in(app, Scope::agent(&caller, &agent), rid, id).await
}

#[utoipa::path(put, path = "/v1.0/service_agents/chatroommessages/{id}", tag = "service_agents", params(IdParam),
    request_body = super::chatmessages::EditMessage,
    responses((status = 200, description = "The calling agent's copy of the edited message (every live copy changed with it); only the agent who sent it may (403 otherwise)", body = ChatroommessageJson)))]
async fn agent_update(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<super::chatmessages::EditMessage>,
) -> CopyReply {
    let (text, medias) = body.into_parts();
    let req = pb::UpdateChatroommessageRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        owner_id: agent.id.to_string(),
        text,
        medias,
    };
    let copy = app
        .message
        .clone()
        .update_chatroommessage(rid.grpc(req))
        .await?;
    Ok(Json(copy.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1.0/service_agents/chatroommessages/{id}", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The deleted copy, with `tm_delete` set", body = ChatroommessageJson)))]
async fn agent_remove(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> CopyReply {
    remove_in(app, Scope::agent(&caller, &agent), rid, id).await
}
