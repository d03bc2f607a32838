//! The transactional outbox: a change and the events it implies commit together (`record`
//! writes one row in the change's transaction), and the `Relay` publishes what was committed,
//! in the order rows became visible, marking rows sent only after the broker confirmed them.
//! It sends the next round while earlier ones await their confirms, and only one relay per
//! service publishes at a time (a PostgreSQL advisory lock). A crash or a broker outage between
//! commit and publish delays events; it never loses them (delivery is at least once).
//!
//! A row holds the service's own records (`OutboxRecord`, a versioned serde type), as JSON:
//! `{"v": <version>, "records": [...]}`. Each record is one event. A record may be the event
//! itself, or a short reference the service renders when the relay publishes it (a send
//! records the numbers of the chatrooms holding its copies, a few bytes each, not the copies).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use common::RequestMeta;
use common::db::{Db, DbConnection, DbError, DedicatedConnection};
use common::time;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::bus::{BusError, EventBus, EventMessage};
use crate::cloudevent::{self, Event};
use crate::contract::EventType;

diesel::table! {
    /// Created by each service's own migrations, in its own schema. One row per committed
    /// transaction: its events travel together (one insert, one update when sent).
    outbox (seq) {
        seq -> BigInt,
        /// The records, `{"v": <version>, "records": [...]}` (rows from before typed records:
        /// one line per event; see `legacy`).
        events -> Text,
        /// How many events the row stands for.
        event_count -> Integer,
        request_id -> Nullable<Text>,
        traceparent -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
        /// What its events weigh once rendered (bytes, estimated when recorded), for the
        /// relay's round budget; rows from before it count their stored length.
        publish_bytes -> Nullable<Integer>,
    }
}

/// A service's outbox record: written with its change, published as one event.
pub trait OutboxRecord: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The format this release writes. A row of a higher version was written by a newer
    /// release: the relay publishes nothing from it on (the outbox waits, in order, for a relay
    /// that reads it) rather than skip its events.
    const VERSION: u32;

    /// The record of an event rendered when its change committed.
    fn rendered(event: Event) -> Self;

    /// Roughly what its event will weigh once rendered, in bytes.
    fn weight(&self) -> usize;

    /// The events of `records`, in order, reading what they refer to in one go. `None` for a
    /// record that cannot be rendered (it names what does not exist): its row is held, unsent,
    /// logged and counted, and the rows after it are published. An `Err` (the database
    /// failing) retries the round.
    fn render(conn: &mut DbConnection, records: &[Self]) -> Result<Vec<Option<Event>>, DbError>;

    /// The records of a row written before typed records (`legacy::Line`s, in order), or
    /// `None` if it holds a line this service does not know (the row is held). By default,
    /// rendered events only.
    fn from_legacy(lines: Vec<legacy::Line<'_>>) -> Option<Vec<Self>> {
        lines
            .into_iter()
            .map(|line| match line {
                legacy::Line::Rendered(event) => Some(Self::rendered(event)),
                legacy::Line::Compact { .. } => None,
            })
            .collect()
    }
}

/// A row's text: the records (a slice written, a `Vec` read) and the format they were
/// written in.
#[derive(Serialize, serde::Deserialize)]
struct StoredRecords<T> {
    v: u32,
    records: T,
}

/// The outbox row of a transaction's records, ready to insert: for a write that puts it in
/// the same statement as its change (see `Store::write_statement`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub events: String,
    pub event_count: i32,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub created_at: NaiveDateTime,
    pub publish_bytes: Option<i32>,
}

impl OutboxRow {
    /// The row of `records`; `meta` follows the request into the events' headers.
    pub fn new<R: OutboxRecord>(meta: &RequestMeta, records: &[R]) -> Self {
        let weight: usize = records.iter().map(R::weight).sum();
        OutboxRow {
            events: serde_json::to_string(&StoredRecords {
                v: R::VERSION,
                records,
            })
            .expect("records serialize"),
            event_count: i32::try_from(records.len()).expect("fewer than 2^31 records"),
            request_id: meta.request_id.clone(),
            traceparent: meta.traceparent.clone(),
            created_at: time::now(),
            publish_bytes: Some(i32::try_from(weight).unwrap_or(i32::MAX)),
        }
    }
}

