//! JSON in and out. Bodies are JSON whatever their Content-Type says (the seed sends
//! `text/plain`), at most 1 MiB each and 64 MiB being read at once across the gateway, read
//! within 10 s, and a parse error names the field it is about.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Request bodies held in memory at once, across all connections: beyond it a request is
/// turned away (503) rather than letting many large uploads exhaust memory.
pub const MAX_BUFFERED_BODY_BYTES: usize = 64 * MAX_BODY_BYTES;

/// How long a request body may take to arrive: a body that trickles in (or stalls) must not
/// hold its share of the budget for ever; past it the request is 408 `request_timeout`.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway-wide budget for request bodies being read, in KiB.
pub struct BodyBudget(tokio::sync::Semaphore);

impl BodyBudget {
    pub const fn new(bytes: usize) -> Self {
        BodyBudget(tokio::sync::Semaphore::const_new(bytes / 1024))
    }

    /// Reserves room for a body of `bytes` (its Content-Length, or the largest accepted when
    /// unknown); `None` when the budget is spent.
    pub fn reserve(&self, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        self.0.try_acquire_many(kib).ok()
    }
}

/// The process's budget (one gateway per process).
pub static BODY_BUDGET: BodyBudget = BodyBudget::new(MAX_BUFFERED_BODY_BYTES);

/// A 200 response with `value` as JSON.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        response(StatusCode::OK, &self.0)
    }
}

pub fn response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut res = Response::new(Body::from(bytes));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            let mut res = Response::new(Body::from(
                r#"{"error":{"code":"internal","message":"internal error"}}"#,
            ));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        }
    }
}

/// A request body parsed as JSON into `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        parse_object(&read_body(req).await?).map(JsonBody)
    }
}

/// A request body parsed as JSON into `T`, where the body may be left out (`None`).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req).await?;
        if !bytes.iter().any(|b| !b.is_ascii_whitespace()) {
            return Ok(OptionalJsonBody(None));
        }
        parse_object(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// The body, within the size, budget and time limits.
async fn read_body(req: Request) -> Result<axum::body::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(format!(
            "body: larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let _room = BODY_BUDGET
        .reserve(declared.unwrap_or(MAX_BODY_BYTES))
        .ok_or_else(|| {
            ApiError::Unavailable("body: too many large requests at once; try again".into())
        })?;
    let reading = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES);
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, reading)
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "body: not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            if is_length_limit(&e) {
                ApiError::PayloadTooLarge(format!("body: larger than {MAX_BODY_BYTES} bytes"))
            } else {
                ApiError::invalid(format!("body: could not be read: {e}"))
            }
        })?;
    Ok(bytes)
}

/// The body as a JSON object (an empty one is refused: `body: required`).
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body of the API is an object; serde would also read a struct from an array
    // (`[null, null]`, by position), which no client means.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => parse(bytes),
        None => Err(ApiError::invalid("body: required (a JSON object)")),
        Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::invalid("body: must be a JSON object")),
            // Form fields (`curl -d name=x`), say: read as JSON whatever the content type.
            Err(e) => Err(ApiError::invalid(format!(
                "body: must be JSON (an object such as {{\"name\": \"x\"}}), whatever \
                     the Content-Type says; this is not JSON ({e})"
            ))),
        },
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Parses JSON, reporting the path of the offending field (`participant_ids[1]: ...`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_as(bytes, "body")
}

/// As `parse`, naming the document as a whole `whole` (`body`, a WebSocket `frame`) where an
/// error is not about one field.
pub fn parse_as<T: DeserializeOwned>(bytes: &[u8], whole: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // A syntax error belongs to the body as a whole, not to a field.
            return ApiError::invalid(format!("{whole}: malformed JSON: {inner}"));
        }
        let field = match path.as_str() {
            "" | "." | "?" => whole,
            p => p,
        };
        ApiError::invalid(format!("{field}: {inner}"))
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("{whole}: malformed JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod body_budget_tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_returned() {
        let budget = BodyBudget::new(2 * MAX_BODY_BYTES);
        let first = budget.reserve(MAX_BODY_BYTES).expect("room for one");
        let second = budget.reserve(MAX_BODY_BYTES).expect("room for two");
        assert!(budget.reserve(1).is_none(), "spent");
        drop(first);
        assert!(
            budget.reserve(100).is_some(),
            "returned when a body is done"
        );
        drop(second);
    }
}
