//! The REST endpoints under `/v1.0`.

mod chatrooms;
mod chats;

use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    chats::router().merge(chatrooms::router())
}

/// Requires a body field the contract makes mandatory.
fn required<T>(field: &str, value: Option<T>) -> Result<T, crate::error::ApiError> {
    value.ok_or_else(|| crate::error::ApiError::invalid(format!("{field}: required")))
}
