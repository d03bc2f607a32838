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
/// How long past its timeout an attempt holds its delivery (time to record the result, with
/// retries): then a crashed attempt's delivery comes due again.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
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
#[derive(Debug)]
struct Endpoint {
    in_flight: usize,
    /// When its next delivery comes due; None: look now.
    due: Option<NaiveDateTime>,
    /// Its customer, once a claim has read the webhook.
    customer: Option<String>,
    /// When it was last given slots.
    served_at: Instant,
    /// Its last attempt got no answer (a timeout, a refused connection): it gets one attempt
    /// at a time until it answers again, so a dead receiver holds one slot, not eight.
    struggling: bool,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            in_flight: 0,
            due: None,
            customer: None,
            served_at: Instant::now(),
            struggling: false,
        }
    }
}

impl Endpoint {
    fn limit(&self, settings: &DispatchSettings) -> usize {
        match self.struggling {
            true => 1,
            false => settings.endpoint_concurrency.max(1),
        }
    }

    fn has_room(&self, settings: &DispatchSettings) -> bool {
        self.in_flight < self.limit(settings)
    }

    fn room(&self, settings: &DispatchSettings) -> usize {
        self.limit(settings).saturating_sub(self.in_flight)
    }
}

/// The attempts in flight: per webhook, per customer and in all.
#[derive(Debug, Default)]
struct Load {
    endpoints: HashMap<String, Endpoint>,
    by_customer: HashMap<String, usize>,
    in_flight: usize,
}

impl Load {
    fn customer_in_flight(&self, endpoint: &Endpoint) -> usize {
        endpoint
            .customer
            .as_ref()
            .and_then(|c| self.by_customer.get(c))
            .copied()
            .unwrap_or(0)
    }

    fn started(&mut self, customer: &str, n: usize) {
        self.in_flight += n;
        *self.by_customer.entry(customer.to_owned()).or_default() += n;
    }

    /// An attempt finished: its webhook is looked at again.
    fn finished(&mut self, finished: Finished) {
        self.in_flight -= 1;
        if let Some(n) = self.by_customer.get_mut(&finished.customer_id) {
            *n -= 1;
            if *n == 0 {
                self.by_customer.remove(&finished.customer_id);
            }
        }
        if let Some(endpoint) = self.endpoints.get_mut(&finished.webhook_id) {
            endpoint.in_flight -= 1;
            endpoint.due = None;
            endpoint.struggling = !finished.answered;
        }
    }
}

/// What an attempt reports when it ends.
#[derive(Debug)]
struct Finished {
    webhook_id: String,
    customer_id: String,
    /// The receiver answered (whatever the status).
    answered: bool,
}

