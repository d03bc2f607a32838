//! The transactional outbox: a change and the events it implies commit together (`record` runs
//! inside the change's transaction, one row per transaction), and the `Relay` publishes what
//! was committed, in the order rows became visible, marking rows sent only after the broker
//! confirmed them. It sends the next round while earlier ones await their confirms, and only
//! one relay per service publishes at a time (a PostgreSQL advisory lock). A crash or a broker
//! outage between commit and publish delays events; it never loses them (delivery is at least
//! once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::RequestMeta;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;

use crate::bus::{BusError, EventBus, EventMessage};
use crate::db::{Db, DbConnection, DbError, DedicatedConnection};
use crate::time;

diesel::table! {
    /// Created by each service's own migrations, in its own schema. One row per committed
    /// transaction: its events travel together (one insert, one update when sent).
    outbox (seq) {
        seq -> BigInt,
        /// One line per event: routing key, event id and CloudEvents JSON, tab-separated
        /// (compact JSON never holds a raw tab or newline).
        events -> Text,
        event_count -> Integer,
        request_id -> Nullable<Text>,
        traceparent -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

/// What a change implies for the outbox: one event, rendered when the change commits, or a
/// compact record of many events that the service's `Expander` turns into them when they are
/// published (a message to a 1,000-person chat is one short line, not 1,001 documents).
#[derive(Debug, Clone)]
pub enum DomainEvent {
    Resource(ResourceEvent),
    Compact(CompactRecord),
}

/// One event: its type (also the routing key), tenant and resource JSON.
#[derive(Debug, Clone)]
pub struct ResourceEvent {
    pub event_type: &'static str,
    pub customer_id: String,
    /// For chatroom and chatroommessage events: the chatroom's owner (the `ownerid`
    /// extension), so agent subscriptions can be routed without a lookup.
    pub owner_id: Option<String>,
    /// The resource's JSON text, written once: a tree of values per event would multiply the
    /// memory a large change takes (a 1,000-person chat's rooms each list 1,000 participants).
    pub data: Box<serde_json::value::RawValue>,
}

/// A service-defined record standing for `event_count` events. Stored as the line
/// `@<kind>\t<body>`; `body` must hold no newline.
#[derive(Debug, Clone)]
pub struct CompactRecord {
    pub kind: &'static str,
    pub body: String,
    pub event_count: i32,
}

impl DomainEvent {
    pub fn new(event_type: &'static str, customer_id: &str, data: impl Serialize) -> Self {
        DomainEvent::Resource(ResourceEvent {
            event_type,
            customer_id: customer_id.to_owned(),
            owner_id: None,
            data: serde_json::value::to_raw_value(&data).expect("resource JSON serializes"),
        })
    }

    /// The chatroom owner this event concerns.
    pub fn owned_by(self, owner_id: &str) -> Self {
        match self {
            DomainEvent::Resource(mut e) => {
                e.owner_id = Some(owner_id.to_owned());
                DomainEvent::Resource(e)
            }
            compact => compact,
        }
    }

    pub fn compact(kind: &'static str, body: String, event_count: usize) -> Self {
        debug_assert!(!body.contains('\n'), "a compact record is one line");
        DomainEvent::Compact(CompactRecord {
            kind,
            body,
            event_count: i32::try_from(event_count).expect("fewer than 2^31 events"),
        })
    }

    fn event_count(&self) -> i32 {
        match self {
            DomainEvent::Resource(_) => 1,
            DomainEvent::Compact(r) => r.event_count,
        }
    }
}

/// Where compact records start: a rendered line starts with its routing key (an event type).
const COMPACT_MARK: char = '@';

/// One event ready to publish: routing key, event id and CloudEvents JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedEvent {
    pub routing_key: String,
    pub id: String,
    pub payload: String,
}

/// A compact record as the relay hands it to the service's `Expander`.
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord<'a> {
    pub kind: &'a str,
    pub body: &'a str,
    /// When the change committed (the events' `time`).
    pub created_at: NaiveDateTime,
}

/// The events of one compact record, produced as the relay takes them: a record may stand for
/// more event bytes than a round should hold (a 1,000-person chat's rooms each list its 1,000
/// participants), so they are rendered a round's worth at a time, not all at once.
pub type RecordEvents = Box<dyn Iterator<Item = RenderedEvent> + Send>;