/// Writes the transaction's records into the outbox, as one row (nothing for none).
pub fn record<R: OutboxRecord>(
    conn: &mut DbConnection,
    meta: &RequestMeta,
    records: &[R],
) -> QueryResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    diesel::insert_into(outbox::table)
        .values(OutboxRow::new(meta, records))
        .execute(conn)?;
    Ok(())
}

/// Rows from before typed records: one line per event, either rendered (`<routing key>\t<event
/// id>\t<CloudEvents JSON>`) or a service's compact record (`@<kind>\t<body>`). Their events
/// are published in today's form (routing keys `<type>.<customer id>`), keeping their ids.
pub mod legacy {
    use super::*;

    /// One line of a legacy row.
    #[derive(Debug)]
    pub enum Line<'a> {
        Rendered(Event),
        Compact { kind: &'a str, body: &'a str },
    }

    /// Whether a row's text is in the legacy format (typed records are a JSON object).
    pub fn is_legacy(text: &str) -> bool {
        !text.starts_with('{')
    }

    /// The lines of a legacy row; `None` if one does not parse.
    pub fn lines(text: &str) -> Option<Vec<Line<'_>>> {
        text.split('\n').map(line).collect()
    }

    fn line(line: &str) -> Option<Line<'_>> {
        if let Some(record) = line.strip_prefix('@') {
            let (kind, body) = record.split_once('\t').unwrap_or((record, ""));
            return Some(Line::Compact { kind, body });
        }
        let mut parts = line.splitn(3, '\t');
        let (_routing_key, id, body) = (parts.next()?, parts.next()?, parts.next()?);
        let (attributes, data) = cloudevent::attributes(body.as_bytes()).ok()?;
        Some(Line::Rendered(Event {
            id: uuid::Uuid::parse_str(id).ok()?,
            event_type: EventType::parse(&attributes.event_type)?,
            customer_id: attributes.customer_id.into_owned(),
            owner_id: attributes.owner_id.map(std::borrow::Cow::into_owned),
            data: data.to_owned(),
        }))
    }

    /// The id of a legacy compact record's `n`th event: its base with `n` xor-ed into the low
    /// bits (what the relay of that release published).
    pub fn event_id(base: uuid::Uuid, n: usize) -> uuid::Uuid {
        uuid::Uuid::from_u128(base.as_u128() ^ n as u128)
    }
}

/// What joins a service's writers to its outbox: it wakes the relay after a commit, so events
/// go out at once rather than at the next poll, and holds writers back while the outbox is
/// over its limit (`watch_pressure`).
#[derive(Debug, Clone)]
pub struct RelaySignal {
    wake: Arc<Notify>,
    /// Whether writes go ahead now. Always, unless `watch_pressure` samples the outbox.
    open: Arc<watch::Sender<bool>>,
}

