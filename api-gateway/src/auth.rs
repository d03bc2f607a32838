//! Authentication: HS256 JWTs in the VoIPbin claim shapes, from a Bearer header or the `token`
//! query parameter.
//!
//! Only HS256 with the configured secret verifies. `alg: none`, every other algorithm (an
//! RS256/ES256 header over an HMAC made with the secret is the classic "algorithm confusion"
//! forgery; HS384/HS512 are refused too) and bad signatures fail, and `exp` is required and
//! enforced with no leeway, as is `nbf` when present. The algorithm is checked twice: by a header pre-check here (which
//! also yields a message naming the refused algorithm) and by `jsonwebtoken`, whose
//! `Validation` lists HS256 only and whose key is an HMAC-family key.
//!
//! Accepted claim shapes (unknown fields anywhere are ignored):
//! - `agent`: an object, or a JSON-encoded string of one, with `id`, `customer_id`, `permission`
//!   (a number) and optional `name`, `username` (missing: ""). Preferred when `customer` is also
//!   present; a malformed `agent` is refused rather than falling back to `customer`.
//! - `customer`: a JSON-encoded string (as in the seed's tokens) or an object, with `id`: a
//!   customer-level admin with no agent identity.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

pub mod permission {
    pub const PROJECT_SUPER_ADMIN: u64 = 0x0001;
    pub const CUSTOMER_AGENT: u64 = 0x0010;
    pub const CUSTOMER_ADMIN: u64 = 0x0020;
    pub const CUSTOMER_MANAGER: u64 = 0x0040;
}

/// Tokens longer than this are refused before any parsing or lookup (the seed's are about
/// 1 KB; an agent's with a long name a few KB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub customer_id: uuid::Uuid,
    /// None for the `customer` claim shape (a customer-level admin with no agent identity).
    pub agent: Option<AgentIdentity>,
    /// Permission bit mask; the `customer` shape counts as customer admin (0x0020).
    pub permission: u64,
    /// Token expiry (unix seconds), kept so a WebSocket can close when the token expires.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub id: uuid::Uuid,
    pub name: String,
    pub username: String,
}

impl Caller {
    /// Admin or manager rights on its own customer: 0x0001, 0x0020 or 0x0040 set. The project
    /// super admin bit gives no cross-tenant power here: it acts as an admin of its own customer.
    pub fn is_customer_manager(&self) -> bool {
        use permission::{CUSTOMER_ADMIN, CUSTOMER_MANAGER, PROJECT_SUPER_ADMIN};
        self.permission & (PROJECT_SUPER_ADMIN | CUSTOMER_ADMIN | CUSTOMER_MANAGER) != 0
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token: missing; pass it as ?token=... or in an Authorization: Bearer ... header")]
    MissingToken,
    /// An `Authorization` header without the Bearer scheme, and no `token` parameter.
    #[error("token: the Authorization header needs the form `Bearer <token>`")]
    NotBearer,
    #[error("token: expired; get a new token")]
    Expired,
    #[error("token: {0}")]
    Invalid(String),
    /// Only from [`mint_token`].
    #[error("token: could not sign: {0}")]
    Signing(String),
}

fn invalid(msg: impl Into<String>) -> AuthError {
    AuthError::Invalid(msg.into())
}

/// Verifies HS256 tokens signed with one secret.
/// Cheap to clone (the state every request gets holds one): the key and rules are shared.
#[derive(Clone)]
pub struct TokenVerifier(std::sync::Arc<VerifierParts>);

struct VerifierParts {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Option<Duration>,
    verified: VerifiedTokens,
}

/// Tokens already verified, with their callers. A client sends the same token with every
/// request until it expires; checking its signature and parsing its claims each time was a
/// tenth of the gateway's CPU per send. Keyed by the whole token, signature included, so a
/// token that differs in any byte is verified afresh; an entry counts only while the token
/// has not expired. Bounded: at most `VERIFIED_TOKENS` tokens of at most
/// `MAX_CACHED_TOKEN_LEN` bytes (2 MiB), emptied when full.
#[derive(Default)]
struct VerifiedTokens(std::sync::Mutex<HashMap<Box<str>, Caller>>);

const VERIFIED_TOKENS: usize = 1024;
const MAX_CACHED_TOKEN_LEN: usize = 2048;

impl VerifiedTokens {
    fn get(&self, token: &str, now: i64) -> Option<Caller> {
        let verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(token)
            .filter(|caller| now < caller.expires_at)
            .cloned()
    }

    fn insert(&self, token: &str, caller: &Caller) {
        if token.len() > MAX_CACHED_TOKEN_LEN {
            return;
        }
        let mut verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), caller.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TokenVerifier")
            .field("algorithm", &Algorithm::HS256)
            .finish_non_exhaustive()
    }
}

