use common::db::DbError;
use common::idempotency::IdempotencyError;
use common::page::PageError;

/// Everything a chat-manager call can fail with; `From<ChatError> for tonic::Status` is the one
/// place these become wire errors.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such resource visible to the caller (also another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// A second live normal chat for the same pair.
    #[error("{0}")]
    Conflict(String),
    /// A concurrent request with the same idempotency key won: run the call again to replay.
    #[error("retry")]
    Retry,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChatError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ChatError::InvalidArgument(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        ChatError::NotFound(format!("{what} not found"))
    }
}

impl From<DbError> for ChatError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => ChatError::Unavailable(m),
            DbError::Query(q) => ChatError::from(q),
        }
    }
}

impl From<diesel::result::Error> for ChatError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                ChatError::Unavailable(info.message().to_owned())
            }
            other => ChatError::Internal(other.to_string()),
        }
    }
}

impl common::store::StoreError for ChatError {
    fn is_retry(&self) -> bool {
        matches!(self, ChatError::Retry)
    }
    fn corrupt(message: String) -> Self {
        ChatError::Internal(message)
    }
}

impl From<IdempotencyError> for ChatError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => ChatError::Conflict(e.to_string()),
            IdempotencyError::Invalid(_) => ChatError::InvalidArgument(e.to_string()),
            IdempotencyError::Race => ChatError::Retry,
            IdempotencyError::Db(d) => d.into(),
        }
    }
}

impl From<PageError> for ChatError {
    fn from(e: PageError) -> Self {
        ChatError::InvalidArgument(e.to_string())
    }
}

impl From<ChatError> for tonic::Status {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ChatError::NotFound(m) => tonic::Status::not_found(m),
            ChatError::Conflict(m) => tonic::Status::already_exists(m),
            ChatError::Retry => tonic::Status::aborted("concurrent request; retry"),
            ChatError::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                tonic::Status::unavailable("storage unavailable")
            }
            ChatError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

/// A UUID from the wire, normalised to lowercase hyphenated form.
pub fn parse_id(field: &str, value: &str) -> Result<String, ChatError> {
    common::validate::id(field, value).map_err(ChatError::InvalidArgument)
}

/// Text that both storage backends can keep.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    common::validate::text(field, value, max_chars).map_err(ChatError::InvalidArgument)
}