impl Default for RelaySignal {
    fn default() -> Self {
        RelaySignal {
            wake: Arc::default(),
            open: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl RelaySignal {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Returns when a write may go ahead: at once, unless the outbox holds more unsent events
    /// than its limit while the relay is publishing them; then when it no longer does, or
    /// after `MAX_WRITE_WAIT`, whichever comes first.
    pub async fn admit(&self) {
        if *self.open.borrow() {
            return;
        }
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(MAX_WRITE_WAIT, open.wait_for(|open| *open)).await;
    }

    /// Whether writers are being held back now.
    pub fn holding(&self) -> bool {
        !*self.open.borrow()
    }

    fn set_open(&self, open: bool) {
        self.open
            .send_if_modified(|now| std::mem::replace(now, open) != open);
    }
}

/// Unsent event bytes (as the records estimate them, `OutboxRecord::weight`) beyond which
/// writers wait for the relay: what a relay on this machine publishes in well under a second,
/// at any chat size.
pub const MAX_UNSENT_BYTES: i64 = 8 << 20;

/// The longest a write waits for the relay. Past it the write goes ahead: the outbox keeps
/// its events whatever the backlog, and the wait only paces writers to the relay.
pub const MAX_WRITE_WAIT: Duration = Duration::from_secs(1);

/// The relay counts as stalled (the broker down, no relay running) after this long without
/// publishing any of the oldest unsent rows: writers are then not held back, as waiting would
/// publish nothing sooner.
pub const RELAY_STALLED_AFTER: Duration = Duration::from_secs(1);

/// The oldest unsent rows one sample looks at: the sample's cost stays bounded whatever the
/// backlog, and this many rows count as over the limit whatever their size.
const PRESSURE_WINDOW: i64 = 4096;

/// How often the outbox is sampled while it holds unsent rows the relay is publishing, and
/// while it is empty or the relay is stalled (a backlog then builds for that long at most
/// before writers are held).
const PRESSURE_INTERVAL: Duration = Duration::from_millis(20);
const QUIET_PRESSURE_INTERVAL: Duration = Duration::from_millis(250);

/// Samples the oldest unsent rows of `service`'s outbox and holds `signal`'s writers back
/// while they weigh more than `max_unsent_bytes` and the relay is publishing them, until
/// `shutdown`. Without it a burst of writes can outrun the relay for as long as it lasts
/// (committed, then published minutes later); with it writers are paced to the relay, the
/// backlog stays under the limit, and what clients were told succeeded is seen promptly. Every
/// process writing the outbox runs one (they read the same rows, whichever relay leads).
pub fn watch_pressure(
    db: Db,
    signal: RelaySignal,
    service: &str,
    max_unsent_bytes: i64,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use common::metrics::{ServiceLabels, metrics};
    let labels = ServiceLabels {
        service: service.to_owned(),
    };
    tokio::spawn(async move {
        let holding = metrics().outbox_writes_held.get_or_create(&labels).clone();
        // The last sample's newest row and how many rows it held up to it.
        let mut last: Option<(i64, usize)> = None;
        let mut progressed_at = tokio::time::Instant::now();
        let mut interval = PRESSURE_INTERVAL;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            }
            let window = match db.run(|conn| oldest_unsent(conn, PRESSURE_WINDOW)).await {
                Ok(window) => window,
                Err(e) => {
                    tracing::debug!(error = %e, "outbox: pressure not sampled");
                    signal.set_open(true);
                    holding.set(0);
                    continue;
                }
            };
            let now = tokio::time::Instant::now();
            // Progress: a row unsent at the last sample is sent now (held rows never are).
            let progressed = match last {
                Some((upto, rows)) => {
                    window.iter().take_while(|(seq, _)| *seq <= upto).count() < rows
                }
                None => false,
            };
            if progressed || window.is_empty() {
                progressed_at = now;
            }
            let bytes: i64 = window.iter().map(|(_, b)| i64::from(*b)).sum();
            let over = bytes > max_unsent_bytes || window.len() as i64 >= PRESSURE_WINDOW;
            let stalled = now.duration_since(progressed_at) > RELAY_STALLED_AFTER;
            signal.set_open(!over || stalled);
            holding.set(i64::from(over && !stalled));
            interval = if stalled || window.is_empty() {
                QUIET_PRESSURE_INTERVAL
            } else {
                PRESSURE_INTERVAL
            };
            last = window.last().map(|(seq, _)| (*seq, window.len()));
        }
        signal.set_open(true);
        holding.set(0);
    })
}

/// The `limit` oldest unsent rows: their seq and weight.
fn oldest_unsent(conn: &mut DbConnection, limit: i64) -> Result<Vec<(i64, i32)>, DbError> {
    Ok(outbox::table
        .filter(outbox::sent_at.is_null())
        .order(outbox::seq.asc())
        .limit(limit)
        .select((
            outbox::seq,
            diesel::dsl::sql::<diesel::sql_types::Integer>(
                "coalesce(publish_bytes, length(events))",
            ),
        ))
        .load(conn)?)
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

/// The housekeeping job of every service's outbox.
pub const HOUSEKEEPING: common::housekeeping::Job = ("sent outbox rows", purge_sent);

/// Samples `service`'s outbox (backlog, and age of the oldest unsent event) at each metrics
/// scrape, until `shutdown`.
pub fn watch_backlog(db: Db, service: &str, shutdown: watch::Receiver<bool>) {
    use common::metrics::{ServiceLabels, metrics};
    let labels = ServiceLabels {
        service: service.to_owned(),
    };
    metrics().outbox_backlog.get_or_create(&labels).set(0);
    metrics()
        .outbox_oldest_unsent_age
        .get_or_create(&labels)
        .set(0.0);
    metrics().add_probe(shutdown, move || {
        let (db, labels) = (db.clone(), labels.clone());
        Box::pin(async move {
            match db.run(backlog_and_oldest).await {
                Ok((backlog, oldest)) => {
                    let m = metrics();
                    m.outbox_backlog.get_or_create(&labels).set(backlog);
                    let age = oldest.map_or(0.0, |t| {
                        (time::now() - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
                    });
                    m.outbox_oldest_unsent_age
                        .get_or_create(&labels)
                        .set(age.max(0.0));
                }
                Err(e) => tracing::debug!(error = %e, "metrics: outbox not sampled"),
            }
        })
    });
}

fn backlog_and_oldest(conn: &mut DbConnection) -> Result<(i64, Option<NaiveDateTime>), DbError> {
    let backlog = backlog(conn)?;
    let oldest = outbox::table
        .filter(outbox::sent_at.is_null())
        .select(diesel::dsl::min(outbox::created_at))
        .first::<Option<NaiveDateTime>>(conn)?;
    Ok((backlog, oldest))
}

/// How long a stopping relay keeps publishing what is left in the outbox.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Bytes of events one round publishes at most (beyond it the round ends, after at least one
/// row): with `max_in_flight` rounds awaiting confirms, this bounds the relay's memory.
pub const ROUND_BYTES: i64 = 1024 * 1024;

/// Rows held at most: beyond it, the relay publishes nothing more (something is badly wrong,
/// and the held rows' seqs would otherwise grow without bound).
pub const MAX_HELD_ROWS: usize = 1000;

/// Publishes a service's outbox (records of type `R`) to `exchange`.
pub struct Relay<R> {
    db: Db,
    bus: EventBus,
    exchange: String,
    signal: RelaySignal,
    /// The CloudEvents `source` of the events, and the `service` label of the relay's metrics.
    source: &'static str,
    /// Events per publish round, at most.
    pub batch_size: i64,
    /// Poll even without a wake-up (rows written by another process, or a missed signal).
    pub poll_interval: Duration,
    /// How long a wake-up waits for more commits before publishing.
    pub linger: Duration,
    /// Rounds sent whose confirms have not all arrived yet, at most.
    pub max_in_flight: usize,
    /// PostgreSQL: the connection holding the relay lock, while this relay is the one that
    /// publishes.
    leader: Option<DedicatedConnection>,
    /// Rows sent but not yet confirmed and marked: the next round skips them, without waiting
    /// for them. (Not "every seq above the last one sent": a transaction that took a lower seq
    /// may commit later.)
    unconfirmed: Vec<i64>,
    /// Sent rounds in order, each resolving once confirmed.
    in_flight: FuturesOrdered<BoxFuture<'static, ConfirmedRound>>,
    /// Rows that cannot be published (undecodable, or naming what does not exist): left
    /// unsent and skipped, counted in `outbox_held_rows`, and tried again when this process
    /// starts over (a release that fixes them publishes them).
    held: Vec<i64>,
    records: PhantomData<fn() -> R>,
}

/// A sent round: its rows, its events and their bytes, and whether the broker confirmed all.
struct ConfirmedRound {
    seqs: Vec<i64>,
    events: u64,
    bytes: u64,
    confirmed: Result<(), BusError>,
}

/// The outcome of a publishing round.
enum Round {
    /// Rows sent or held (0: nothing was pending), and whether the round was full.
    Sent { rows: usize, full: bool },
    /// Another replica holds the relay lock: it publishes, this relay waits.
    Standby,
}

/// What the relay waits for between rounds.
enum Wake {
    Confirmed(ConfirmedRound),
    Commit,
    Tick,
}

impl<R: OutboxRecord> Relay<R> {
    pub fn new(
        db: Db,
        bus: EventBus,
        exchange: impl Into<String>,
        signal: RelaySignal,
        source: &'static str,
    ) -> Self {
        common::metrics::set_held_rows(source, 0);
        Relay {
            db,
            bus,
            exchange: exchange.into(),
            signal,
            source,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            linger: Duration::from_millis(2),
            max_in_flight: 4,
            leader: None,
            unconfirmed: Vec::new(),
            in_flight: FuturesOrdered::new(),
            held: Vec::new(),
            records: PhantomData,
        }
    }

    /// What a service runs beside its writers, until `shutdown` turns true: this relay, the
    /// sampling of its outbox for the metrics (`watch_backlog`) and the pacing of its writers
    /// (`watch_pressure`). Returns the relay's task.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        watch_backlog(self.db.clone(), self.source, shutdown.clone());
        watch_pressure(
            self.db.clone(),
            self.signal.clone(),
            self.source,
            MAX_UNSENT_BYTES,
            shutdown.clone(),
        );
        tokio::spawn(self.run(shutdown))
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
                    Ok(Round::Sent { full, .. }) => more = full,
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
                Some(round) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    Wake::Confirmed(round)
                }
                _ = std::future::ready(()), if more && room => Wake::Tick,
                _ = self.signal.wake.notified(), if room => Wake::Commit,
                _ = tokio::time::sleep(self.poll_interval) => Wake::Tick,
                _ = shutdown.changed() => Wake::Tick,
            };
            match wake {
                Wake::Confirmed(round) => match self.settle(round).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => self.retry_after(e, &mut backoff, &mut shutdown).await,
                },
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
            while let Some(round) = self.in_flight.next().await {
                self.settle(round).await?;
            }
            let rows = match self.round().await? {
                Round::Sent { rows, .. } => rows,
                Round::Standby => 0,
            };
            if rows == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        while let Some(round) = self.in_flight.next().await {
            self.settle(round).await?;
        }
        Ok(())
    }

