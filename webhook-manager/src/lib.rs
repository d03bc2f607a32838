//! webhook-manager: customers' webhooks, and the delivery of their chat events to them, over
//! gRPC (`webhook.v1.WebhookService`).
//!
//! It consumes both services' events from its own durable queue (`events`), records a
//! delivery for each event a webhook lists, and its dispatcher (`dispatch`) sends them, signed
//! (`signature`), retried with backoff (`deliveries`), to addresses the SSRF guard passes
//! (`address`). `service()` builds the gRPC service, the consumer and the dispatcher; `main.rs`
//! serves it on a socket, and the gateway's embedded default calls it in-process.

pub mod address;
pub mod config;
pub mod db;
pub mod deliveries;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod grpc;
pub mod signature;
pub mod webhooks;

use common::db::{Db, DbConnection};
use common::idempotency::IdempotencyKey;
use common::page::Page;
use common::time;
use diesel::Connection;
use pipeline::bus::{EventBus, Subscription, SubscriptionSpec};
use proto::webhook::v1 as pb;
use proto::webhook::v1::webhook_service_server::WebhookServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::address::AddressPolicy;
use crate::db::models::WebhookRow;
use crate::db::queries;
use crate::dispatch::{DispatchSettings, Dispatcher, Wake};
use crate::error::WebhookError;
use crate::webhooks::{NewWebhook, WebhookChange};

/// webhook-manager's durable queue of both services' events, unless configured otherwise.
pub const DEFAULT_EVENTS_QUEUE: &str = pipeline::topology::WEBHOOK_EVENTS_QUEUE;

/// Where the events come from.
#[derive(Debug, Clone)]
pub struct Topology {
    pub chat_exchange: String,
    pub message_exchange: String,
    pub queue: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            chat_exchange: pipeline::topology::CHAT_EXCHANGE.into(),
            message_exchange: pipeline::topology::MESSAGE_EXCHANGE.into(),
            queue: DEFAULT_EVENTS_QUEUE.into(),
        }
    }
}

impl Topology {
    pub fn subscription(&self) -> SubscriptionSpec {
        pipeline::topology::webhook_events_subscriber(
            &self.chat_exchange,
            &self.message_exchange,
            &self.queue,
        )
    }
}

/// Subscribes to the events. Done before the publishers' relays start in the embedded
/// default, whose in-process bus keeps nothing for late subscribers.
pub async fn subscribe(
    bus: &EventBus,
    topology: &Topology,
) -> Result<Subscription, pipeline::bus::BusError> {
    pipeline::consumer::subscribe_with_dead_letters(bus, topology.subscription(), &[]).await
}

/// The domain entry point: webhooks and their deliveries, scoped to a tenant.
#[derive(Clone)]
pub struct WebhookManager {
    db: Db,
    address: AddressPolicy,
    wake: Wake,
}

