//! chat-manager's storage: schema, row types and the queries the domain modules use. Every
//! function takes a connection, so callers decide the transaction.

pub mod models;
pub mod queries;
pub mod schema;

use diesel_migrations::embed_migrations;

pub const MIGRATIONS: common::db::Migrations = common::db::Migrations {
    postgres: embed_migrations!("migrations/postgres"),
    sqlite: embed_migrations!("migrations/sqlite"),
};
