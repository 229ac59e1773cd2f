//! Group commit. One thread owns the write connection and runs the write jobs queued
//! while the previous batch was committing as one `BEGIN IMMEDIATE` transaction — one
//! fsync for all of them. Each job runs in its own savepoint, so a job that fails rolls
//! back alone and the others still commit; each caller hears of its result only after
//! the batch is durable.

use crate::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Told whether the batch committed.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Runs inside the batch transaction and returns how to report its result.
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Finish + Send>;

/// Most jobs in one transaction; bounds how long one commit holds the write lock.
const MAX_BATCH: usize = 512;

pub(crate) struct Writer {
    jobs: Sender<Job>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = channel::<Job>();
        std::thread::Builder::new()
            .name("mesh-sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Queues `f` for the next batch and waits until that batch is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |tx| {
            let outcome = in_savepoint(tx, f);
            Box::new(move |committed: Result<(), String>| {
                let result = match (outcome, committed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(why)) => {
                        Err(StoreError::Unavailable(format!("commit failed: {why}")))
                    }
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = reply.send(result);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer dropped the write".into()))?
    }
}

fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    savepoint(tx, "SAVEPOINT job")?;
    match catch_unwind(AssertUnwindSafe(|| f(tx))) {
        Ok(Ok(value)) => {
            savepoint(tx, "RELEASE job")?;
            Ok(value)
        }
        Ok(Err(err)) => {
            undo_savepoint(tx, "job");
            Err(err)
        }
        Err(_) => {
            undo_savepoint(tx, "job");
            Err(StoreError::Backend(
                "a write panicked and was rolled back".into(),
            ))
        }
    }
}

/// Runs a savepoint statement from the statement cache (`execute_batch` would parse it
/// again for every job).
fn savepoint(tx: &Transaction<'_>, sql: &str) -> Result<(), StoreError> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Rolls back to the savepoint `name` and drops it.
fn undo_savepoint(tx: &Transaction<'_>, name: &str) {
    let _ = savepoint(tx, &format!("ROLLBACK TO {name}"))
        .and_then(|_| savepoint(tx, &format!("RELEASE {name}")));
}

fn run(mut conn: Connection, queue: Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch);
    }
}

fn commit_batch(conn: &mut Connection, batch: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => {
            // The jobs are dropped unrun; each caller hears that the write was dropped.
            tracing::error!(error = %err, jobs = batch.len(), "cannot begin a write transaction");
            return;
        }
    };
    let finishes: Vec<Finish> = batch.into_iter().map(|job| job(&tx)).collect();
    let committed = tx.commit().map_err(|e| e.to_string());
    for finish in finishes {
        finish(committed.clone());
    }
}
