//! The gateway's one error type and the one place it becomes an HTTP response:
//! `{"error": {"code": "...", "message": "..."}}` with the contract's status codes.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over the caller's request rate (or its address's failed authentications);
    /// `Retry-After` says when to come back.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// As many WebSockets open as the caller may hold.
    #[error("{0}")]
    TooManySockets(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ApiError::InvalidArgument(msg.into())
    }

    /// The machine code (`not_found`, `unavailable`, ...), also used in WebSocket error frames.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RateLimited { .. } | ApiError::TooManySockets(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// What every error answers with.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
struct ErrorDetail<'a> {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`, `not_found`, `conflict`,
    /// `request_timeout`, `payload_too_large`, `rate_limited`, `unavailable`, `internal`, ...
    #[schema(value_type = String)]
    code: &'a str,
    /// What went wrong, naming the field or parameter where there is one.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        let mut response = crate::json::response(status, &body);
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthenticated(e.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_owned();
        // A status with a source was made here from a transport failure (a connection reset
        // mid-call, say), not answered by the service: the outcome is unknown and a retry
        // (with the same Idempotency-Key) is the client's way out.
        if std::error::Error::source(&s).is_some() {
            tracing::warn!(code = ?s.code(), message = %msg, "upstream call broken off");
            return ApiError::Unavailable("a backing service is unavailable; try again".into());
        }
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                ApiError::InvalidArgument(msg)
            }
            Code::NotFound => ApiError::NotFound(msg),
            Code::AlreadyExists | Code::Aborted => ApiError::Conflict(msg),
            Code::PermissionDenied => ApiError::PermissionDenied(msg),
            Code::Unauthenticated => ApiError::Unauthenticated(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(code = ?s.code(), message = %msg, "upstream unavailable");
                ApiError::Unavailable("a backing service is unavailable; try again".into())
            }
            _ => {
                tracing::error!(code = ?s.code(), message = %msg, "upstream error");
                ApiError::Internal("internal error".into())
            }
        }
    }
}
