//! The HTTP application: state, router, request ids and the extractors every handler uses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use http::request::Parts;
use tracing::Instrument;

use crate::auth::{AgentIdentity, Caller, TokenVerifier};
use crate::error::ApiError;
use crate::health::{self, Readiness};
use crate::rate_limit::{RateLimit, RateLimiter};
use crate::routes;
use crate::ws::WsSettings;
use crate::ws::hub::EventHub;
use common::grpc_client::{ChatClient, GrpcTransport, MessageClient, WebhookClient};

/// What every handler shares. One `Arc`: axum clones the state for each extractor and
/// middleware of every request, and a clone of the parts would be a dozen reference counts
/// and two boxed clients.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

pub struct AppParts {
    pub chat: ChatClient,
    pub message: MessageClient,
    /// None where no webhook-manager is configured: the webhook endpoints answer 503.
    pub webhook: Option<WebhookClient>,
    pub verifier: TokenVerifier,
    /// Feeds the WebSocket; None where no event bus is configured.
    pub hub: Option<EventHub>,
    pub ws: WsSettings,
    /// What `/readyz` checks.
    pub readiness: Readiness,
    /// Requests per caller, failed authentications per client address.
    pub rate_limiter: RateLimiter,
    /// The header a trusted load balancer puts the client's address in (else the peer's).
    pub client_ip_header: Option<http::HeaderName>,
    /// Open WebSockets per caller.
    pub sockets: crate::ws::SocketCounts,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl AppState {
    pub fn new(chat: GrpcTransport, message: GrpcTransport, verifier: TokenVerifier) -> Self {
        AppState(Arc::new(AppParts {
            chat: ChatClient::new(chat),
            message: MessageClient::new(message),
            webhook: None,
            verifier,
            hub: None,
            ws: WsSettings::default(),
            readiness: Readiness::default(),
            rate_limiter: RateLimiter::new(RateLimit::default()),
            client_ip_header: None,
            sockets: crate::ws::SocketCounts::default(),
        }))
    }

    /// The parts, to set up (before the state is shared).
    fn parts(&mut self) -> &mut AppParts {
        Arc::get_mut(&mut self.0).expect("the state is set up before it is shared")
    }

    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.parts().rate_limiter = RateLimiter::new(limit);
        self
    }

    /// Limits per caller and, for failed authentications, per client address.
    pub fn with_rate_limits(mut self, limit: RateLimit, failures: RateLimit) -> Self {
        self.parts().rate_limiter = RateLimiter::with_failures(limit, failures);
        self
    }

    /// Client addresses from this header (set by a trusted load balancer).
    pub fn with_client_ip_header(mut self, header: Option<http::HeaderName>) -> Self {
        self.parts().client_ip_header = header;
        self
    }

    pub fn with_webhooks(mut self, webhook: GrpcTransport) -> Self {
        self.parts().webhook = Some(WebhookClient::new(webhook));
        self
    }

    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.parts().readiness = readiness;
        self
    }

    pub fn with_hub(mut self, hub: EventHub, ws: WsSettings) -> Self {
        let parts = self.parts();
        parts.hub = Some(hub);
        parts.ws = ws;
        self
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest(
            "/v1.0",
            routes::router()
                .route("/ws", axum::routing::get(crate::ws::upgrade))
                .route("/openapi.json", axum::routing::get(crate::openapi::serve)),
        )
        // The agent console's page (it signs in with a token of its own).
        .merge(crate::console::router())
        // Outside /v1.0 and without a token: for probes and load balancers.
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Counts and times each request under its route pattern (`/v1.0/chats/{id}`: the raw path
/// would make a series per id); requests that match no route are `unmatched`.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    common::metrics::metrics().observe_http(
        &route,
        method.as_str(),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// What identifies one request to the services: its id, from the caller's `X-Request-Id` or
/// made here, and its W3C trace context, from the caller's `traceparent` or made here. Both go
/// to the services in gRPC metadata; the request id goes on into the events' headers.
#[derive(Debug, Clone)]
pub struct RequestId {
    pub id: String,
    pub traceparent: String,
}

/// What travels with a call to a service: the request id and, on creating calls, the
/// client's `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct CallMeta {
    pub request_id: RequestId,
    pub idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for CallMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let request_id = RequestId::from_request_parts(parts, state).await?;
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(v) => {
                let key = v
                    .to_str()
                    .map_err(|_| ApiError::invalid("Idempotency-Key: must be printable ASCII"))?;
                if key.is_empty() || key.len() > common::idempotency::MAX_KEY_LEN {
                    return Err(ApiError::invalid(format!(
                        "Idempotency-Key: must be 1 to {} characters",
                        common::idempotency::MAX_KEY_LEN
                    )));
                }
                Some(key.to_owned())
            }
        };
        Ok(CallMeta {
            request_id,
            idempotency_key,
        })
    }
}

