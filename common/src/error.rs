use crate::db::DbError;
use crate::idempotency::IdempotencyError;
use crate::page::PageError;

/// Everything a service call can fail with (chat-manager's `ChatError` and message-manager's
/// `MessageError` are this type); `From<ServiceError> for tonic::Status` is the one place these
/// become wire errors.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such resource visible to the caller (also another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this at all (an agent editing a message it did not send).
    #[error("{0}")]
    PermissionDenied(String),
    /// A second live normal chat for a pair; an idempotency key reused with another request.
    #[error("{0}")]
    Conflict(String),
    /// A concurrent request with the same idempotency key won: run the call again to replay.
    #[error("retry")]
    Retry,
    /// A local view cannot vouch for the answer: the service refreshes it and runs the call
    /// again (never sent to a caller).
    #[error("stale view: {0}")]
    Stale(String),
    /// Storage, or another service that is needed, cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        ServiceError::NotFound(format!("{what} not found"))
    }
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => ServiceError::Unavailable(m),
            DbError::Query(q) => ServiceError::from(q),
        }
    }
}

impl From<diesel::result::Error> for ServiceError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => ServiceError::Unavailable(info.message().to_owned()),
            // The server going away mid-statement (a restart, a fast shutdown) reaches diesel
            // as an error of unknown kind; libpq's wording is all that tells it apart.
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if is_connection_lost(info.message()) || is_timeout(info.message()) =>
            {
                ServiceError::Unavailable(info.message().to_owned())
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

/// PostgreSQL's messages for a statement cancelled by `statement_timeout` or `lock_timeout`
/// (SQLSTATE 57014, 55P03; diesel passes neither code on): the database is too busy or a
/// lock is held, which is transient, not the request's fault.
fn is_timeout(message: &str) -> bool {
    message.contains("canceling statement due to statement timeout")
        || message.contains("canceling statement due to lock timeout")
}

/// libpq's messages for a connection that ended or a server that is stopping.
fn is_connection_lost(message: &str) -> bool {
    const LOST: [&str; 5] = [
        "terminating connection",
        "server closed the connection",
        "connection to server",
        "no connection to the server",
        "the database system is shutting down",
    ];
    LOST.iter().any(|m| message.contains(m))
}

impl From<IdempotencyError> for ServiceError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => ServiceError::Conflict(e.to_string()),
            IdempotencyError::Invalid(_) => ServiceError::InvalidArgument(e.to_string()),
            IdempotencyError::Race => ServiceError::Retry,
            IdempotencyError::Db(d) => d.into(),
        }
    }
}

impl From<PageError> for ServiceError {
    fn from(e: PageError) -> Self {
        ServiceError::InvalidArgument(e.to_string())
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ServiceError::NotFound(m) => tonic::Status::not_found(m),
            ServiceError::Conflict(m) => tonic::Status::already_exists(m),
            ServiceError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            ServiceError::Retry => tonic::Status::aborted("concurrent request; retry"),
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "unavailable");
                tonic::Status::unavailable("a backing service is unavailable")
            }
            ServiceError::Stale(m) | ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
