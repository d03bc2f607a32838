//! Periodic clean-up of what a service's tables would otherwise keep for ever: sent outbox
//! rows, expired idempotency keys, and whatever the service adds.

use std::time::Duration;

use diesel::QueryResult;
use tokio::sync::watch;

use crate::db::{Db, DbConnection, DbError};

/// A clean-up: a name for the log, and the statement (returns the rows removed).
pub type Job = (&'static str, fn(&mut DbConnection) -> QueryResult<usize>);

/// Expired idempotency keys, which every service keeps.
pub const IDEMPOTENCY_KEYS: Job = (
    "expired idempotency keys",
    crate::idempotency::purge_expired,
);

/// Runs `jobs` every `every` until `shutdown` turns true.
pub async fn run(db: Db, every: Duration, jobs: Vec<Job>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        for &(name, job) in &jobs {
            match db.run(move |conn| job(conn).map_err(DbError::from)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, what = name, "housekeeping"),
                Err(e) => tracing::warn!(error = %e, what = name, "housekeeping failed"),
            }
        }
    }
}
