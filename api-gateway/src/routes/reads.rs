//! `/v1.0/service_agents/chatrooms/{id}/read(s)` and `/v1.0/service_agents/unread`: the
//! calling agent's read state, its peers' in the same chat ("seen"), and its unread total.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::resources::{ListJson, ReadStateJson};
use proto::message::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::IdParam;
use crate::app::{AgentCaller, AppState, PathId, RequestId};
use crate::error::ApiError;
use crate::json::{Json, OptionalJsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/service_agents/chatrooms/{id}/read",
            get(read_state).put(mark_read),
        )
        .route("/service_agents/chatrooms/{id}/reads", get(read_states))
        .route("/service_agents/unread", get(unread))
}

#[derive(OpenApi)]
#[openapi(paths(read_state, mark_read, read_states, unread))]
pub(super) struct Api;

type ReadReply = Result<Json<ReadStateJson>, ApiError>;

/// Where to move the read point; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MarkRead {
    /// A message of the chatroom (its `messagechat_id`); without it, the room's newest live
    /// copy. An earlier message than the current read point leaves it as it is.
    #[schema(value_type = Option<uuid::Uuid>)]
    messagechat_id: Option<uuid::Uuid>,
}

/// What the calling agent has not read.
#[derive(Debug, Serialize, ToSchema)]
struct UnreadJson {
    /// Live chatrooms with at least one unread copy.
    chatrooms: i64,
    /// Unread copies in all of them.
    chatroommessages: i64,
}

#[utoipa::path(get, path = "/v1.0/service_agents/chatrooms/{id}/read", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The read state of the calling agent's chatroom", body = ReadStateJson)))]
async fn read_state(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> ReadReply {
    let req = pb::GetReadStateRequest {
        customer_id: caller.customer_id.to_string(),
        owner_id: agent.id.to_string(),
        chatroom_id: id,
    };
    let state = app.message.clone().get_read_state(rid.grpc(req)).await?;
    Ok(Json(state.into_inner().into()))
}

#[utoipa::path(put, path = "/v1.0/service_agents/chatrooms/{id}/read", tag = "service_agents", params(IdParam),
    request_body(content = MarkRead, description = "Optional"),
    responses((status = 200, description = "The read state, moved forward (pushed as `chatroom_read_updated` when it moved)", body = ReadStateJson)))]
async fn mark_read(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody<MarkRead>,
) -> ReadReply {
    let req = pb::MarkReadRequest {
        customer_id: caller.customer_id.to_string(),
        owner_id: agent.id.to_string(),
        chatroom_id: id,
        messagechat_id: body
            .unwrap_or_default()
            .messagechat_id
            .map(|m| m.to_string()),
    };
    let state = app.message.clone().mark_read(rid.grpc(req)).await?;
    Ok(Json(state.into_inner().into()))
}

#[utoipa::path(get, path = "/v1.0/service_agents/chatrooms/{id}/reads", tag = "service_agents", params(IdParam),
    responses((status = 200, description = "The read states of every live chatroom of the chat (who has seen what)", body = ListJson<ReadStateJson>)))]
async fn read_states(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
    PathId(id): PathId,
) -> Result<Json<ListJson<ReadStateJson>>, ApiError> {
    let req = pb::ListReadStatesRequest {
        customer_id: caller.customer_id.to_string(),
        owner_id: agent.id.to_string(),
        chatroom_id: id,
    };
    let res = app.message.clone().list_read_states(rid.grpc(req)).await?;
    Ok(Json(ListJson {
        result: res
            .into_inner()
            .read_states
            .into_iter()
            .map(ReadStateJson::from)
            .collect(),
        next_page_token: String::new(),
    }))
}

#[utoipa::path(get, path = "/v1.0/service_agents/unread", tag = "service_agents",
    responses((status = 200, description = "What the calling agent has not read, over all its chatrooms", body = UnreadJson)))]
async fn unread(
    State(app): State<AppState>,
    AgentCaller(caller, agent): AgentCaller,
    rid: RequestId,
) -> Result<Json<UnreadJson>, ApiError> {
    let req = pb::GetUnreadRequest {
        customer_id: caller.customer_id.to_string(),
        owner_id: agent.id.to_string(),
    };
    let res = app
        .message
        .clone()
        .get_unread(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(UnreadJson {
        chatrooms: res.chatrooms,
        chatroommessages: res.chatroommessages,
    }))
}
