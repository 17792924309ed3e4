//! Test support shared by the store contract tests: a fresh store on each engine.
//!
//! PostgreSQL is not optional: the contract holds on both engines or not at all, so an unreachable
//! server fails the test with a message saying how to start one.
#![allow(dead_code)] // reason: each test binary uses a different part of this module

use std::time::Duration;

use hie_store::{Engine, Store, StoreOptions};
use sqlx::Connection;

/// The administrative URL used to create throw-away databases.
pub const PG_ADMIN_URL_VAR: &str = "HIE_TEST_PG_ADMIN_URL";
pub const DEFAULT_PG_ADMIN_URL: &str = "postgres://hie:hie@127.0.0.1:5432/postgres";

/// A fresh, migrated store on SQLite and one on PostgreSQL.
pub async fn each_engine() -> Vec<(Engine, Store)> {
    vec![(Engine::Sqlite, sqlite_store().await), (Engine::Postgres, pg_store().await)]
}

/// A fresh SQLite store in its own temporary directory (kept: the store outlives this call).
pub async fn sqlite_store() -> Store {
    let dir = tempfile::TempDir::new().expect("temporary directory").keep();
    let url = format!("sqlite://{}", dir.join("hie.db").display());
    Store::connect(&options(url, 4)).await.expect("open SQLite store")
}

/// A fresh PostgreSQL store on a new database `hie_test_<random>`.
pub async fn pg_store() -> Store {
    let url = pg_database().await;
    Store::connect(&options(url, 8)).await.expect("open PostgreSQL store")
}

/// Creates an empty database and returns its URL, so several stores (several "brokers") can
/// share it.
pub async fn pg_database() -> String {
    let admin_url = std::env::var(PG_ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "PostgreSQL is required for the store contract tests and is unreachable at {admin_url} \
             ({error}). Start it (e.g. `pg_ctlcluster 15 main start`, role `hie` with CREATEDB) or \
             set {PG_ADMIN_URL_VAR}."
        ),
    };
    let name = format!("hie_test_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url.as_str(), String::new()),
    };
    let server = match base.rsplit_once('/') {
        Some((server, _database)) if server.contains("://") => server,
        _ => base,
    };
    format!("{server}/{name}{query}")
}

/// Store options for tests.
pub fn options(url: String, max_connections: u32) -> StoreOptions {
    StoreOptions { url, max_connections, acquire_timeout: Duration::from_secs(30) }
}