/// What a token must satisfy beyond its signature and `exp` (all optional: VoIPbin's tokens
/// carry no issuer or audience).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRules {
    /// The `iss` claim required.
    pub issuer: Option<String>,
    /// The `aud` claim required (one of the token's audiences).
    pub audience: Option<String>,
    /// The longest a token may live: from its `iat` when it has one, and from now.
    pub max_lifetime: Option<Duration>,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        Self::with_rules(secret, TokenRules::default())
    }

    pub fn with_rules(secret: &[u8], rules: TokenRules) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        let mut required = vec!["exp"];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // No leeway: jsonwebtoken then refuses `exp < now` and `nbf > now`;
        // `caller_from_claims` also refuses `exp == now` (RFC 7519: the current time must be
        // *before* `exp`), so a token is dead from the second its `exp` names, which is also
        // when a WebSocket using it closes.
        validation.leeway = 0;
        match &rules.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // VoIPbin tokens carry no audience; without a configured one, do not refuse one
            // that does.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &rules.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        TokenVerifier(std::sync::Arc::new(VerifierParts {
            key: DecodingKey::from_secret(secret),
            validation,
            max_lifetime: rules.max_lifetime,
            verified: VerifiedTokens::default(),
        }))
    }

    /// The caller of an already verified token, without verifying anything (None when it
    /// was not verified, or has expired since).
    pub fn remembered(&self, token: &str) -> Option<Caller> {
        self.0
            .verified
            .get(token.trim(), chrono::Utc::now().timestamp())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!(
                "too long ({} bytes; at most {MAX_TOKEN_LEN})",
                token.len()
            )));
        }
        let now = chrono::Utc::now().timestamp();
        if let Some(caller) = self.0.verified.get(token, now) {
            return Ok(caller);
        }
        check_header(token)?;
        let data = jsonwebtoken::decode::<Value>(token, &self.0.key, &self.0.validation)
            .map_err(from_jwt_error)?;
        let caller = caller_from_claims(&data.claims, now)?;
        if let Some(max) = self.0.max_lifetime {
            check_lifetime(&data.claims, caller.expires_at, now, max)?;
        }
        self.0.verified.insert(token, &caller);
        Ok(caller)
    }

    /// The token from `Authorization: Bearer <t>`, else from the `token` query parameter
    /// (percent-decoded) of the URI query string. Bearer wins when both are present, even when
    /// the Bearer token is the bad one. Other schemes (`Basic ...`) are ignored.
    pub fn caller_from_parts(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, AuthError> {
        self.verify(&raw_token(headers, query)?)
    }
}

/// The token a request presents, unverified (Bearer first, else the `token` query parameter),
/// as `caller_from_parts` picks it; one over `MAX_TOKEN_LEN` is refused here, before anything
/// is done with it.
pub fn raw_token(headers: &http::HeaderMap, query: Option<&str>) -> Result<String, AuthError> {
    let token = match bearer_token(headers) {
        Some(token) => token.to_owned(),
        None => match query.and_then(token_from_query) {
            Some(token) => token,
            None if headers.contains_key(http::header::AUTHORIZATION) => {
                return Err(AuthError::NotBearer);
            }
            None => return Err(AuthError::MissingToken),
        },
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!(
            "too long ({} bytes; at most {MAX_TOKEN_LEN})",
            token.len()
        )));
    }
    Ok(token)
}

fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, rest) = v.trim().split_once([' ', '\t'])?;
            let token = rest.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
        })
}

/// The first `token` parameter of a query string, percent-decoded (`+` is a space, as in
/// `application/x-www-form-urlencoded`).
fn token_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// Base64url without padding (trailing `=` tolerated). Only used to read the header before
/// `jsonwebtoken` (which is stricter) verifies the token.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Refuses anything but a three-part token whose header names HS256, with a message saying so.
fn check_header(token: &str) -> Result<(), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "malformed: a JWT is three base64url parts separated by dots",
        ));
    };
    let header: Value = b64url_decode(header)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| invalid("malformed: the header is not base64url-encoded JSON"))?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => Ok(()),
        Some(alg) => {
            let alg: String = alg.chars().take(20).collect();
            Err(invalid(format!(
                "algorithm {alg:?} is not accepted; only HS256 tokens are"
            )))
        }
        None => Err(invalid(
            "the header names no algorithm; only HS256 tokens are accepted",
        )),
    }
}

fn from_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => invalid(
            "bad signature: signed with another key, or altered (a token for this gateway is \
             minted with its key: `api-gateway token` run beside it, or with its JWT_SECRET)",
        ),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidKeyFormat => invalid("only HS256 tokens are accepted"),
        ErrorKind::MissingRequiredClaim(c) => invalid(format!("the `{c}` claim is required")),
        ErrorKind::InvalidClaimFormat(c) => invalid(format!(
            "the `{c}` claim must be a non-negative number of unix seconds"
        )),
        ErrorKind::ImmatureSignature => invalid("not valid yet (`nbf` is in the future)"),
        ErrorKind::InvalidAudience => invalid("the `aud` claim is not this gateway's audience"),
        ErrorKind::InvalidIssuer => invalid("the `iss` claim is not this gateway's issuer"),
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => invalid("malformed: not a base64url-encoded JSON web token"),
        _ => invalid("not a valid token"),
    }
}

