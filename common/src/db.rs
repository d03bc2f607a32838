//! Storage connection shared by both services: one diesel connection type over PostgreSQL (the
//! split deployment) or SQLite (the embedded default), a small blocking pool, and the one async
//! entry point (`Db::run`) that keeps diesel's blocking calls off the async threads.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

/// A connection to either backend. Query code is written once against this type; the few
/// statements only one backend has match on the variant.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// Which backend a URL names. `postgres://` / `postgresql://` is PostgreSQL; `sqlite://<path>`
/// or a plain file path is SQLite. Chosen explicitly: diesel's derived `establish` would try
/// every backend in turn and silently create a SQLite file named after an unreachable
/// PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    Postgres { url: String, schema: String },
    Sqlite { path: String },
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Postgres { url, schema } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("schema", schema)
                .finish(),
            DbTarget::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
        }
    }
}

/// A URL as it may be logged: the password of its user info and a `password` query
/// parameter replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

impl DbTarget {
    /// `schema` is the PostgreSQL schema the service owns (ignored for SQLite, where every
    /// service has a file of its own).
    pub fn parse(url: &str, schema: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbTarget::Postgres {
                url: url.to_owned(),
                schema: schema.to_owned(),
            }
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            DbTarget::Sqlite {
                path: path.to_owned(),
            }
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, DbTarget::Sqlite { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// How long PostgreSQL may take over each thing, set on every connection the services open
/// (the pool's, the relay's own, the migrations'): nothing waits on the database for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// Opening a connection (libpq's `connect_timeout`, whole seconds, at least 2), unless the
    /// URL sets `connect_timeout` itself; zero: none.
    pub connect: Duration,
    /// Any one statement (`statement_timeout`); zero: none. Migrations run without it.
    pub statement: Duration,
    /// Waiting for a lock (`lock_timeout`); zero: none.
    pub lock: Duration,
    /// A transaction left open with no statement running
    /// (`idle_in_transaction_session_timeout`): the server ends the session, releasing its
    /// locks, when the process holding it hangs mid-transaction; zero: none.
    pub idle_in_transaction: Duration,
}

impl DbTimeouts {
    pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
    pub const DEFAULT_STATEMENT: Duration = Duration::from_secs(10);
    pub const DEFAULT_LOCK: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);

    /// The session settings, as one batch of `SET`s (one round trip).
    fn session_settings(&self, statement: Duration) -> String {
        format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}",
            statement.as_millis(),
            self.lock.as_millis(),
            self.idle_in_transaction.as_millis()
        )
    }
}

impl Default for DbTimeouts {
    fn default() -> Self {
        DbTimeouts {
            connect: Self::DEFAULT_CONNECT,
            statement: Self::DEFAULT_STATEMENT,
            lock: Self::DEFAULT_LOCK,
            idle_in_transaction: Self::DEFAULT_IDLE_IN_TRANSACTION,
        }
    }
}

/// A timeout setting: `<n>ms`, `<n>s`, `<n>m` or a bare number of seconds; `0` is none. For
/// the services' `DATABASE_*_TIMEOUT` settings.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number with ms, s or m (e.g. 10s)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!(
            "{text:?}: unknown unit {other:?}; use ms, s or m (e.g. 10s)"
        )),
    }
}

/// The URL with libpq's `connect_timeout` added, unless it sets one already (or `timeout` is
/// zero).
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let set = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("connect_timeout"));
    if set || timeout.is_zero() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    // libpq counts whole seconds and treats less than 2 as 2.
    format!("{url}{sep}connect_timeout={}", timeout.as_secs().max(2))
}

/// A PostgreSQL connection with the connect timeout (unless the URL has one).
fn establish_pg(url: &str, timeouts: &DbTimeouts) -> ConnectionResult<PgConnection> {
    PgConnection::establish(&with_connect_timeout(url, timeouts.connect))
}

/// Opens connections for the pool and prepares each one for the service.
#[derive(Debug, Clone)]
struct Connector {
    target: DbTarget,
    timeouts: DbTimeouts,
}

