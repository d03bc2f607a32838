//! Authentication between the services. Every gRPC call to chat-manager or message-manager
//! carries `authorization: Bearer <token>`: an HS256 JWT signed with the key the processes
//! share (`INTERNAL_AUTH_SECRET`), naming the caller (`iss`) and the one service it is for
//! (`aud`), valid for five minutes. A service answers UNAUTHENTICATED to a call without one,
//! with a bad signature or expired, meant for another service, or from a caller it does not
//! serve (chat-manager serves the gateway and message-manager; message-manager only the
//! gateway). Health checks (`grpc.health.v1`, what probes and `healthcheck` ask) need none.
//!
//! Why tokens rather than mutual TLS: no certificates to issue and rotate, one secret beside
//! the others in the deployment's Secret, and the same code path in the embedded default
//! (which makes a random key per start). What they do not give is encryption on the wire: the
//! pod network's (a CNI with WireGuard or IPsec, or a mesh) is relied on for that, and the
//! NetworkPolicies in deploy/ keep other pods from reaching the services at all. The key is
//! shared, so a process holding it could claim another's name; the policies limit who can
//! reach whom regardless.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secrets::WeakSecret;

/// The variable holding the shared key.
pub const SECRET_VARIABLE: &str = "INTERNAL_AUTH_SECRET";
/// How long a minted token is valid; callers mint a new one when half of it is gone.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Paths that need no token: gRPC health checking.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// A process of this system, as tokens name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    ApiGateway,
    ChatManager,
    MessageManager,
    WebhookManager,
}

/// Who may call chat-manager: the gateway, and message-manager (to fill its membership view).
pub const CHAT_MANAGER_CALLERS: &[ServiceName] =
    &[ServiceName::ApiGateway, ServiceName::MessageManager];
/// Who may call message-manager: the gateway.
pub const MESSAGE_MANAGER_CALLERS: &[ServiceName] = &[ServiceName::ApiGateway];
/// Who may call webhook-manager: the gateway.
pub const WEBHOOK_MANAGER_CALLERS: &[ServiceName] = &[ServiceName::ApiGateway];

impl ServiceName {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::ApiGateway => "api-gateway",
            ServiceName::ChatManager => "chat-manager",
            ServiceName::MessageManager => "message-manager",
            ServiceName::WebhookManager => "webhook-manager",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            ServiceName::ApiGateway,
            ServiceName::ChatManager,
            ServiceName::MessageManager,
            ServiceName::WebhookManager,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The shared key. Its Debug output never shows it.
#[derive(Clone)]
pub struct InternalKey(Arc<[u8]>);

impl std::fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalKey(..)")
    }
}

/// Why a process cannot authenticate its calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{SECRET_VARIABLE} is required in the split deployment: the same key (at least 32 \
         random bytes, `openssl rand -hex 32`) in the gateway, chat-manager and message-manager"
    )]
    Missing,
    #[error(transparent)]
    Weak(#[from] WeakSecret),
}

impl InternalKey {
    /// The configured key, refused when missing or weak.
    pub fn from_config(value: Option<&str>) -> Result<Self, KeyError> {
        let value = value.ok_or(KeyError::Missing)?;
        crate::secrets::check(SECRET_VARIABLE, value)?;
        Ok(InternalKey(Arc::from(value.as_bytes())))
    }

    /// A random key, for processes that call only themselves (the embedded default).
    pub fn generate() -> Self {
        InternalKey(Arc::from(crate::secrets::generate().as_bytes()))
    }

    /// What `me` attaches to its calls to `audience`.
    pub fn credentials(&self, me: ServiceName, audience: ServiceName) -> Credentials {
        Credentials(Arc::new(CredentialsInner {
            key: EncodingKey::from_secret(&self.0),
            issuer: me,
            audience,
            current: Mutex::new(None),
        }))
    }

    /// What `me` requires of the calls it serves: a token for it, from one of `callers`.
    pub fn guard(&self, me: ServiceName, callers: &'static [ServiceName]) -> CallGuard {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&[me.as_str()]);
        validation.set_issuer(&callers.iter().map(|c| c.as_str()).collect::<Vec<_>>());
        validation.leeway = 5;
        CallGuard(Arc::new(GuardInner {
            key: DecodingKey::from_secret(&self.0),
            validation,
            me,
            accepted: Mutex::new(HashMap::new()),
        }))
    }

