//! The write path every service shares: a change and the outbox records of the events it
//! implies commit in one transaction, creating calls honour an idempotency key, and the relay
//! is woken after each commit.

use std::marker::PhantomData;
use std::sync::Arc;

use common::RequestMeta;
use common::db::{Db, DbConnection, DbError};
use common::error::ServiceError;
use common::idempotency::{IdempotencyError, IdempotencyKey};
use diesel::Connection;

use crate::outbox::{self, OutboxRecord, OutboxRow, RelaySignal};

/// A change and the records of the events it implies.
pub type Change<T, R> = (T, Vec<R>);

/// What a service's error type must offer the store.
pub trait StoreError:
    From<DbError> + From<diesel::result::Error> + From<IdempotencyError> + Send + 'static
{
    /// A concurrent request with the same idempotency key committed first.
    fn is_retry(&self) -> bool;
    /// The stored first result could not be decoded.
    fn corrupt(message: String) -> Self;
}

impl StoreError for ServiceError {
    fn is_retry(&self) -> bool {
        matches!(self, ServiceError::Retry)
    }
    fn corrupt(message: String) -> Self {
        ServiceError::Internal(message)
    }
}

/// A service's storage with its outbox of records `R`.
#[derive(Debug)]
pub struct Store<R> {
    db: Db,
    relay: RelaySignal,
    records: PhantomData<fn() -> R>,
}

impl<R> Clone for Store<R> {
    fn clone(&self) -> Self {
        Store {
            db: self.db.clone(),
            relay: self.relay.clone(),
            records: PhantomData,
        }
    }
}

impl<R: OutboxRecord> Store<R> {
    pub fn new(db: Db, relay: RelaySignal) -> Self {
        Store {
            db,
            relay,
            records: PhantomData,
        }
    }

    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: StoreError,
    {
        self.db.run(f).await
    }

    /// Commits the change and its events' records together, then wakes the relay. Waits first
    /// while the outbox is over its limit (`RelaySignal::admit`).
    pub async fn write<T, E, F>(&self, meta: RequestMeta, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<Change<T, R>, E> + Send + 'static,
        T: Send + 'static,
        E: StoreError,
    {
        self.relay.admit().await;
        let result = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let (value, records) = f(conn)?;
                    outbox::record(conn, &meta, &records)?;
                    Ok(value)
                })
            })
            .await;
        if result.is_ok() {
            self.relay.wake();
        }
        result
    }

    /// A change that writes itself and its outbox row in one statement (atomic on its own), so
    /// without a transaction's extra round trips: `f` makes the outbox row of its records with
    /// the function it is given and writes that row in its statement. Waits as `write` does;
    /// wakes the relay after success.
    pub async fn write_statement<T, E, F>(&self, meta: RequestMeta, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &dyn Fn(&[R]) -> OutboxRow) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: StoreError,
    {
        self.relay.admit().await;
        let result = self
            .db
            .run(move |conn| f(conn, &|records| OutboxRow::new(&meta, records)))
            .await;
        if result.is_ok() {
            self.relay.wake();
        }
        result
    }

    /// A creating write honouring an idempotency key: a retry returns the first result and
    /// creates nothing. When a concurrent request with the same key commits first, the call
    /// runs again, which then replays that request's result.
    pub async fn create<P, E, F>(
        &self,
        meta: RequestMeta,
        key: Option<IdempotencyKey>,
        f: F,
    ) -> Result<P, E>
    where
        P: prost::Message + Default + Send + 'static,
        F: Fn(&mut DbConnection) -> Result<Change<P, R>, E> + Send + Sync + 'static,
        E: StoreError,
    {
        let f = Arc::new(f);
        let mut attempts = 0;
        loop {
            let (f, key, meta) = (f.clone(), key.clone(), meta.clone());
            let result: Result<P, E> = self
                .write(meta, move |conn| {
                    if let Some(key) = &key
                        && let Some(first) = key.replay_or_claim(conn)?
                    {
                        let first = P::decode(first.as_slice())
                            .map_err(|e| E::corrupt(format!("stored result: {e}")))?;
                        return Ok((first, Vec::new()));
                    }
                    let (value, events) = f(conn)?;
                    if let Some(key) = &key {
                        key.complete(conn, &value.encode_to_vec())?;
                    }
                    Ok((value, events))
                })
                .await;
            match result {
                Err(e) if e.is_retry() && attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }
}
