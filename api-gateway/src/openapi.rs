//! The OpenAPI 3.1 document of the REST API, served at `GET /v1.0/openapi.json`. The operations
//! come from the handlers' `#[utoipa::path]` attributes and the schemas from the very types the
//! handlers parse and answer with; what every operation shares (the error responses, the
//! tokens, `Idempotency-Key` on creates) is added here once.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, Ref, Required, ResponseBuilder, SecurityRequirement,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// Statuses any operation may answer with the error JSON, and when.
const ERROR_RESPONSES: &[(&str, &str)] = &[
    (
        "400",
        "Invalid input; the message names the field or parameter",
    ),
    ("401", "Missing, malformed or expired token"),
    (
        "403",
        "The token lacks the permission (or the agent identity) the endpoint needs",
    ),
    ("404", "No such resource for this caller"),
    (
        "409",
        "Conflicts with the current state (a live normal chat of that pair, say)",
    ),
    ("408", "The body did not arrive within 10 s"),
    ("413", "Body larger than 1 MiB"),
    (
        "429",
        "Over the token's request rate; `Retry-After` says when to come back",
    ),
    ("500", "Unexpected failure"),
    (
        "503",
        "A backing service is unavailable; retry (with the same `Idempotency-Key`)",
    ),
];

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /v1.0/openapi.json`: public, like the contract it describes.
pub async fn serve() -> Response {
    static JSON: OnceLock<Bytes> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        Bytes::from(serde_json::to_vec_pretty(document()).expect("the document serializes"))
    });
    let mut res = body.clone().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn build() -> OpenApi {
    let mut doc = crate::routes::operations();
    doc.info = InfoBuilder::new()
        .title("VoIPbin chat API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Chats between agents of a contact centre: chats and their per-participant \
             chatrooms, chatmessages and their per-chatroom copies. Every error is \
             `{\"error\": {\"code\", \"message\"}}`. Real-time events come over the WebSocket \
             at `GET /v1.0/ws` (see the README).",
        ))
        .build();

    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    let mut nested = Vec::new();
    ErrorBody::schemas(&mut nested);
    components.schemas.extend(nested);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("An HS256 JWT: `Authorization: Bearer <token>`"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "token",
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
            "token",
            "The same JWT in the query: `?token=<token>`",
        ))),
    );
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::new("token", Vec::<String>::new()),
    ]);

    doc.webhooks = Some(webhook_delivery());

    for item in doc.paths.paths.values_mut() {
        let operations = [item.get.as_mut(), item.put.as_mut(), item.delete.as_mut()];
        for op in operations.into_iter().flatten() {
            add_error_responses(op);
        }
        if let Some(op) = item.post.as_mut() {
            add_error_responses(op);
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(idempotency_key().into());
        }
    }
    doc
}

/// What a customer's server receives for each event its webhook lists (OpenAPI 3.1
/// `webhooks`): the request, its signature headers, and what the answer means.
fn webhook_delivery() -> utoipa::openapi::path::Paths {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let header = |name: &str, description: &str| {
        let mut p = Parameter::new(name);
        p.parameter_in = ParameterIn::Header;
        p.required = Required::True;
        p.description = Some(description.to_owned());
        p.schema = Some(ObjectBuilder::new().schema_type(Type::String).into());
        p
    };
    let event_types: Vec<&str> = pipeline::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    let frame = ObjectBuilder::new()
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(event_types)),
        )
        .required("type")
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("The resource, as the REST API returns it")),
        )
        .required("data");
    let operation = OperationBuilder::new()
        .operation_id(Some("chatEvent"))
        .tag("webhooks")
        .summary(Some(
            "An event, sent to a webhook's `uri` with its `method`",
        ))
        .description(Some(
            "One request per resource of an event the webhook lists (the WebSocket's frame). \
             A 2xx answer within 10 s acknowledges it; a network error, a timeout, 408, 429 \
             (`Retry-After` honoured) or a 5xx is retried with exponential backoff for 24 \
             hours; any other answer fails it at once.",
        ))
        .parameter(header(
            "webhook-id",
            "The delivery's id, the same on every retry: deduplicate on it",
        ))
        .parameter(header("webhook-timestamp", "Unix seconds of this attempt"))
        .parameter(header(
            "webhook-signature",
            "`v1,<base64 of HMAC-SHA256(key, \"<webhook-id>.<webhook-timestamp>.<body>\")>`, \
             the key being the base64-decoded part of the secret after `whsec_` (Standard \
             Webhooks)",
        ))
        .parameter(header(
            "X-VoIPBIN-Signature",
            "`sha256=<hex of HMAC-SHA256(secret, body)>`, keyed with the whole secret",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(frame)).build(),
                )
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new().description("Any 2xx within 10 s: delivered"),
        )
        .build();
    PathsBuilder::new()
        .path("chatEvent", PathItem::new(HttpMethod::Post, operation))
        .build()
}

fn add_error_responses(op: &mut Operation) {
    for (status, description) in ERROR_RESPONSES {
        op.responses.responses.insert(
            (*status).into(),
            ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build()
                .into(),
        );
    }
}

fn idempotency_key() -> Parameter {
    let mut p = Parameter::new("Idempotency-Key");
    p.parameter_in = ParameterIn::Header;
    p.required = Required::False;
    p.description = Some(
        "Makes a retry safe: a repeat with the same key (1 to 255 printable ASCII characters, \
         kept 24 hours) returns the first result and creates nothing"
            .into(),
    );
    p.schema = Some(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(255))
            .into(),
    );
    p
}