impl CallMeta {
    /// A creating gRPC call: the request id, and the idempotency key scoped to the caller
    /// (its agent, or its customer for a customer-level token).
    pub fn grpc<T>(&self, message: T, caller: &Caller) -> tonic::Request<T> {
        let mut req = self.request_id.grpc(message);
        if let Some(key) = &self.idempotency_key {
            let scope = match &caller.agent {
                Some(agent) => format!("agent:{}", agent.id),
                None => format!("customer:{}", caller.customer_id),
            };
            if let (Ok(k), Ok(s)) = (key.parse(), scope.parse()) {
                req.metadata_mut()
                    .insert(common::idempotency::KEY_HEADER, k);
                req.metadata_mut()
                    .insert(common::idempotency::SCOPE_HEADER, s);
            }
        }
        req
    }
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(common::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // A malformed traceparent is replaced, as W3C Trace Context asks.
    let traceparent = req
        .headers()
        .get(common::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| common::telemetry::is_valid_traceparent(v))
        .map(str::to_owned)
        .unwrap_or_else(common::telemetry::new_traceparent);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        trace_id = %common::telemetry::trace_id(&traceparent),
        method = %req.method(),
        path = %req.uri().path(),
    );
    common::telemetry::set_remote_parent(&span, &traceparent);
    req.extensions_mut().insert(RequestId {
        id: id.clone(),
        traceparent: traceparent.clone(),
    });
    let mut res = async move {
        let res = next.run(req).await;
        tracing::info!(status = res.status().as_u16(), "handled");
        res
    }
    .instrument(span)
    .await;
    for (name, value) in [
        (common::REQUEST_ID_HEADER, &id),
        (common::TRACEPARENT_HEADER, &traceparent),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId {
                id: uuid::Uuid::new_v4().to_string(),
                traceparent: common::telemetry::new_traceparent(),
            }))
    }
}

impl RequestId {
    /// A gRPC request carrying this request id and trace context.
    pub fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Ok(v) = self.id.parse() {
            req.metadata_mut().insert(common::REQUEST_ID_HEADER, v);
        }
        if let Ok(v) = self.traceparent.parse() {
            req.metadata_mut().insert(common::TRACEPARENT_HEADER, v);
        }
        req
    }
}

/// The address of the client a connection comes from, as the server accepted it (put in each
/// request's extensions by `crate::serve`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

/// The client's address: from the configured header of a trusted load balancer (its last
/// address, the one the balancer added), else the connection's peer.
fn client_addr(parts: &Parts, state: &AppState) -> IpAddr {
    let from_header = state.client_ip_header.as_ref().and_then(|name| {
        let values = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok());
        values
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
    });
    from_header
        .or_else(|| parts.extensions.get::<PeerAddr>().map(|p| p.0))
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn rate_limited(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: crate::rate_limit::retry_after_secs(wait),
    }
}

