//! Event ids a consumer has applied, recorded in the same transaction as their effect so that
//! a redelivered event changes nothing. Each consuming service has a `processed_events` table
//! of its own (created by its migrations).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_builder::{QueryFragment, QueryId};

use crate::db::DbConnection;
use crate::time;

diesel::table! {
    /// Created by each consuming service's own migrations.
    processed_events (id) {
        id -> Text,
        processed_at -> Timestamp,
    }
}

/// Records an applied event; false when it had been applied already. One statement, which
/// needs no read first: the primary key finds a duplicate whatever the table's statistics, and
/// a second consumer of the same event (a redelivery racing the first) waits for the first's
/// transaction and is then told it is a duplicate, rather than failing on the key.
pub fn mark_processed(conn: &mut DbConnection, event_id: &str) -> QueryResult<bool> {
    let statement = MarkProcessed {
        event_id,
        at: time::now(),
    };
    let inserted = match conn {
        DbConnection::Pg(c) => statement.execute(c)?,
        DbConnection::Sqlite(c) => statement.execute(c)?,
    };
    Ok(inserted == 1)
}

/// `INSERT ... ON CONFLICT DO NOTHING` (the same SQL on both backends; diesel's
/// `on_conflict_do_nothing` is not offered on the two-backend connection).
struct MarkProcessed<'a> {
    event_id: &'a str,
    at: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for MarkProcessed<'_>
where
    DB: diesel::backend::Backend,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
    NaiveDateTime: diesel::serialize::ToSql<diesel::sql_types::Timestamp, DB>,
    DB: diesel::sql_types::HasSqlType<diesel::sql_types::Text>
        + diesel::sql_types::HasSqlType<diesel::sql_types::Timestamp>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Text, Timestamp};
        out.push_sql("INSERT INTO processed_events (id, processed_at) VALUES (");
        out.push_bind_param::<Text, _>(self.event_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(") ON CONFLICT (id) DO NOTHING");
        Ok(())
    }
}

impl QueryId for MarkProcessed<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C> RunQueryDsl<C> for MarkProcessed<'_> {}

/// How long applied event ids are remembered: far longer than any redelivery takes.
pub const KEEP_PROCESSED_DAYS: i64 = 7;

pub fn purge_processed(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::days(KEEP_PROCESSED_DAYS);
    diesel::delete(processed_events::table.filter(processed_events::processed_at.lt(cutoff)))
        .execute(conn)
}
