//! Keys taken from the environment (`JWT_SECRET`, `INTERNAL_AUTH_SECRET`): a process refuses
//! to start on one that is short, an example value, or a placeholder, naming the variable.
//! HMAC-SHA256 keys are guessable offline from one captured token when weak, and every example
//! value ever shipped in this repository is public.

/// The fewest bytes a key may have: the output size of HMAC-SHA256.
pub const MIN_SECRET_BYTES: usize = 32;

/// Values this repository showed as examples at some point (compose defaults, manifests, the
/// README): public, so never a key.
const EXAMPLE_VALUES: &[&str] = &[
    "change-me",
    "change-me-dev-secret",
    "FAKE-example-jwt-secret-replace-me",
    "integration-test-secret",
    "test-secret",
];

/// Parts of a value that mark a placeholder rather than a key (compared case-insensitively).
/// None of them can occur in hex or base64 output by chance in practice.
const PLACEHOLDER_MARKS: &[&str] = &[
    "change-me",
    "changeme",
    "replace-me",
    "replaceme",
    "your-secret",
    "fake-",
];

/// Fewest distinct bytes: a key of one repeated character (`aaaa...`) is no key.
const MIN_DISTINCT_BYTES: usize = 8;

/// Why a key was refused. The messages name the variable and say what to do, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    #[error(
        "{variable} is empty; set it to at least {MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`"
    )]
    Empty { variable: String },
    #[error(
        "{variable} has {len} bytes; use at least {MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`"
    )]
    TooShort { variable: String, len: usize },
    #[error(
        "{variable} is an example value shipped with this project (public); generate a key of your own, e.g. `openssl rand -hex 32`"
    )]
    Example { variable: String },
    #[error(
        "{variable} looks like a placeholder, not a key; generate one, e.g. `openssl rand -hex 32`"
    )]
    Placeholder { variable: String },
    #[error(
        "{variable} repeats too few characters to be a key; generate one, e.g. `openssl rand -hex 32`"
    )]
    LowVariety { variable: String },
}

/// `value` as a key, or why it is refused (naming `variable`).
pub fn check(variable: &str, value: &str) -> Result<(), WeakSecret> {
    let variable = variable.to_owned();
    if value.is_empty() {
        return Err(WeakSecret::Empty { variable });
    }
    if EXAMPLE_VALUES.contains(&value) {
        return Err(WeakSecret::Example { variable });
    }
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDER_MARKS.iter().any(|mark| lower.contains(mark)) {
        return Err(WeakSecret::Placeholder { variable });
    }
    if value.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::TooShort {
            variable,
            len: value.len(),
        });
    }
    let distinct = value
        .bytes()
        .collect::<std::collections::HashSet<u8>>()
        .len();
    if distinct < MIN_DISTINCT_BYTES {
        return Err(WeakSecret::LowVariety { variable });
    }
    Ok(())
}

/// A new random key: 32 random bytes as 64 hex digits (what `openssl rand -hex 32` prints).
pub fn generate() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_keys_are_refused_naming_the_variable_and_never_the_value() {
        let (thirty_one, repeated) = ("x".repeat(31), "ab".repeat(32));
        let cases = [
            ("", "is empty"),
            ("short", "has 5 bytes"),
            (thirty_one.as_str(), "has 31 bytes"),
            ("change-me", "example value"),
            ("change-me-dev-secret", "example value"),
            ("FAKE-example-jwt-secret-replace-me", "example value"),
            ("please-CHANGE-ME-0123456789abcdef0123456789", "placeholder"),
            ("replace-me-with-a-real-key-0123456789abcdef", "placeholder"),
            (repeated.as_str(), "too few characters"),
        ];
        for (value, needle) in cases {
            let err = check("JWT_SECRET", value).unwrap_err().to_string();
            assert!(err.starts_with("JWT_SECRET "), "{value:?}: {err}");
            assert!(err.contains(needle), "{value:?}: {err}");
            if value.len() > 3 {
                assert!(!err.contains(value), "the value is never printed: {err}");
            }
        }
    }

    #[test]
    fn generated_and_real_keys_pass() {
        let key = generate();
        assert_eq!(key.len(), 64);
        assert_eq!(check("JWT_SECRET", &key), Ok(()));
        assert_ne!(generate(), key);
        // `openssl rand -base64 32` output.
        assert_eq!(
            check("X", "q3Zc1xg1w6m1mGr8bUfh0kQm2y9V4p0hXcJt5n7sR2E="),
            Ok(())
        );
    }
}
