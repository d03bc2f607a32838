//! The dispatcher: attempts the deliveries that are due, each webhook with its own limit of
//! attempts in flight, so a receiver that hangs or fails holds up only its own deliveries.
//!
//! The database is the queue. A delivery is claimed before it is attempted (the attempt
//! counted, the delivery held until its lease ends), and the attempt's result is recorded
//! after; a process killed mid-attempt leaves a claimed delivery that comes due again when its
//! lease ends, so every delivery is attempted until it succeeds or is given up (at least once;
//! receivers deduplicate by `webhook-id`). The dispatcher learns which webhooks have work from
//! the consumer (`Wake`), from the attempts it finishes, and from a periodic scan (which also
//! finds what other replicas or a restart left).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use common::db::Db;
use common::metrics::{OutcomeLabels, StatusLabels, metrics};
use common::time;
use diesel::Connection;
use tokio::sync::{Notify, mpsc, watch};

use crate::address::{self, AddressPolicy, Refused};
use crate::db::models::{DueDelivery, WebhookRow};
use crate::db::queries::{self, ACTIVE, AttemptResult};
use crate::deliveries::{self, Answer, RetryPolicy};
use crate::error::WebhookError;
use crate::signature;

/// How the dispatcher delivers.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    pub retry: RetryPolicy,
    pub address: AddressPolicy,
    /// Attempts in flight to one webhook at a time.
    pub endpoint_concurrency: usize,
    /// Attempts in flight in all.
    pub max_in_flight: usize,
    /// An attempt not answered within this has failed.
    pub attempt_timeout: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            retry: RetryPolicy::default(),
            address: AddressPolicy {
                allow_private: false,
            },
            endpoint_concurrency: 8,
            max_in_flight: 512,
            attempt_timeout: deliveries::ATTEMPT_TIMEOUT,
        }
    }
}

/// How often every webhook's work is looked for in the database.
const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// How long past its timeout an attempt holds its delivery: then a crashed attempt's delivery
/// comes due again.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The most of an answer's body read (to reuse the connection); the rest is not awaited.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Tells the dispatcher which webhooks have new work.
#[derive(Clone, Default)]
pub struct Wake(Arc<WakeInner>);

#[derive(Default)]
struct WakeInner {
    webhooks: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Wake {
    pub fn webhooks(&self, ids: impl IntoIterator<Item = String>) {
        let mut any = false;
        {
            let mut set = self.0.webhooks.lock().expect("wake lock");
            for id in ids {
                set.insert(id);
                any = true;
            }
        }
        if any {
            self.0.notify.notify_one();
        }
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.0.webhooks.lock().expect("wake lock"))
    }
}

/// A webhook with work, as the dispatcher sees it.
#[derive(Debug, Default)]
struct Endpoint {
    in_flight: usize,
    /// When its next delivery comes due; None: look now.
    due: Option<NaiveDateTime>,
}

/// What one look at a webhook found.
struct Claimed {
    webhook: Option<Arc<WebhookRow>>,
    deliveries: Vec<DueDelivery>,
    /// When its next delivery comes due, if it has more than were claimed.
    next_due: Option<NaiveDateTime>,
}

pub struct Dispatcher {
    db: Db,
    client: reqwest::Client,
    settings: DispatchSettings,
    wake: Wake,
}

