//! The consumer of both services' events: each event of a tenant becomes a delivery for each
//! of the tenant's enabled webhooks that lists its type (a many-item event: one per item the
//! webhook lists, as on the WebSocket), recorded in one transaction with the event's id, so a
//! redelivered event makes no second delivery. Then the dispatcher is woken.

use common::db::Db;
use diesel::Connection;
use pipeline::bus::SubscriptionSpec;
use pipeline::consumer::{DurableConsumer, EventHandler, Failure};

use crate::db::models::DeliveryRow;
use crate::db::queries;
use crate::dispatch::Wake;
use crate::error::WebhookError;
use crate::webhooks::listed_event_types;

/// Turns events into deliveries.
pub struct DeliveryPlanner {
    pub db: Db,
    pub wake: Wake,
}

impl EventHandler for DeliveryPlanner {
    async fn handle(&self, payload: &[u8]) -> Result<(), Failure> {
        match plan(&self.db, payload).await {
            Ok(webhooks) => {
                self.wake.webhooks(webhooks);
                Ok(())
            }
            Err(WebhookError::Unavailable(why)) => Err(Failure::Unavailable(why)),
            Err(WebhookError::InvalidArgument(why)) => Err(Failure::Malformed(why)),
            Err(e) => Err(Failure::Failed(e.to_string())),
        }
    }
}

/// The consumer of `spec`'s queue.
pub fn consumer(
    db: Db,
    bus: pipeline::bus::EventBus,
    spec: SubscriptionSpec,
    wake: Wake,
) -> DurableConsumer<DeliveryPlanner> {
    DurableConsumer {
        bus,
        spec,
        stale_bindings: Vec::new(),
        what: "webhook events",
        handler: DeliveryPlanner { db, wake },
    }
}

/// Records the deliveries of one CloudEvents payload, once; returns the webhooks that got
/// some.
pub async fn plan(db: &Db, payload: &[u8]) -> Result<Vec<String>, WebhookError> {
    let event = pipeline::cloudevent::parse(payload)
        .map_err(|e| WebhookError::invalid(format!("event: {e}")))?;
    // The tenant routes the event: the envelope's and the data's must agree.
    if event.data.customer_id() != event.customer_id {
        return Err(WebhookError::invalid(format!(
            "event {}: customerid {:?} but data of customer {:?}",
            event.id,
            event.customer_id,
            event.data.customer_id()
        )));
    }
    db.run(move |conn| {
        conn.transaction(|conn| {
            let webhooks = queries::enabled_webhooks(conn, &event.customer_id)?;
            // Nothing to deliver: nothing to remember either.
            let wanted: Vec<_> = webhooks
                .iter()
                .map(|w| (w, listed_event_types(w)))
                .filter(|(_, types)| event.items().any(|item| types.contains(&item.event_type)))
                .collect();
            if wanted.is_empty() || !queries::mark_processed(conn, &event.id)? {
                return Ok(Vec::new());
            }
            let now = common::time::now();
            // Each item's frame is rendered once; each webhook's rows are written before the
            // next webhook's are made (a 1,000-item event for many webhooks holds one
            // webhook's rows at a time).
            let mut frames: Vec<Option<String>> = vec![None; event.len()];
            let mut woken = Vec::new();
            for (webhook, types) in wanted {
                let mut rows = Vec::new();
                for (n, item) in event.items().enumerate() {
                    // A read state goes to a webhook once, not once per participant.
                    if item.peer || !types.contains(&item.event_type) {
                        continue;
                    }
                    let body = frames[n]
                        .get_or_insert_with(|| event.item_frame(n).expect("an item of the event"))
                        .clone();
                    rows.push(DeliveryRow {
                        id: uuid::Uuid::new_v4().to_string(),
                        customer_id: event.customer_id.clone(),
                        webhook_id: webhook.id.clone(),
                        event_id: event.id.clone(),
                        event_type: item.event_type.as_str().to_owned(),
                        body,
                        status: "pending".into(),
                        attempts: 0,
                        last_status_code: 0,
                        last_error: String::new(),
                        tm_next_attempt: now,
                        tm_retry_from: now,
                        tm_create: now,
                        tm_update: now,
                    });
                }
                queries::insert_deliveries(conn, &rows)?;
                woken.push(webhook.id.clone());
            }
            Ok(woken)
        })
    })
    .await
}