    /// A confirmed round's rows are marked sent.
    async fn settle(&mut self, round: ConfirmedRound) -> Result<(), RelayError> {
        round
            .confirmed
            .map_err(|e| RelayError::Bus(e.to_string()))?;
        common::metrics::count_published(self.source, round.events, round.bytes);
        let seqs = round.seqs;
        let done: std::collections::HashSet<i64> = seqs.iter().copied().collect();
        self.unconfirmed.retain(|seq| !done.contains(seq));
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
        result
    }

    /// Everything sent but not confirmed is sent again (consumers dedupe by event id).
    fn forget_sent(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.unconfirmed.clear();
    }

    /// Sends the next round of events without waiting for the confirms: the pending rows after
    /// those sent and awaiting confirms, in seq order, up to the round's events and bytes.
    async fn send_round(&mut self) -> Result<Round, RelayError> {
        if self.held.len() >= MAX_HELD_ROWS {
            tracing::error!(
                held = self.held.len(),
                "relay: {MAX_HELD_ROWS} or more outbox rows cannot be published; publishing \
                 nothing more until this process starts over"
            );
            return Ok(Round::Sent {
                rows: 0,
                full: false,
            });
        }
        let mut skip = self.unconfirmed.clone();
        skip.extend_from_slice(&self.held);
        let (limit, exchange, source) = (self.batch_size, self.exchange.clone(), self.source);
        let load =
            move |conn: &mut DbConnection| load_round::<R>(conn, &skip, limit, &exchange, source);
        let loaded = match &mut self.leader {
            Some(conn) => conn.run(load).await?,
            None => self.db.run(load).await?,
        };
        if !loaded.held.is_empty() {
            self.held.extend_from_slice(&loaded.held);
            common::metrics::set_held_rows(self.source, self.held.len());
        }
        let rows = loaded.finished.len() + loaded.held.len();
        if loaded.finished.is_empty() {
            return Ok(Round::Sent { rows, full: false });
        }
        let pending = self
            .bus
            .send(&loaded.messages)
            .await
            .map_err(|e| RelayError::Bus(e.to_string()))?;
        let events = loaded.messages.len() as u64;
        let bytes = loaded.bytes as u64;
        tracing::debug!(events, exchange = %self.exchange, "relay: sent");
        self.unconfirmed.extend_from_slice(&loaded.finished);
        let seqs = loaded.finished;
        self.in_flight.push_back(Box::pin(async move {
            ConfirmedRound {
                seqs,
                events,
                bytes,
                confirmed: pending.confirmed().await,
            }
        }));
        Ok(Round::Sent {
            rows,
            full: loaded.full,
        })
    }
}

