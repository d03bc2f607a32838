//! Thin gRPC handlers: map requests to domain calls, results to replies, errors to `Status`
//! (via `From<WebhookError>`).

use common::idempotency::IdempotencyKey;
use common::page::Page;
use proto::webhook::v1 as pb;
use proto::webhook::v1::webhook_service_server::WebhookService;
use tonic::{Request, Response, Status};

use crate::WebhookManager;
use crate::deliveries;
use crate::error::{WebhookError, parse_id};
use crate::webhooks::{self, NewWebhook, WebhookChange};

#[derive(Clone)]
pub struct WebhookGrpc {
    manager: WebhookManager,
}

impl WebhookGrpc {
    pub fn new(manager: WebhookManager) -> Self {
        WebhookGrpc { manager }
    }
}

fn page(p: Option<pb::PageRequest>) -> Result<Page, WebhookError> {
    let p = p.unwrap_or_default();
    Ok(Page::new(p.page_size, &p.page_token)?)
}

fn idempotency_key<T: prost::Message>(
    req: &Request<T>,
    customer_id: &str,
    method: &str,
) -> Result<Option<IdempotencyKey>, WebhookError> {
    Ok(IdempotencyKey::of_request(req, customer_id, method)?)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl WebhookService for WebhookGrpc {
    async fn create_webhook(&self, req: Request<pb::CreateWebhookRequest>) -> Reply<pb::Webhook> {
        let key = idempotency_key(&req, &req.get_ref().customer_id, "CreateWebhook")?;
        let r = req.into_inner();
        let new = NewWebhook {
            customer_id: parse_id("customer_id", &r.customer_id)?,
            name: webhooks::name(&r.name)?,
            uri: r.uri,
            method: webhooks::method(&r.method)?,
            event_types: webhooks::event_types(&r.event_types)?,
        };
        Ok(Response::new(self.manager.create(new, key).await?))
    }

    async fn get_webhook(&self, req: Request<pb::GetWebhookRequest>) -> Reply<pb::Webhook> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let row = self.manager.get(&customer, &id).await?;
        Ok(Response::new(webhooks::to_proto(&row, false)))
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Reply<pb::ListWebhooksResponse> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let (rows, next) = self.manager.list(&customer, page(r.page)?).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: rows.iter().map(|w| webhooks::to_proto(w, false)).collect(),
            next_page_token: next,
        }))
    }

    async fn update_webhook(&self, req: Request<pb::UpdateWebhookRequest>) -> Reply<pb::Webhook> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let change = WebhookChange {
            name: r.name.as_deref().map(webhooks::name).transpose()?,
            uri: r.uri,
            method: r.method.as_deref().map(webhooks::method).transpose()?,
            event_types: r
                .event_types
                .map(|t| webhooks::event_types(&t.event_types))
                .transpose()?,
            status: r.status.as_deref().map(webhooks::status).transpose()?,
        };
        let row = self.manager.update(&customer, &id, change).await?;
        Ok(Response::new(webhooks::to_proto(&row, false)))
    }

    async fn delete_webhook(&self, req: Request<pb::DeleteWebhookRequest>) -> Reply<pb::Webhook> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        let row = self.manager.delete(&customer, &id).await?;
        Ok(Response::new(webhooks::to_proto(&row, false)))
    }

    async fn rotate_secret(&self, req: Request<pb::RotateSecretRequest>) -> Reply<pb::Webhook> {
        let key = idempotency_key(&req, &req.get_ref().customer_id, "RotateSecret")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let id = parse_id("id", &r.id)?;
        Ok(Response::new(
            self.manager.rotate_secret(&customer, &id, key).await?,
        ))
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Reply<pb::ListDeliveriesResponse> {
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let webhook = parse_id("webhook_id", &r.webhook_id)?;
        let status = deliveries::status_filter(&r.status)?;
        let (deliveries, next) = self
            .manager
            .deliveries(&customer, &webhook, status, page(r.page)?)
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries,
            next_page_token: next,
        }))
    }

    async fn retry_delivery(&self, req: Request<pb::RetryDeliveryRequest>) -> Reply<pb::Delivery> {
        let key = idempotency_key(&req, &req.get_ref().customer_id, "RetryDelivery")?;
        let r = req.into_inner();
        let customer = parse_id("customer_id", &r.customer_id)?;
        let webhook = parse_id("webhook_id", &r.webhook_id)?;
        let id = parse_id("id", &r.id)?;
        Ok(Response::new(
            self.manager.retry(&customer, &webhook, &id, key).await?,
        ))
    }
}
