//! `/v1.0/webhooks...`: customer-level webhooks and their deliveries (webhook-manager).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use common::grpc_client::WebhookClient;
use common::resources::ListJson;
use proto::webhook::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{IdParam, PageParams};
use crate::app::{AppState, CallMeta, CustomerAdmin, PathId, QueryParams, RequestId, path_uuid};
use crate::error::ApiError;
use crate::json::{Json, JsonBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(read).put(update).delete(remove))
        .route("/webhooks/{id}/secret", post(rotate_secret))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(retry_delivery),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    create,
    list,
    read,
    update,
    remove,
    rotate_secret,
    list_deliveries,
    retry_delivery
))]
pub(super) struct Api;

/// A customer's webhook: where its events are delivered.
#[derive(Clone, Serialize, ToSchema)]
pub struct WebhookJson {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    pub uri: String,
    /// `POST` or `PUT`.
    pub method: String,
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// `whsec_<base64 of 32 random bytes>`: in the answers of creation and rotation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub tm_create: String,
    pub tm_update: String,
    pub tm_delete: String,
}

/// Without the secret: a value in a log line must not leak it.
impl std::fmt::Debug for WebhookJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookJson")
            .field("id", &self.id)
            .field("customer_id", &self.customer_id)
            .field("uri", &self.uri)
            .field("status", &self.status)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl From<pb::Webhook> for WebhookJson {
    fn from(w: pb::Webhook) -> Self {
        WebhookJson {
            id: w.id,
            customer_id: w.customer_id,
            name: w.name,
            uri: w.uri,
            method: w.method,
            event_types: w.event_types,
            status: w.status,
            secret: Some(w.secret).filter(|s| !s.is_empty()),
            tm_create: w.tm_create,
            tm_update: w.tm_update,
            tm_delete: w.tm_delete,
        }
    }
}

/// One event for one webhook, and how its attempts went.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryJson {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// The last answer's HTTP status; 0 when there was none.
    pub last_status_code: u32,
    pub last_error: String,
    pub tm_next_attempt: String,
    pub tm_create: String,
    pub tm_update: String,
}

impl From<pb::Delivery> for DeliveryJson {
    fn from(d: pb::Delivery) -> Self {
        DeliveryJson {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            tm_next_attempt: d.tm_next_attempt,
            tm_create: d.tm_create,
            tm_update: d.tm_update,
        }
    }
}

type WebhookReply = Result<Json<WebhookJson>, ApiError>;

fn client(app: &AppState) -> Result<WebhookClient, ApiError> {
    app.webhook.clone().ok_or_else(|| {
        ApiError::Unavailable("webhooks are not configured (WEBHOOK_MANAGER_URL)".into())
    })
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
enum MethodJson {
    Post,
    Put,
}

impl MethodJson {
    fn as_str(self) -> &'static str {
        match self {
            MethodJson::Post => "POST",
            MethodJson::Put => "PUT",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum StatusJson {
    Enabled,
    Disabled,
}

impl StatusJson {
    fn as_str(self) -> &'static str {
        match self {
            StatusJson::Enabled => "enabled",
            StatusJson::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct CreateWebhook {
    #[schema(max_length = 1000)]
    name: Option<String>,
    /// An absolute http or https URL (in the split deployment, not resolving to a loopback,
    /// private or link-local address unless the operator allows it).
    #[schema(required = true, max_length = 2000)]
    uri: Option<String>,
    /// `POST` unless given.
    method: Option<MethodJson>,
    /// Event types to deliver; left out or empty: every chat-level type (`chat_*`,
    /// `messagechat_*`).
    event_types: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/v1.0/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 200, description = "The webhook, with its `secret` (shown only here and on rotation)", body = WebhookJson)))]
async fn create(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> WebhookReply {
    let req = pb::CreateWebhookRequest {
        customer_id: caller.customer_id.to_string(),
        name: body.name.unwrap_or_default(),
        uri: super::required("uri", body.uri)?,
        method: body.method.map(MethodJson::as_str).unwrap_or("POST").into(),
        event_types: body.event_types.unwrap_or_default(),
    };
    let webhook = client(&app)?
        .create_webhook(meta.grpc(req, &caller))
        .await?;
    Ok(Json(webhook.into_inner().into()))
}

#[utoipa::path(get, path = "/v1.0/webhooks", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "A page of the customer's webhooks, newest first", body = ListJson<WebhookJson>)))]
async fn list(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    query: QueryParams,
) -> Result<Json<ListJson<WebhookJson>>, ApiError> {
    let page = query.page()?;
    let req = pb::ListWebhooksRequest {
        customer_id: caller.customer_id.to_string(),
        page: Some(pb::PageRequest {
            page_size: page.page_size,
            page_token: page.page_token,
        }),
    };
    let res = client(&app)?
        .list_webhooks(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res.webhooks.into_iter().map(WebhookJson::from).collect(),
        next_page_token: res.next_page_token,
    }))
}

#[utoipa::path(get, path = "/v1.0/webhooks/{id}", tag = "webhooks", params(IdParam),
    responses((status = 200, description = "The webhook (deleted ones too, with `tm_delete` set)", body = WebhookJson)))]
