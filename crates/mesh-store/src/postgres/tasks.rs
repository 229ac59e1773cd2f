use super::PgStore;
use super::provenance::append_and_commit;
use super::rows::{self, get, opt_json, parsed, unique_conflict};
use crate::{EventFor, Result, StoreError, TaskStore};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::task::{QueueStats, TaskFilter};
use mesh_types::time::Timestamp;
use mesh_types::{EventDraft, Page, PageRequest, Task};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

pub(crate) const TASK_COLUMNS: &str = "id, parent_id, type, status, priority, input, output, metadata, risk_tier, \
     data_classification, tenant, created_at, updated_at, started_at, completed_at, attempts, max_attempts, \
     available_at, deadline, idempotency_key, leased_by, lease_expires_at, last_failed_agent, last_error, \
     yield_requested";

const DURATION_SAMPLE: i64 = 100;

pub(crate) fn task_from_row(row: &Row) -> Result<Task> {
    Ok(Task {
        id: get(row, 0)?,
        parent_id: get(row, 1)?,
        task_type: get(row, 2)?,
        status: parsed(row, 3)?,
        priority: get::<Option<i32>>(row, 4)?.unwrap_or(0),
        input: get(row, 5)?,
        output: opt_json(row, 6)?,
        metadata: get::<Option<Value>>(row, 7)?
            .unwrap_or_else(|| Value::Object(Default::default())),
        risk_tier: parsed(row, 8)?,
        data_classification: parsed(row, 9)?,
        tenant: get(row, 10)?,
        created_at: get(row, 11)?,
        updated_at: get(row, 12)?,
        started_at: get(row, 13)?,
        completed_at: get(row, 14)?,
        attempts: get(row, 15)?,
        max_attempts: get(row, 16)?,
        available_at: get(row, 17)?,
        deadline: get(row, 18)?,
        idempotency_key: get(row, 19)?,
        leased_by: get(row, 20)?,
        lease_expires_at: get(row, 21)?,
        last_failed_agent: get(row, 22)?,
        last_error: get(row, 23)?,
        yield_requested: get(row, 24)?,
    })
}

