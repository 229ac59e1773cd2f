//! SQLite backend: one file in WAL mode, `synchronous=FULL` by default.
//!
//! Writes go through one connection owned by a writer thread that group-commits them
//! (`writer.rs`) under `BEGIN IMMEDIATE`, which takes SQLite's write lock up front; that
//! lock is also what serialises appends to the provenance chain across every process
//! sharing the file. Reads use a small pool of connections, which WAL lets run beside
//! the writer.

mod agents;
mod budget;
mod bus;
mod checkpointer;
mod claim;
mod keys;
mod mcp;
mod projection;
mod provenance;
mod queue;
mod rows;
mod tasks;
mod tools;
mod writer;

use crate::StoreError;
use crate::url::SqliteOptions;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    (15, "mcp server settings", include_str!("migrate_15.sql")),
    (16, "provenance subtrees", include_str!("migrate_16.sql")),
];

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IDLE_READERS: usize = 8;
const STATEMENT_CACHE: usize = 128;
/// Page cache per connection, in KiB.
const CACHE_KIB: i64 = 32 * 1024;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    options: SqliteOptions,
    /// Woken after writes that may have made work claimable (this process only).
    work: Arc<tokio::sync::Notify>,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    /// Tasks this process's gated claims are deciding on (see `claim.rs`).
    in_flight: Arc<claim::InFlight>,
    _checkpointer: checkpointer::Checkpointer,
}

impl SqliteStore {
    pub async fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(options))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    fn open_blocking(options: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = options.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut writer = connect(&options)?;
        migrate(&mut writer)?;
        writer.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpointer::WRITER_BACKSTOP_PAGES,
        )?;
        let checkpoints = checkpointer::Checkpointer::start(&options)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                options,
                work: Arc::new(tokio::sync::Notify::new()),
                writer: writer::Writer::start(writer)?,
                readers: Mutex::new(Vec::new()),
                in_flight: Arc::default(),
                _checkpointer: checkpoints,
            }),
        })
    }

    /// Runs `f` in a write transaction (shared with the writes queued beside it: group
    /// commit) and returns once it is durable. `f` sees the effects of the jobs before it
    /// in the batch; if it fails, only its own changes roll back.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(f).await
    }

    pub(crate) fn in_flight(&self) -> Arc<claim::InFlight> {
        self.inner.in_flight.clone()
    }

    /// Wakes claimers waiting for work.
    pub(crate) fn signal_work(&self) {
        self.inner.work.notify_waiters();
    }

    pub(crate) fn work(&self) -> Arc<tokio::sync::Notify> {
        self.inner.work.clone()
    }

    /// Runs `f` on a pooled read connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => connect(&inner.options)?,
            };
            let value = f(&conn);
            if let Ok(mut readers) = inner.readers.lock()
                && readers.len() < MAX_IDLE_READERS
            {
                readers.push(conn);
            }
            value
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

fn connect(options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&options.path, flags).map_err(|e| {
        StoreError::Unavailable(format!("cannot open {}: {e}", options.path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every hot statement stays prepared: parsing SQL showed up in profiles.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use WAL mode (got {mode})",
            options.path.display()
        )));
    }
    let sync = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // temp_store=MEMORY keeps the savepoint sub-journals (every group-committed job
    // runs in one) off disk: profiles showed them costing more than the WAL writes.
    // A larger page cache keeps the hot index pages of a growing file in memory.
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;
         PRAGMA cache_size=-{CACHE_KIB};"
    ))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, i64::MAX)
}

/// Applies the migrations after the database's version, up to `last`.
fn migrate_to(conn: &mut Connection, last: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )?;
    let applied: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (version, name, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _, _)| *v > applied && *v <= last)
    {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                version,
                name,
                mesh_types::time::format(&mesh_types::time::now())
            ],
        )?;
        tracing::info!(version, name, "applied SQLite migration");
    }
    tx.commit()?;
    Ok(())
}

/// A store on a fresh file for a unit test (kept alive by the returned directory).
#[cfg(test)]
pub(crate) async fn scratch_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(SqliteOptions {
        path: dir.path().join("m.db"),
        synchronous_full: false,
    })
    .await
    .expect("a fresh store opens");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = SqliteStore::open(SqliteOptions {
            path: path.clone(),
            synchronous_full: true,
        })
        .await
        .unwrap();
        // Let the checkpointer copy the migrations over, then note the file's size.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let before = std::fs::metadata(&path).unwrap().len();
        store
            .write(|tx| {
                tx.execute_batch("CREATE TABLE filler (x TEXT)")?;
                for i in 0..2_000 {
                    tx.execute("INSERT INTO filler VALUES (?1)", [format!("{i:0>200}")])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        // The writer's own threshold is far above these pages, so only the background
        // checkpoint can move them from the WAL into the database file.
        let grown = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::metadata(&path).unwrap().len() > before + 200 * 1_000
        });
        assert!(grown, "the database file never received the WAL's pages");
    }

    /// Migration 14: relayed copies of lifecycle events go, and consumer groups on
    /// those topics keep their place as log positions; client topics are untouched.
    #[test]
    fn lifecycle_copies_become_log_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&SqliteOptions {
            path: dir.path().join("m.db"),
            synchronous_full: true,
        })
        .unwrap();
        migrate_to(&mut conn, 13).unwrap();
        // Relayed copies 1..=3 of task.queued, at log positions 2, 5, 30 (so pending 1
        // maps onto pending 2's old place); a group handed 1 and 2, both pending; a
        // client topic with one event.
        conn.execute_batch(
            "INSERT INTO bus_topics VALUES ('task.queued', 3), ('chat', 1);
             INSERT INTO bus_events VALUES
               ('task.queued', 1, 'a', 't', '{\"provenanceSeq\":2}'),
               ('task.queued', 2, 'b', 't', '{\"provenanceSeq\":5}'),
               ('task.queued', 3, 'c', 't', '{\"provenanceSeq\":30}'),
               ('chat', 1, 'd', 't', '{\"provenanceSeq\":99}');
             INSERT INTO bus_groups VALUES ('task.queued', 'g', 2), ('chat', 'g', 1);
             INSERT INTO bus_pending VALUES ('task.queued', 'g', 1, 'x', 't', 1),
               ('task.queued', 'g', 2, 'x', 't', 1), ('chat', 'g', 1, 'x', 't', 1);
             INSERT INTO bus_cursors VALUES ('provenance-relay', 30);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            rows("SELECT topic || ':' || seq FROM bus_events"),
            ["chat:1"]
        );
        assert_eq!(
            rows("SELECT topic || ':' || delivered_seq FROM bus_groups ORDER BY topic"),
            ["chat:1", "task.queued:5"]
        );
        assert_eq!(
            rows("SELECT topic || ':' || seq FROM bus_pending ORDER BY topic, seq"),
            ["chat:1", "task.queued:2", "task.queued:5"]
        );
        assert!(rows("SELECT name FROM bus_cursors").is_empty());
    }

    #[test]
    fn connections_use_wal_and_full_sync_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            path: dir.path().join("m.db"),
            synchronous_full: true,
        };
        let conn = connect(&options).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2), "2 is FULL");
        let relaxed = connect(&SqliteOptions {
            synchronous_full: false,
            ..options
        })
        .unwrap();
        let sync: i64 = relaxed
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "1 is NORMAL");
    }
}
