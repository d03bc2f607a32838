//! A service's consumer of a durable queue: each event is handled once it arrives; one that
//! fails is retried a few times with backoff and then set aside in the dead-letter queue
//! (`<queue>.dead-letter`), so it never holds up the events behind it. A malformed event goes
//! there at once. Failures of the service's own storage are not the event's fault: the event
//! is requeued and tried again once the storage answers. Handlers are idempotent (they record
//! each event id with its effect), so a redelivery changes nothing.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::bus::{BusError, Delivery, EventBus, EventMessage, Subscription, SubscriptionSpec};

/// Attempts an event gets (the first and the retries) before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 4;
/// The wait before the first retry; doubled for each further one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Why an event was not handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The event will never apply: dead-lettered at once.
    Malformed(String),
    /// The service's storage cannot be reached: requeued, not counted against the event.
    Unavailable(String),
    /// Anything else: retried, then dead-lettered.
    Failed(String),
}

/// What a consumer does with each event's payload.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, payload: &[u8]) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// Where events of `queue` that could not be applied are set aside: a durable queue, reached
/// through an exchange of the same name.
pub fn dead_letter_queue(queue: &str) -> String {
    crate::topology::dead_letter_name(queue)
}

/// The dead-letter queue of `spec`'s queue (declared first: what is set aside must have
/// somewhere to go), then the subscription; `stale_bindings` (of earlier releases) are
/// removed from the queue.
pub async fn subscribe_with_dead_letters(
    bus: &EventBus,
    spec: SubscriptionSpec,
    stale_bindings: &[(String, String)],
) -> Result<Subscription, BusError> {
    bus.declare_set_aside(&dead_letter_queue(&spec.queue))
        .await?;
    let subscription = bus.subscribe(spec).await?;
    let binder = subscription.binder();
    for (exchange, pattern) in stale_bindings {
        binder.unbind(exchange, pattern).await?;
    }
    Ok(subscription)
}

pub struct DurableConsumer<H> {
    pub bus: EventBus,
    pub spec: SubscriptionSpec,
    pub stale_bindings: Vec<(String, String)>,
    /// What it consumes, for the log ("chat events").
    pub what: &'static str,
    pub handler: H,
}

impl<H: EventHandler> DurableConsumer<H> {
    /// Consumes until `shutdown`, from `first` (or, without one, a subscription of its own),
    /// subscribing again (with backoff) whenever the subscription ends or cannot be made.
    pub async fn run(
        self,
        mut subscription: Option<Subscription>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut sub = match subscription.take() {
                Some(s) => s,
                None => match self.subscribe().await {
                    Ok(s) => {
                        backoff = Duration::from_millis(200);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, what = self.what, "subscribe failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            loop {
                let delivery = tokio::select! {
                    d = sub.next() => d,
                    _ = shutdown.changed() => return,
                };
                let Some(delivery) = delivery else {
                    tracing::warn!(what = self.what, "subscription ended; resubscribing");
                    break;
                };
                self.process(delivery).await;
            }
        }
    }

    pub async fn subscribe(&self) -> Result<Subscription, BusError> {
        subscribe_with_dead_letters(&self.bus, self.spec.clone(), &self.stale_bindings).await
    }

    async fn process(&self, delivery: Delivery) {
        let mut attempt = 1;
        loop {
            match self.handler.handle(&delivery.message.payload).await {
                Ok(()) => {
                    tracing::debug!(key = %delivery.message.routing_key, what = self.what, "event handled");
                    let _ = delivery.ack().await;
                    return;
                }
                Err(Failure::Unavailable(why)) => {
                    tracing::warn!(error = %why, what = self.what, "storage unavailable; the event will be redelivered");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = delivery.nack_requeue().await;
                    return;
                }
                Err(Failure::Malformed(why)) => return self.dead_letter(delivery, &why).await,
                Err(Failure::Failed(why)) if attempt < MAX_ATTEMPTS => {
                    let delay = FIRST_RETRY_DELAY * 2u32.pow(attempt - 1);
                    tracing::warn!(error = %why, attempt, retry_in = ?delay, id = %delivery.message.message_id, what = self.what, "event failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(Failure::Failed(why)) => return self.dead_letter(delivery, &why).await,
            }
        }
    }

    /// Sets the event aside, then acknowledges it; if the broker does not take it, the event is
    /// requeued instead (never dropped).
    async fn dead_letter(&self, delivery: Delivery, why: &str) {
        let aside = EventMessage {
            exchange: dead_letter_queue(&self.spec.queue),
            ..delivery.message.clone()
        };
        match self.bus.publish(std::slice::from_ref(&aside)).await {
            Ok(()) => {
                common::metrics::count_dead_lettered(&self.spec.queue);
                tracing::error!(error = %why, id = %delivery.message.message_id,
                    key = %delivery.message.routing_key, queue = %aside.exchange, what = self.what,
                    "event dead-lettered");
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, what = self.what, "dead-lettering failed; the event will be redelivered");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = delivery.nack_requeue().await;
            }
        }
    }
}
