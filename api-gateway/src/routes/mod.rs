//! The REST endpoints under `/v1.0`.

mod chatmessages;
mod chatroommessages;
mod chatrooms;
mod chats;
mod reads;
mod webhooks;

use axum::Router;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::{AgentIdentity, Caller};

pub fn router() -> Router<AppState> {
    chats::router()
        .merge(chatrooms::router())
        .merge(chatmessages::router())
        .merge(chatroommessages::router())
        .merge(reads::router())
        .merge(webhooks::router())
}

/// The operations of every endpoint, for the OpenAPI document.
pub fn operations() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = chats::Api::openapi();
    doc.merge(chatrooms::Api::openapi());
    doc.merge(chatmessages::Api::openapi());
    doc.merge(chatroommessages::Api::openapi());
    doc.merge(reads::Api::openapi());
    doc.merge(webhooks::Api::openapi());
    doc
}

/// The `{id}` of a path (documentation; `PathId` reads it).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct IdParam {
    /// The resource's id.
    id: uuid::Uuid,
}

/// A list's paging parameters (documentation; `QueryParams::page` reads them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageParams {
    /// Items per page: 1 to 100 (larger is capped), 10 when left out.
    #[param(minimum = 1)]
    page_size: Option<i64>,
    /// The `next_page_token` of the previous page (opaque: anything else is 400); left out
    /// for the first page.
    page_token: Option<String>,
}

/// Requires a body field the contract makes mandatory.
fn required<T>(field: &str, value: Option<T>) -> Result<T, crate::error::ApiError> {
    value.ok_or_else(|| crate::error::ApiError::invalid(format!("{field}: required")))
}

/// Who the call is for: the tenant, and the owner it is limited to (agent endpoints).
pub(super) struct Scope {
    pub customer_id: String,
    pub owner_id: Option<String>,
}

impl Scope {
    pub fn customer(caller: &Caller) -> Self {
        Scope {
            customer_id: caller.customer_id.to_string(),
            owner_id: None,
        }
    }
    pub fn agent(caller: &Caller, agent: &AgentIdentity) -> Self {
        Scope {
            customer_id: caller.customer_id.to_string(),
            owner_id: Some(agent.id.to_string()),
        }
    }
}
