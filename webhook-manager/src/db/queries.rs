use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::page::Page;
use common::paginate;
use common::time;
use diesel::prelude::*;

use super::models::{DeliveryRow, DueDelivery, WebhookRow};
use super::schema::{deliveries, webhooks};

pub use common::processed::{mark_processed, purge_processed};

/// The statuses of a delivery not yet done.
pub const ACTIVE: [&str; 2] = ["pending", "retrying"];

pub fn insert_webhook(conn: &mut DbConnection, row: &WebhookRow) -> QueryResult<()> {
    diesel::insert_into(webhooks::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// The tenant's webhook (deleted ones too).
pub fn tenant_webhook(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> QueryResult<Option<WebhookRow>> {
    webhooks::table
        .filter(webhooks::id.eq(id))
        .filter(webhooks::customer_id.eq(customer_id))
        .select(WebhookRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_webhooks(
    conn: &mut DbConnection,
    customer_id: &str,
    page: &Page,
) -> QueryResult<Vec<WebhookRow>> {
    let query = webhooks::table
        .filter(webhooks::customer_id.eq(customer_id))
        .filter(webhooks::tm_delete.eq(time::live()))
        .select(WebhookRow::as_select())
        .into_boxed();
    paginate!(query, webhooks::tm_create, webhooks::id, page).load(conn)
}

/// How many live webhooks the tenant has.
pub fn count_live_webhooks(conn: &mut DbConnection, customer_id: &str) -> QueryResult<i64> {
    webhooks::table
        .filter(webhooks::customer_id.eq(customer_id))
        .filter(webhooks::tm_delete.eq(time::live()))
        .count()
        .get_result(conn)
}

/// The tenant's live, enabled webhooks: who an event of the tenant may go to.
pub fn enabled_webhooks(
    conn: &mut DbConnection,
    customer_id: &str,
) -> QueryResult<Vec<WebhookRow>> {
    webhooks::table
        .filter(webhooks::customer_id.eq(customer_id))
        .filter(webhooks::tm_delete.eq(time::live()))
        .filter(webhooks::status.eq("enabled"))
        .select(WebhookRow::as_select())
        .load(conn)
}

/// A webhook the dispatcher may deliver to (live and enabled), by id.
pub fn deliverable_webhook(conn: &mut DbConnection, id: &str) -> QueryResult<Option<WebhookRow>> {
    webhooks::table
        .filter(webhooks::id.eq(id))
        .filter(webhooks::tm_delete.eq(time::live()))
        .filter(webhooks::status.eq("enabled"))
        .select(WebhookRow::as_select())
        .first(conn)
        .optional()
}

/// Gives up the deliveries not yet done of a webhook that is deleted (none if it is not).
pub fn fail_deliveries_of_deleted(
    conn: &mut DbConnection,
    webhook_id: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let deleted = webhooks::table
        .filter(webhooks::id.eq(webhook_id))
        .filter(webhooks::tm_delete.ne(time::live()))
        .count()
        .get_result::<i64>(conn)?
        > 0;
    if !deleted {
        return Ok(0);
    }
    fail_active_deliveries(conn, webhook_id, "webhook deleted", now)
}

pub fn save_webhook(conn: &mut DbConnection, row: &WebhookRow) -> QueryResult<()> {
    diesel::update(webhooks::table.filter(webhooks::id.eq(&row.id)))
        .set((
            webhooks::name.eq(&row.name),
            webhooks::uri.eq(&row.uri),
            webhooks::method.eq(&row.method),
            webhooks::event_types.eq(&row.event_types),
            webhooks::status.eq(&row.status),
            webhooks::secret.eq(&row.secret),
            webhooks::tm_update.eq(row.tm_update),
            webhooks::tm_delete.eq(row.tm_delete),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn insert_deliveries(conn: &mut DbConnection, rows: &[DeliveryRow]) -> QueryResult<()> {
    // SQLite caps bound parameters per statement (13 columns x 500 rows stays under it).
    for chunk in rows.chunks(500) {
        common::insert_rows!(conn, deliveries::table, chunk)?;
    }
    Ok(())
}

/// The webhook's delivery (tenant-scoped through the webhook, which the caller checked).
pub fn delivery(
    conn: &mut DbConnection,
    webhook_id: &str,
    id: &str,
) -> QueryResult<Option<DeliveryRow>> {
    deliveries::table
        .filter(deliveries::id.eq(id))
        .filter(deliveries::webhook_id.eq(webhook_id))
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_deliveries(
    conn: &mut DbConnection,
    webhook_id: &str,
    status: Option<&str>,
    page: &Page,
) -> QueryResult<Vec<DeliveryRow>> {
    let mut query = deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .select(DeliveryRow::as_select())
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(deliveries::status.eq(status.to_owned()));
    }
    paginate!(query, deliveries::tm_create, deliveries::id, page).load(conn)
}

/// Gives up the webhook's deliveries not yet done (it was deleted).
pub fn fail_active_deliveries(
    conn: &mut DbConnection,
    webhook_id: &str,
    why: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        deliveries::table
            .filter(deliveries::webhook_id.eq(webhook_id))
            .filter(deliveries::status.eq_any(ACTIVE)),
    )
    .set((
        deliveries::status.eq("failed"),
        deliveries::last_error.eq(why),
        deliveries::tm_update.eq(now),
    ))
    .execute(conn)
}

/// Queues a delivery again, due now, retried for a full period again from now.
pub fn requeue(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(deliveries::table.filter(deliveries::id.eq(id)))
        .set((
            deliveries::status.eq("pending"),
            deliveries::tm_next_attempt.eq(now),
            deliveries::tm_retry_from.eq(now),
            deliveries::tm_update.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Up to `limit` of the webhook's deliveries due by `now`, the longest due first.
pub fn due_deliveries(
    conn: &mut DbConnection,
    webhook_id: &str,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<DueDelivery>> {
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .filter(deliveries::status.eq_any(ACTIVE))
        .filter(deliveries::tm_next_attempt.le(now))
        .order(deliveries::tm_next_attempt.asc())
        .limit(limit)
        .select(DueDelivery::as_select())
        .load(conn)
}

/// When the webhook's next delivery not yet done comes due (None: there is none).
pub fn next_due(conn: &mut DbConnection, webhook_id: &str) -> QueryResult<Option<NaiveDateTime>> {
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .filter(deliveries::status.eq_any(ACTIVE))
        .select(diesel::dsl::min(deliveries::tm_next_attempt))
        .first(conn)
}

/// Every webhook with deliveries not yet done, and when its next comes due.
pub fn webhooks_with_work(
    conn: &mut DbConnection,
) -> QueryResult<Vec<(String, Option<NaiveDateTime>)>> {
    deliveries::table
        .filter(deliveries::status.eq_any(ACTIVE))
        .group_by(deliveries::webhook_id)
        .select((
            deliveries::webhook_id,
            diesel::dsl::min(deliveries::tm_next_attempt),
        ))
        .load(conn)
}

/// Claims a due delivery for an attempt: counts the attempt and holds the delivery until
/// `lease_until` (when it comes due again if the attempt's result is never recorded, say the
/// process was killed). False if it was no longer due (another replica claimed it).
pub fn claim(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> QueryResult<bool> {
    let claimed = diesel::update(
        deliveries::table
            .filter(deliveries::id.eq(id))
            .filter(deliveries::status.eq_any(ACTIVE))
            .filter(deliveries::tm_next_attempt.le(now)),
    )
    .set((
        deliveries::attempts.eq(deliveries::attempts + 1),
        deliveries::tm_next_attempt.eq(lease_until),
        deliveries::tm_update.eq(now),
    ))
    .execute(conn)?;
    Ok(claimed == 1)
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult<'a> {
    pub status: &'a str,
    pub status_code: i32,
    pub error: &'a str,
    pub next_attempt: NaiveDateTime,
}

/// Records the result of attempt number `attempts`, unless the delivery was given up
/// meanwhile (its webhook deleted), queued again by hand, or claimed for a later attempt (this
/// one outlived its lease): a success is recorded in any case.
pub fn record(
    conn: &mut DbConnection,
    id: &str,
    attempts: i32,
    result: &AttemptResult<'_>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let target = deliveries::table.filter(deliveries::id.eq(id));
    let set = (
        deliveries::status.eq(result.status),
        deliveries::last_status_code.eq(result.status_code),
        deliveries::last_error.eq(result.error),
        deliveries::tm_next_attempt.eq(result.next_attempt),
        deliveries::tm_update.eq(now),
    );
    if result.status == "succeeded" {
        diesel::update(target).set(set).execute(conn)?;
    } else {
        diesel::update(
            target
                .filter(deliveries::status.eq_any(ACTIVE))
                .filter(deliveries::attempts.eq(attempts)),
        )
        .set(set)
        .execute(conn)?;
    }
    Ok(())
}

/// How long finished deliveries (succeeded or failed) are kept.
pub const KEEP_FINISHED_DAYS: i64 = 30;

/// Forgets finished deliveries older than `KEEP_FINISHED_DAYS` (run now and then).
pub fn purge_finished(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::days(KEEP_FINISHED_DAYS);
    diesel::delete(
        deliveries::table
            .filter(deliveries::status.eq_any(["succeeded", "failed"]))
            .filter(deliveries::tm_update.lt(cutoff)),
    )
    .execute(conn)
}

/// Deliveries not yet done: how many of each status, and when the oldest was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub by_status: Vec<(String, i64)>,
    pub oldest: Option<NaiveDateTime>,
}

pub fn backlog(conn: &mut DbConnection) -> QueryResult<Backlog> {
    let counts = deliveries::table
        .filter(deliveries::status.eq_any(ACTIVE))
        .group_by(deliveries::status)
        .select((deliveries::status, diesel::dsl::count_star()))
        .load(conn)?;
    let oldest = deliveries::table
        .filter(deliveries::status.eq_any(ACTIVE))
        .select(diesel::dsl::min(deliveries::tm_create))
        .first(conn)?;
    Ok(Backlog {
        by_status: counts,
        oldest,
    })
}