    /// A token for a call from `me` to `audience`, valid for `TOKEN_LIFETIME`.
    pub fn token(&self, me: ServiceName, audience: ServiceName) -> String {
        mint(&EncodingKey::from_secret(&self.0), me, audience).0
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// A token and when it expires (unix seconds).
fn mint(key: &EncodingKey, me: ServiceName, audience: ServiceName) -> (String, i64) {
    let now = chrono::Utc::now().timestamp();
    let exp = now + TOKEN_LIFETIME.as_secs() as i64;
    let claims = Claims {
        iss: me.as_str().to_owned(),
        aud: audience.as_str().to_owned(),
        iat: now,
        exp,
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .expect("HS256 signing of plain claims cannot fail");
    (token, exp)
}

/// The `authorization` value a caller sends, renewed when half its life is gone. Cheap to
/// clone.
#[derive(Clone)]
pub struct Credentials(Arc<CredentialsInner>);

struct CredentialsInner {
    key: EncodingKey,
    issuer: ServiceName,
    audience: ServiceName,
    /// The header value and when to renew it (unix seconds).
    current: Mutex<Option<(http::HeaderValue, i64)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("issuer", &self.0.issuer)
            .field("audience", &self.0.audience)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn header(&self) -> http::HeaderValue {
        let now = chrono::Utc::now().timestamp();
        let mut current = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((value, renew_at)) = &*current
            && now < *renew_at
        {
            return value.clone();
        }
        let (token, exp) = mint(&self.0.key, self.0.issuer, self.0.audience);
        let value = http::HeaderValue::try_from(format!("Bearer {token}"))
            .expect("a JWT is a valid header value");
        let renew_at = exp - TOKEN_LIFETIME.as_secs() as i64 / 2;
        *current = Some((value.clone(), renew_at));
        value
    }
}

/// A server's check of its callers: a tower layer for the gRPC server (or an in-process one).
#[derive(Clone)]
pub struct CallGuard(Arc<GuardInner>);

struct GuardInner {
    key: DecodingKey,
    validation: Validation,
    me: ServiceName,
    /// Tokens accepted already, with their expiry: a caller sends the same token for minutes.
    accepted: Mutex<HashMap<String, i64>>,
}

/// Tokens remembered at most (callers are few; each renews its token every few minutes).
const ACCEPTED_TOKENS: usize = 64;

impl std::fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGuard")
            .field("service", &self.0.me)
            .finish_non_exhaustive()
    }
}

impl CallGuard {
    /// Ok when the request may be served; else why not (the UNAUTHENTICATED message).
    pub fn check<B>(&self, req: &http::Request<B>) -> Result<(), String> {
        if req.uri().path().starts_with(OPEN_PREFIX) {
            return Ok(());
        }
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                format!(
                    "{} serves only this system's services: no `authorization: Bearer <token>` \
                     (signed with {SECRET_VARIABLE})",
                    self.0.me.as_str()
                )
            })?;
        let now = chrono::Utc::now().timestamp();
        {
            let accepted = self.0.accepted.lock().unwrap_or_else(|e| e.into_inner());
            if accepted.get(token).is_some_and(|exp| now < *exp) {
                return Ok(());
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.0.key, &self.0.validation)
            .map_err(|e| format!("internal token refused: {e}"))?;
        let mut accepted = self.0.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if accepted.len() >= ACCEPTED_TOKENS {
            accepted.clear();
        }
        accepted.insert(token.to_owned(), data.claims.exp);
        Ok(())
    }
}