/// A round read from the outbox: its messages, the rows they finish, the rows that cannot be
/// published, and whether the round was cut short by its budget.
struct LoadedRound {
    messages: Vec<EventMessage>,
    bytes: usize,
    finished: Vec<i64>,
    held: Vec<i64>,
    full: bool,
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

/// What a row's text holds.
enum Decoded<R> {
    Records(Vec<R>),
    /// Written by a newer release (its format version).
    Newer(u32),
    /// Neither: it cannot be published.
    Unreadable(String),
}

fn decode<R: OutboxRecord>(text: &str) -> Decoded<R> {
    if legacy::is_legacy(text) {
        return match legacy::lines(text).and_then(R::from_legacy) {
            Some(records) => Decoded::Records(records),
            None => Decoded::Unreadable(
                "a row of the format before typed records that does not convert".into(),
            ),
        };
    }
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    match serde_json::from_str::<StoredRecords<Vec<R>>>(text) {
        Ok(stored) if stored.v <= R::VERSION => Decoded::Records(stored.records),
        Ok(stored) => Decoded::Newer(stored.v),
        // A newer release's records need not read as this release's: its version tells.
        Err(e) => match serde_json::from_str::<Version>(text) {
            Ok(Version { v }) if v > R::VERSION => Decoded::Newer(v),
            _ => Decoded::Unreadable(e.to_string()),
        },
    }
}

/// The next round: pending rows after `skip`, in seq order, up to `limit` events and
/// `ROUND_BYTES` (at least one row), rendered.
fn load_round<R: OutboxRecord>(
    conn: &mut DbConnection,
    skip: &[i64],
    limit: i64,
    exchange: &str,
    source: &str,
) -> Result<LoadedRound, DbError> {
    // Sizes first, then the chosen rows: a row can be large (a 1,000-person chat's creation),
    // and loading hundreds of them to send a few would hold their memory for nothing.
    let sizes = pending_sizes(conn, skip, limit)?;
    let (mut chosen, mut count, mut bytes) = (Vec::new(), 0i64, 0i64);
    let mut full = false;
    for (seq, n, weight) in sizes.iter().copied() {
        if !chosen.is_empty()
            && (count + i64::from(n) > limit || bytes + i64::from(weight) > ROUND_BYTES)
        {
            full = true;
            break;
        }
        count += i64::from(n);
        bytes += i64::from(weight);
        chosen.push(seq);
    }
    // Rows beyond those the query returned may be waiting too.
    full |= sizes.len() as i64 >= limit;
    let mut round = LoadedRound {
        messages: Vec::new(),
        bytes: 0,
        finished: Vec::new(),
        held: Vec::new(),
        full,
    };
    if chosen.is_empty() {
        return Ok(round);
    }
    let rows: Vec<PendingRow> = outbox::table
        .filter(outbox::seq.eq_any(chosen))
        .order(outbox::seq.asc())
        .select(PendingRow::as_select())
        .load(conn)?;
    // Each row's records, then all of them rendered together.
    let mut taken: Vec<(PendingRow, usize)> = Vec::with_capacity(rows.len());
    let mut records: Vec<R> = Vec::new();
    for row in rows {
        match decode::<R>(&row.events) {
            Decoded::Records(mut r) => {
                taken.push((row, r.len()));
                records.append(&mut r);
            }
            Decoded::Newer(v) => {
                tracing::warn!(
                    seq = row.seq,
                    version = v,
                    "relay: an outbox row written by a newer release; waiting for a relay that reads it"
                );
                round.full = false;
                break;
            }
            Decoded::Unreadable(why) => {
                tracing::error!(seq = row.seq, error = %why, "relay: an outbox row that cannot be read; held, unsent");
                round.held.push(row.seq);
            }
        }
    }
    let mut events = R::render(conn, &records)?.into_iter();
    drop(records);
    for (row, n) in taken {
        let row_events: Option<Vec<Event>> = events.by_ref().take(n).collect();
        let Some(row_events) = row_events else {
            tracing::error!(
                seq = row.seq,
                "relay: an outbox record that cannot be rendered; the row is held, unsent"
            );
            round.held.push(row.seq);
            continue;
        };
        for event in row_events {
            let payload = event.to_cloudevent(source, row.created_at);
            round.bytes += payload.len();
            round.messages.push(EventMessage {
                exchange: exchange.to_owned(),
                routing_key: event.routing_key(),
                message_id: event.id.to_string(),
                payload: Arc::from(payload.into_bytes()),
                request_id: row.request_id.clone(),
                traceparent: row.traceparent.clone(),
            });
        }
        round.finished.push(row.seq);
    }
    Ok(round)
}

/// The next pending rows after those in `skip` (sent, awaiting confirms, or held), in seq
/// order, up to `limit`: (seq, event count, publish bytes).
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
                diesel::dsl::sql::<diesel::sql_types::Integer>(
                    "coalesce(publish_bytes, length(events))",
                ),
            ))
            .load(conn),
    }
}