/// A service's expansion of its compact records, run by the relay on its database connection
/// (the same one it reads the outbox with). What it reads from the database it reads here;
/// the events it returns are rendered later, as they are published.
pub trait Expander: Send + Sync + 'static {
    /// The record kinds it expands. A row holding a record of another kind was written by a
    /// newer release: the relay publishes nothing from it on (the outbox waits, in order, for
    /// a relay that reads it) rather than skip its events.
    fn kinds(&self) -> &'static [&'static str];

    /// The events of each record, in order. `None` for a record that cannot be expanded (it
    /// names something that does not exist): its row is held, unsent (logged and counted),
    /// and the rows after it are published, so one bad row never holds up the outbox. An
    /// `Err` (the database failing) retries the round.
    fn expand(
        &self,
        conn: &mut DbConnection,
        records: &[StoredRecord<'_>],
    ) -> Result<Vec<Option<RecordEvents>>, DbError>;
}

/// The id of a compact record's `n`th event: its base with `n` xor-ed into the low bits, the
/// same each time the record is published again (consumers dedupe by it).
pub fn event_id(base: uuid::Uuid, n: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128(base.as_u128() ^ n as u128)
}

/// The CloudEvents 1.0 JSON of one event (what the relay publishes).
pub fn cloud_event_json(
    source: &str,
    id: &str,
    event_type: &str,
    time: NaiveDateTime,
    customer_id: &str,
    owner_id: Option<&str>,
    data: &impl Serialize,
) -> String {
    let event = CloudEvent {
        specversion: "1.0",
        id,
        source,
        event_type,
        time: time::rfc3339(time),
        datacontenttype: "application/json",
        customerid: customer_id,
        ownerid: owner_id,
        data,
    };
    serde_json::to_string(&event).expect("event JSON serializes")
}

/// CloudEvents 1.0 structured-mode JSON, with the tenant in the `customerid` extension.
#[derive(Debug, Serialize)]
struct CloudEvent<'a, D: Serialize> {
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
    data: &'a D,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    events: String,
    event_count: i32,
    request_id: Option<&'a str>,
    traceparent: Option<&'a str>,
    created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct PendingRow {
    seq: i64,
    events: String,
    request_id: Option<String>,
    traceparent: Option<String>,
    created_at: NaiveDateTime,
}

/// One event of a stored row: its routing key, id and CloudEvents JSON.
fn parse_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.splitn(3, '\t');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The outbox row of a transaction's events, ready to insert: for a write that puts it in the
/// same statement as its change (see `Store::write_statement`).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub events: String,
    pub event_count: i32,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub created_at: NaiveDateTime,
}

/// Renders `events` as one outbox row. `source` is the CloudEvents source (the service name);
/// `meta` follows the request into the event headers.
pub fn render(source: &str, meta: &RequestMeta, events: &[DomainEvent]) -> OutboxRow {
    let now = time::now();
    let mut lines = String::with_capacity(events.len() * 512);
    for e in events {
        if !lines.is_empty() {
            lines.push('\n');
        }
        match e {
            DomainEvent::Resource(e) => {
                let id = uuid::Uuid::new_v4().to_string();
                lines.push_str(e.event_type);
                lines.push('\t');
                lines.push_str(&id);
                lines.push('\t');
                // Safe to frame by tab and newline: serde_json escapes both inside strings.
                lines.push_str(&cloud_event_json(
                    source,
                    &id,
                    e.event_type,
                    now,
                    &e.customer_id,
                    e.owner_id.as_deref(),
                    &e.data,
                ));
            }
            DomainEvent::Compact(r) => {
                lines.push(COMPACT_MARK);
                lines.push_str(r.kind);
                lines.push('\t');
                lines.push_str(&r.body);
            }
        }
    }
    OutboxRow {
        events: lines,
        event_count: events.iter().map(DomainEvent::event_count).sum(),
        request_id: meta.request_id.clone(),
        traceparent: meta.traceparent.clone(),
        created_at: now,
    }
}

/// Writes the transaction's events into the outbox, as one row (nothing for no events).
pub fn record(
    conn: &mut DbConnection,
    source: &str,
    meta: &RequestMeta,
    events: &[DomainEvent],
) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let row = render(source, meta, events);
    diesel::insert_into(outbox::table)
        .values(NewOutboxRow {
            events: row.events,
            event_count: row.event_count,
            request_id: row.request_id.as_deref(),
            traceparent: row.traceparent.as_deref(),
            created_at: row.created_at,
        })
        .execute(conn)?;
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
    let sum: Option<i64> = outbox::table
        .filter(outbox::sent_at.is_null())
        .select(diesel::dsl::sum(outbox::event_count))
        .get_result(conn)?;
    Ok(sum.unwrap_or(0))
}

/// How long sent rows stay in the outbox (for inspection) before housekeeping removes them.
pub const KEEP_SENT_HOURS: i64 = 24;

/// Removes rows sent more than `KEEP_SENT_HOURS` ago; unsent rows are never removed.
pub fn purge_sent(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::hours(KEEP_SENT_HOURS);
    diesel::delete(outbox::table.filter(outbox::sent_at.lt(cutoff))).execute(conn)
}