/// The planner setting of the services' sessions on PostgreSQL (the pool's and the relay's):
/// no sequential scan where an index serves. Every statement they run reads by key or in an
/// index's order, but a prepared statement's generic plan, made once while a table was a page
/// or two, is kept until the table is next analysed: never where autovacuum is off (as on
/// this project's CI machine), and until its first analyse elsewhere. Without it the send's
/// membership read and the consumer's lookups by event and chat id would read whole tables on
/// every call (BENCHMARKS.md, run G). A statement no
/// index serves (housekeeping's deletes by age of sent outbox rows and applied event ids) is
/// still planned as a scan: the setting only makes the planner take an index where one applies.
/// And no JIT compilation: a plan that keeps a sequential scan (of a table with no better
/// path) is costed far above `jit_above_cost` by the setting above, and would pay tens of
/// milliseconds compiling a statement that runs in a few (BENCHMARKS.md, "Unread counts").
pub const BY_INDEX: &str = "SET enable_seqscan = off; SET jit = off";

impl ManageConnection for Connector {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match &self.target {
            DbTarget::Postgres { url, schema } => {
                let mut conn =
                    establish_pg(url, &self.timeouts).map_err(r2d2::Error::ConnectionError)?;
                // Every service sees only its own schema; nothing waits for ever; plans use
                // the indexes (`BY_INDEX`).
                conn.batch_execute(&format!(
                    "SET search_path TO {}; {}; {BY_INDEX}",
                    quote_ident(schema),
                    self.timeouts.session_settings(self.timeouts.statement)
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Pg(conn))
            }
            DbTarget::Sqlite { path } => {
                let mut conn =
                    SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers proceed during a write; busy_timeout waits for the lock
                // rather than failing at once.
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA foreign_keys = ON",
                ] {
                    diesel::sql_query(pragma)
                        .execute(&mut conn)
                        .map_err(r2d2::Error::QueryError)?;
                }
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .map(|_| ())
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        match conn {
            DbConnection::Pg(c) => r2d2::R2D2Connection::is_broken(c),
            DbConnection::Sqlite(c) => r2d2::R2D2Connection::is_broken(c),
        }
    }
}

/// Identifiers cannot be bound as parameters; schema names come from configuration, so quote.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The migrations a service embeds, one set per backend (their DDL differs).
#[derive(Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static EmbeddedMigrations,
    pub sqlite: &'static EmbeddedMigrations,
}

/// Lets a `&'static EmbeddedMigrations` be run more than once (diesel takes the source by value).
struct StaticSource(&'static EmbeddedMigrations);

impl<DB: diesel::backend::Backend> diesel::migration::MigrationSource<DB> for StaticSource {
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>> {
        diesel::migration::MigrationSource::<DB>::migrations(self.0)
    }
}

/// A pool of connections to one service's storage.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<Connector>,
    target: DbTarget,
    timeouts: DbTimeouts,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("target", &self.target).finish()
    }
}

/// The database settings both services take, flattened into each one's clap config (the
/// schema, whose default is the service's own, stays with the service).
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL (postgres://...), or a SQLite file path.
    #[arg(long, env = "DATABASE_URL", required = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections in the PostgreSQL pool: about two per core of the database's host is
    /// enough (more only queue inside PostgreSQL; measured in BENCHMARKS.md).
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    /// Longest one PostgreSQL statement may run (`statement_timeout`; not for migrations):
    /// `10s`, `500ms`, `0` for none.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "10s",
          value_parser = parse_timeout)]
    pub database_statement_timeout: Duration,
    /// Longest a PostgreSQL statement may wait for a lock (`lock_timeout`): `5s`, `0` for none.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT", default_value = "5s",
          value_parser = parse_timeout)]
    pub database_lock_timeout: Duration,
    /// Apply pending migrations at start (turn off where the service's `migrate` command runs
    /// once per rollout).
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub run_migrations: bool,
}

