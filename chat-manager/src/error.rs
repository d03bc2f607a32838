//! chat-manager's errors: the services' shared `ServiceError`, mapped to gRPC statuses in one
//! place (`common::error`).

pub use common::error::ServiceError as ChatError;

/// A UUID from the wire, normalised to lowercase hyphenated form.
pub fn parse_id(field: &str, value: &str) -> Result<String, ChatError> {
    common::validate::id(field, value).map_err(ChatError::InvalidArgument)
}

/// Text that both storage backends can keep.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    common::validate::text(field, value, max_chars).map_err(ChatError::InvalidArgument)
}