/// Loads and row-locks a task for a status change.
async fn lock(tx: &Transaction<'_>, id: Uuid) -> Result<Task> {
    let row = tx
        .query_opt(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
    task_from_row(&row)
}

/// `parentId`s must name a stored task or one earlier in the same batch.
async fn check_parents(tx: &Transaction<'_>, tasks: &[(Task, Vec<EventDraft>)]) -> Result<()> {
    let parents: Vec<Uuid> = tasks.iter().filter_map(|(t, _)| t.parent_id).collect();
    if parents.is_empty() {
        return Ok(());
    }
    let found: std::collections::HashSet<Uuid> = tx
        .query("SELECT id FROM tasks WHERE id = ANY($1)", &[&parents])
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_>>()?;
    let mut earlier = std::collections::HashSet::new();
    for (task, _) in tasks {
        if let Some(parent) = task.parent_id
            && !found.contains(&parent)
            && !earlier.contains(&parent)
        {
            return Err(StoreError::invalid("parentId", format!("no task {parent}")));
        }
        earlier.insert(task.id);
    }
    Ok(())
}

#[async_trait]
impl TaskStore for PgStore {
    async fn insert_task(&self, task: &Task, audit: Vec<EventDraft>) -> Result<Task> {
        let mut stored = self.insert_tasks(vec![(task.clone(), audit)]).await?;
        stored
            .pop()
            .ok_or_else(|| StoreError::Backend("an insert returned no task".into()))
    }

    async fn insert_tasks(&self, tasks: Vec<(Task, Vec<EventDraft>)>) -> Result<Vec<Task>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_parents(&tx, &tasks).await?;
        // ON CONFLICT makes a concurrent duplicate submission find the first task
        // instead of failing on the unique index. All rows go in one statement (columns
        // as arrays), not a statement each; foreign keys are checked at its end, so a
        // child may follow its parent in the batch.
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO tasks ({TASK_COLUMNS})
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[],
                   $6::jsonb[], $7::jsonb[], $8::jsonb[], $9::text[], $10::text[], $11::text[],
                   $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[],
                   $16::int[], $17::int[], $18::timestamptz[], $19::timestamptz[], $20::text[],
                   $21::uuid[], $22::timestamptz[], $23::uuid[], $24::text[], $25::bool[])
                 ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING id"
            ))
            .await?;
        fn column<'a, T>(
            tasks: &'a [(Task, Vec<EventDraft>)],
            f: impl Fn(&'a Task) -> T,
        ) -> Vec<T> {
            tasks.iter().map(|(t, _)| f(t)).collect()
        }
        let inserted: std::collections::HashSet<Uuid> = tx
            .query(
                &insert,
                &[
                    &column(&tasks, |t| t.id),
                    &column(&tasks, |t| t.parent_id),
                    &column(&tasks, |t| t.task_type.as_str()),
                    &column(&tasks, |t| t.status.as_str()),
                    &column(&tasks, |t| t.priority),
                    &column(&tasks, |t| &t.input),
                    &column(&tasks, |t| t.output.as_ref()),
                    &column(&tasks, |t| &t.metadata),
                    &column(&tasks, |t| t.risk_tier.as_str()),
                    &column(&tasks, |t| t.data_classification.as_str()),
                    &column(&tasks, |t| t.tenant.as_str()),
                    &column(&tasks, |t| t.created_at),
                    &column(&tasks, |t| t.updated_at),
                    &column(&tasks, |t| t.started_at),
                    &column(&tasks, |t| t.completed_at),
                    &column(&tasks, |t| t.attempts),
                    &column(&tasks, |t| t.max_attempts),
                    &column(&tasks, |t| t.available_at),
                    &column(&tasks, |t| t.deadline),
                    &column(&tasks, |t| t.idempotency_key.as_deref()),
                    &column(&tasks, |t| t.leased_by),
                    &column(&tasks, |t| t.lease_expires_at),
                    &column(&tasks, |t| t.last_failed_agent),
                    &column(&tasks, |t| t.last_error.as_deref()),
                    &column(&tasks, |t| t.yield_requested),
                ],
            )
            .await
            .map_err(|e| unique_conflict(e, "a task with this id already exists".into()))?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_>>()?;
        let mut stored = Vec::with_capacity(tasks.len());
        let mut events = Vec::new();
        for (task, audit) in tasks {
            if inserted.contains(&task.id) {
                events.extend(audit);
                stored.push(task);
                continue;
            }
            // The key was used: that task is the answer, and nothing is recorded.
            let row = tx
                .query_one(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = $1 AND idempotency_key = $2"),
                    &[&task.tenant, &task.idempotency_key],
                )
                .await?;
            stored.push(task_from_row(&row)?);
        }
        let queued = !events.is_empty();
        if queued {
            // The notification before the append: the append takes the log's head,
            // which every other appender then waits for, and sends the commit with it.
            let notify = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
            tx.execute(&notify, &[&super::listen::CHANNEL]).await?;
        }
        append_and_commit(tx, events).await?;
        if queued {
            // Claimers in this process need not wait for the notification's round trip
            // through the server; other processes get it from LISTEN.
            self.work.notify_waiters();
        }
        Ok(stored)
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let client = self.client().await?;
        let by_id = client
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .await?;
        let row = client.query_opt(&by_id, &[&id]).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> Result<Page<Task>> {
        let cursor = rows::cursor(page)?;
        let mut q = rows::Query::select(TASK_COLUMNS, "tasks");
        if let Some(status) = filter.status {
            q.and("status = $", status.as_str());
        }
        if let Some(t) = &filter.task_type {
            q.and("type = $", t.clone());
        }
        if let Some(p) = filter.parent_id {
            q.and("parent_id = $", p);
        }
        if let Some(tenant) = &filter.tenant {
            q.and("tenant = $", tenant.clone());
        }
        let client = self.client().await?;
        q.page(&client, cursor, page.limit, task_from_row, |t| t.id)
            .await
    }

    async fn cancel_task(
        &self,
        id: Uuid,
        now: Timestamp,
        event: EventFor<Task>,
    ) -> Result<Vec<Task>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Unfinished subtasks first, deepest first, the task itself last: a finishing
        // subtask locks its own row and then its parent's, so locking a parent before
        // its subtasks could deadlock with it.
        tx.query(
            "WITH RECURSIVE tree(id, depth) AS (
               SELECT id, 1 FROM tasks WHERE parent_id = $1
               UNION ALL SELECT t.id, tree.depth + 1 FROM tasks t JOIN tree ON t.parent_id = tree.id)
             SELECT t.id FROM tasks t JOIN tree ON t.id = tree.id
             WHERE t.status NOT IN ('completed', 'failed', 'cancelled')
             ORDER BY tree.depth DESC, t.id
             FOR UPDATE OF t",
            &[&id],
        )
        .await?;
        let root = lock(&tx, id).await?;
        if root.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "task {id} is already {}",
                root.status
            )));
        }
        let rows = tx
            .query(
                &format!(
                    "WITH RECURSIVE tree(id) AS (
                       SELECT id FROM tasks WHERE id = $1
                       UNION ALL SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)
                     UPDATE tasks SET status = 'cancelled', updated_at = $2, completed_at = $2
                     WHERE id IN (SELECT id FROM tree)
                       AND status NOT IN ('completed', 'failed', 'cancelled')
                     RETURNING {TASK_COLUMNS}"
                ),
                &[&id, &now],
            )
            .await?;
        let mut cancelled = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        cancelled.sort_by_key(|t| (t.id != id, t.id));
        let mut staged: super::queue::Staged = cancelled.iter().map(|t| event(t)).collect();
        // A cancelled subtask may have been the last its parked parent waited for.
        if let Some(parent) = root.parent_id {
            super::queue::stage_parent_resume(&tx, parent, now, &mut staged).await?;
        }
        append_and_commit(tx, staged).await?;
        Ok(cancelled)
    }

    async fn queue_stats(&self, task_type: &str, priority: i32) -> Result<QueueStats> {
        let client = self.client().await?;
        let ahead: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM tasks WHERE status IN ('queued', 'running') AND priority >= $1",
                &[&priority],
            )
            .await?
            .get(0);
        let row = client
            .query_one(
                "SELECT (AVG(EXTRACT(EPOCH FROM (completed_at - started_at))) * 1000)::FLOAT8, COUNT(*)
                 FROM (SELECT started_at, completed_at FROM tasks
                       WHERE type = $1 AND status = 'completed' AND started_at IS NOT NULL
                       ORDER BY completed_at DESC LIMIT $2) recent",
                &[&task_type, &DURATION_SAMPLE],
            )
            .await?;
        let samples: i64 = get(&row, 1)?;
        Ok(QueueStats {
            ahead: ahead.max(0) as u64,
            mean_duration_ms: get(&row, 0)?,
            samples: samples.max(0) as u64,
        })
    }
}
