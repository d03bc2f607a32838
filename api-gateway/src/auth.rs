//! Authentication: HS256 JWTs in the VoIPbin claim shapes, from the query string or a Bearer
//! header. Only HS256 with the configured secret verifies: `alg: none`, any other algorithm
//! (RS/ES with the secret as a "public key": algorithm confusion) and bad signatures fail,
//! and `exp` is required.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

pub mod permission {
    pub const PROJECT_SUPER_ADMIN: u64 = 0x0001;
    pub const CUSTOMER_AGENT: u64 = 0x0010;
    pub const CUSTOMER_ADMIN: u64 = 0x0020;
    pub const CUSTOMER_MANAGER: u64 = 0x0040;
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub customer_id: uuid::Uuid,
    /// None for the `customer` claim shape (a customer-level admin with no agent identity).
    pub agent: Option<AgentIdentity>,
    /// Permission bit mask; the `customer` shape counts as customer admin.
    pub permission: u64,
    /// Token expiry, unix seconds (a WebSocket closes then).
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub id: uuid::Uuid,
    pub name: String,
    pub username: String,
}

impl Caller {
    /// Admin or manager rights on its own customer. The project super admin bit gives no
    /// cross-tenant power here: it acts as an admin of its own customer.
    pub fn is_customer_manager(&self) -> bool {
        use permission::*;
        self.permission & (PROJECT_SUPER_ADMIN | CUSTOMER_ADMIN | CUSTOMER_MANAGER) != 0
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token: missing (pass ?token=... or Authorization: Bearer ...)")]
    Missing,
    #[error("token: expired")]
    Expired,
    #[error("token: {0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        // Expiry is exact: a token is refused from the second its `exp` names.
        validation.leeway = 0;
        // VoIPbin tokens carry no audience; do not refuse one that does.
        validation.validate_aud = false;
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Value>(token.trim(), &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Invalid("only HS256 tokens are accepted".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("the {c} claim is required"))
                }
                _ => AuthError::Invalid("not a valid JWT".into()),
            })?;
        caller_from_claims(&data.claims)
    }

    /// The token from `Authorization: Bearer <t>`, else from the `token` query parameter.
    pub fn caller_from_parts(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            });
        let token = match bearer {
            Some(t) => t,
            None => query
                .and_then(|q| {
                    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                        .ok()?
                        .into_iter()
                        .find(|(k, _)| k == "token")
                        .map(|(_, v)| v)
                })
                .ok_or(AuthError::Missing)?,
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(&token)
    }
}

/// A claim that is an object, or a JSON-encoded string of one (as the seed's tokens carry).
fn object_claim(v: &Value) -> Option<Value> {
    match v {
        Value::Object(_) => Some(v.clone()),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    }
}

fn uuid_field(obj: &Value, field: &str, claim: &str) -> Result<uuid::Uuid, AuthError> {
    obj.get(field)
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| AuthError::Invalid(format!("{claim}.{field} must be a UUID")))
}

