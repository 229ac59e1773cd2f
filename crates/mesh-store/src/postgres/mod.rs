//! PostgreSQL backend: a connection pool, migrations under an advisory lock, and the
//! provenance chain extended under a row lock on its head (`SELECT … FOR UPDATE`), so
//! any number of processes can append without forking it.

mod agents;
mod budget;
mod bus;
mod keys;
mod listen;
mod mcp;
mod projection;
mod provenance;
mod queue;
mod rows;
mod tasks;
mod tools;

use crate::StoreError;
use crate::error::error_chain;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("schema.sql")),
    (2, "queue leases", include_str!("migrate_2.sql")),
    (3, "events bus", include_str!("migrate_3.sql")),
    (4, "preemption", include_str!("migrate_4.sql")),
    (5, "claim index", include_str!("migrate_5.sql")),
    (6, "provenance by action", include_str!("migrate_6.sql")),
    (7, "tool endpoints", include_str!("migrate_7.sql")),
    (8, "budgets", include_str!("migrate_8.sql")),
    (
        9,
        "mcp servers and tool backends",
        include_str!("migrate_9.sql"),
    ),
    (10, "agent lifecycle", include_str!("migrate_10.sql")),
    (11, "provenance checkpoints", include_str!("migrate_11.sql")),
    (12, "projection cursors", include_str!("migrate_12.sql")),
    (13, "partial queue indexes", include_str!("migrate_13.sql")),
    (
        14,
        "lifecycle topics read from the log",
        include_str!("migrate_14.sql"),
    ),
    (
        15,
        "provenance payloads as hashed text",
        include_str!("migrate_15.sql"),
    ),
    (16, "chaining on the server", include_str!("migrate_16.sql")),
    (17, "mcp server settings", include_str!("migrate_17.sql")),
    (18, "provenance subtrees", include_str!("migrate_18.sql")),
];

/// Arbitrary constant naming the migration lock among advisory locks.
const MIGRATION_LOCK: i64 = 0x006d_6573_686d_6967;
const POOL_SIZE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Woken when claimable work may have appeared (here or, via LISTEN, elsewhere).
    work: Arc<tokio::sync::Notify>,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::BadUrl(format!("{}: {}", redacted(url), error_chain(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let listener_config = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let work = Arc::new(tokio::sync::Notify::new());
        let store = PgStore {
            pool,
            work: work.clone(),
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {why}",
                redacted(url)
            )),
            other => other,
        })?;
        listen::spawn_listener(listener_config, &work);
        Ok(store)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())",
        )
        .await?;
        let applied: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > applied) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
            tracing::info!(version, name, "applied PostgreSQL migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

fn redacted(url: &str) -> String {
    crate::StoreUrl::Postgres(url.to_string()).display()
}

/// A store in a fresh schema of `MESH_TEST_POSTGRES_URL`, or `None` with a notice when
/// the variable is unset outside CI (under CI an unset variable fails the test).
#[cfg(test)]
pub(crate) async fn scratch_store() -> Option<PgStore> {
    let Ok(base) = std::env::var("MESH_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set MESH_TEST_POSTGRES_URL: PostgreSQL tests cannot be skipped"
        );
        eprintln!("SKIPPED: MESH_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("unit_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&base, NoTls)
        .await
        .expect("MESH_TEST_POSTGRES_URL must name a reachable PostgreSQL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("a fresh schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    Some(PgStore::connect(&url).await.expect("a fresh store opens"))
}
