//! webhook-manager's errors: the services' shared `ServiceError`, mapped to gRPC statuses in
//! one place (`common::error`).

pub use common::error::ServiceError as WebhookError;

pub fn parse_id(field: &str, value: &str) -> Result<String, WebhookError> {
    common::validate::id(field, value).map_err(WebhookError::InvalidArgument)
}