/// How long a stopping relay keeps publishing what is left in the outbox.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Bytes of events one publishing round loads and publishes (beyond it the round ends, after
/// at least one event; a row's remaining events go in the next rounds): with `max_in_flight`
/// rounds awaiting confirms, this bounds the relay's memory.
pub const ROUND_BYTES: i64 = 1024 * 1024;

pub struct Relay {
    pub db: Db,
    pub bus: EventBus,
    pub exchange: String,
    pub signal: RelaySignal,
    /// Events per publish round (a row with more goes out over several rounds).
    pub batch_size: i64,
    /// Poll even without a wake-up (rows written by another process, or a missed signal).
    pub poll_interval: Duration,
    /// How long a wake-up waits for more commits before publishing.
    pub linger: Duration,
    /// Rounds sent whose confirms have not all arrived yet (at most). Four keep up with
    /// 2-person sends at 3,000 a second (a backlog under a thousand events) and drained a
    /// 1,000-person backlog at 33,000 events a second; eight drained it at 39,000 but held
    /// 11 MB more in message-manager (67 against 56 MB at peak), over its 64 MB budget.
    pub max_in_flight: usize,
    /// PostgreSQL: the connection holding the relay lock, while this relay is the one that
    /// publishes.
    leader: Option<DedicatedConnection>,
    /// Rows sent but not yet confirmed and marked: the next round skips them, without waiting
    /// for them. (Not "every seq above the last one sent": a transaction that took a lower seq
    /// may commit later.)
    unconfirmed: Vec<i64>,
    /// Rows loaded whose events are not all sent yet, in seq order: the next rounds continue
    /// them (and skip them when loading more).
    loaded: VecDeque<LoadedRow>,
    /// Sent rounds in order, each resolving to the seqs of the rows it finished once confirmed.
    in_flight: FuturesOrdered<BoxFuture<'static, ConfirmedRound>>,
    /// Turns the service's compact records into events (none: every row is rendered).
    expander: Option<Arc<dyn Expander>>,
    /// Rows that cannot be published (a line that does not parse, a record that cannot be
    /// expanded): left unsent and skipped, counted in `outbox_held_rows`, and tried again when
    /// this process starts over (a release that fixes them publishes them).
    held: Vec<i64>,
    /// The `service` label of its metrics.
    service: String,
}

/// Rows held at most: beyond it, the relay publishes nothing more (something is badly wrong,
/// and the held rows' seqs would otherwise grow without bound).
pub const MAX_HELD_ROWS: usize = 1000;

/// A sent round's rows, its events and their bytes, and whether the broker confirmed all of
/// its events.
type ConfirmedRound = (Vec<i64>, (u64, u64), Result<(), BusError>);

/// The outcome of a publishing round.
enum Round {
    Sent(usize),
    /// Another replica holds the relay lock: it publishes, this relay waits.
    Standby,
}

