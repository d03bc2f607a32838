//! `/v1.0/chatrooms...` (customer level) and `/v1.0/service_agents/chatrooms...` (the calling
//! agent's own chatrooms). One set of handlers: the agent variants pass the agent as the owner
//! every call is limited to.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{ChatroomJson, ListJson};
use proto::chat::v1 as pb;
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
        .route("/chatrooms", get(list).post(create))
        .route("/chatrooms/{id}", get(read).put(update).delete(remove))
        .route(
            "/service_agents/chatrooms",
            get(agent_list).post(agent_create),
        )
        .route(
            "/service_agents/chatrooms/{id}",
            get(agent_read).put(agent_update).delete(agent_remove),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    list,
    create,
    read,
    update,
    remove,
    agent_list,
    agent_create,
    agent_read,
    agent_update,
    agent_remove
))]
pub(super) struct Api;

type ChatroomReply = Result<Json<ChatroomJson>, ApiError>;

async fn list_in(
    app: AppState,
    scope: Scope,
    rid: RequestId,
    query: QueryParams,
    owner_filter: Option<String>,
) -> Result<Json<ListJson<ChatroomJson>>, ApiError> {
    let req = pb::ListChatroomsRequest {
        customer_id: scope.customer_id,
        owner_id: scope.owner_id.or(owner_filter),
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

async fn read_in(app: AppState, scope: Scope, rid: RequestId, id: String) -> ChatroomReply {
    let req = pb::GetChatroomRequest {
        customer_id: scope.customer_id,
        id,
        owner_id: scope.owner_id,
    };
    let room = app.chat.clone().get_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}

/// Fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
struct UpdateChatroom {
    #[schema(max_length = 1000)]
    name: Option<String>,
    #[schema(max_length = 10000)]
    detail: Option<String>,
}

async fn update_in(
    app: AppState,
    scope: Scope,
    rid: RequestId,
    id: String,
    body: UpdateChatroom,
) -> ChatroomReply {
    let req = pb::UpdateChatroomRequest {
        customer_id: scope.customer_id,
        id,
        owner_id: scope.owner_id,
        name: body.name,
        detail: body.detail,
    };
    let room = app.chat.clone().update_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}

async fn remove_in(app: AppState, scope: Scope, rid: RequestId, id: String) -> ChatroomReply {
    let req = pb::DeleteChatroomRequest {
        customer_id: scope.customer_id,
        id,
        owner_id: scope.owner_id,
    };
    let room = app.chat.clone().delete_chatroom(rid.grpc(req)).await?;
    Ok(Json(room.into_inner().into()))
}

#[derive(Debug, Deserialize, ToSchema)]
struct CreateChatroom {
    /// The other agents (the caller is added); one other makes a normal chat, and for an
    /// existing pair its chatroom is returned.
    #[schema(value_type = Vec<uuid::Uuid>, required = true, min_items = 1, max_items = 999)]
    participant_ids: Option<Vec<uuid::Uuid>>,
    #[schema(max_length = 1000)]
    name: Option<String>,
    #[schema(max_length = 10000)]
    detail: Option<String>,
}

/// Whose chatrooms to list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct OwnerFilter {
    /// Only this agent's chatrooms.
    owner_id: Option<uuid::Uuid>,
}

/// Opens a chat as the agent and returns the agent's chatroom of it.
async fn create_as(
    app: AppState,
    caller: Caller,
    agent: AgentIdentity,
    meta: CallMeta,
    body: CreateChatroom,
) -> ChatroomReply {
    let req = pb::CreateChatroomRequest {
        customer_id: caller.customer_id.to_string(),
        agent_id: agent.id.to_string(),
        participant_ids: super::required("participant_ids", body.participant_ids)?
            .iter()
            .map(uuid::Uuid::to_string)
            .collect(),
        name: body.name.unwrap_or_default(),
        detail: body.detail.unwrap_or_default(),
    };
    let room = app
        .chat
        .clone()
        .create_chatroom(meta.grpc(req, &caller))
        .await?;
    Ok(Json(room.into_inner().into()))
}

// Customer level.

#[utoipa::path(get, path = "/v1.0/chatrooms", tag = "chatrooms", params(OwnerFilter, PageParams),
    responses((status = 200, description = "A page of the customer's chatrooms, newest first", body = ListJson<ChatroomJson>)))]