impl Dispatcher {
    pub fn new(db: Db, settings: DispatchSettings, wake: Wake) -> Result<Self, WebhookError> {
        let mut builder = reqwest::Client::builder()
            // A redirect is an answer like any other 3xx (failed): following one could lead
            // anywhere, past the address check.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.attempt_timeout)
            .connect_timeout(settings.attempt_timeout)
            .pool_max_idle_per_host(settings.endpoint_concurrency)
            .user_agent(concat!("voipbin-chat-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(resolver) = settings.address.resolver() {
            builder = builder.dns_resolver(resolver);
        }
        let client = builder
            .build()
            .map_err(|e| WebhookError::Internal(format!("HTTP client: {e}")))?;
        Ok(Dispatcher {
            db,
            client,
            settings,
            wake,
        })
    }

    /// Delivers until `shutdown`. Attempts in flight then are left to their leases.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut endpoints: HashMap<String, Endpoint> = HashMap::new();
        let mut in_flight = 0usize;
        let mut next_scan = Instant::now();
        let concurrency = self.settings.endpoint_concurrency.max(1);
        loop {
            if *shutdown.borrow() {
                return;
            }
            while let Ok(id) = done_rx.try_recv() {
                in_flight -= 1;
                finished(&mut endpoints, &id);
            }
            for id in self.wake.take() {
                endpoints.entry(id).or_default().due = None;
            }
            if Instant::now() >= next_scan {
                let scan = self
                    .db
                    .run(|c| queries::webhooks_with_work(c).map_err(WebhookError::from));
                match scan.await {
                    Ok(found) => {
                        for (id, due) in found {
                            let endpoint = endpoints.entry(id).or_default();
                            endpoint.due = match (endpoint.due, due) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                _ => None,
                            };
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhooks: scanning for work failed"),
                }
                next_scan = Instant::now() + RESCAN_EVERY;
            }

            let now = time::now();
            let ready: Vec<String> = endpoints
                .iter()
                .filter(|(_, e)| e.in_flight < concurrency && e.due.is_none_or(|d| d <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ready {
                if in_flight >= self.settings.max_in_flight {
                    break;
                }
                let endpoint = endpoints.get_mut(&id).expect("listed");
                let room =
                    (concurrency - endpoint.in_flight).min(self.settings.max_in_flight - in_flight);
                match self.claim(&id, room).await {
                    Ok(Claimed { webhook: None, .. }) => {
                        // Disabled or deleted: its deliveries wait (or were given up).
                        if endpoint.in_flight == 0 {
                            endpoints.remove(&id);
                        }
                    }
                    Ok(Claimed {
                        webhook: Some(webhook),
                        deliveries,
                        next_due,
                    }) => {
                        let full = deliveries.len() == room;
                        for delivery in deliveries {
                            endpoint.in_flight += 1;
                            in_flight += 1;
                            let attempt = Attempt {
                                db: self.db.clone(),
                                client: self.client.clone(),
                                settings: self.settings,
                                webhook: webhook.clone(),
                                delivery,
                            };
                            let done = done_tx.clone();
                            tokio::spawn(async move {
                                let id = attempt.webhook.id.clone();
                                attempt.run().await;
                                let _ = done.send(id);
                            });
                        }
                        if !full {
                            match next_due {
                                Some(due) => endpoint.due = Some(due),
                                None if endpoint.in_flight == 0 => {
                                    endpoints.remove(&id);
                                }
                                None => endpoint.due = Some(NaiveDateTime::MAX),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, webhook = %id, "webhooks: claiming deliveries failed");
                        endpoint.due = Some(now + chrono::Duration::seconds(1));
                    }
                }
            }

            // Sleep until the next delivery with room comes due, something finishes, new work
            // arrives, or the next scan.
            let now = time::now();
            let soonest = endpoints
                .values()
                .filter(|e| e.in_flight < concurrency)
                .filter_map(|e| e.due)
                .min()
                .map(|due| (due - now).to_std().unwrap_or(Duration::ZERO));
            let until_scan = next_scan.saturating_duration_since(Instant::now());
            let wait = soonest.map_or(until_scan, |s| s.min(until_scan));
            tokio::select! {
                _ = self.wake.0.notify.notified() => {}
                Some(id) = done_rx.recv() => {
                    in_flight -= 1;
                    finished(&mut endpoints, &id);
                }
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Claims up to `room` of the webhook's due deliveries, in one transaction.
    async fn claim(&self, webhook_id: &str, room: usize) -> Result<Claimed, WebhookError> {
        let id = webhook_id.to_owned();
        let lease = self.settings.attempt_timeout + LEASE_MARGIN;
        self.db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let Some(webhook) = queries::deliverable_webhook(conn, &id)? else {
                        return Ok(Claimed {
                            webhook: None,
                            deliveries: Vec::new(),
                            next_due: None,
                        });
                    };
                    let now = time::now();
                    let lease_until = now + chrono::Duration::from_std(lease).expect("seconds");
                    let due = queries::due_deliveries(conn, &id, now, room as i64)?;
                    let mut claimed = Vec::with_capacity(due.len());
                    for mut delivery in due {
                        if queries::claim(conn, &delivery.id, now, lease_until)? {
                            delivery.attempts += 1;
                            claimed.push(delivery);
                        }
                    }
                    let next_due = if claimed.len() < room {
                        queries::next_due(conn, &id)?
                    } else {
                        None
                    };
                    Ok::<_, WebhookError>(Claimed {
                        webhook: Some(Arc::new(webhook)),
                        deliveries: claimed,
                        next_due,
                    })
                })
            })
            .await
    }
}

/// An attempt finished: its webhook is looked at again.
fn finished(endpoints: &mut HashMap<String, Endpoint>, webhook_id: &str) {
    if let Some(endpoint) = endpoints.get_mut(webhook_id) {
        endpoint.in_flight -= 1;
        endpoint.due = None;
    }
}

/// One attempt of one delivery.
struct Attempt {
    db: Db,
    client: reqwest::Client,
    settings: DispatchSettings,
    webhook: Arc<WebhookRow>,
    delivery: DueDelivery,
}

impl Attempt {
    async fn run(self) {
        let started = Instant::now();
        let answer = self.send().await;
        metrics()
            .webhook_attempt_duration
            .observe(started.elapsed().as_secs_f64());
        let now = time::now();
        let outcome = self.settings.retry.outcome(
            &answer,
            self.delivery.attempts,
            self.delivery.tm_create,
            now,
        );
        metrics()
            .webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.status.to_owned(),
            })
            .inc();
        tracing::debug!(delivery = %self.delivery.id, webhook = %self.webhook.id,
            status = outcome.status, code = outcome.status_code, error = %outcome.error, "webhook attempt");
        let id = self.delivery.id.clone();
        // A result that cannot be recorded is tried again briefly; failing that, the lease
        // brings the delivery round again (delivered twice rather than lost).
        for pause in [0u64, 200, 1000, 3000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let (delivery, outcome) = (id.clone(), outcome.clone());
            let recorded = self
                .db
                .run(move |conn| {
                    let result = AttemptResult {
                        status: outcome.status,
                        status_code: outcome.status_code,
                        error: &outcome.error,
                        next_attempt: outcome.next_attempt,
                    };
                    queries::record(conn, &delivery, &result, time::now())
                        .map_err(WebhookError::from)
                })
                .await;
            match recorded {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, delivery = %id, "webhooks: recording an attempt failed")
                }
            }
        }
    }

    async fn send(&self) -> Answer {
        let url = match address::parse_uri(&self.webhook.uri) {
            Ok(url) => url,
            Err(e) => return Answer::Refused(e.to_string()),
        };
        if !self.settings.address.allow_private {
            match self.settings.address.check(&url).await {
                Ok(_) => {}
                Err(e @ Refused::Private { .. }) => return Answer::Refused(e.to_string()),
                Err(e) => return Answer::NoAnswer(e.to_string()),
            }
        }
        let timestamp = chrono::Utc::now().timestamp();
        let body = self.delivery.body.as_bytes();
        let signed = signature::sign(&self.webhook.secret, &self.delivery.id, timestamp, body);
        let method = if self.webhook.method == "PUT" {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let request = self
            .client
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &self.delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed.standard)
            .header("X-VoIPBIN-Signature", signed.voipbin)
            .body(self.delivery.body.clone());
        match request.send().await {
            Ok(mut response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| deliveries::retry_after(v, chrono::Utc::now()));
                // Read a little of the body (so the connection can be used again); a receiver
                // that trickles a long one is not waited for.
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                Answer::Status { code, retry_after }
            }
            Err(e) => Answer::NoAnswer(describe(&e, self.settings.attempt_timeout)),
        }
    }
}

/// A failed request, briefly: what went wrong and its cause.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut text = if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Samples the backlog gauges (deliveries not yet done by status, the oldest one's age) at
/// each metrics scrape, until `shutdown`.
pub fn watch_backlog(db: Db, shutdown: watch::Receiver<bool>) {
    for status in ACTIVE {
        metrics()
            .webhook_backlog
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .set(0);
    }
    metrics().add_probe(shutdown, move || {
        let db = db.clone();
        Box::pin(async move {
            let sampled = db.run(|c| queries::backlog(c).map_err(WebhookError::from));
            let Ok(queries::Backlog { by_status, oldest }) = sampled.await else {
                return;
            };
            for status in ACTIVE {
                let n = by_status
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics()
                    .webhook_backlog
                    .get_or_create(&StatusLabels {
                        status: status.to_owned(),
                    })
                    .set(n);
            }
            let age = oldest.map_or(0.0, |t| {
                (time::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics().webhook_oldest_pending_age.set(age);
        })
    });
}