/// What the relay waits for between rounds.
enum Wake {
    Confirmed(Vec<i64>, (u64, u64), Result<(), BusError>),
    Commit,
    Tick,
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
            max_in_flight: 4,
            leader: None,
            unconfirmed: Vec::new(),
            loaded: VecDeque::new(),
            in_flight: FuturesOrdered::new(),
            expander: None,
            held: Vec::new(),
            service: String::new(),
        }
    }

    /// The `service` label of the relay's metrics (`outbox_held_rows`).
    pub fn named(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        crate::metrics::set_held_rows(service, 0);
        self
    }

    /// Publishes the service's compact records through `expander`.
    pub fn with_expander(mut self, expander: Arc<dyn Expander>) -> Self {
        self.expander = Some(expander);
        self
    }

    /// Publishes until `shutdown` turns true, then makes one last attempt to flush.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // The exchange and its subscribers' queues exist from the start, so subscribers can
        // bind before anything is published (a failure here is tried again by publishing).
        if let Err(e) = self.bus.prepare(&self.exchange).await {
            tracing::warn!(error = %e, exchange = %self.exchange, "relay: could not declare the exchange yet");
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "relay: final flush failed; events stay in the outbox");
                }
                return;
            }
            let room = self.in_flight.len() < self.max_in_flight;
            let mut more = false;
            if room {
                match self.round().await {
                    Ok(Round::Sent(n)) => {
                        more = n as i64 >= self.batch_size || !self.loaded.is_empty()
                    }
                    Ok(Round::Standby) => {
                        tokio::select! {
                            _ = tokio::time::sleep(self.poll_interval) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                    Err(e) => {
                        self.retry_after(e, &mut backoff, &mut shutdown).await;
                        continue;
                    }
                }
            }
            let wake = tokio::select! {
                Some((seqs, sent, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Wake::Confirmed(seqs, sent, result)
                }
                _ = std::future::ready(()), if more && room => Wake::Tick,
                _ = self.signal.0.notified(), if room => Wake::Commit,
                _ = tokio::time::sleep(self.poll_interval) => Wake::Tick,
                _ = shutdown.changed() => Wake::Tick,
            };
            match wake {
                Wake::Confirmed(seqs, sent, result) => {
                    match self.settle(seqs, sent, result).await {
                        Ok(()) => backoff = Duration::from_millis(100),
                        Err(e) => self.retry_after(e, &mut backoff, &mut shutdown).await,
                    }
                }
                // Let concurrent commits join this round: one query and one confirm wait for
                // many events instead of one each.
                Wake::Commit => tokio::time::sleep(self.linger).await,
                Wake::Tick => {}
            }
        }
    }

    /// After a failure: everything not confirmed is sent again (consumers dedupe), after a pause.
    async fn retry_after(
        &mut self,
        e: RelayError,
        backoff: &mut Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        tracing::warn!(error = %e, retry_in = ?backoff, "relay: publish failed; will retry");
        self.forget_sent();
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = shutdown.changed() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    /// Waits for every sent round, then sends what is left (for up to `FLUSH_LIMIT`) and waits
    /// for it.
    async fn flush(&mut self) -> Result<(), RelayError> {
        // Rounds until the outbox is empty, within a bound: a large backlog must not keep a
        // stopping process alive for ever (what is left goes out at the next start).
        let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
        loop {
            while let Some((seqs, sent, result)) = self.in_flight.next().await {
                self.settle(seqs, sent, result).await?;
            }
            let sent = match self.round().await? {
                Round::Sent(n) => n,
                Round::Standby => 0,
            };
            if (sent == 0 && self.loaded.is_empty()) || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        while let Some((seqs, sent, result)) = self.in_flight.next().await {
            self.settle(seqs, sent, result).await?;
        }
        Ok(())
    }

    /// A confirmed round's rows are marked sent.
    async fn settle(
        &mut self,
        seqs: Vec<i64>,
        (events, bytes): (u64, u64),
        confirmed: Result<(), BusError>,
    ) -> Result<(), RelayError> {
        confirmed.map_err(|e| RelayError::Bus(e.to_string()))?;
        crate::metrics::count_published(&self.service, events, bytes);
        if seqs.is_empty() {
            // A round of one large row's middle events: the row is marked after its last.
            return Ok(());
        }
        self.unconfirmed.retain(|seq| !seqs.contains(seq));
        let mark = move |conn: &mut DbConnection| mark_sent(conn, seqs);
        let marked = match &mut self.leader {
            Some(conn) => conn.run(mark).await,
            None => self.db.run(mark).await,
        };
        if marked.is_err() {
            self.leader = None;
        }
        Ok(marked?)
    }

    async fn round(&mut self) -> Result<Round, RelayError> {
        if !self.db.is_sqlite() && self.leader.is_none() {
            // Several replicas may run: only the holder of the relay lock publishes, so events
            // keep their commit order and are not published twice by competing relays. The
            // lock lives as long as the dedicated connection (a crashed leader's session ends
            // and another replica takes over at its next poll).
            let mut conn = self.db.dedicated().await?;
            let acquired = conn.run(try_lock_relay).await?;
            if !acquired {
                return Ok(Round::Standby);
            }
            tracing::info!(exchange = %self.exchange, "relay: this replica publishes");
            // Whatever the previous term sent but did not mark is sent again.
            self.forget_sent();
            self.leader = Some(conn);
        }
        let result = self.send_round().await;
        if matches!(result, Err(RelayError::Db(_))) {
            // The connection may be broken: drop it (and with it the lock), then start over.
            self.leader = None;
        }
        result.map(Round::Sent)
    }

    /// Everything sent but not confirmed, and every row begun, is sent again from its start
    /// (consumers dedupe by event id).
    fn forget_sent(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.unconfirmed.clear();
        self.loaded.clear();
    }

    /// Sends the next round of events without waiting for the confirms: first the rest of the
    /// rows begun, then pending rows after those (skipping rows sent and awaiting confirms).
    async fn send_round(&mut self) -> Result<usize, RelayError> {
        let limit = self.batch_size;
        let mut skip = self.unconfirmed.clone();
        skip.extend(self.loaded.iter().map(|r| r.seq));
        skip.extend_from_slice(&self.held);
        let holding_too_many = self.held.len() >= MAX_HELD_ROWS;
        let mut loaded = std::mem::take(&mut self.loaded);
        let expander = self.expander.clone();
        let exchange = self.exchange.clone();
        let load = move |conn: &mut DbConnection| {
            let mut round = RoundBatch::new(exchange, limit);
            let mut held = Vec::new();
            round.take_from(&mut loaded);
            if loaded.is_empty() && !round.is_full() && !holding_too_many {
                // Whole rows in commit order, up to the round's remaining events and bytes (at
                // least one row). Sizes first, then the chosen rows: a row can be large (a
                // 1,000-person chat's events), and loading hundreds of them to send a few
                // would hold their memory for nothing.
                let (count_left, bytes_left) = round.left();
                let sizes = pending_sizes(conn, &skip, count_left)?;
                let (mut chosen, mut count, mut bytes) = (Vec::new(), 0i64, 0i64);
                for (seq, n, len) in sizes {
                    let full =
                        count + i64::from(n) > count_left || bytes + i64::from(len) > bytes_left;
                    if !chosen.is_empty() && full {
                        break;
                    }
                    count += i64::from(n);
                    bytes += i64::from(len);
                    chosen.push(seq);
                }
                if !chosen.is_empty() {
                    let rows: Vec<PendingRow> = outbox::table
                        .filter(outbox::seq.eq_any(chosen))
                        .order(outbox::seq.asc())
                        .select(PendingRow::as_select())
                        .load(conn)?;
                    let (rows, unpublishable) = load_rows(conn, rows, expander.as_deref())?;
                    loaded.extend(rows);
                    held = unpublishable;
                    round.take_from(&mut loaded);
                }
            }
            Ok::<_, DbError>((round, loaded, held))
        };
        let (round, loaded, held) = match &mut self.leader {
            Some(conn) => conn.run(load).await?,
            None => self.db.run(load).await?,
        };
        self.loaded = loaded;
        if holding_too_many {
            tracing::error!(
                held = self.held.len(),
                "relay: {MAX_HELD_ROWS} or more outbox rows cannot be published; publishing \
                 nothing more until this process starts over"
            );
        }
        let held_now = held.len();
        if held_now > 0 {
            self.held.extend(held);
            crate::metrics::set_held_rows(&self.service, self.held.len());
        }
        let RoundBatch {
            messages,
            finished,
            bytes,
            ..
        } = round;
        if messages.is_empty() && finished.is_empty() {
            return Ok(held_now);
        }
        let pending = self
            .bus
            .send(&messages)
            .await
            .map_err(|e| RelayError::Bus(e.to_string()))?;
        self.unconfirmed.extend_from_slice(&finished);
        let sent = (messages.len() as u64, bytes as u64);
        self.in_flight.push_back(Box::pin(async move {
            (finished, sent, pending.confirmed().await)
        }));
        tracing::debug!(count = messages.len(), exchange = %self.exchange, "relay: sent");
        Ok(messages.len() + held_now)
    }
}

/// The events of one publishing round, taken from loaded rows up to its budget.
struct RoundBatch {
    exchange: String,
    limit: i64,
    messages: Vec<EventMessage>,
    bytes: i64,
    /// Rows whose last event is in this round: marked sent once it is confirmed.
    finished: Vec<i64>,
}

impl RoundBatch {
    fn new(exchange: String, limit: i64) -> Self {
        RoundBatch {
            exchange,
            limit,
            messages: Vec::new(),
            bytes: 0,
            finished: Vec::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.messages.len() as i64 >= self.limit || self.bytes >= ROUND_BYTES
    }

    /// Events and bytes the round may still take.
    fn left(&self) -> (i64, i64) {
        (
            self.limit - self.messages.len() as i64,
            ROUND_BYTES - self.bytes,
        )
    }

    /// Events from the front rows until the round is full (at least one event).
    fn take_from(&mut self, rows: &mut VecDeque<LoadedRow>) {
        while let Some(row) = rows.front_mut() {
            while !self.is_full() {
                let Some(event) = row.next_event() else {
                    break;
                };
                self.bytes += event.payload.len() as i64;
                self.messages.push(EventMessage {
                    exchange: self.exchange.clone(),
                    routing_key: event.routing_key,
                    message_id: event.id,
                    payload: Arc::from(event.payload.into_bytes()),
                    request_id: row.request_id.clone(),
                    traceparent: row.traceparent.clone(),
                });
            }
            if !row.is_done() {
                return;
            }
            self.finished.push(row.seq);
            rows.pop_front();
        }
    }
}

/// A row being published: its events are taken a round's worth at a time, and it is marked
/// sent once the round holding its last event is confirmed.
struct LoadedRow {
    seq: i64,
    request_id: Option<String>,
    traceparent: Option<String>,
    /// The stored lines.
    text: String,
    lines: VecDeque<LineEvents>,
}

enum LineEvents {
    /// A rendered event: its line's byte range in `text` (checked to parse).
    Rendered(std::ops::Range<usize>),
    /// A compact record's events, through the expander.
    Expanded(std::iter::Peekable<RecordEvents>),
}

impl LoadedRow {
    fn next_event(&mut self) -> Option<RenderedEvent> {
        let event = match self.lines.front_mut()? {
            LineEvents::Rendered(range) => {
                let (routing_key, id, payload) =
                    parse_line(&self.text[range.clone()]).expect("checked when loaded");
                let event = RenderedEvent {
                    routing_key: routing_key.to_owned(),
                    id: id.to_owned(),
                    payload: payload.to_owned(),
                };
                self.lines.pop_front();
                event
            }
            LineEvents::Expanded(events) => events.next().expect("empty records are dropped"),
        };
        self.drop_finished_lines();
        Some(event)
    }

    /// Whether every event of the row has been taken.
    fn is_done(&self) -> bool {
        self.lines.is_empty()
    }

    /// Drops exhausted records from the front, so `is_done` holds right after the last event.
    fn drop_finished_lines(&mut self) {
        while let Some(LineEvents::Expanded(events)) = self.lines.front_mut() {
            if events.peek().is_some() {
                return;
            }
            self.lines.pop_front();
        }
    }
}

/// The next pending rows after those in `skip` (sent, awaiting confirms), in seq order, up to
/// `limit`: (seq, event count, bytes of events).
fn pending_sizes(
    conn: &mut DbConnection,
    skip: &[i64],
    limit: i64,
) -> QueryResult<Vec<(i64, i32, i32)>> {
    match conn {
        DbConnection::Pg(pg) => PendingSizes { skip, limit }.load(pg),
        // One writer, few rows awaiting confirms: the plain filter serves.
        DbConnection::Sqlite(_) => outbox::table
            .filter(outbox::sent_at.is_null())
            .filter(outbox::seq.ne_all(skip))
            .order(outbox::seq.asc())
            .limit(limit)
            .select((
                outbox::seq,
                outbox::event_count,
                diesel::dsl::sql::<diesel::sql_types::Integer>("length(events)"),
            ))
            .load(conn),
    }
}

/// `pending_sizes` on PostgreSQL. The rows awaiting confirms (a thousand or more when the
/// relay is busy) are left out through a hashed subplan (`NOT IN (SELECT unnest(...))`):
/// `seq <> ALL($1)` compared every pending row with every one of them, and was most of the
/// relay's cost.
struct PendingSizes<'a> {
    skip: &'a [i64],
    limit: i64,
}

impl QueryFragment<diesel::pg::Pg> for PendingSizes<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt};
        out.push_sql(
            "SELECT seq, event_count, length(events) FROM outbox \
             WHERE sent_at IS NULL AND seq NOT IN (SELECT unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.skip)?;
        out.push_sql(")) ORDER BY seq LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}

impl diesel::query_builder::QueryId for PendingSizes<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for PendingSizes<'_> {
    type SqlType = (
        diesel::sql_types::BigInt,
        diesel::sql_types::Integer,
        diesel::sql_types::Integer,
    );
}

impl RunQueryDsl<diesel::pg::PgConnection> for PendingSizes<'_> {}

/// `rows` ready to publish: rendered lines as stored, compact records through the expander
/// (one call for all of them); and the seqs of rows that cannot be published (a line that
/// does not parse, a record that cannot be expanded), which are logged and left unsent: never
/// marked sent with an event missing.
fn load_rows(
    conn: &mut DbConnection,
    rows: Vec<PendingRow>,
    expander: Option<&dyn Expander>,
) -> Result<(Vec<LoadedRow>, Vec<i64>), DbError> {
    enum Line {
        Rendered(std::ops::Range<usize>),
        /// Index into the records.
        Compact(usize),
    }
    let known = expander.map_or(&[][..], |x| x.kinds());
    // Each row's lines, then the records of all rows expanded together. A row with a record
    // of a kind this release does not read ends the rows taken (in order: the rest wait too).
    let mut lines: Vec<Vec<Line>> = Vec::with_capacity(rows.len());
    let mut records = Vec::new();
    let mut unpublishable: Vec<i64> = Vec::new();
    'rows: for r in &rows {
        let (mut row_lines, mut row_records) = (Vec::new(), Vec::new());
        let mut start = 0;
        for line in r.events.split('\n') {
            let range = start..start + line.len();
            start = range.end + 1;
            if let Some(record) = line.strip_prefix(COMPACT_MARK) {
                let (kind, body) = record.split_once('\t').unwrap_or((record, ""));
                if !known.contains(&kind) {
                    tracing::warn!(
                        seq = r.seq,
                        kind,
                        "relay: an outbox record of a kind this release does not read (written \
                         by a newer one); waiting for a relay that reads it"
                    );
                    break 'rows;
                }
                row_lines.push(Line::Compact(records.len() + row_records.len()));
                row_records.push(StoredRecord {
                    kind,
                    body,
                    created_at: r.created_at,
                });
            } else if parse_line(line).is_some() {
                row_lines.push(Line::Rendered(range));
            } else {
                tracing::error!(
                    seq = r.seq,
                    "relay: an outbox line that does not parse; the row is held, unsent"
                );
                unpublishable.push(r.seq);
            }
        }
        records.append(&mut row_records);
        lines.push(row_lines);
    }
    // Every record's kind is known, so there is an expander whenever there are records.
    let mut expanded: Vec<Option<RecordEvents>> = match expander {
        Some(x) if !records.is_empty() => x.expand(conn, &records)?,
        _ => Vec::new(),
    };
    let kinds: Vec<String> = records.iter().map(|r| r.kind.to_owned()).collect();
    drop(records);
    // Rows after one that ended the scan are left out (`lines` stops there).
    let mut loaded = Vec::with_capacity(rows.len());
    'loaded: for (r, row_lines) in rows.into_iter().zip(lines) {
        if unpublishable.contains(&r.seq) {
            continue;
        }
        let mut events = VecDeque::with_capacity(row_lines.len());
        for line in row_lines {
            match line {
                Line::Rendered(range) => events.push_back(LineEvents::Rendered(range)),
                Line::Compact(n) => match expanded.get_mut(n).and_then(Option::take) {
                    Some(record) => {
                        let mut record = record.peekable();
                        // A record of no events (a message to a chat of no rooms) adds none.
                        if record.peek().is_some() {
                            events.push_back(LineEvents::Expanded(record));
                        }
                    }
                    None => {
                        tracing::error!(
                            seq = r.seq,
                            kind = kinds[n],
                            "relay: an outbox record that cannot be expanded; the row is held, unsent"
                        );
                        unpublishable.push(r.seq);
                        continue 'loaded;
                    }
                },
            }
        }
        loaded.push(LoadedRow {
            seq: r.seq,
            request_id: r.request_id,
            traceparent: r.traceparent,
            text: r.events,
            lines: events,
        });
    }
    Ok((loaded, unpublishable))
}

