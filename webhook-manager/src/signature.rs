//! How a delivery is signed: the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the key being
//! the base64 after `whsec_`), and VoIPbin's own (`X-VoIPBIN-Signature: sha256=<hex
//! HMAC-SHA256(secret, body)>`, keyed with the whole secret string).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret, as Standard Webhooks has it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).expect("the operating system's random source");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The headers that sign one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `webhook-timestamp`: Unix seconds of the attempt.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>`.
    pub standard: String,
    /// `X-VoIPBIN-Signature`: `sha256=<hex>`.
    pub voipbin: String,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Signs `body`, sent as delivery `webhook_id` at `timestamp`, with `secret`. A secret that
/// is not `whsec_<base64>` (none this service made) is keyed with its bytes as they are.
pub fn sign(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> Signature {
    let key = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let ts = timestamp.to_string();
    let standard = hmac(
        &key,
        &[webhook_id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    let voipbin = hmac(secret.as_bytes(), &[body]);
    let hex: String = voipbin.iter().map(|b| format!("{b:02x}")).collect();
    Signature {
        timestamp,
        standard: format!("v1,{}", STANDARD.encode(standard)),
        voipbin: format!("sha256={hex}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_as_the_standard_webhooks_reference_does() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let s = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            s.standard,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(s.timestamp, 1614265330);
    }

    #[test]
    fn voipbin_signs_the_body_with_the_whole_secret() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), the textbook value.
        let s = sign(
            "key",
            "id",
            0,
            b"The quick brown fox jumps over the lazy dog",
        );
        assert_eq!(
            s.voipbin,
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn secrets_are_32_random_bytes_in_base64() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        let key = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), KEY_BYTES);
    }
}