/// `pending_sizes` on PostgreSQL. The rows awaiting confirms (a thousand or more when the
/// relay is busy) are left out through a hashed subplan (`NOT IN (SELECT unnest(...))`):
/// `seq <> ALL($1)` compares every pending row with every one of them.
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
            "SELECT seq, event_count, coalesce(publish_bytes, length(events)) FROM outbox \
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

/// The relay's session settings (the session holds the relay lock and runs only the relay's
/// few statements, each served by an index: lookups by key or in key order).
///
/// The outbox's statistics lag behind a burst (autovacuum analyses it a minute later at the
/// soonest, and never where autovacuum is off), and with a small table in its statistics the
/// planner reads every pending row through a bitmap scan and sorts them to take the first
/// round: O(backlog) per round. Without bitmap scans it walks the pending index in seq order
/// and stops after a round. For the same reason no sequential scans (`common::db::BY_INDEX`,
/// the setting of every service session, which this one has too).
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
    Ok(row.locked)
}

/// Marks published rows sent: one statement. (On the relay's own PostgreSQL session it does
/// not wait for the disk; see `RELAY_SESSION`.)
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
    use crate::contract::{EventData, EventType};
    use common::resources::ChatroomJson;

    /// Records of a test service: an event, or a reference that renders to one unless it is
    /// "missing".
    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    enum TestRecord {
        Event(Event),
        Reference(String),
    }

    impl OutboxRecord for TestRecord {
        const VERSION: u32 = 2;

        fn rendered(event: Event) -> Self {
            TestRecord::Event(event)
        }

        fn weight(&self) -> usize {
            100
        }

        fn render(
            _conn: &mut DbConnection,
            records: &[Self],
        ) -> Result<Vec<Option<Event>>, DbError> {
            Ok(records
                .iter()
                .map(|r| match r {
                    TestRecord::Event(e) => Some(e.clone()),
                    TestRecord::Reference(name) if name == "missing" => None,
                    TestRecord::Reference(name) => Some(room_event(name)),
                })
                .collect())
        }
    }

    fn room_event(name: &str) -> Event {
        Event::new(
            EventType::CHATROOM_UPDATED,
            &EventData::Chatroom(ChatroomJson {
                id: "r".into(),
                customer_id: "c".into(),
                chat_type: "normal".into(),
                chat_id: "chat".into(),
                owner_id: "o".into(),
                participant_ids: vec!["o".into()],
                name: name.into(),
                detail: String::new(),
                tm_create: "t".into(),
                tm_update: "t".into(),
                tm_delete: common::time::LIVE.into(),
            }),
        )
        .owned_by("o")
    }

    #[test]
    fn rows_are_versioned_json_and_newer_ones_wait() {
        let row = OutboxRow::new(
            &RequestMeta::default(),
            &[TestRecord::Reference("a".into())],
        );
        assert_eq!(row.events, r#"{"v":2,"records":[{"Reference":"a"}]}"#);
        assert_eq!((row.event_count, row.publish_bytes), (1, Some(100)));
        assert!(matches!(decode::<TestRecord>(&row.events), Decoded::Records(r) if r.len() == 1));
        assert!(matches!(
            decode::<TestRecord>(r#"{"v":3,"records":[{"Something":"new"}]}"#),
            Decoded::Newer(3)
        ));
        assert!(matches!(
            decode::<TestRecord>(r#"{"v":2,"records":[{"Unknown":1}]}"#),
            Decoded::Unreadable(_)
        ));
    }

    #[test]
    fn legacy_rows_keep_their_event_ids_and_compact_lines_need_the_service() {
        let event = room_event("old");
        let line = format!(
            "chatroom_updated\t{}\t{}",
            event.id,
            event.to_cloudevent("chat-manager", common::time::now())
        );
        let Decoded::Records(records) = decode::<TestRecord>(&line) else {
            panic!("a rendered legacy line converts");
        };
        assert_eq!(records, [TestRecord::Event(event.clone())]);
        let with_compact = format!("{line}\n@chatrooms\t{{}}");
        assert!(matches!(
            decode::<TestRecord>(&with_compact),
            Decoded::Unreadable(_)
        ));
        assert!(matches!(
            decode::<TestRecord>("no tabs here"),
            Decoded::Unreadable(_)
        ));
        assert_eq!(legacy::event_id(event.id, 0), event.id);
        assert_ne!(legacy::event_id(event.id, 1), event.id);
    }
}