impl DbArgs {
    /// DATABASE_URL, which `migrate` needs although clap does not require it there.
    pub fn url(&self) -> Result<&str, &'static str> {
        self.database_url
            .as_deref()
            .ok_or("DATABASE_URL (or --database-url) is required")
    }

    /// The database in `schema` (PostgreSQL) or the SQLite file.
    pub fn target(&self, schema: &str) -> Result<DbTarget, &'static str> {
        Ok(DbTarget::parse(self.url()?, schema))
    }

    /// The PostgreSQL timeouts: the statement and lock timeouts configured, the others their
    /// defaults (a `connect_timeout` in DATABASE_URL wins over the default).
    pub fn timeouts(&self) -> DbTimeouts {
        DbTimeouts {
            statement: self.database_statement_timeout,
            lock: self.database_lock_timeout,
            ..DbTimeouts::default()
        }
    }

    /// How to connect: the pool, migrations and timeouts configured.
    pub fn options(&self) -> DbOptions {
        DbOptions {
            pool_size: self.database_pool_size,
            run_migrations: self.run_migrations,
            timeouts: self.timeouts(),
            ..DbOptions::default()
        }
    }
}

/// Connections per service pool unless configured: enough to keep the database of a 2-core
/// machine busy; more only queue there and hold memory (BENCHMARKS.md, "Concurrency").
pub const DEFAULT_POOL_SIZE: u32 = 4;

#[derive(Debug, Clone)]
pub struct DbOptions {
    /// PostgreSQL pool size. SQLite always uses one connection: it has a single writer, and one
    /// connection serialises writes without lock-upgrade failures.
    pub pool_size: u32,
    /// How long a request waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// Create the schema and apply pending migrations on connect (off where a separate step,
    /// `<service> migrate`, does it once per rollout).
    pub run_migrations: bool,
    /// PostgreSQL: connect, statement, lock and idle-in-transaction timeouts.
    pub timeouts: DbTimeouts,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: Duration::from_secs(5),
            run_migrations: true,
            timeouts: DbTimeouts::default(),
        }
    }
}

impl Db {
    /// Connects and, with `options.run_migrations`, creates the service's schema (PostgreSQL)
    /// or file (SQLite) if missing and runs the pending migrations. Blocking: call it from
    /// `spawn_blocking` or before serving.
    pub fn connect(
        target: DbTarget,
        migrations: Migrations,
        options: &DbOptions,
    ) -> Result<Db, DbError> {
        if let DbTarget::Postgres { url, schema } = &target
            && options.run_migrations
        {
            migrate_postgres(url, schema, migrations.postgres, &options.timeouts)?;
        }
        if let DbTarget::Sqlite { path } = &target
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let size = if target.is_sqlite() {
            1
        } else {
            options.pool_size
        };
        let pool = r2d2::Pool::builder()
            // No `SELECT 1` before every use: a broken connection is noticed by
            // `has_broken` and by the failing query (an unavailable error, retried by the client).
            .test_on_check_out(false)
            .max_size(size)
            .min_idle(Some(size.min(2)))
            .connection_timeout(options.acquire_timeout)
            .build(Connector {
                target: target.clone(),
                timeouts: options.timeouts,
            })
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let db = Db {
            pool,
            target,
            timeouts: options.timeouts,
        };
        if db.target.is_sqlite() && options.run_migrations {
            db.migrate_sqlite(migrations)?;
        }
        Ok(db)
    }

    /// `connect` off the async threads.
    pub async fn open(
        target: DbTarget,
        migrations: Migrations,
        options: DbOptions,
    ) -> Result<Db, DbError> {
        tokio::task::spawn_blocking(move || Db::connect(target, migrations, &options))
            .await
            .expect("connect task")
    }

    /// Applies the pending migrations (creating the schema or file) and disconnects: the
    /// `migrate` subcommand.
    pub async fn migrate_only(
        target: DbTarget,
        migrations: Migrations,
        timeouts: DbTimeouts,
    ) -> Result<(), DbError> {
        let options = DbOptions {
            pool_size: 1,
            run_migrations: true,
            timeouts,
            ..DbOptions::default()
        };
        Db::open(target, migrations, options).await.map(drop)
    }