async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroomJson>>, ApiError> {
    let owner = query.uuid("owner_id")?;
    list_in(app, Scope::customer(&caller), rid, query, owner).await
}

/// Opens a chat as the calling agent (needs an agent identity with admin or manager rights).
#[utoipa::path(post, path = "/v1.0/chatrooms", tag = "chatrooms", request_body = CreateChatroom,
    responses((status = 200, description = "The caller's chatroom of the chat", body = ChatroomJson)))]
async fn create(
    State(app): State<AppState>,
    AdminAgent(caller, agent): AdminAgent,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChatroom>,
) -> ChatroomReply {
    create_as(app, caller, agent, meta, body).await
}

#[utoipa::path(get, path = "/v1.0/chatrooms/{id}", tag = "chatrooms", params(IdParam),
    responses((status = 200, description = "The chatroom", body = ChatroomJson)))]
async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    read_in(app, Scope::customer(&caller), rid, id).await
}

#[utoipa::path(put, path = "/v1.0/chatrooms/{id}", tag = "chatrooms", params(IdParam), request_body = UpdateChatroom,
    responses((status = 200, description = "The renamed chatroom", body = ChatroomJson)))]
async fn update(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateChatroom>,
) -> ChatroomReply {
    update_in(app, Scope::customer(&caller), rid, id, body).await
}

#[utoipa::path(delete, path = "/v1.0/chatrooms/{id}", tag = "chatrooms", params(IdParam),
    responses((status = 200, description = "The deleted chatroom, with `tm_delete` set", body = ChatroomJson)))]
async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    remove_in(app, Scope::customer(&caller), rid, id).await
}

// The calling agent's own chatrooms.

#[utoipa::path(get, path = "/v1.0/service_agents/chatrooms", tag = "service_agents", params(PageParams),
    responses((status = 200, description = "A page of the calling agent's chatrooms, newest first", body = ListJson<ChatroomJson>)))]
async fn agent_list(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<ChatroomJson>>, ApiError> {
    list_in(app, Scope::agent(&caller, &agent), rid, query, None).await
}

#[utoipa::path(post, path = "/v1.0/service_agents/chatrooms", tag = "service_agents", request_body = CreateChatroom,
    responses((status = 200, description = "The calling agent's chatroom of the new (or existing) chat", body = ChatroomJson)))]
async fn agent_create(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateChatroom>,
) -> ChatroomReply {
    create_as(app, caller, agent, meta, body).await
}

#[utoipa::path(get, path = "/v1.0/service_agents/chatrooms/{id}", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The calling agent's chatroom", body = ChatroomJson)))]
async fn agent_read(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    read_in(app, Scope::agent(&caller, &agent), rid, id).await
}

#[utoipa::path(put, path = "/v1.0/service_agents/chatrooms/{id}", tag = "service_agents", params(IdParam), request_body = UpdateChatroom,
    responses((status = 200, description = "The renamed chatroom", body = ChatroomJson)))]
async fn agent_update(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateChatroom>,
) -> ChatroomReply {
    update_in(app, Scope::agent(&caller, &agent), rid, id, body).await
}

#[utoipa::path(delete, path = "/v1.0/service_agents/chatrooms/{id}", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The deleted chatroom, with `tm_delete` set", body = ChatroomJson)))]
async fn agent_remove(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> ChatroomReply {
    remove_in(app, Scope::agent(&caller, &agent), rid, id).await
}