impl WebhookManager {
    pub fn new(db: Db, address: AddressPolicy, wake: Wake) -> Self {
        WebhookManager { db, address, wake }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, WebhookError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, WebhookError> + Send + 'static,
        T: Send + 'static,
    {
        self.db.run(move |conn| conn.transaction(f)).await
    }

    /// Runs `change` in a transaction, once per idempotency key: a retry with the same key
    /// gets the first answer and changes nothing.
    async fn once<P, F>(&self, key: Option<IdempotencyKey>, change: F) -> Result<P, WebhookError>
    where
        P: prost::Message + Default + Send + 'static,
        F: Fn(&mut DbConnection) -> Result<P, WebhookError> + Clone + Send + 'static,
    {
        loop {
            let (key, change) = (key.clone(), change.clone());
            let answer = self
                .run(move |conn| {
                    if let Some(key) = &key
                        && let Some(first) = key.replay_or_claim(conn)?
                    {
                        return P::decode(first.as_slice()).map_err(|e| {
                            WebhookError::Internal(format!("idempotency record: {e}"))
                        });
                    }
                    let answer = change(conn)?;
                    if let Some(key) = &key {
                        key.complete(conn, &answer.encode_to_vec())?;
                    }
                    Ok(answer)
                })
                .await;
            match answer {
                // A concurrent request with the key committed first: replay it.
                Err(WebhookError::Retry) => continue,
                other => return other,
            }
        }
    }

    /// Creates a webhook; the answer carries its secret.
    pub async fn create(
        &self,
        new: NewWebhook,
        key: Option<IdempotencyKey>,
    ) -> Result<pb::Webhook, WebhookError> {
        webhooks::uri(&new.uri, self.address).await?;
        let new = std::sync::Arc::new(new);
        self.once(key, move |conn| {
            let row = new.row();
            if queries::count_live_webhooks(conn, &row.customer_id)?
                >= webhooks::MAX_WEBHOOKS_PER_CUSTOMER
            {
                return Err(WebhookError::Conflict(format!(
                    "webhooks: a customer may have at most {} (delete one first)",
                    webhooks::MAX_WEBHOOKS_PER_CUSTOMER
                )));
            }
            queries::insert_webhook(conn, &row)?;
            Ok(webhooks::to_proto(&row, true))
        })
        .await
    }

    pub async fn get(&self, customer_id: &str, id: &str) -> Result<WebhookRow, WebhookError> {
        let (c, id) = (customer_id.to_owned(), id.to_owned());
        self.run(move |conn| found(queries::tenant_webhook(conn, &c, &id)?))
            .await
    }

    pub async fn list(
        &self,
        customer_id: &str,
        page: Page,
    ) -> Result<(Vec<WebhookRow>, String), WebhookError> {
        let c = customer_id.to_owned();
        self.run(move |conn| {
            let rows = queries::list_webhooks(conn, &c, &page)?;
            Ok(page.finish(rows, |r| (r.tm_create, r.id.clone())))
        })
        .await
    }

    /// Changes a live webhook's fields.
    pub async fn update(
        &self,
        customer_id: &str,
        id: &str,
        change: WebhookChange,
    ) -> Result<WebhookRow, WebhookError> {
        if let Some(uri) = &change.uri {
            webhooks::uri(uri, self.address).await?;
        }
        let enables = change.enables();
        let (c, i) = (customer_id.to_owned(), id.to_owned());
        let row = self
            .run(move |conn| {
                let mut row = live(queries::tenant_webhook(conn, &c, &i)?)?;
                change.apply(&mut row);
                queries::save_webhook(conn, &row)?;
                Ok(row)
            })
            .await?;
        if enables {
            self.wake.webhooks([row.id.clone()]);
        }
        Ok(row)
    }

    /// Deletes a webhook; its deliveries not yet done are given up.
    pub async fn delete(&self, customer_id: &str, id: &str) -> Result<WebhookRow, WebhookError> {
        let (c, i) = (customer_id.to_owned(), id.to_owned());
        self.run(move |conn| {
            let mut row = found(queries::tenant_webhook(conn, &c, &i)?)?;
            if row.tm_delete != time::live() {
                return Ok(row);
            }
            let now = time::now();
            row.tm_update = now;
            row.tm_delete = now;
            queries::save_webhook(conn, &row)?;
            queries::fail_active_deliveries(conn, &row.id, "webhook deleted", now)?;
            Ok(row)
        })
        .await
    }

    /// A new secret for a live webhook; the old one signs nothing more. The answer carries
    /// the new secret.
    pub async fn rotate_secret(
        &self,
        customer_id: &str,
        id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<pb::Webhook, WebhookError> {
        let (c, i) = (customer_id.to_owned(), id.to_owned());
        self.once(key, move |conn| {
            let mut row = live(queries::tenant_webhook(conn, &c, &i)?)?;
            row.secret = signature::generate_secret();
            row.tm_update = time::now();
            queries::save_webhook(conn, &row)?;
            Ok(webhooks::to_proto(&row, true))
        })
        .await
    }

    /// A page of the webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        customer_id: &str,
        webhook_id: &str,
        status: Option<String>,
        page: Page,
    ) -> Result<(Vec<pb::Delivery>, String), WebhookError> {
        let (c, w) = (customer_id.to_owned(), webhook_id.to_owned());
        self.run(move |conn| {
            let webhook = found(queries::tenant_webhook(conn, &c, &w)?)?;
            let rows = queries::list_deliveries(conn, &webhook.id, status.as_deref(), &page)?;
            let (rows, token) = page.finish(rows, |r| (r.tm_create, r.id.clone()));
            Ok((rows.iter().map(deliveries::to_proto).collect(), token))
        })
        .await
    }

    /// Queues a delivery of a live webhook again, due now.
    pub async fn retry(
        &self,
        customer_id: &str,
        webhook_id: &str,
        id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<pb::Delivery, WebhookError> {
        let (c, w, i) = (customer_id.to_owned(), webhook_id.to_owned(), id.to_owned());
        let delivery = self
            .once(key, move |conn| {
                let webhook = live(queries::tenant_webhook(conn, &c, &w)?)?;
                if queries::delivery(conn, &webhook.id, &i)?.is_none() {
                    return Err(WebhookError::not_found("delivery"));
                }
                queries::requeue(conn, &i, time::now())?;
                let row = queries::delivery(conn, &webhook.id, &i)?
                    .ok_or_else(|| WebhookError::not_found("delivery"))?;
                Ok(deliveries::to_proto(&row))
            })
            .await?;
        self.wake.webhooks([delivery.webhook_id.clone()]);
        Ok(delivery)
    }
}

fn found(row: Option<WebhookRow>) -> Result<WebhookRow, WebhookError> {
    row.ok_or_else(|| WebhookError::not_found("webhook"))
}

/// A live webhook: a deleted one is not found for changes.
fn live(row: Option<WebhookRow>) -> Result<WebhookRow, WebhookError> {
    found(row.filter(|r| r.tm_delete == time::live()))
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub topology: Topology,
    pub dispatch: DispatchSettings,
}

/// The gRPC service over `db`, the consumer of the events (`subscription`, made by
/// `subscribe`; `None`: the consumer subscribes in the background, with backoff) and the
/// dispatcher, until `shutdown` turns true.
pub fn service(
    db: Db,
    bus: EventBus,
    settings: ServiceSettings,
    subscription: impl Into<Option<Subscription>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(WebhookServiceServer<grpc::WebhookGrpc>, Vec<JoinHandle<()>>), WebhookError> {
    let wake = Wake::default();
    let dispatcher = Dispatcher::new(db.clone(), settings.dispatch, wake.clone())?;
    let dispatch_task = tokio::spawn(dispatcher.run(shutdown.clone()));
    dispatch::watch_backlog(db.clone(), shutdown.clone());
    pipeline::bus::watch_queue_depth(bus.clone(), &settings.topology.queue, shutdown.clone());
    let consumer = events::consumer(
        db.clone(),
        bus,
        settings.topology.subscription(),
        wake.clone(),
    );
    let consumer_task = tokio::spawn(consumer.run(subscription.into(), shutdown.clone()));
    let jobs = vec![
        common::housekeeping::IDEMPOTENCY_KEYS,
        ("processed event ids", queries::purge_processed),
        ("finished deliveries", queries::purge_finished),
    ];
    tokio::spawn(common::housekeeping::run(
        db.clone(),
        std::time::Duration::from_secs(3600),
        jobs,
        shutdown,
    ));
    let manager = WebhookManager::new(db, settings.dispatch.address, wake);
    Ok((
        WebhookServiceServer::new(grpc::WebhookGrpc::new(manager)),
        vec![dispatch_task, consumer_task],
    ))
}