/// Reports an attempt's end when dropped, also if the attempt panicked: its slot is given
/// back either way.
struct DoneGuard {
    tx: mpsc::UnboundedSender<Finished>,
    finished: Option<Finished>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(finished) = self.finished.take() {
            let _ = self.tx.send(finished);
        }
    }
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
            // No proxy from the environment: a proxy would resolve the names itself, past the
            // address check.
            .no_proxy()
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
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut load = Load::default();
        let mut next_scan = Instant::now();
        let max = self.settings.max_in_flight.max(1);
        // No customer takes more than a quarter of the attempts in flight.
        let per_customer = (max / 4).max(self.settings.endpoint_concurrency.max(1));
        loop {
            if *shutdown.borrow() {
                return;
            }
            while let Ok(finished) = done_rx.try_recv() {
                load.finished(finished);
            }
            for id in self.wake.take() {
                load.endpoints.entry(id).or_default().due = None;
            }
            if Instant::now() >= next_scan {
                let scan = self
                    .db
                    .run(|c| queries::webhooks_with_work(c).map_err(WebhookError::from));
                match scan.await {
                    Ok(found) => {
                        for (id, due) in found {
                            let endpoint = load.endpoints.entry(id).or_default();
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

            // The webhooks with a delivery due and room for it, the longest unserved first: a
            // freed slot goes round, not to whichever webhook a hash map lists first.
            let now = time::now();
            let mut ready: Vec<(Instant, String)> = load
                .endpoints
                .iter()
                .filter(|(_, e)| e.has_room(&self.settings) && e.due.is_none_or(|d| d <= now))
                .filter(|(_, e)| load.customer_in_flight(e) < per_customer)
                .map(|(id, e)| (e.served_at, id.clone()))
                .collect();
            ready.sort_unstable();
            for (_, id) in ready {
                if load.in_flight >= max {
                    break;
                }
                let endpoint = load.endpoints.get(&id).expect("listed");
                if load.customer_in_flight(endpoint) >= per_customer {
                    continue;
                }
                let room = endpoint
                    .room(&self.settings)
                    .min(max - load.in_flight)
                    .min(per_customer - load.customer_in_flight(endpoint));
                let claimed = self.claim(&id, room).await;
                let endpoint = load.endpoints.get_mut(&id).expect("listed");
                endpoint.served_at = Instant::now();
                match claimed {
                    Ok(Claimed { webhook: None, .. }) => {
                        // Disabled or deleted: its deliveries wait (or were given up).
                        if endpoint.in_flight == 0 {
                            load.endpoints.remove(&id);
                        }
                    }
                    Ok(Claimed {
                        webhook: Some(webhook),
                        deliveries,
                        next_due,
                    }) => {
                        let full = deliveries.len() == room;
                        endpoint.customer = Some(webhook.customer_id.clone());
                        let started = deliveries.len();
                        endpoint.in_flight += started;
                        for delivery in deliveries {
                            let attempt = Attempt {
                                db: self.db.clone(),
                                client: self.client.clone(),
                                settings: self.settings,
                                webhook: webhook.clone(),
                                delivery,
                            };
                            let done = DoneGuard {
                                tx: done_tx.clone(),
                                finished: Some(Finished {
                                    webhook_id: webhook.id.clone(),
                                    customer_id: webhook.customer_id.clone(),
                                    answered: false,
                                }),
                            };
                            tokio::spawn(attempt.run(done));
                        }
                        if !full {
                            match next_due {
                                Some(due) => endpoint.due = Some(due),
                                None if endpoint.in_flight == 0 => {
                                    load.endpoints.remove(&id);
                                }
                                None => endpoint.due = Some(NaiveDateTime::MAX),
                            }
                        }
                        load.started(&webhook.customer_id, started);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, webhook = %id, "webhooks: claiming deliveries failed");
                        endpoint.due = Some(now + chrono::Duration::seconds(1));
                    }
                }
            }

            // Sleep until the next delivery with room comes due, something finishes, new work
            // arrives, or the next scan. With every slot taken, only a finished attempt (or new
            // work, or the scan) can change anything.
            let now = time::now();
            let soonest = if load.in_flight >= max {
                None
            } else {
                load.endpoints
                    .values()
                    .filter(|e| e.has_room(&self.settings))
                    .filter(|e| load.customer_in_flight(e) < per_customer)
                    .filter_map(|e| e.due)
                    .min()
                    .map(|due| (due - now).to_std().unwrap_or(Duration::ZERO))
            };
            let until_scan = next_scan.saturating_duration_since(Instant::now());
            let wait = soonest.map_or(until_scan, |s| s.min(until_scan));
            tokio::select! {
                _ = self.wake.0.notify.notified() => {}
                Some(finished) = done_rx.recv() => load.finished(finished),
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
                        // Deliveries recorded for a webhook deleted meanwhile (the consumer read
                        // it live just before): given up, as its deletion gave up the rest.
                        queries::fail_deliveries_of_deleted(conn, &id, time::now())?;
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

/// One attempt of one delivery.
struct Attempt {
    db: Db,
    client: reqwest::Client,
    settings: DispatchSettings,
    webhook: Arc<WebhookRow>,
    delivery: DueDelivery,
}

impl Attempt {
    async fn run(self, mut done: DoneGuard) {
        let started = Instant::now();
        // Bounded as a whole (name resolution included), not only the request.
        let answer = match tokio::time::timeout(self.settings.attempt_timeout, self.send()).await {
            Ok(answer) => answer,
            Err(_) => Answer::NoAnswer(format!(
                "no answer within {:?}",
                self.settings.attempt_timeout
            )),
        };
        metrics()
            .webhook_attempt_duration
            .observe(started.elapsed().as_secs_f64());
        if let Some(finished) = done.finished.as_mut() {
            finished.answered = !matches!(answer, Answer::NoAnswer(_));
        }
        let now = time::now();
        let outcome = self.settings.retry.outcome(
            &answer,
            self.delivery.attempts,
            self.delivery.tm_retry_from,
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
        let (id, attempts) = (self.delivery.id.clone(), self.delivery.attempts);
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
                    queries::record(conn, &delivery, attempts, &result, time::now())
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
        // A name is checked by the client's resolver as it connects (once, and for the very
        // addresses it connects to); a literal address needs no lookup and is checked here.
        if !self.settings.address.allow_private
            && address::literal_ip(&url).is_some()
            && let Err(e) = self.settings.address.check(&url).await
        {
            return Answer::Refused(e.to_string());
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
            Err(e) => match refusal(&e) {
                Some(refused) => Answer::Refused(refused.to_string()),
                None => Answer::NoAnswer(describe(&e, self.settings.attempt_timeout)),
            },
        }
    }
}

/// The SSRF guard's refusal, if that is why the request failed (the resolver refused the
/// name's addresses).
fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(webhook: &str, customer: &str, answered: bool) -> Finished {
        Finished {
            webhook_id: webhook.into(),
            customer_id: customer.into(),
            answered,
        }
    }

    /// A webhook whose last attempt got no answer gets one attempt at a time until one is
    /// answered; the counts per customer and in all follow the attempts.
    #[test]
    fn a_webhook_without_answers_gets_one_slot_and_counts_follow_attempts() {
        let settings = DispatchSettings::default();
        let mut load = Load::default();
        load.endpoints.insert(
            "w".into(),
            Endpoint {
                customer: Some("c".into()),
                in_flight: 3,
                ..Endpoint::default()
            },
        );
        load.started("c", 3);
        assert_eq!(load.endpoints["w"].room(&settings), 5);
        load.finished(finished("w", "c", false));
        assert_eq!(
            (
                load.in_flight,
                load.customer_in_flight(&load.endpoints["w"])
            ),
            (2, 2)
        );
        assert_eq!(load.endpoints["w"].limit(&settings), 1);
        assert!(
            !load.endpoints["w"].has_room(&settings),
            "2 in flight, 1 allowed"
        );
        load.finished(finished("w", "c", true));
        load.finished(finished("w", "c", true));
        assert_eq!(load.endpoints["w"].room(&settings), 8);
        assert_eq!(load.in_flight, 0);
        assert!(load.by_customer.is_empty());
    }

    #[test]
    fn a_finished_attempt_is_reported_even_if_it_panics() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let guard = DoneGuard {
            tx,
            finished: Some(finished("w", "c", false)),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("an attempt that panics");
        }));
        assert!(outcome.is_err());
        assert_eq!(rx.try_recv().unwrap().webhook_id, "w");
    }
}