/// `exp` as unix seconds. jsonwebtoken accepts integers and (rounded) floats; so does this.
fn exp_seconds(claims: &Value) -> Option<i64> {
    let exp = claims.get("exp")?;
    exp.as_i64()
        .or_else(|| exp.as_u64().map(|_| i64::MAX))
        .or_else(|| {
            exp.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
}

/// Refuses a token that lives longer than `max`: from its `iat` (when it has one) or from now.
fn check_lifetime(claims: &Value, exp: i64, now: i64, max: Duration) -> Result<(), AuthError> {
    let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
    let issued = claims.get("iat").and_then(Value::as_i64);
    let too_long =
        exp.saturating_sub(now) > max || issued.is_some_and(|iat| exp.saturating_sub(iat) > max);
    if too_long {
        return Err(invalid(format!(
            "lives longer than this gateway accepts ({max} s at most, JWT_MAX_LIFETIME)"
        )));
    }
    Ok(())
}

/// A claim that is an object, or a JSON-encoded string of one (as the seed's tokens carry).
fn object_claim(v: &Value, claim: &str) -> Result<Value, AuthError> {
    match v {
        Value::Object(_) => Some(v.clone()),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(format!(
            "the `{claim}` claim must be an object or a JSON-encoded object"
        ))
    })
}

fn uuid_field(obj: &Value, field: &str, claim: &str) -> Result<uuid::Uuid, AuthError> {
    obj.get(field)
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| invalid(format!("{claim}.{field} must be a UUID")))
}

fn string_field(obj: &Value, field: &str) -> String {
    obj.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The caller named by verified claims, at unix time `now`.
fn caller_from_claims(claims: &Value, now: i64) -> Result<Caller, AuthError> {
    let expires_at =
        exp_seconds(claims).ok_or_else(|| invalid("the `exp` claim is required (a number)"))?;
    if expires_at <= now {
        return Err(AuthError::Expired);
    }
    if let Some(agent) = claims.get("agent").filter(|v| !v.is_null()) {
        let agent = object_claim(agent, "agent")?;
        let permission = agent
            .get("permission")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("agent.permission must be a non-negative integer"))?;
        return Ok(Caller {
            customer_id: uuid_field(&agent, "customer_id", "agent")?,
            agent: Some(AgentIdentity {
                id: uuid_field(&agent, "id", "agent")?,
                name: string_field(&agent, "name"),
                username: string_field(&agent, "username"),
            }),
            permission,
            expires_at,
        });
    }
    if let Some(customer) = claims.get("customer").filter(|v| !v.is_null()) {
        let customer = object_claim(customer, "customer")?;
        return Ok(Caller {
            customer_id: uuid_field(&customer, "id", "customer")?,
            agent: None,
            permission: permission::CUSTOMER_ADMIN,
            expires_at,
        });
    }
    Err(invalid("carries neither an `agent` nor a `customer` claim"))
}