impl<S> tower::Layer<S> for CallGuard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a `CallGuard`.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: CallGuard,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<S::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.guard.check(&req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(why) => {
                tracing::warn!(path = %req.uri().path(), reason = %why, "gRPC call refused");
                Box::pin(std::future::ready(Ok(
                    tonic::Status::unauthenticated(why).into_http()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn key() -> InternalKey {
        InternalKey::generate()
    }

    fn request(path: &str, auth: Option<http::HeaderValue>) -> http::Request<()> {
        let mut req = http::Request::builder().uri(path).body(()).unwrap();
        if let Some(auth) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, auth);
        }
        req
    }

    const CHAT_CALLERS: &[ServiceName] = CHAT_MANAGER_CALLERS;

    #[test]
    fn only_tokens_for_this_service_from_its_callers_with_the_key_pass() {
        let key = key();
        let guard = key.guard(ServiceName::ChatManager, CHAT_CALLERS);
        let path = "/chat.v1.ChatService/GetChat";
        let from = |me, aud| Some(key.credentials(me, aud).header());
        assert_eq!(
            guard.check(&request(
                path,
                from(ServiceName::ApiGateway, ServiceName::ChatManager)
            )),
            Ok(())
        );
        assert_eq!(
            guard.check(&request(
                path,
                from(ServiceName::MessageManager, ServiceName::ChatManager)
            )),
            Ok(())
        );
        let refused = [
            (None, "no `authorization"),
            (
                Some(http::HeaderValue::from_static("Basic abc")),
                "no `authorization",
            ),
            (
                from(ServiceName::ApiGateway, ServiceName::MessageManager),
                "refused",
            ),
            (
                from(ServiceName::ChatManager, ServiceName::ChatManager),
                "refused",
            ),
            (
                Some(
                    InternalKey::generate()
                        .credentials(ServiceName::ApiGateway, ServiceName::ChatManager)
                        .header(),
                ),
                "refused",
            ),
            (
                Some(http::HeaderValue::from_static("Bearer not.a.token")),
                "refused",
            ),
        ];
        for (auth, needle) in refused {
            let err = guard.check(&request(path, auth.clone())).unwrap_err();
            assert!(err.contains(needle), "{auth:?}: {err}");
        }
        // Health checks need nothing.
        assert_eq!(
            guard.check(&request("/grpc.health.v1.Health/Check", None)),
            Ok(())
        );
        // Reflection is not health.
        assert!(
            guard
                .check(&request(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    None
                ))
                .is_err()
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let key = key();
        let guard = key.guard(ServiceName::MessageManager, &[ServiceName::ApiGateway]);
        let claims = Claims {
            iss: "api-gateway".into(),
            aud: "message-manager".into(),
            iat: 1,
            exp: chrono::Utc::now().timestamp() - 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&key.0),
        )
        .unwrap();
        let auth = http::HeaderValue::try_from(format!("Bearer {token}")).unwrap();
        let err = guard
            .check(&request(
                "/message.v1.MessageService/GetChatmessage",
                Some(auth),
            ))
            .unwrap_err();
        assert!(err.contains("Expired"), "{err}");
    }

    #[test]
    fn credentials_reuse_their_token_until_half_its_life() {
        let creds = key().credentials(ServiceName::ApiGateway, ServiceName::ChatManager);
        assert_eq!(creds.header(), creds.header());
        *creds.0.current.lock().unwrap() = Some((http::HeaderValue::from_static("old"), 0));
        assert_ne!(creds.header(), "old", "renewed once due");
    }

    #[test]
    fn weak_or_missing_keys_are_refused() {
        assert_eq!(
            InternalKey::from_config(None).unwrap_err(),
            KeyError::Missing
        );
        let err = InternalKey::from_config(Some("short"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(SECRET_VARIABLE), "{err}");
        assert!(InternalKey::from_config(Some(&crate::secrets::generate())).is_ok());
        assert_eq!(format!("{:?}", key()), "InternalKey(..)");
    }

    #[tokio::test]
    async fn a_refused_call_never_reaches_the_service() {
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
        });
        let key = key();
        let service = key
            .guard(ServiceName::ChatManager, CHAT_CALLERS)
            .layer(inner);
        let res = service
            .clone()
            .oneshot(request("/chat.v1.ChatService/GetChat", None))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(res.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        let ok = key
            .credentials(ServiceName::ApiGateway, ServiceName::ChatManager)
            .header();
        service
            .oneshot(request("/chat.v1.ChatService/GetChat", Some(ok)))
            .await
            .unwrap();
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
