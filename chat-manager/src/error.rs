use common::db::DbError;
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
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ChatError::invalid(format!("{field}: not a valid UUID: {value:?}")))
}

/// Text that both storage backends can keep.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    if value.contains('\0') {
        return Err(ChatError::invalid(format!(
            "{field}: must not contain U+0000"
        )));
    }
    if value.chars().count() > max_chars {
        return Err(ChatError::invalid(format!(
            "{field}: longer than {max_chars} characters"
        )));
    }
    Ok(())
}
