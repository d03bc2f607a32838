use common::db::DbError;
use common::idempotency::IdempotencyError;
use common::page::PageError;

/// Everything a message-manager call can fail with; `From<MessageError> for tonic::Status` is
/// the one place these become wire errors.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such resource visible to the caller (also another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key reused with a different request.
    #[error("{0}")]
    Conflict(String),
    /// A concurrent request with the same idempotency key won: run the call again to replay.
    #[error("retry")]
    Retry,
    /// Storage, or chat-manager when it is needed, cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl MessageError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        MessageError::InvalidArgument(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        MessageError::NotFound(format!("{what} not found"))
    }
}

impl From<DbError> for MessageError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => MessageError::Unavailable(m),
            DbError::Query(q) => MessageError::from(q),
        }
    }
}

impl From<diesel::result::Error> for MessageError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                MessageError::Unavailable(info.message().to_owned())
            }
            other => MessageError::Internal(other.to_string()),
        }
    }
}

impl common::store::StoreError for MessageError {
    fn is_retry(&self) -> bool {
        matches!(self, MessageError::Retry)
    }
    fn corrupt(message: String) -> Self {
        MessageError::Internal(message)
    }
}

impl From<IdempotencyError> for MessageError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => MessageError::Conflict(e.to_string()),
            IdempotencyError::Invalid(_) => MessageError::InvalidArgument(e.to_string()),
            IdempotencyError::Race => MessageError::Retry,
            IdempotencyError::Db(d) => d.into(),
        }
    }
}

impl From<PageError> for MessageError {
    fn from(e: PageError) -> Self {
        MessageError::InvalidArgument(e.to_string())
    }
}

impl From<MessageError> for tonic::Status {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            MessageError::NotFound(m) => tonic::Status::not_found(m),
            MessageError::Conflict(m) => tonic::Status::already_exists(m),
            MessageError::Retry => tonic::Status::aborted("concurrent request; retry"),
            MessageError::Unavailable(m) => {
                tracing::warn!(error = %m, "unavailable");
                tonic::Status::unavailable("a backing service is unavailable")
            }
            MessageError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

pub fn parse_id(field: &str, value: &str) -> Result<String, MessageError> {
    common::validate::id(field, value).map_err(MessageError::InvalidArgument)
}