/// What `api-gateway token` mints.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub customer_id: uuid::Uuid,
    /// With an agent id: the `agent` shape; without: the `customer` shape (which ignores
    /// `agent_name` and `permission`: it always counts as customer admin).
    pub agent_id: Option<uuid::Uuid>,
    /// Both `name` and `username` of the agent.
    pub agent_name: String,
    pub permission: u64,
    /// Whole seconds count; `Duration::ZERO` mints a token that is already expired.
    pub ttl: Duration,
    /// `iss` and `aud` to put in the token (those the gateway is configured to require).
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Agent shape when `agent_id` is Some:
/// `{"agent": {"id", "customer_id", "permission", "name", "username"}, "exp"}`;
/// customer shape when None: `{"customer": "<JSON-encoded string of {\"id\": ...}>", "exp"}`.
/// Signed with HS256.
pub fn mint_token(secret: &[u8], req: &TokenRequest) -> Result<String, AuthError> {
    let ttl = i64::try_from(req.ttl.as_secs()).unwrap_or(i64::MAX);
    let now = chrono::Utc::now().timestamp();
    let exp = now.saturating_add(ttl);
    let mut claims = match req.agent_id {
        Some(id) => json!({
            "agent": {
                "id": id,
                "customer_id": req.customer_id,
                "permission": req.permission,
                "name": req.agent_name,
                "username": req.agent_name,
            },
            "exp": exp,
        }),
        None => json!({
            "customer": json!({"id": req.customer_id}).to_string(),
            "exp": exp,
        }),
    };
    claims["iat"] = json!(now);
    if let Some(issuer) = &req.issuer {
        claims["iss"] = json!(issuer);
    }
    if let Some(audience) = &req.audience {
        claims["aud"] = json!(audience);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const SECRET: &[u8] = b"test-secret";

    /// The first token of the seed (`/work/shared/seed/000_af2a4ba2431b94eb.txt`), signed with
    /// VoIPbin's secret, which we do not have; `exp` 1664040009 (2022-09-24).
    const SEED_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjdXN0b21lciI6IntcImlkXCI6XCI1ZTRhMDY4MC04MDRlLTExZWMtODQ3Ny0yZmVhNTk2OGQ4NWJcIixcInVzZXJuYW1lXCI6XCJhZG1pblwiLFwibmFtZVwiOlwiYWRtaW5cIixcImRldGFpbFwiOlwiYWRtaW4gYWNjb3VudFwiLFwid2ViaG9va19tZXRob2RcIjpcIlBPU1RcIixcIndlYmhvb2tfdXJpXCI6XCJodHRwczovL2VuN2V2YWp3aG1xYnQueC5waXBlZHJlYW0ubmV0XCIsXCJsaW5lX3NlY3JldFwiOlwiYmE1ZjA1NzVkODI2ZDViNGEwNTJhNDMxNDVlZjEzOTFcIixcImxpbmVfdG9rZW5cIjpcInRzZklpREIvMmNHSTVzSFJNSW9wN1MzU1M0S3NiRWxKL3VrUUtzNkxwSFkxWG9HMnBUTUhxZGl5TE51OGFNZGEycGkzdlRYc2NDS3A4WEdFdmZsNmRtSVQxbmZUVGRNa21ZODRpUkxJT0lBbDg1aUcvWFp1ZUkxV0JSdmNoZlY4VGxad0RtRUNiU1N6TCtXdXYrak8rZ2RCMDR0ODkvMU8vdzFjRG55aWxGVT1cIixcInBlcm1pc3Npb25faWRzXCI6W1wiMDM3OTZlMTQtN2NiNC0xMWVjLTlkYmEtZTcyMDIzZWZkMWM2XCJdLFwidG1fY3JlYXRlXCI6XCIyMDIyLTAyLTAxIDAwOjAwOjAwLjAwMDAwMFwiLFwidG1fdXBkYXRlXCI6XCIyMDIyLTA2LTE2IDA4OjM3OjE2Ljk1MjczOFwiLFwidG1fZGVsZXRlXCI6XCI5OTk5LTAxLTAxIDAwOjAwOjAwLjAwMDAwMFwifSIsImV4cCI6MTY2NDA0MDAwOX0.s2lRAtDRSn82FBOAC_w_hNWRyBWN-2boe4Pq76EdIjI";
    const SEED_CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn future() -> i64 {
        now() + 3600
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET)
    }

    /// Signs `claims` with `jsonwebtoken` itself (any HMAC algorithm, with SECRET).
    fn sign(claims: &Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    /// Base64url without padding.
    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with exactly this header and payload JSON, HMAC-SHA256-signed with `secret`
    /// whatever the header says (`jsonwebtoken::crypto::sign` is its public raw signer).
    fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    fn payload_of(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap()
    }

    fn request(customer: Uuid, agent: Option<Uuid>, permission: u64) -> TokenRequest {
        TokenRequest {
            customer_id: customer,
            agent_id: agent,
            agent_name: "Alice".into(),
            permission,
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        }
    }

    fn customer_claims(customer: &str, exp: i64) -> Value {
        json!({"customer": json!({"id": customer}).to_string(), "exp": exp})
    }

    fn assert_invalid(result: Result<Caller, AuthError>, needle: &str) {
        match result {
            Err(AuthError::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected Invalid({needle:?}), got {other:?}"),
        }
    }

    #[test]
    fn the_agent_shape_round_trips() {
        let (customer, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let before = now();
        let token = mint_token(SECRET, &request(customer, Some(agent), 0x10)).unwrap();
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.customer_id, customer);
        assert_eq!(
            caller.agent,
            Some(AgentIdentity {
                id: agent,
                name: "Alice".into(),
                username: "Alice".into()
            })
        );
        assert_eq!(caller.permission, 0x10);
        assert!((before + 600..=now() + 600).contains(&caller.expires_at));
        assert!(!caller.is_customer_manager());
        // The claims are laid out as the contract says.
        let claims = payload_of(&token);
        assert_eq!(claims["agent"]["id"], agent.to_string());
        assert_eq!(claims["agent"]["customer_id"], customer.to_string());
        assert_eq!(claims["agent"]["permission"], 0x10);
        assert_eq!(claims["agent"]["username"], "Alice");
        assert_eq!(claims["exp"], caller.expires_at);
    }

    #[test]
    fn the_customer_shape_round_trips() {
        let customer = Uuid::new_v4();
        let token = mint_token(SECRET, &request(customer, None, 0)).unwrap();
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.customer_id, customer);
        assert_eq!(caller.agent, None);
        assert_eq!(caller.permission, permission::CUSTOMER_ADMIN);
        assert!(caller.is_customer_manager());
        // `customer` is a JSON-encoded string, as in the seed.
        let claims = payload_of(&token);
        let inner: Value = serde_json::from_str(claims["customer"].as_str().unwrap()).unwrap();
        assert_eq!(inner, json!({"id": customer.to_string()}));
        assert!(claims.get("agent").is_none());
    }

    #[test]
    fn the_seed_customer_claim_is_understood() {
        // The seed token itself: HS256, but not our secret.
        assert_invalid(verifier().verify(SEED_TOKEN), "signature");
        // Its exact payload, re-signed with our secret and a future exp.
        let mut claims = payload_of(SEED_TOKEN);
        assert_eq!(claims["exp"], 1_664_040_009);
        assert!(
            claims["customer"]
                .as_str()
                .unwrap()
                .contains("permission_ids")
        );
        let expired = sign(&claims, Algorithm::HS256);
        assert_eq!(verifier().verify(&expired), Err(AuthError::Expired));
        claims["exp"] = json!(future());
        let caller = verifier().verify(&sign(&claims, Algorithm::HS256)).unwrap();
        assert_eq!(caller.customer_id.to_string(), SEED_CUSTOMER);
        assert_eq!(caller.agent, None);
        assert!(caller.is_customer_manager());
    }

    #[test]
    fn the_agent_claim_may_be_a_json_string_and_names_are_optional() {
        let (customer, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let inner = json!({"id": agent, "customer_id": customer, "permission": 0x40, "extra": [1]});
        let token = sign(
            &json!({"agent": inner.to_string(), "exp": future()}),
            Algorithm::HS256,
        );
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.customer_id, customer);
        assert_eq!(caller.permission, 0x40);
        let identity = caller.agent.unwrap();
        assert_eq!(identity.id, agent);
        assert_eq!(
            (identity.name.as_str(), identity.username.as_str()),
            ("", "")
        );
    }

    #[test]
    fn the_customer_claim_may_be_an_object() {
        let token = sign(
            &json!({"customer": {"id": SEED_CUSTOMER, "name": "admin"}, "exp": future()}),
            Algorithm::HS256,
        );
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.customer_id.to_string(), SEED_CUSTOMER);
        assert_eq!(caller.agent, None);
    }

    #[test]
    fn agent_is_preferred_over_customer() {
        let (customer, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let token = sign(
            &json!({
                "customer": json!({"id": SEED_CUSTOMER}).to_string(),
                "agent": {"id": agent, "customer_id": customer, "permission": 0x10},
                "exp": future(),
            }),
            Algorithm::HS256,
        );
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.customer_id, customer);
        assert_eq!(caller.agent.unwrap().id, agent);
        // A malformed agent does not fall back to the customer.
        let token = sign(
            &json!({
                "customer": json!({"id": SEED_CUSTOMER}).to_string(),
                "agent": {"id": "nope", "customer_id": customer, "permission": 0x10},
                "exp": future(),
            }),
            Algorithm::HS256,
        );
        assert_invalid(verifier().verify(&token), "agent.id");
        // `agent: null` counts as absent.
        let token = sign(
            &json!({"customer": {"id": SEED_CUSTOMER}, "agent": null, "exp": future()}),
            Algorithm::HS256,
        );
        assert_eq!(verifier().verify(&token).unwrap().agent, None);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let v = verifier();
        for exp in [1_664_040_009, now() - 1, now()] {
            let token = sign(&customer_claims(SEED_CUSTOMER, exp), Algorithm::HS256);
            assert_eq!(v.verify(&token), Err(AuthError::Expired), "exp {exp}");
        }
        let mut zero_ttl = request(Uuid::new_v4(), None, 0);
        zero_ttl.ttl = Duration::ZERO;
        let token = mint_token(SECRET, &zero_ttl).unwrap();
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
        assert_eq!(
            AuthError::Expired.to_string(),
            "token: expired; get a new token"
        );
        // Still good one second before expiry (the check itself, with a fixed clock).
        let claims = customer_claims(SEED_CUSTOMER, 1000);
        assert_eq!(caller_from_claims(&claims, 999).unwrap().expires_at, 1000);
        assert_eq!(caller_from_claims(&claims, 1000), Err(AuthError::Expired));
    }

    #[test]
    fn exp_is_required_and_must_be_a_number() {
        let v = verifier();
        let token = sign(
            &json!({"customer": {"id": SEED_CUSTOMER}}),
            Algorithm::HS256,
        );
        assert_invalid(v.verify(&token), "`exp` claim is required");
        for exp in [json!("tomorrow"), json!(-5), json!(null), json!({})] {
            let token = sign(
                &json!({"customer": {"id": SEED_CUSTOMER}, "exp": exp}),
                Algorithm::HS256,
            );
            assert_invalid(v.verify(&token), "exp");
        }
        // A float exp (some issuers write one) is accepted, rounded as jsonwebtoken does.
        let exp = future();
        let token = sign(
            &json!({"customer": {"id": SEED_CUSTOMER}, "exp": exp as f64 + 0.2}),
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&token).unwrap().expires_at, exp);
    }

    #[test]
    fn a_wrong_secret_or_an_altered_token_is_refused() {
        let token = sign(&customer_claims(SEED_CUSTOMER, future()), Algorithm::HS256);
        assert_invalid(TokenVerifier::new(b"other").verify(&token), "signature");
        assert_invalid(TokenVerifier::new(b"").verify(&token), "signature");
        // Another customer's payload under the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let other = customer_claims(&Uuid::new_v4().to_string(), future()).to_string();
        let altered = format!("{}.{}.{}", parts[0], b64(other.as_bytes()), parts[2]);
        assert_invalid(verifier().verify(&altered), "signature");
        // No signature at all.
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert_invalid(verifier().verify(&stripped), "signature");
    }

    /// A verified token is remembered, but only byte for byte, only while it is live, and
    /// only so many: the same verifier still refuses an altered or expired one.
    #[test]
    fn verified_tokens_are_remembered_until_they_expire_and_only_byte_for_byte() {
        let v = verifier();
        let exp = future();
        let token = sign(&customer_claims(SEED_CUSTOMER, exp), Algorithm::HS256);
        let caller = v.verify(&token).unwrap();
        assert_eq!(v.0.verified.len(), 1);
        assert_eq!(v.verify(&format!(" {token} ")), Ok(caller.clone()));
        assert_eq!(v.0.verified.get(&token, exp - 1), Some(caller));
        assert_eq!(v.0.verified.get(&token, exp), None, "dead from its exp on");

        // Another customer's payload under the remembered token's signature; a token cut short.
        let parts: Vec<&str> = token.split('.').collect();
        let other = customer_claims(&Uuid::new_v4().to_string(), exp).to_string();
        let altered = format!("{}.{}.{}", parts[0], b64(other.as_bytes()), parts[2]);
        assert_invalid(v.verify(&altered), "signature");
        assert!(v.verify(&token[..token.len() - 1]).is_err());
        assert_eq!(v.0.verified.len(), 1, "refused tokens are not remembered");

        for i in 0..VERIFIED_TOKENS as i64 + 10 {
            let token = sign(&customer_claims(SEED_CUSTOMER, exp + i), Algorithm::HS256);
            v.verify(&token).unwrap();
            assert!(v.0.verified.len() <= VERIFIED_TOKENS);
        }
        // Too long to be kept: verified every time.
        let mut req = request(Uuid::new_v4(), Some(Uuid::new_v4()), 0x20);
        req.agent_name = "n".repeat(MAX_CACHED_TOKEN_LEN);
        let long = mint_token(SECRET, &req).unwrap();
        let before = v.0.verified.len();
        v.verify(&long).unwrap();
        assert_eq!(v.0.verified.len(), before);
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = customer_claims(SEED_CUSTOMER, future()).to_string();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = json!({"alg": alg, "typ": "JWT"}).to_string();
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()));
            assert_invalid(verifier().verify(&unsigned), "only HS256");
            // Even with a valid HMAC of the message attached.
            assert_invalid(
                verifier().verify(&forge(&header, &payload, SECRET)),
                "only HS256",
            );
        }
        // No alg at all.
        let forged = forge(r#"{"typ":"JWT"}"#, &payload, SECRET);
        assert_invalid(verifier().verify(&forged), "only HS256");
    }

    #[test]
    fn other_algorithms_are_refused_even_with_the_secret_as_key() {
        let v = verifier();
        let claims = customer_claims(SEED_CUSTOMER, future());
        let payload = claims.to_string();
        // Algorithm confusion: an asymmetric header over a valid HMAC-SHA256 of the message.
        for alg in [
            "RS256", "ES256", "PS256", "EdDSA", "HS384", "HS512", "hs256",
        ] {
            let header = json!({"alg": alg, "typ": "JWT"}).to_string();
            let forged = forge(&header, &payload, SECRET);
            assert_invalid(v.verify(&forged), "only HS256");
            // jsonwebtoken alone (without the header pre-check) refuses it too.
            let err =
                jsonwebtoken::decode::<Value>(&forged, &v.0.key, &v.0.validation).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::InvalidAlgorithm | ErrorKind::Json(_)),
                "{alg}: {err:?}"
            );
        }
        // Genuine HS384/HS512 signatures made with the secret.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign(&claims, alg);
            assert_invalid(v.verify(&token), "only HS256");
            let err = jsonwebtoken::decode::<Value>(&token, &v.0.key, &v.0.validation).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidAlgorithm), "{err:?}");
        }
        // The control: the same forging helper with an HS256 header does verify.
        let good = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, SECRET);
        assert_eq!(
            v.verify(&good).unwrap().customer_id.to_string(),
            SEED_CUSTOMER
        );
    }

    #[test]
    fn garbage_is_refused() {
        let v = verifier();
        assert_eq!(v.verify(""), Err(AuthError::MissingToken));
        assert_eq!(v.verify("   "), Err(AuthError::MissingToken));
        let good = sign(&customer_claims(SEED_CUSTOMER, future()), Algorithm::HS256);
        for token in [
            "garbage",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "...",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9.!!!.abc",
            "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
            &format!("{good}.extra"),
            &format!("x{good}"),
        ] {
            assert!(
                matches!(v.verify(token), Err(AuthError::Invalid(_))),
                "{token}"
            );
        }
        assert_invalid(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)), "too long");
        // A payload that is not JSON, correctly signed.
        let header = b64(br#"{"alg":"HS256"}"#);
        let message = format!("{header}.{}", b64(b"not json"));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        assert_invalid(v.verify(&format!("{message}.{sig}")), "malformed");
    }

    #[test]
    fn tokens_without_a_usable_identity_are_refused() {
        let v = verifier();
        let cases = [
            (json!({"user": "x"}), "neither"),
            (json!({"customer": null}), "neither"),
            (
                json!({"customer": "{\"id\": \"nope\"}"}),
                "customer.id must be a UUID",
            ),
            (json!({"customer": "{}"}), "customer.id must be a UUID"),
            (json!({"customer": {"id": 5}}), "customer.id must be a UUID"),
            (json!({"customer": "not json"}), "`customer` claim must be"),
            (json!({"customer": "[1]"}), "`customer` claim must be"),
            (json!({"customer": 7}), "`customer` claim must be"),
            (json!({"agent": 5}), "`agent` claim must be"),
            (
                json!({"agent": {"id": Uuid::new_v4(), "permission": 16}}),
                "agent.customer_id must be a UUID",
            ),
            (
                json!({"agent": {"customer_id": Uuid::new_v4(), "permission": 16}}),
                "agent.id must be a UUID",
            ),
            (
                json!({"agent": {"id": Uuid::new_v4(), "customer_id": Uuid::new_v4()}}),
                "agent.permission",
            ),
            (
                json!({"agent": {"id": Uuid::new_v4(), "customer_id": Uuid::new_v4(), "permission": "16"}}),
                "agent.permission",
            ),
            (
                json!({"agent": {"id": Uuid::new_v4(), "customer_id": Uuid::new_v4(), "permission": -1}}),
                "agent.permission",
            ),
        ];
        for (mut claims, needle) in cases {
            claims["exp"] = json!(future());
            let token = sign(&claims, Algorithm::HS256);
            assert_invalid(v.verify(&token), needle);
        }
    }

    #[test]
    fn large_tokens_verify_up_to_the_limit_and_longer_ones_are_refused_unread() {
        let (customer, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let mut req = request(customer, Some(agent), 0x20);
        req.agent_name = "n".repeat(2 * 1024);
        let token = mint_token(SECRET, &req).unwrap();
        assert!(token.len() > 4 * 1024 && token.len() <= MAX_TOKEN_LEN);
        let caller = verifier().verify(&token).unwrap();
        assert_eq!(caller.agent.unwrap().name.len(), 2 * 1024);

        // Over the limit: refused by length, in the query or a header, before anything else.
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        let query = format!("token={long}");
        assert_invalid(
            raw_token(&http::HeaderMap::new(), Some(&query)).map(|_| unreachable!()),
            "too long",
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {long}").parse().unwrap(),
        );
        assert_invalid(
            raw_token(&headers, None).map(|_| unreachable!()),
            "too long",
        );
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let v = verifier();
        let mut claims = customer_claims(SEED_CUSTOMER, future());
        claims["nbf"] = json!(now() + 600);
        assert_invalid(v.verify(&sign(&claims, Algorithm::HS256)), "not valid yet");
        claims["nbf"] = json!(now() - 1);
        assert!(v.verify(&sign(&claims, Algorithm::HS256)).is_ok());
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required() {
        let rules = TokenRules {
            issuer: Some("https://auth.example".into()),
            audience: Some("chat-api".into()),
            max_lifetime: None,
        };
        let v = TokenVerifier::with_rules(SECRET, rules);
        let with = |iss: Option<&str>, aud: Option<&str>| {
            let mut claims = customer_claims(SEED_CUSTOMER, future());
            if let Some(iss) = iss {
                claims["iss"] = json!(iss);
            }
            if let Some(aud) = aud {
                claims["aud"] = json!(aud);
            }
            v.verify(&sign(&claims, Algorithm::HS256))
        };
        assert!(with(Some("https://auth.example"), Some("chat-api")).is_ok());
        assert_invalid(with(None, Some("chat-api")), "`iss` claim is required");
        assert_invalid(
            with(Some("https://auth.example"), None),
            "`aud` claim is required",
        );
        assert_invalid(
            with(Some("https://evil.example"), Some("chat-api")),
            "issuer",
        );
        assert_invalid(
            with(Some("https://auth.example"), Some("other")),
            "audience",
        );
        // Minted with the rules' claims, a token passes.
        let mut req = request(Uuid::new_v4(), None, 0);
        req.issuer = Some("https://auth.example".into());
        req.audience = Some("chat-api".into());
        assert!(v.verify(&mint_token(SECRET, &req).unwrap()).is_ok());
        // Without rules, an audience in a token is not refused (VoIPbin's carry none).
        let mut claims = customer_claims(SEED_CUSTOMER, future());
        claims["aud"] = json!("someone-else");
        assert!(verifier().verify(&sign(&claims, Algorithm::HS256)).is_ok());
    }

    #[test]
    fn tokens_living_longer_than_the_maximum_are_refused() {
        let rules = TokenRules {
            max_lifetime: Some(Duration::from_secs(3600)),
            ..TokenRules::default()
        };
        let v = TokenVerifier::with_rules(SECRET, rules);
        // Expires in 30 min: fine; in two hours: too far.
        let claims = customer_claims(SEED_CUSTOMER, now() + 1800);
        assert!(v.verify(&sign(&claims, Algorithm::HS256)).is_ok());
        let claims = customer_claims(SEED_CUSTOMER, now() + 7200);
        assert_invalid(
            v.verify(&sign(&claims, Algorithm::HS256)),
            "JWT_MAX_LIFETIME",
        );
        // Issued a day before it expires, even if that is soon: too long.
        let mut claims = customer_claims(SEED_CUSTOMER, now() + 600);
        claims["iat"] = json!(now() + 600 - 86_400);
        assert_invalid(v.verify(&sign(&claims, Algorithm::HS256)), "lives longer");
    }

    #[test]
    fn bearer_wins_over_the_query_and_the_query_is_percent_decoded() {
        let v = verifier();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let ta = mint_token(SECRET, &request(a, None, 0)).unwrap();
        let tb = mint_token(SECRET, &request(b, None, 0)).unwrap();
        let id = |r: Result<Caller, AuthError>| r.unwrap().customer_id;
        let bearer = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        let none = http::HeaderMap::new();

        // Query only: plain, percent-encoded (every character), among other parameters.
        let plain = format!("token={ta}");
        assert_eq!(id(v.caller_from_parts(&none, Some(&plain))), a);
        let encoded: String = ta.bytes().map(|c| format!("%{c:02X}")).collect();
        let query = format!("page_size=5&%74oken={encoded}&token={tb}");
        assert_eq!(id(v.caller_from_parts(&none, Some(&query))), a);
        let lower = format!(
            "page_token=2022-09-22+02%3A41&token={}",
            ta.replace('.', "%2e")
        );
        assert_eq!(id(v.caller_from_parts(&none, Some(&lower))), a);

        // Bearer only, any case of the scheme.
        assert_eq!(
            id(v.caller_from_parts(&bearer(&format!("Bearer {tb}")), None)),
            b
        );
        assert_eq!(
            id(v.caller_from_parts(&bearer(&format!("bearer  {tb} ")), None)),
            b
        );

        // Both: Bearer wins, even when it is the bad one.
        assert_eq!(
            id(v.caller_from_parts(&bearer(&format!("Bearer {tb}")), Some(&plain))),
            b
        );
        assert_invalid(
            v.caller_from_parts(&bearer("Bearer garbage"), Some(&plain)),
            "malformed",
        );

        // Other schemes and an empty Bearer are not a Bearer token: the query is used.
        assert_eq!(
            id(v.caller_from_parts(&bearer("Basic dXNlcjpwYXNz"), Some(&plain))),
            a
        );
        assert_eq!(id(v.caller_from_parts(&bearer("Bearer "), Some(&plain))), a);

        // Nothing usable.
        for query in [
            None,
            Some(""),
            Some("page_size=5"),
            Some("token="),
            Some("tokens=x"),
        ] {
            assert_eq!(
                v.caller_from_parts(&none, query),
                Err(AuthError::MissingToken),
                "{query:?}"
            );
        }
        // An Authorization header of another scheme, and no query token: say what the header
        // needs rather than "missing".
        assert_eq!(
            v.caller_from_parts(&bearer("Basic dXNlcjpwYXNz"), None),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            v.caller_from_parts(&bearer(&ta), None),
            Err(AuthError::NotBearer),
            "a token without `Bearer `"
        );
        assert!(AuthError::NotBearer.to_string().contains("Bearer <token>"));
        assert!(AuthError::MissingToken.to_string().contains("?token="));
    }

    #[test]
    fn the_query_token_is_percent_decoded() {
        assert_eq!(
            token_from_query("token=a%2Eb%2ec").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(token_from_query("x=1&token=a+b").as_deref(), Some("a b"));
        assert_eq!(token_from_query("tok%65n=100%").as_deref(), Some("100%"));
        assert_eq!(token_from_query("token=%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(
            token_from_query("token=%C3%A9&token=second").as_deref(),
            Some("é")
        );
        assert_eq!(token_from_query("other=1"), None);
    }

    #[test]
    fn base64url_decoding_matches_the_encoder() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
            assert_eq!(b64url_decode(&b64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(b64url_decode("e30=").unwrap(), b"{}");
        assert_eq!(b64url_decode("a"), None);
        assert_eq!(b64url_decode("ab+/"), None);
    }

    #[test]
    fn customer_manager_rights_by_bit() {
        let caller = |permission| Caller {
            customer_id: Uuid::nil(),
            agent: None,
            permission,
            expires_at: 0,
        };
        for (bits, manager) in [
            (permission::PROJECT_SUPER_ADMIN, true),
            (permission::CUSTOMER_AGENT, false),
            (permission::CUSTOMER_ADMIN, true),
            (permission::CUSTOMER_MANAGER, true),
            (
                permission::CUSTOMER_AGENT | permission::CUSTOMER_MANAGER,
                true,
            ),
            (0, false),
            (0x02 | 0x04 | 0x08 | 0x80 | 0x100, false),
            (u64::MAX, true),
        ] {
            assert_eq!(caller(bits).is_customer_manager(), manager, "{bits:#x}");
        }
    }

    #[test]
    fn minted_tokens_carry_iat() {
        let token = mint_token(SECRET, &request(Uuid::new_v4(), None, 0)).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap();
        let iat = claims["iat"].as_i64().unwrap();
        assert!((iat - now()).abs() <= 2);
        assert_eq!(claims["exp"].as_i64().unwrap() - iat, 600);
    }

    #[test]
    fn the_verifier_does_not_print_its_secret() {
        let printed = format!("{:?}", TokenVerifier::new(b"super-secret-value"));
        assert!(!printed.contains("super-secret"), "{printed}");
        assert!(printed.contains("HS256"));
    }
}
