//! webhook-manager's storage: schema, row types and queries. Every function takes a
//! connection, so callers decide the transaction.

pub mod models;
pub mod queries;
pub mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

static POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
static SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

pub const MIGRATIONS: common::db::Migrations = common::db::Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};
