//! The REST endpoints under `/v1.0`.

mod chatmessages;
mod chatroommessages;
mod chatrooms;
mod chats;

use axum::Router;

use crate::app::AppState;
use crate::auth::{AgentIdentity, Caller};

pub fn router() -> Router<AppState> {
    chats::router()
        .merge(chatrooms::router())
        .merge(chatmessages::router())
        .merge(chatroommessages::router())
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