/// The relay's session settings (the session holds the relay lock and runs only the relay's
/// few statements, each served by an index: lookups by key or in key order).
///
/// The outbox's statistics lag behind a burst (autovacuum analyses it a minute later at the
/// soonest, and never where autovacuum is off), and with a small table in its statistics the
/// planner reads every pending row through a bitmap scan and sorts them to take the first
/// round: O(backlog) per round, so a backlog drained ever more slowly. Without bitmap scans it
/// walks the pending index in seq order and stops after a round.
///
/// For the same reason no sequential scans (the setting of every service session,
/// `db::BY_INDEX`, which the relay's session relies on): a plan made while the outbox and
/// chatmessages were a page or two (a generic plan is kept until the next ANALYZE), or made
/// without statistics, reads the whole table to find a round's rows by key, every round; at
/// 3,000 sends a second the relay fell behind within seconds.
///
/// If this process vanishes without closing its connection (a host lost, a network cut), the
/// server must notice and end the session, releasing the lock, within about a minute rather
/// than after the system's default two hours of TCP keepalive.
///
/// Marking rows sent need not wait for the disk: if that commit is lost in a crash, the rows
/// are published again, which consumers already tolerate (they dedupe by event id).
pub const RELAY_SESSION: &[&str] = &[
    "SET enable_bitmapscan = off",
    "SET tcp_keepalives_idle = 30",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 3",
    "SET synchronous_commit = off",
];