/// Any verified caller, within its request rate. A token already verified is looked up; a new
/// one is verified only while its client address has failed authentication less than its
/// limit (429 before any work otherwise), and a failure counts against the address. The
/// caller is kept in the request, so a second extractor neither verifies nor counts again.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(Authenticated(caller.clone()));
        }
        let addr = client_addr(parts, state);
        let limiter = &state.rate_limiter;
        let verified = match crate::auth::raw_token(&parts.headers, parts.uri.query()) {
            Ok(token) => match state.verifier.remembered(&token) {
                Some(caller) => Ok(caller),
                None => {
                    limiter.may_fail(addr).map_err(rate_limited)?;
                    state.verifier.verify(&token)
                }
            },
            Err(e) => {
                limiter.may_fail(addr).map_err(rate_limited)?;
                Err(e)
            }
        };
        let caller = verified.inspect_err(|_| limiter.failed(addr))?;
        limiter.check(&caller).map_err(rate_limited)?;
        parts.extensions.insert(caller.clone());
        Ok(Authenticated(caller))
    }
}

/// A caller with admin or manager rights on its customer (customer-level endpoints).
pub struct CustomerAdmin(pub Caller);

impl FromRequestParts<AppState> for CustomerAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
        if !caller.is_customer_manager() {
            return Err(ApiError::PermissionDenied(
                "this endpoint needs customer admin or manager permission".into(),
            ));
        }
        Ok(CustomerAdmin(caller))
    }
}

/// A caller with an agent identity (agent endpoints, and posting as oneself).
pub struct AgentCaller(pub Caller, pub AgentIdentity);

fn require_agent(caller: Caller) -> Result<AgentCaller, ApiError> {
    match caller.agent.clone() {
        Some(agent) => Ok(AgentCaller(caller, agent)),
        None => Err(ApiError::PermissionDenied(
            "this endpoint acts as an agent: the token has no agent identity".into(),
        )),
    }
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
        require_agent(caller)
    }
}

/// An agent with admin or manager rights: customer-level endpoints that act as the agent
/// (`POST /chatrooms`, `POST /chatroommessages`).
pub struct AdminAgent(pub Caller, pub AgentIdentity);

impl FromRequestParts<AppState> for AdminAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CustomerAdmin(caller) = CustomerAdmin::from_request_parts(parts, state).await?;
        let AgentCaller(caller, agent) = require_agent(caller)?;
        Ok(AdminAgent(caller, agent))
    }
}

/// A UUID path parameter, normalised; a malformed one is 400 naming the parameter.
pub fn path_uuid(name: &str, value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::invalid(format!("{name}: not a valid UUID: {value:?}")))
}

/// The `{id}` of a path.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("path: {e}")))?;
        let id = params
            .get("id")
            .ok_or_else(|| ApiError::Internal("route has no {id}".into()))?;
        Ok(PathId(path_uuid("id", id)?))
    }
}

/// The query string as name/value pairs (the last of repeated names wins).
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("query: {e}")))?;
        Ok(QueryParams(map))
    }
}

impl QueryParams {
    /// `page_size` (1.., capped at 100 by the service) and `page_token`.
    pub fn page(&self) -> Result<proto::chat::v1::PageRequest, ApiError> {
        let page_size = match self.0.get("page_size") {
            None => 0,
            // As the document states it: an int64 of at least 1 (larger pages are capped).
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(i64::from(u32::MAX)) as u32,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "page_size: must be a whole number of at least 1, got {s:?}"
                    )));
                }
            },
        };
        let page_token = self.0.get("page_token").cloned().unwrap_or_default();
        Ok(proto::chat::v1::PageRequest {
            page_size,
            page_token,
        })
    }

    /// The page parameters, for message-manager.
    pub fn message_page(&self) -> Result<proto::message::v1::PageRequest, ApiError> {
        let p = self.page()?;
        Ok(proto::message::v1::PageRequest {
            page_size: p.page_size,
            page_token: p.page_token,
        })
    }

    /// A required UUID parameter.
    pub fn required_uuid(&self, name: &str) -> Result<String, ApiError> {
        self.uuid(name)?
            .ok_or_else(|| ApiError::invalid(format!("{name}: required")))
    }

    /// An optional UUID parameter (given empty, it is malformed, not absent).
    pub fn uuid(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.0.get(name).map(|v| path_uuid(name, v)).transpose()
    }
}
