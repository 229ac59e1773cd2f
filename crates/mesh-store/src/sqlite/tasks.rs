use super::SqliteStore;
use super::provenance::{prepare_detached, record_in_tx};
use super::queue::Staged;
use super::rows::{self, fmt_ts, json, opt_json, opt_ts, opt_uuid, parsed, to_json, ts, uuid};
use crate::{EventFor, Result, StoreError, TaskStore};
use async_trait::async_trait;
use mesh_types::task::{QueueStats, TaskFilter};
use mesh_types::time::Timestamp;
use mesh_types::{EventDraft, Page, PageRequest, PreparedDraft, Task};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

pub(crate) const TASK_COLUMNS: &str = "id, parent_id, type, status, priority, input, output, metadata, risk_tier, \
     data_classification, tenant, created_at, updated_at, started_at, completed_at, attempts, max_attempts, \
     available_at, deadline, idempotency_key, leased_by, lease_expires_at, last_failed_agent, last_error, \
     yield_requested";

/// How many recent completions the duration estimate averages over.
const DURATION_SAMPLE: i64 = 100;

pub(crate) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: uuid(row, 0)?,
        parent_id: opt_uuid(row, 1)?,
        task_type: row.get(2)?,
        status: parsed(row, 3)?,
        priority: row.get(4)?,
        input: json(row, 5)?,
        output: opt_json(row, 6)?,
        metadata: json(row, 7)?,
        risk_tier: parsed(row, 8)?,
        data_classification: parsed(row, 9)?,
        tenant: row.get(10)?,
        created_at: ts(row, 11)?,
        updated_at: ts(row, 12)?,
        started_at: opt_ts(row, 13)?,
        completed_at: opt_ts(row, 14)?,
        attempts: row.get(15)?,
        max_attempts: row.get(16)?,
        available_at: ts(row, 17)?,
        deadline: opt_ts(row, 18)?,
        idempotency_key: row.get(19)?,
        leased_by: opt_uuid(row, 20)?,
        lease_expires_at: opt_ts(row, 21)?,
        last_failed_agent: opt_uuid(row, 22)?,
        last_error: row.get(23)?,
        yield_requested: row.get(24)?,
    })
}