    /// Connects as `connect` does, waiting for the database (with backoff) rather than failing
    /// while it comes up.
    pub async fn connect_with_retry(
        target: DbTarget,
        migrations: Migrations,
        options: DbOptions,
    ) -> Db {
        let mut delay = Duration::from_millis(500);
        loop {
            match Db::open(target.clone(), migrations, options.clone()).await {
                Ok(db) => return db,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "database not ready");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn migrate_sqlite(&self, migrations: Migrations) -> Result<(), DbError> {
        let mut conn = self.get()?;
        let result = match &mut *conn {
            DbConnection::Sqlite(c) => c
                .run_pending_migrations(StaticSource(migrations.sqlite))
                .map(|_| ()),
            DbConnection::Pg(_) => Ok(()),
        };
        result.map_err(|e| DbError::Unavailable(format!("migration failed: {e}")))
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Connector>, DbError> {
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    pub fn is_sqlite(&self) -> bool {
        self.target.is_sqlite()
    }

    /// Opens a connection of its own, prepared as the pool's are.
    pub async fn dedicated(&self) -> Result<DedicatedConnection, DbError> {
        let connector = Connector {
            target: self.target.clone(),
            timeouts: self.timeouts,
        };
        let conn = tokio::task::spawn_blocking(move || connector.connect())
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Ok(DedicatedConnection(Some(conn)))
    }

    /// Runs `f` with a connection on the blocking thread pool.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.get()?;
            f(&mut conn)
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }
}

/// Creates `schema` if missing and applies the pending migrations in it, holding a PostgreSQL
/// advisory lock (one per schema) throughout: replicas starting at once take turns, and the
/// later ones find nothing left to do. The lock is the session's, so it is released when the
/// connection ends, whatever happens in between.
///
/// Migrations run without a statement timeout (a migration may rewrite a large table), and
/// the wait for the advisory lock has no lock timeout (another replica may be migrating); the
/// migrations' own statements do have one, so a migration stuck behind a long transaction
/// fails (and start-up retries) rather than queueing every query of the table behind it.
fn migrate_postgres(
    url: &str,
    schema: &str,
    migrations: &'static EmbeddedMigrations,
    timeouts: &DbTimeouts,
) -> Result<(), DbError> {
    let mut conn = establish_pg(url, timeouts)
        .map_err(|e| DbError::Unavailable(format!("{}: {e}", redact(url))))?;
    let lock_key = format!("chat migrations: {schema}");
    conn.batch_execute(
        &DbTimeouts {
            lock: Duration::ZERO,
            ..*timeouts
        }
        .session_settings(Duration::ZERO),
    )?;
    diesel::sql_query("SELECT pg_advisory_lock(hashtext($1))")
        .bind::<diesel::sql_types::Text, _>(&lock_key)
        .execute(&mut conn)?;
    let result = (|| {
        conn.batch_execute(&timeouts.session_settings(Duration::ZERO))?;
        diesel::sql_query(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .execute(&mut conn)?;
        diesel::sql_query(format!("SET search_path TO {}", quote_ident(schema)))
            .execute(&mut conn)?;
        let applied = conn
            .run_pending_migrations(StaticSource(migrations))
            .map_err(|e| DbError::Unavailable(format!("migration failed: {e}")))?;
        if !applied.is_empty() {
            tracing::info!(schema, count = applied.len(), "migrations applied");
        }
        Ok::<_, DbError>(())
    })();
    let _ = diesel::sql_query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind::<diesel::sql_types::Text, _>(&lock_key)
        .execute(&mut conn);
    result
}

/// A connection outside the pool, for one long-lived user (the relay, whose PostgreSQL session
/// holds its lock). Dropping it closes the session. After a cancelled `run` it is gone, and
/// `run` reports the database unavailable.
pub struct DedicatedConnection(Option<DbConnection>);

impl DedicatedConnection {
    /// `SELECT 1`: whether the database answers (what the services' health follows).
    pub async fn ping(&mut self) -> Result<(), DbError> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .map(drop)
                .map_err(DbError::from)
        })
        .await
    }

    pub async fn run<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let Some(mut conn) = self.0.take() else {
            return Err(DbError::Unavailable("dedicated connection lost".into()).into());
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut conn);
            (conn, result)
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        self.0 = Some(conn);
        result
    }
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Inserts many rows in one statement. A `match` on the backend because diesel's
/// multi-backend connection has no batch insert.
#[macro_export]
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {
        match $conn {
            $crate::db::DbConnection::Pg(c) => diesel::insert_into($table).values($rows).execute(c),
            $crate::db::DbConnection::Sqlite(c) => {
                diesel::insert_into($table).values($rows).execute(c)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sslmode=verify-full`: the server's certificate is checked against `sslrootcert` and
    /// the host name, and the services' pool works over it; a wrong CA or a name the
    /// certificate does not carry is refused.
    #[tokio::test]
    async fn postgres_over_tls_with_verify_full() {
        let Some(pg) = testkit::require_postgres("db::postgres_over_tls_with_verify_full").await
        else {
            return;
        };
        let ca = testkit::tls::TestCa::new();
        let proxy = testkit::tls::TlsProxy::postgres(&ca, pg.addr()).await;
        let port = proxy.addr().port();
        let database = pg
            .url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap();
        let url = |host: &str, root: &std::path::Path| {
            format!(
                "postgres://postgres@{host}:{port}/{database}?sslmode=verify-full&sslrootcert={}",
                root.display()
            )
        };
        let db = Db::open(
            DbTarget::parse(&url("localhost", ca.ca_file()), &pg.schema),
            Migrations {
                postgres: &NO_MIGRATIONS,
                sqlite: &NO_MIGRATIONS,
            },
            DbOptions::default(),
        )
        .await
        .expect("connects over TLS, the certificate verified");
        db.run(|conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .expect("a statement over TLS");

        let other = testkit::tls::TestCa::new();
        for (what, target) in [
            ("another CA", url("localhost", other.ca_file())),
            (
                "a name not in the certificate",
                url("127.0.0.1", ca.ca_file()),
            ),
        ] {
            let result = Db::open(
                DbTarget::parse(&target, &pg.schema),
                Migrations {
                    postgres: &NO_MIGRATIONS,
                    sqlite: &NO_MIGRATIONS,
                },
                DbOptions {
                    acquire_timeout: Duration::from_secs(2),
                    ..DbOptions::default()
                },
            )
            .await;
            assert!(result.is_err(), "{what}: connected");
        }
    }

    static NO_MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations::new(&[]);

    #[test]
    fn passwords_never_show_in_debug_output() {
        for url in [
            "postgres://chat:s3cret-pw@db:5432/chat?sslmode=verify-full",
            "postgresql://chat:s3cret-pw@db/chat",
            "postgres://chat@db/chat?sslmode=require&password=s3cret-pw",
        ] {
            let target = DbTarget::parse(url, "chat_manager");
            let shown = format!("{target:?}");
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(
                shown.contains("***") && shown.contains("chat_manager"),
                "{shown}"
            );
        }
        assert_eq!(
            redact_url("amqps://mm:pw@broker:5671/chat"),
            "amqps://mm:***@broker:5671/chat"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }

    #[derive(Debug, clap::Parser)]
    struct Service {
        #[command(flatten)]
        db: DbArgs,
    }

    fn db_args(args: &[&str]) -> Result<DbArgs, clap::Error> {
        use clap::Parser as _;
        Service::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
            .map(|s| s.db)
    }

    /// The defaults, where the environment does not set them (clap reads it too).
    #[test]
    fn db_args_need_the_url_and_default_the_rest() {
        let unset = |var: &str| std::env::var_os(var).is_none();
        if unset("DATABASE_URL") {
            let err = db_args(&[]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
        let args = db_args(&["--database-url", "postgres://db/x"]).unwrap();
        assert_eq!(args.url(), Ok("postgres://db/x"));
        assert_eq!(
            args.target("chat_manager"),
            Ok(DbTarget::parse("postgres://db/x", "chat_manager"))
        );
        if unset("DATABASE_STATEMENT_TIMEOUT") && unset("DATABASE_LOCK_TIMEOUT") {
            assert_eq!(args.timeouts(), DbTimeouts::default());
            assert_eq!(args.timeouts().statement, Duration::from_secs(10));
            assert_eq!(args.timeouts().lock, Duration::from_secs(5));
        }
        if unset("DATABASE_POOL_SIZE") {
            assert_eq!(args.options().pool_size, DEFAULT_POOL_SIZE);
        }
        if unset("RUN_MIGRATIONS") {
            assert!(args.options().run_migrations);
        }
    }

    #[test]
    fn db_args_parse_timeouts_pool_and_boolish_migrations() {
        let base = ["--database-url", "x"];
        for (value, expected) in [("false", false), ("0", false), ("true", true), ("1", true)] {
            let mut args = base.to_vec();
            args.extend(["--run-migrations", value]);
            assert_eq!(
                db_args(&args).unwrap().options().run_migrations,
                expected,
                "{value}"
            );
        }
        let mut args = base.to_vec();
        args.extend([
            "--database-statement-timeout",
            "750ms",
            "--database-lock-timeout",
            "0",
            "--database-pool-size",
            "9",
        ]);
        let parsed = db_args(&args).unwrap();
        assert_eq!(parsed.timeouts().statement, Duration::from_millis(750));
        assert_eq!(parsed.timeouts().lock, Duration::ZERO);
        assert_eq!(parsed.options().pool_size, 9);
        assert_eq!(parsed.options().timeouts, parsed.timeouts());
        let mut args = base.to_vec();
        args.extend(["--database-lock-timeout", "5 hours"]);
        let err = db_args(&args).unwrap_err().to_string();
        assert!(err.contains("--database-lock-timeout"), "{err}");
    }

    #[test]
    fn parse_picks_the_backend_by_scheme() {
        assert_eq!(
            DbTarget::parse("postgres://u@h/db", "chat"),
            DbTarget::Postgres {
                url: "postgres://u@h/db".into(),
                schema: "chat".into()
            }
        );
        assert!(!DbTarget::parse("postgresql://h/db", "x").is_sqlite());
        assert_eq!(
            DbTarget::parse("sqlite://data/chat.db", "chat"),
            DbTarget::Sqlite {
                path: "data/chat.db".into()
            }
        );
        assert_eq!(
            DbTarget::parse("./chat.db", "chat"),
            DbTarget::Sqlite {
                path: "./chat.db".into()
            }
        );
    }

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/chat"),
            "postgres://app:***@db:5432/chat"
        );
        assert_eq!(redact("postgres://app@db/chat"), "postgres://app@db/chat");
        assert_eq!(redact("data/chat.db"), "data/chat.db");
    }

    #[test]
    fn timeouts_parse_with_their_unit() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10h", "-1s", "1.5s", "ten"] {
            let err = parse_timeout(bad).unwrap_err();
            assert!(err.contains("e.g. 10s"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_connect_timeout_is_added_unless_the_url_has_one() {
        let five = Duration::from_secs(5);
        assert_eq!(
            with_connect_timeout("postgres://u@h/db", five),
            "postgres://u@h/db?connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("postgres://u@h/db?sslmode=disable", five),
            "postgres://u@h/db?sslmode=disable&connect_timeout=5"
        );
        let own = "postgres://u@h/db?sslmode=disable&connect_timeout=30";
        assert_eq!(with_connect_timeout(own, five), own);
        assert_eq!(
            with_connect_timeout("postgres://h/db", Duration::from_millis(300)),
            "postgres://h/db?connect_timeout=2",
            "libpq's minimum"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db", Duration::ZERO),
            "postgres://h/db"
        );
    }

    #[test]
    fn session_settings_are_milliseconds() {
        let t = DbTimeouts::default();
        assert_eq!(
            t.session_settings(t.statement),
            "SET statement_timeout = 10000; SET lock_timeout = 5000; \
             SET idle_in_transaction_session_timeout = 60000"
        );
        assert!(
            t.session_settings(Duration::ZERO)
                .starts_with("SET statement_timeout = 0;")
        );
    }

    #[test]
    fn quote_ident_escapes_quotes() {
        assert_eq!(quote_ident("chat_manager"), "\"chat_manager\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
