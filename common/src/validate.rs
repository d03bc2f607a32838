//! Input checks both services apply to what arrives over gRPC. Errors are messages that name
//! the field, for an INVALID_ARGUMENT.

/// A UUID from the wire, normalised to lowercase hyphenated form.
pub fn id(field: &str, value: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{field}: not a valid UUID: {value:?}"))
}

/// Text both storage backends can keep, within a length in characters.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{field}: must not contain U+0000"));
    }
    if value.chars().count() > max_chars {
        return Err(format!("{field}: longer than {max_chars} characters"));
    }
    Ok(())
}

/// An absolute http or https URL.
pub fn http_url(field: &str, value: &str) -> Result<(), String> {
    let ok = value
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
        .and_then(|u| u.host().map(|h| !h.is_empty()))
        .unwrap_or(false);
    if ok {
        text(field, value, 2048)
    } else {
        Err(format!("{field}: must be an absolute http or https URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalised_or_refused() {
        assert_eq!(
            id("x", "E8B2E976-F043-44C8-BB89-E214E225E813").unwrap(),
            "e8b2e976-f043-44c8-bb89-e214e225e813"
        );
        assert!(id("owner_id", "nope").unwrap_err().starts_with("owner_id:"));
    }

    #[test]
    fn text_refuses_nul_and_overlong() {
        assert!(text("name", "ok", 5).is_ok());
        assert!(text("name", "a\0b", 5).unwrap_err().contains("U+0000"));
        assert!(text("name", "ééééééé", 5).unwrap_err().contains("longer"));
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(http_url("u", "https://example.com/a?b=c").is_ok());
        assert!(http_url("u", "http://example.com").is_ok());
        assert!(http_url("u", "ftp://example.com").is_err());
        assert!(http_url("u", "/relative").is_err());
        assert!(http_url("u", "example.com").is_err());
        assert!(http_url("u", "").is_err());
    }
}