async fn read(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> WebhookReply {
    let req = pb::GetWebhookRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let webhook = client(&app)?.get_webhook(rid.grpc(req)).await?;
    Ok(Json(webhook.into_inner().into()))
}

/// Fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
struct UpdateWebhook {
    #[schema(max_length = 1000)]
    name: Option<String>,
    #[schema(max_length = 2000)]
    uri: Option<String>,
    method: Option<MethodJson>,
    /// Empty: every chat-level type.
    event_types: Option<Vec<String>>,
    /// `disabled`: no new deliveries, and those not yet done wait until it is `enabled`.
    status: Option<StatusJson>,
}

#[utoipa::path(put, path = "/v1.0/webhooks/{id}", tag = "webhooks", params(IdParam), request_body = UpdateWebhook,
    responses((status = 200, description = "The changed webhook", body = WebhookJson)))]
async fn update(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> WebhookReply {
    let req = pb::UpdateWebhookRequest {
        customer_id: caller.customer_id.to_string(),
        id,
        name: body.name,
        uri: body.uri,
        method: body.method.map(|m| m.as_str().to_owned()),
        event_types: body
            .event_types
            .map(|event_types| pb::EventTypes { event_types }),
        status: body.status.map(|s| s.as_str().to_owned()),
    };
    let webhook = client(&app)?.update_webhook(rid.grpc(req)).await?;
    Ok(Json(webhook.into_inner().into()))
}

#[utoipa::path(delete, path = "/v1.0/webhooks/{id}", tag = "webhooks", params(IdParam),
    responses((status = 200, description = "The deleted webhook, with `tm_delete` set; its deliveries not yet done are given up", body = WebhookJson)))]
async fn remove(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
) -> WebhookReply {
    let req = pb::DeleteWebhookRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let webhook = client(&app)?.delete_webhook(rid.grpc(req)).await?;
    Ok(Json(webhook.into_inner().into()))
}

#[utoipa::path(post, path = "/v1.0/webhooks/{id}/secret", tag = "webhooks", params(IdParam),
    responses((status = 200, description = "The webhook with its new `secret`; the old one signs nothing more", body = WebhookJson)))]
async fn rotate_secret(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    PathId(id): PathId,
) -> WebhookReply {
    let req = pb::RotateSecretRequest {
        customer_id: caller.customer_id.to_string(),
        id,
    };
    let webhook = client(&app)?.rotate_secret(meta.grpc(req, &caller)).await?;
    Ok(Json(webhook.into_inner().into()))
}

/// Which deliveries to list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct DeliveryFilter {
    /// `pending`, `retrying`, `succeeded` or `failed`; left out: all.
    status: Option<String>,
}

#[utoipa::path(get, path = "/v1.0/webhooks/{id}/deliveries", tag = "webhooks", params(IdParam, PageParams, DeliveryFilter),
    responses((status = 200, description = "A page of the webhook's deliveries, newest first", body = ListJson<DeliveryJson>)))]
async fn list_deliveries(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    rid: RequestId,
    PathId(id): PathId,
    query: QueryParams,
) -> Result<Json<ListJson<DeliveryJson>>, ApiError> {
    let page = query.page()?;
    let req = pb::ListDeliveriesRequest {
        customer_id: caller.customer_id.to_string(),
        webhook_id: id,
        page: Some(pb::PageRequest {
            page_size: page.page_size,
            page_token: page.page_token,
        }),
        status: query.0.get("status").cloned().unwrap_or_default(),
    };
    let res = client(&app)?
        .list_deliveries(rid.grpc(req))
        .await?
        .into_inner();
    Ok(Json(ListJson {
        result: res.deliveries.into_iter().map(DeliveryJson::from).collect(),
        next_page_token: res.next_page_token,
    }))
}

#[utoipa::path(post, path = "/v1.0/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(IdParam, ("delivery_id" = uuid::Uuid, Path, description = "The delivery to queue again")),
    responses((status = 200, description = "The delivery, queued again (due now)", body = DeliveryJson)))]
async fn retry_delivery(
    State(app): State<AppState>,
    CustomerAdmin(caller): CustomerAdmin,
    meta: CallMeta,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<DeliveryJson>, ApiError> {
    let req = pb::RetryDeliveryRequest {
        customer_id: caller.customer_id.to_string(),
        webhook_id: path_uuid("id", &id)?,
        id: path_uuid("delivery_id", &delivery_id)?,
    };
    let delivery = client(&app)?
        .retry_delivery(meta.grpc(req, &caller))
        .await?;
    Ok(Json(delivery.into_inner().into()))
}