/// `pg_try_advisory_lock` on a key of the service's schema: one relay per service publishes.
fn try_lock_relay(conn: &mut DbConnection) -> Result<bool, DbError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    for setting in RELAY_SESSION {
        diesel::sql_query(*setting).execute(conn)?;
    }
    let row: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_lock(hashtext('outbox relay ' || current_schema())) AS locked",
    )
    .get_result(conn)?;
    if row.locked {
        // Tells this service's writers that the leader reads compact records (see
        // `leader_reads_compact`).
        diesel::sql_query(format!(
            "SELECT set_config('application_name', '{RELAY_APPLICATION} ' || current_schema(), false)"
        ))
        .execute(conn)?;
    }
    Ok(row.locked)
}

/// The `application_name` prefix of a relay session that holds the relay lock and reads
/// compact records of every kind its service writes (followed by the schema).
const RELAY_APPLICATION: &str = "outbox-relay/2";

/// Whether the relay currently publishing this schema's outbox reads compact records. A
/// release whose relay did not (before chat-manager's chatroom records) skips them, losing
/// their events; while one of its replicas leads, during a rolling upgrade, a writer renders
/// its events instead. SQLite: one process, always this release.
pub fn leader_reads_compact(conn: &mut DbConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Reads {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        reads: bool,
    }
    match conn {
        DbConnection::Sqlite(_) => Ok(true),
        DbConnection::Pg(_) => {
            // Only the relay's session takes that name, and only once it holds the lock (the
            // server keeps 63 bytes of a name; a longer one fails safe: events rendered).
            let row: Reads = diesel::sql_query(format!(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND a.application_name = left('{RELAY_APPLICATION} ' || current_schema(), 63)) \
                 AS reads"
            ))
            .get_result(conn)?;
            Ok(row.reads)
        }
    }
}