fn load(tx: &Transaction<'_>, id: Uuid) -> Result<Task> {
    tx.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row(params![id.to_string()], task_from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
}

/// Stores one task in the caller's transaction and stages its events for the write's
/// one append; with its idempotency key already used, returns that task and writes
/// nothing.
fn insert_in_tx(
    tx: &Transaction<'_>,
    task: Task,
    audit: Vec<PreparedDraft>,
    staged: &mut Staged,
) -> Result<Task> {
    if let Some(key) = &task.idempotency_key {
        let existing = tx
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![task.tenant, key], task_from_row)
            .optional()?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
    }
    if let Some(parent) = task.parent_id {
        let exists: bool = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM tasks WHERE id = ?1)")?
            .query_row(params![parent.to_string()], |r| r.get(0))?;
        if !exists {
            return Err(StoreError::invalid("parentId", format!("no task {parent}")));
        }
    }
    tx.prepare_cached(&format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"))?.execute(params![
            task.id.to_string(),
            task.parent_id.map(|p| p.to_string()),
            task.task_type,
            task.status.as_str(),
            task.priority,
            to_json(&task.input),
            task.output.as_ref().map(to_json),
            to_json(&task.metadata),
            task.risk_tier.as_str(),
            task.data_classification.as_str(),
            task.tenant,
            fmt_ts(&task.created_at),
            fmt_ts(&task.updated_at),
            task.started_at.as_ref().map(fmt_ts),
            task.completed_at.as_ref().map(fmt_ts),
            task.attempts,
            task.max_attempts,
            fmt_ts(&task.available_at),
            task.deadline.as_ref().map(fmt_ts),
            task.idempotency_key,
            task.leased_by.map(|a| a.to_string()),
            task.lease_expires_at.as_ref().map(fmt_ts),
            task.last_failed_agent.map(|a| a.to_string()),
            task.last_error,
            task.yield_requested,
        ],)
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("task {} already exists", task.id))
        }
        other => other.into(),
    })?;
    staged.extend(audit);
    Ok(task)
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn insert_task(&self, task: &Task, audit: Vec<EventDraft>) -> Result<Task> {
        let task = task.clone();
        // Drafts are prepared (and their values freed) here, off the writer thread.
        let audit = prepare_detached(audit);
        self.write(move |tx| {
            let mut staged = Staged::new();
            let task = insert_in_tx(tx, task, audit, &mut staged)?;
            record_in_tx(tx, staged)?;
            Ok(task)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn insert_tasks(&self, tasks: Vec<(Task, Vec<EventDraft>)>) -> Result<Vec<Task>> {
        let tasks: Vec<_> = tasks
            .into_iter()
            .map(|(task, audit)| (task, prepare_detached(audit)))
            .collect();
        self.write(move |tx| {
            let mut staged = Staged::new();
            let stored = tasks
                .into_iter()
                .map(|(task, audit)| insert_in_tx(tx, task, audit, &mut staged))
                .collect::<Result<Vec<_>>>()?;
            record_in_tx(tx, staged)?;
            Ok(stored)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                    params![id.to_string()],
                    task_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> Result<Page<Task>> {
        let cursor = rows::cursor(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.read(move |conn| {
            let mut q = rows::Query::select(TASK_COLUMNS, "tasks");
            if let Some(status) = filter.status {
                q.and("status = ?", status.as_str());
            }
            if let Some(t) = filter.task_type {
                q.and("type = ?", t);
            }
            if let Some(p) = filter.parent_id {
                q.and("parent_id = ?", p.to_string());
            }
            if let Some(tenant) = filter.tenant {
                q.and("tenant = ?", tenant);
            }
            q.page(conn, cursor, limit, task_from_row, |t| t.id)
        })
        .await
    }

    async fn cancel_task(
        &self,
        id: Uuid,
        now: Timestamp,
        event: EventFor<Task>,
    ) -> Result<Vec<Task>> {
        self.write(move |tx| {
            let root = load(tx, id)?;
            if root.status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "task {id} is already {}",
                    root.status
                )));
            }
            let mut stmt = tx.prepare(&format!(
                "WITH RECURSIVE tree(id) AS (
                   SELECT id FROM tasks WHERE id = ?1
                   UNION ALL SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)
                 UPDATE tasks SET status = 'cancelled', updated_at = ?2, completed_at = ?2
                 WHERE id IN (SELECT id FROM tree)
                   AND status NOT IN ('completed', 'failed', 'cancelled')
                 RETURNING {TASK_COLUMNS}"
            ))?;
            let mut cancelled = stmt
                .query_map(params![id.to_string(), fmt_ts(&now)], task_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // The cancelled task itself first, then descendants in creation order.
            cancelled.sort_by_key(|t| (t.id != id, t.id));
            record_in_tx(tx, cancelled.iter().map(|t| event(t)).collect())?;
            // A cancelled subtask may have been the last its parked parent waited for.
            if let Some(parent) = root.parent_id {
                super::queue::resume_parent_if_done(tx, parent, now)?;
            }
            Ok(cancelled)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn queue_stats(&self, task_type: &str, priority: i32) -> Result<QueueStats> {
        let task_type = task_type.to_string();
        self.read(move |conn| {
            let ahead: i64 = conn.prepare_cached("SELECT COUNT(*) FROM tasks WHERE status IN ('queued', 'running') AND priority >= ?1")?.query_row(params![priority],
                |r| r.get(0),)?;
            let (mean, samples): (Option<f64>, i64) = conn.prepare_cached("SELECT AVG((julianday(completed_at) - julianday(started_at)) * 86400000.0), COUNT(*)
                 FROM (SELECT started_at, completed_at FROM tasks
                       WHERE type = ?1 AND status = 'completed' AND started_at IS NOT NULL
                       ORDER BY completed_at DESC LIMIT ?2)")?.query_row(params![task_type, DURATION_SAMPLE],
                |r| Ok((r.get(0)?, r.get(1)?)),)?;
            Ok(QueueStats {
                ahead: ahead.max(0) as u64,
                mean_duration_ms: mean,
                samples: samples.max(0) as u64,
            })
        })
        .await
    }
}
