//! JSON in and out. Bodies are JSON whatever their Content-Type says (the seed sends
//! `text/plain`), at most 1 MiB, and a parse error names the field it is about.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    ApiError::PayloadTooLarge(format!("body: larger than {MAX_BODY_BYTES} bytes"))
                } else {
                    ApiError::invalid(format!("body: could not be read: {e}"))
                }
            })?;
        parse(&bytes).map(JsonBody)
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
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // A syntax error belongs to the body as a whole, not to a field.
            return ApiError::invalid(format!("body: malformed JSON: {inner}"));
        }
        let field = match path.as_str() {
            "" | "." | "?" => "body",
            p => p,
        };
        ApiError::invalid(format!("{field}: {inner}"))
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("body: malformed JSON: {e}")))?;
    Ok(value)
}
