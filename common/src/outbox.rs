//! The transactional outbox: a change and the events it implies commit together (`record` runs
//! inside the change's transaction), and the `Relay` publishes what was committed, in commit
//! order, marking rows sent only after the broker confirmed them. A crash or a broker outage
//! between commit and publish delays events; it never loses them (delivery is at least once).

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::bus::{EventBus, EventMessage};
use crate::db::{Db, DbConnection, DbError};
use crate::time;

diesel::table! {
    /// Created by each service's own migrations, in its own schema.
    outbox (seq) {
        seq -> BigInt,
        id -> Text,
        routing_key -> Text,
        payload -> Text,
        request_id -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

/// An event a change implies: its type (also the routing key), tenant and resource JSON.
#[derive(Debug, Clone)]
pub struct DomainEvent {
    pub event_type: &'static str,
    pub customer_id: String,
    /// For chatroom and chatroommessage events: the chatroom's owner (the `ownerid`
    /// extension), so agent subscriptions can be routed without a lookup.
    pub owner_id: Option<String>,
    pub data: serde_json::Value,
}

impl DomainEvent {
    pub fn new(event_type: &'static str, customer_id: &str, data: impl Serialize) -> Self {
        DomainEvent {
            event_type,
            customer_id: customer_id.to_owned(),
            owner_id: None,
            data: serde_json::to_value(data).expect("resource JSON serializes"),
        }
    }

    /// The chatroom owner this event concerns.
    pub fn owned_by(mut self, owner_id: &str) -> Self {
        self.owner_id = Some(owner_id.to_owned());
        self
    }
}

/// CloudEvents 1.0 structured-mode JSON, with the tenant in the `customerid` extension.
#[derive(Debug, Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: String,
    datacontenttype: &'static str,
    customerid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ownerid: Option<&'a str>,
    data: &'a serde_json::Value,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow {
    id: String,
    routing_key: String,
    payload: String,
    request_id: Option<String>,
    created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct PendingRow {
    seq: i64,
    id: String,
    routing_key: String,
    payload: String,
    request_id: Option<String>,
}

/// Writes events into the outbox of the current transaction. `source` is the CloudEvents
/// source (the service name); `request_id` follows the request into the event headers.
pub fn record(
    conn: &mut DbConnection,
    source: &str,
    request_id: Option<&str>,
    events: &[DomainEvent],
) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let now = time::now();
    let rows: Vec<NewOutboxRow> = events
        .iter()
        .map(|e| {
            let id = uuid::Uuid::new_v4().to_string();
            let payload = serde_json::to_string(&CloudEvent {
                specversion: "1.0",
                id: &id,
                source,
                event_type: e.event_type,
                time: time::rfc3339(now),
                datacontenttype: "application/json",
                customerid: &e.customer_id,
                ownerid: e.owner_id.as_deref(),
                data: &e.data,
            })
            .expect("event JSON serializes");
            NewOutboxRow {
                id,
                routing_key: e.event_type.to_owned(),
                payload,
                request_id: request_id.map(str::to_owned),
                created_at: now,
            }
        })
        .collect();
    // SQLite caps bound parameters per statement; chunks keep large fan-outs under it.
    for chunk in rows.chunks(500) {
        crate::insert_rows!(conn, outbox::table, chunk)?;
    }
    Ok(())
}

/// Wakes the relay after a commit, so events go out at once rather than at the next poll.
#[derive(Debug, Clone, Default)]
pub struct RelaySignal(Arc<Notify>);

impl RelaySignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// How many events are recorded but not yet confirmed by the broker.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<i64> {
    outbox::table
        .filter(outbox::sent_at.is_null())
        .count()
        .get_result(conn)
}

/// How long sent rows stay in the outbox (for inspection) before housekeeping removes them.
pub const KEEP_SENT_HOURS: i64 = 24;

/// Removes rows sent more than `KEEP_SENT_HOURS` ago; unsent rows are never removed.
pub fn purge_sent(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::hours(KEEP_SENT_HOURS);
    diesel::delete(outbox::table.filter(outbox::sent_at.lt(cutoff))).execute(conn)
}

pub struct Relay {
    pub db: Db,
    pub bus: EventBus,
    pub exchange: String,
    pub signal: RelaySignal,
    /// Rows per publish round.
    pub batch_size: i64,
    /// Poll even without a wake-up (rows written by another process, or a missed signal).
    pub poll_interval: Duration,
    /// How long a wake-up waits for more commits before publishing.
    pub linger: Duration,
}

impl Relay {
    pub fn new(db: Db, bus: EventBus, exchange: impl Into<String>, signal: RelaySignal) -> Self {
        Relay {
            db,
            bus,
            exchange: exchange.into(),
            signal,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            linger: Duration::from_millis(2),
        }
    }

    /// Publishes until `shutdown` turns true, then makes one last attempt to flush.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                if let Err(e) = self.publish_pending().await {
                    tracing::warn!(error = %e, "relay: final flush failed; events stay in the outbox");
                }
                return;
            }
            match self.publish_pending().await {
                Ok(n) if n as i64 >= self.batch_size => continue,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = self.signal.0.notified() => {
                            // Let concurrent commits join this round: one query and one
                            // confirm wait for many events instead of one each.
                            tokio::time::sleep(self.linger).await;
                        }
                        _ = tokio::time::sleep(self.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "relay: publish failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round: publishes up to `batch_size` pending events in order and marks them sent.
    /// Returns how many were published.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let limit = self.batch_size;
        let rows: Vec<PendingRow> = self
            .db
            .run(move |conn| {
                outbox::table
                    .filter(outbox::sent_at.is_null())
                    .order(outbox::seq.asc())
                    .limit(limit)
                    .select(PendingRow::as_select())
                    .load(conn)
                    .map_err(DbError::from)
            })
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let messages: Vec<EventMessage> = rows
            .iter()
            .map(|r| EventMessage {
                exchange: self.exchange.clone(),
                routing_key: r.routing_key.clone(),
                message_id: r.id.clone(),
                payload: Arc::from(r.payload.as_bytes()),
                request_id: r.request_id.clone(),
            })
            .collect();
        self.bus
            .publish(&messages)
            .await
            .map_err(|e| RelayError::Bus(e.to_string()))?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let n = seqs.len();
        self.db
            .run(move |conn| {
                diesel::update(outbox::table.filter(outbox::seq.eq_any(seqs)))
                    .set(outbox::sent_at.eq(time::now()))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await?;
        tracing::debug!(count = n, exchange = %self.exchange, "relay: published");
        Ok(n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("broker: {0}")]
    Bus(String),
}