/// Marks published rows sent: one statement. (On the relay's own PostgreSQL session it does
/// not wait for the disk; see `try_lock_relay`.)
fn mark_sent(conn: &mut DbConnection, seqs: Vec<i64>) -> Result<(), DbError> {
    diesel::update(outbox::table.filter(outbox::seq.eq_any(seqs)))
        .set(outbox::sent_at.eq(time::now()))
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("broker: {0}")]
    Bus(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, bytes: usize) -> RenderedEvent {
        RenderedEvent {
            routing_key: "chatroom_created".into(),
            id: format!("e{n}"),
            payload: "x".repeat(bytes),
        }
    }

    /// A row of one rendered line and a record of `count` events of `bytes` each.
    fn row(seq: i64, count: usize, bytes: usize) -> LoadedRow {
        let text = "chat_created\tfirst\t{}".to_owned();
        let record: RecordEvents = Box::new((0..count).map(move |n| event(n, bytes)));
        LoadedRow {
            seq,
            request_id: Some("req".into()),
            traceparent: None,
            lines: VecDeque::from([
                LineEvents::Rendered(0..text.len()),
                LineEvents::Expanded(record.peekable()),
            ]),
            text,
        }
    }

    fn ids(round: &RoundBatch) -> Vec<&str> {
        round
            .messages
            .iter()
            .map(|m| m.message_id.as_str())
            .collect()
    }

    #[test]
    fn a_row_over_the_event_limit_goes_out_over_rounds_and_is_finished_by_the_last() {
        let mut rows = VecDeque::from([row(7, 9, 10), row(8, 0, 10)]);
        let mut rounds = Vec::new();
        while !rows.is_empty() {
            let mut round = RoundBatch::new("x".into(), 4);
            round.take_from(&mut rows);
            rounds.push(round);
        }
        assert_eq!(ids(&rounds[0]), ["first", "e0", "e1", "e2"]);
        assert_eq!(ids(&rounds[1]), ["e3", "e4", "e5", "e6"]);
        // Row 7 ends in the third round, and row 8 (its line alone) joins it.
        assert_eq!(ids(&rounds[2]), ["e7", "e8", "first"]);
        let finished: Vec<&[i64]> = rounds.iter().map(|r| r.finished.as_slice()).collect();
        assert_eq!(finished, [&[][..], &[], &[7, 8]]);
        assert!(rounds.iter().all(|r| {
            r.messages
                .iter()
                .all(|m| m.request_id.as_deref() == Some("req"))
        }));
    }

    #[test]
    fn a_round_stops_at_its_byte_budget_after_at_least_one_event() {
        let big = ROUND_BYTES as usize / 3 + 1;
        let mut rows = VecDeque::from([row(1, 5, big)]);
        let mut round = RoundBatch::new("x".into(), 500);
        round.take_from(&mut rows);
        // The line of 2 bytes, then three events pass the budget.
        assert_eq!(ids(&round), ["first", "e0", "e1", "e2"]);
        assert!(round.finished.is_empty());
        let mut huge = VecDeque::from([row(2, 1, 2 * ROUND_BYTES as usize)]);
        huge.front_mut().unwrap().lines.pop_front();
        let mut round = RoundBatch::new("x".into(), 500);
        round.take_from(&mut huge);
        assert_eq!(
            ids(&round),
            ["e0"],
            "an event larger than a round still goes"
        );
        assert_eq!(round.finished, [2]);
    }

    #[test]
    fn a_row_is_finished_right_after_its_last_event() {
        let mut rows = VecDeque::from([row(3, 3, 10)]);
        let mut round = RoundBatch::new("x".into(), 4);
        round.take_from(&mut rows);
        assert_eq!(ids(&round), ["first", "e0", "e1", "e2"]);
        assert_eq!(round.finished, [3], "not left for an empty round");
        assert!(rows.is_empty());
    }

    #[test]
    fn event_ids_of_a_record_are_distinct_and_stable() {
        let base = uuid::Uuid::new_v4();
        let ids: std::collections::HashSet<_> = (0..1001).map(|n| event_id(base, n)).collect();
        assert_eq!(ids.len(), 1001);
        assert_eq!(event_id(base, 5), event_id(base, 5));
        assert_eq!(event_id(base, 0), base);
    }
}