fn string_field(obj: &Value, field: &str) -> String {
    obj.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn caller_from_claims(claims: &Value) -> Result<Caller, AuthError> {
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if let Some(agent) = claims.get("agent") {
        let agent = object_claim(agent)
            .ok_or_else(|| AuthError::Invalid("agent claim is malformed".into()))?;
        let permission = agent
            .get("permission")
            .and_then(Value::as_u64)
            .ok_or_else(|| AuthError::Invalid("agent.permission must be a number".into()))?;
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
    if let Some(customer) = claims.get("customer") {
        let customer = object_claim(customer)
            .ok_or_else(|| AuthError::Invalid("customer claim is malformed".into()))?;
        return Ok(Caller {
            customer_id: uuid_field(&customer, "id", "customer")?,
            agent: None,
            permission: permission::CUSTOMER_ADMIN,
            expires_at,
        });
    }
    Err(AuthError::Invalid(
        "neither an agent nor a customer claim".into(),
    ))
}

/// What `api-gateway token` mints.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub customer_id: uuid::Uuid,
    /// With an agent id: the `agent` shape; without: the `customer` shape.
    pub agent_id: Option<uuid::Uuid>,
    pub agent_name: String,
    pub permission: u64,
    pub ttl: Duration,
}

pub fn mint_token(secret: &[u8], req: &TokenRequest) -> Result<String, AuthError> {
    let exp =
        chrono::Utc::now().timestamp() + i64::try_from(req.ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = match req.agent_id {
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
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(format!("could not sign: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    /// The seed's customer claim, as its token carries it.
    const SEED_CUSTOMER_CLAIM: &str = r#"{"id":"5e4a0680-804e-11ec-8477-2fea5968d85b","username":"admin","name":"admin","detail":"admin account","webhook_method":"POST","webhook_uri":"https://en7evajwhmqbt.x.pipedream.net","line_secret":"ba5f0575d826d5b4a052a43145ef1391","line_token":"tsfIiDB/2cGI5sHRMIop7S3SS4KsbElJ/ukQKs6LpHY1XoG2pTMHqdiyLNu8aMda2pi3vTXscCKp8XGEvfl6dmIT1nfTTdMkmY84iRLIOIAl85iG/XZueI1WBRvchfV8TlZwDmECbSSzL+Wuv+jO+gdB04t89/1O/w1cDnyilFU=","permission_ids":["03796e14-7cb4-11ec-9dba-e72023efd1c6"],"tm_create":"2022-02-01 00:00:00.000000","tm_update":"2022-06-16 08:37:16.952738","tm_delete":"9999-01-01 00:00:00.000000"}"#;

    fn future() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    fn sign(claims: &Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn both_shapes_round_trip() {
        let v = TokenVerifier::new(SECRET);
        let customer = uuid::Uuid::new_v4();
        let agent = uuid::Uuid::new_v4();
        let t = mint_token(
            SECRET,
            &TokenRequest {
                customer_id: customer,
                agent_id: Some(agent),
                agent_name: "Alice".into(),
                permission: 0x10,
                ttl: Duration::from_secs(60),
            },
        )
        .unwrap();
        let c = v.verify(&t).unwrap();
        assert_eq!(c.customer_id, customer);
        assert_eq!(c.agent.as_ref().unwrap().id, agent);
        assert_eq!(c.agent.as_ref().unwrap().name, "Alice");
        assert_eq!(c.permission, 0x10);
        assert!(!c.is_customer_manager());

        let t = mint_token(
            SECRET,
            &TokenRequest {
                customer_id: customer,
                agent_id: None,
                agent_name: String::new(),
                permission: 0,
                ttl: Duration::from_secs(60),
            },
        )
        .unwrap();
        let c = v.verify(&t).unwrap();
        assert_eq!(c.customer_id, customer);
        assert_eq!(c.agent, None);
        assert!(c.is_customer_manager());
    }

    #[test]
    fn the_seed_customer_claim_is_understood() {
        let t = sign(
            &json!({"customer": SEED_CUSTOMER_CLAIM, "exp": future()}),
            Algorithm::HS256,
        );
        let c = TokenVerifier::new(SECRET).verify(&t).unwrap();
        assert_eq!(
            c.customer_id.to_string(),
            "5e4a0680-804e-11ec-8477-2fea5968d85b"
        );
        assert!(c.is_customer_manager());
    }

    #[test]
    fn the_agent_claim_may_be_a_json_string() {
        let agent = json!({"id": uuid::Uuid::new_v4(), "customer_id": uuid::Uuid::new_v4(), "permission": 0x40}).to_string();
        let t = sign(&json!({"agent": agent, "exp": future()}), Algorithm::HS256);
        let c = TokenVerifier::new(SECRET).verify(&t).unwrap();
        assert_eq!(c.permission, 0x40);
        assert_eq!(c.agent.unwrap().username, "");
    }

    #[test]
    fn expired_and_exp_less_tokens_are_refused() {
        let v = TokenVerifier::new(SECRET);
        let old = sign(
            &json!({"customer": SEED_CUSTOMER_CLAIM, "exp": 1_664_040_009}),
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&old), Err(AuthError::Expired));
        let none = sign(&json!({"customer": SEED_CUSTOMER_CLAIM}), Algorithm::HS256);
        assert!(matches!(v.verify(&none), Err(AuthError::Invalid(m)) if m.contains("exp")));
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let t = sign(
            &json!({"customer": SEED_CUSTOMER_CLAIM, "exp": future()}),
            Algorithm::HS256,
        );
        assert!(matches!(
            TokenVerifier::new(b"other").verify(&t),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let v = TokenVerifier::new(SECRET);
        let claims = json!({"customer": SEED_CUSTOMER_CLAIM, "exp": future()}).to_string();
        for alg in ["none", "None", "RS256", "ES256", "HS384"] {
            let header = json!({"alg": alg, "typ": "JWT"}).to_string();
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
            assert!(v.verify(&unsigned).is_err(), "{alg} without signature");
        }
        // HS384 signed with the right secret: still not HS256.
        let t = sign(
            &json!({"customer": SEED_CUSTOMER_CLAIM, "exp": future()}),
            Algorithm::HS384,
        );
        assert!(matches!(v.verify(&t), Err(AuthError::Invalid(m)) if m.contains("HS256")));
        // An RS256 header over an HMAC signature made with the secret (algorithm confusion).
        let good = sign(
            &json!({"customer": SEED_CUSTOMER_CLAIM, "exp": future()}),
            Algorithm::HS256,
        );
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            parts[1],
            parts[2]
        );
        assert!(v.verify(&forged).is_err());
    }

    #[test]
    fn garbage_and_shapeless_tokens_are_refused() {
        let v = TokenVerifier::new(SECRET);
        assert!(v.verify("garbage").is_err());
        assert!(v.verify("").is_err());
        let t = sign(&json!({"user": "x", "exp": future()}), Algorithm::HS256);
        assert!(matches!(v.verify(&t), Err(AuthError::Invalid(m)) if m.contains("neither")));
        let t = sign(
            &json!({"customer": "{\"id\": \"nope\"}", "exp": future()}),
            Algorithm::HS256,
        );
        assert!(matches!(v.verify(&t), Err(AuthError::Invalid(m)) if m.contains("customer.id")));
    }

    #[test]
    fn bearer_wins_over_the_query_and_the_query_is_decoded() {
        let v = TokenVerifier::new(SECRET);
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mint = |c| {
            mint_token(
                SECRET,
                &TokenRequest {
                    customer_id: c,
                    agent_id: None,
                    agent_name: String::new(),
                    permission: 0,
                    ttl: Duration::from_secs(60),
                },
            )
            .unwrap()
        };
        let (ta, tb) = (mint(a), mint(b));
        let query = format!("page_size=5&token={}", ta.replace('.', "%2E"));
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            v.caller_from_parts(&headers, Some(&query))
                .unwrap()
                .customer_id,
            a
        );
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {tb}").parse().unwrap(),
        );
        assert_eq!(
            v.caller_from_parts(&headers, Some(&query))
                .unwrap()
                .customer_id,
            b
        );
        assert_eq!(
            v.caller_from_parts(&http::HeaderMap::new(), Some("page_size=5")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            v.caller_from_parts(&http::HeaderMap::new(), None),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn manager_rights_by_bit() {
        let caller = |permission| Caller {
            customer_id: uuid::Uuid::nil(),
            agent: None,
            permission,
            expires_at: 0,
        };
        assert!(caller(0x01).is_customer_manager());
        assert!(caller(0x20).is_customer_manager());
        assert!(caller(0x40).is_customer_manager());
        assert!(caller(0x30).is_customer_manager());
        assert!(!caller(0x10).is_customer_manager());
        assert!(!caller(0).is_customer_manager());
    }
}
