use super::PgStore;
use super::provenance::append_and_commit;
use super::tasks::{TASK_COLUMNS, task_from_row};
use crate::queue::{self as steps, Step};
use crate::queue::{ClaimGate, ClaimOutcome, Completion};
use crate::{QueueStore, Result, StoreError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::queue::{ClaimRequest, FailOutcome, Lease, RetryPolicy};
use mesh_types::time::Timestamp;
use mesh_types::{EventDraft, Task};
use serde_json::Value;
use std::sync::LazyLock;
use uuid::Uuid;

/// Row-locks a task and returns it with its current lease token.
async fn lock(tx: &Transaction<'_>, id: Uuid) -> Result<(Task, Option<Uuid>)> {
    let sql = format!("SELECT {TASK_COLUMNS}, lease_token FROM tasks WHERE id = $1 FOR UPDATE");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
    let token: Option<Uuid> = super::rows::get(&row, 25)?;
    Ok((task_from_row(&row)?, token))
}

/// A claim's ranking query. SKIP LOCKED: concurrent claimers take different tasks
/// instead of queueing on the same rows. Tasks this agent failed last go last; then aged priority. The
/// rows come back whole, locked and in rank order, so the claim needs no second
/// read.
///
/// Ageing cannot be indexed (it depends on now), so rank only a bounded set of
/// candidates: the highest-priority and the longest-waiting claimable tasks of
/// each type. Per type (the lateral join), so each half is an index scan that
/// stops at its limit: a shared CTE over `type = ANY(…)` was materialised whole
/// and sorted, 20 ms per claim behind a backlog of 20,000 tasks.
///
/// The candidates are then looked up by primary key, whatever the planner
/// believes about the table. Without statistics (a new database, or one whose
/// autovacuum has not yet run) it took a few hundred queued tasks for one row,
/// and ran `id IN (candidates)` as a nested loop that re-ran the candidate scans
/// for every queued task: 105 ms per claim behind 300 tasks. So the candidates
/// are materialised once into an array, and the outer filter on status is
/// written so that no partial index on `status = 'queued'` matches it (`|| ''`),
/// which leaves the primary key (or, for a small table, one sequential scan).
/// The filter still holds: a row another claimer took after this snapshot is
/// re-checked when it is locked, and skipped.
///
/// Parameters: `$1` now, `$2` task types, `$3` the claiming agent, `$4` ageing seconds,
/// `$5` how many rows to lock.
static RANK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH candidates AS MATERIALIZED (
           SELECT c.id FROM unnest($2::text[]) AS t(type)
           CROSS JOIN LATERAL (
             (SELECT id FROM tasks
              WHERE status = 'queued' AND tasks.type = t.type AND available_at <= $1
                AND (deadline IS NULL OR deadline >= $1)
              ORDER BY priority DESC, available_at LIMIT 256)
             UNION
             (SELECT id FROM tasks
              WHERE status = 'queued' AND tasks.type = t.type AND available_at <= $1
                AND (deadline IS NULL OR deadline >= $1)
              ORDER BY available_at LIMIT 256)) c)
         SELECT {TASK_COLUMNS} FROM tasks
         WHERE id = ANY(ARRAY(SELECT id FROM candidates)) AND status || '' = 'queued'
         ORDER BY (last_failed_agent IS NOT NULL AND last_failed_agent = $3) ASC,
                  priority + EXTRACT(EPOCH FROM ($1 - available_at))::FLOAT8 / $4::FLOAT8 DESC,
                  id ASC
         LIMIT $5
         FOR UPDATE SKIP LOCKED"
    )
});

/// Events staged for one append just before the commit. The append locks the log's
/// head, so it must be a transaction's last lock: a transaction that held the head and
/// then waited for a row (a parent to resume, the next task of a sweep) could deadlock
/// with one that held that row and waited for the head.
pub(crate) type Staged = Vec<EventDraft>;

/// Writes back every column the queue's state machine may change and stages the
/// events; a subtask reaching a final status may resume its parked parent.
async fn save(tx: &Transaction<'_>, step: Step, staged: &mut Staged) -> Result<Task> {
    write_row(tx, &step).await?;
    let task = step.task;
    staged.extend(step.events);
    if task.status.is_terminal()
        && let Some(parent) = task.parent_id
    {
        stage_parent_resume(tx, parent, task.updated_at, staged).await?;
    }
    Ok(task)
}

/// One step's transaction from its row lock on: [`save`], then the append and commit.
async fn save_and_commit(tx: Transaction<'_>, step: Step) -> Result<Task> {
    let mut staged = Staged::new();
    let task = save(&tx, step, &mut staged).await?;
    append_and_commit(tx, staged).await?;
    Ok(task)
}

/// Subtasks of `parent` that have not reached a final status.
async fn unfinished_children(tx: &Transaction<'_>, parent: Uuid) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT COUNT(*) FROM tasks WHERE parent_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
            &[&parent],
        )
        .await?
        .get(0))
}

/// Puts a parked parent back in the queue once none of its subtasks is unfinished,
/// staging its events. The parent's row lock serialises siblings finishing at the same
/// moment.
pub(crate) async fn stage_parent_resume(
    tx: &Transaction<'_>,
    parent: Uuid,
    now: Timestamp,
    staged: &mut Staged,
) -> Result<()> {
    let (task, _) = lock(tx, parent).await?;
    if let Some(step) = steps::resume_step(task, unfinished_children(tx, parent).await?, now) {
        write_row(tx, &step).await?;
        staged.extend(step.events);
    }
    Ok(())
}

async fn write_row(tx: &Transaction<'_>, step: &Step) -> Result<()> {
    write_rows(tx, std::slice::from_ref(step)).await
}

/// Writes back the rows of `steps` (distinct tasks, locked by this transaction) in one
/// statement: columns as arrays, joined by id. A statement per row cost PostgreSQL an
/// executor start-up, index opening and a reply each, a fifth of its CPU under the
/// queue bench.
async fn write_rows(tx: &Transaction<'_>, steps: &[Step]) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    if steps
        .iter()
        .any(|s| s.task.status == mesh_types::TaskStatus::Queued)
    {
        // Delivered at commit to every process LISTENing.
        let notify = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
        tx.execute(&notify, &[&super::listen::CHANNEL]).await?;
    }
    fn column<'a, T>(steps: &'a [Step], f: impl Fn(&'a Step) -> T) -> Vec<T> {
        steps.iter().map(f).collect()
    }
    // Prepared once per connection: every queue transition runs it.
    let update = tx
        .prepare_cached(
            "UPDATE tasks SET status = u.status, output = u.output, attempts = u.attempts,
               available_at = u.available_at, leased_by = u.leased_by, lease_token = u.lease_token,
               lease_expires_at = u.lease_expires_at, last_failed_agent = u.last_failed_agent,
               last_error = u.last_error, started_at = u.started_at, completed_at = u.completed_at,
               updated_at = u.updated_at, yield_requested = u.yield_requested
             FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int[], $5::timestamptz[],
               $6::uuid[], $7::uuid[], $8::timestamptz[], $9::uuid[], $10::text[],
               $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::bool[])
               AS u(id, status, output, attempts, available_at, leased_by, lease_token,
                    lease_expires_at, last_failed_agent, last_error, started_at, completed_at,
                    updated_at, yield_requested)
             WHERE tasks.id = u.id",
        )
        .await?;
    tx.execute(
        &update,
        &[
            &column(steps, |s| s.task.id),
            &column(steps, |s| s.task.status.as_str()),
            &column(steps, |s| s.task.output.as_ref()),
            &column(steps, |s| s.task.attempts),
            &column(steps, |s| s.task.available_at),
            &column(steps, |s| s.task.leased_by),
            &column(steps, |s| s.token),
            &column(steps, |s| s.task.lease_expires_at),
            &column(steps, |s| s.task.last_failed_agent),
            &column(steps, |s| s.task.last_error.as_deref()),
            &column(steps, |s| s.task.started_at),
            &column(steps, |s| s.task.completed_at),
            &column(steps, |s| s.task.updated_at),
            &column(steps, |s| s.task.yield_requested),
        ],
    )
    .await?;
    Ok(())
}

/// Ids chosen by `sql`, locked and skipped by other claimers while this transaction runs.
async fn ids(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Uuid>> {
    let rows = tx.query(&tx.prepare_cached(sql).await?, args).await?;
    rows.iter().map(|r| super::rows::get(r, 0)).collect()
}

#[async_trait]
impl QueueStore for PgStore {
    fn work_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.work.clone()
    }

    async fn claim_gated(
        &self,
        req: &ClaimRequest,
        gate: Option<&ClaimGate>,
    ) -> Result<ClaimOutcome> {
        if req.task_types.is_empty() || req.limit == 0 {
            return Ok(ClaimOutcome::default());
        }
        let fetch = req.limit + if gate.is_some() { steps::GATE_SLACK } else { 0 };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rank = tx.prepare_cached(&RANK_SQL).await?;
        let chosen = tx
            .query(
                &rank,
                &[
                    &req.now,
                    &req.task_types,
                    &req.agent_id,
                    &(req.ageing_secs.max(1) as f64),
                    &i64::from(fetch),
                ],
            )
            .await?;
        // Decide each in rank order, then write the leases together (rows in one
        // statement, events in one append) rather than a round trip per row while the
        // log's head is held.
        let mut out = ClaimOutcome::default();
        let mut steps_taken = Vec::new();
        let mut events = Vec::new();
        for row in &chosen {
            if out.leases.len() as u32 >= req.limit {
                break;
            }
            let task = task_from_row(row)?;
            if steps::left_for_others(&task, req) {
                continue;
            }
            if let Some(gate) = gate {
                let verdict = gate(&task);
                events.extend(verdict.audit);
                if !verdict.allow {
                    out.refused.push(verdict.reason);
                    continue;
                }
            }
            let (mut step, lease) = steps::claim_step(task, req);
            events.append(&mut step.events);
            steps_taken.push(step);
            out.leases.push(lease);
        }
        write_rows(&tx, &steps_taken).await?;
        append_and_commit(tx, events).await?;
        Ok(out)
    }

    async fn extend_lease(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Lease> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, current) = lock(&tx, task_id).await?;
        let (step, lease) = steps::extend_step(task, current, token, now, lease_ms)?;
        let mut staged = Staged::new();
        save(&tx, step, &mut staged).await?;
        append_and_commit(tx, staged).await?;
        Ok(lease)
    }

    async fn complete_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Option<Value>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, current) = lock(&tx, task_id).await?;
        save_and_commit(
            tx,
            steps::complete_step(task, current, token, output, now, actor)?,
        )
        .await
    }

    async fn complete_tasks(
        &self,
        completions: Vec<Completion>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Vec<Result<Task>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // One statement locks every row, in id order, so two batches never deadlock.
        let mut wanted: Vec<Uuid> = completions.iter().map(|c| c.task_id).collect();
        wanted.sort();
        wanted.dedup();
        let mut loaded = std::collections::HashMap::new();
        let rows = tx
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS}, lease_token FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ))
            .await?;
        for row in tx.query(&rows, &[&wanted]).await? {
            let token: Option<Uuid> = super::rows::get(&row, 25)?;
            let task = task_from_row(&row)?;
            loaded.insert(task.id, (task, token));
        }
        // Every refusal is known before anything is written (the step is pure), so the
        // completions that stand are written together: rows in one statement, events
        // in one append.
        let mut results: Vec<Result<Task>> = Vec::with_capacity(completions.len());
        let mut accepted = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in completions {
            let step = match loaded.remove(&c.task_id) {
                Some((task, current)) => {
                    seen.insert(c.task_id);
                    steps::complete_step(task, current, c.token, c.output, now, actor)
                }
                None if seen.contains(&c.task_id) => Err(StoreError::Conflict(format!(
                    "task {} is named more than once in this batch",
                    c.task_id
                ))),
                None => Err(StoreError::NotFound(format!("task {}", c.task_id))),
            };
            match step {
                Ok(step) => {
                    results.push(Ok(step.task.clone()));
                    accepted.push(step);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut events: Staged = accepted
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.events))
            .collect();
        write_rows(&tx, &accepted).await?;
        // Parents in id order, each once: two batches finishing siblings lock them in
        // the same order.
        let mut parents: Vec<Uuid> = accepted.iter().filter_map(|s| s.task.parent_id).collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            stage_parent_resume(&tx, parent, now, &mut events).await?;
        }
        append_and_commit(tx, events).await?;
        Ok(results)
    }

    async fn fail_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        reason: &str,
        retryable: bool,
        now: Timestamp,
        policy: RetryPolicy,
        actor: &str,
    ) -> Result<(Task, FailOutcome)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut staged = Staged::new();
        let (task, current) = lock(&tx, task_id).await?;
        let step = steps::fail_step(
            task,
            current,
            Some(token),
            reason,
            retryable,
            now,
            &policy,
            actor,
        )?;
        let outcome = step.outcome.unwrap_or(FailOutcome::DeadLettered);
        let task = save(&tx, step, &mut staged).await?;
        append_and_commit(tx, staged).await?;
        Ok((task, outcome))
    }

    async fn reap_expired_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
    ) -> Result<Vec<(Task, FailOutcome)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut staged = Staged::new();
        let expired = ids(
            &tx,
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < $1
             ORDER BY lease_expires_at FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
        let mut out = Vec::new();
        for id in expired {
            let (task, _) = lock(&tx, id).await?;
            let step = steps::fail_step(
                task,
                None,
                None,
                mesh_types::queue::LEASE_EXPIRED,
                true,
                now,
                &policy,
                "system",
            )?;
            let outcome = step.outcome.unwrap_or(FailOutcome::DeadLettered);
            out.push((save(&tx, step, &mut staged).await?, outcome));
        }
        append_and_commit(tx, staged).await?;
        Ok(out)
    }

    async fn expire_deadlines(&self, now: Timestamp) -> Result<Vec<Task>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut staged = Staged::new();
        let late = ids(
            &tx,
            "SELECT id FROM tasks WHERE status = 'queued' AND deadline < $1 AND started_at IS NULL
             ORDER BY deadline FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
        let mut out = Vec::new();
        for id in late {
            let (task, _) = lock(&tx, id).await?;
            out.push(save(&tx, steps::deadline_step(task, now), &mut staged).await?);
        }
        append_and_commit(tx, staged).await?;
        Ok(out)
    }

    async fn await_children(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Value,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, current) = lock(&tx, task_id).await?;
        let unfinished = unfinished_children(&tx, task_id).await?;
        let step = steps::await_step(task, current, token, output, unfinished, now, actor)?;
        save_and_commit(tx, step).await
    }

    async fn request_yields(
        &self,
        now: Timestamp,
        critical_priority: i32,
        waited_ms: i64,
    ) -> Result<Vec<(Task, Task)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut staged = Staged::new();
        let waited_since = now - mesh_types::time::millis(waited_ms);
        let waiting = ids(
            &tx,
            "SELECT id FROM tasks WHERE status = 'queued' AND priority >= $1 AND available_at <= $2
               AND (deadline IS NULL OR deadline >= $3)
             ORDER BY priority DESC, available_at LIMIT 50",
            &[&critical_priority, &waited_since, &now],
        )
        .await?;
        let mut asked = Vec::new();
        // Per task type: critical tasks seen so far, and yields already requested.
        let mut seen: std::collections::HashMap<String, (i64, i64)> =
            std::collections::HashMap::new();
        for id in waiting {
            let (critical, _) = lock(&tx, id).await?;
            if !seen.contains_key(&critical.task_type) {
                let outstanding: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM tasks WHERE status = 'running' AND type = $1 AND yield_requested",
                        &[&critical.task_type],
                    )
                    .await?
                    .get(0);
                seen.insert(critical.task_type.clone(), (0, outstanding));
            }
            let Some(entry) = seen.get_mut(&critical.task_type) else {
                continue;
            };
            entry.0 += 1;
            if entry.1 >= entry.0 {
                continue; // enough yields are already on their way
            }
            let victim = ids(
                &tx,
                "SELECT id FROM tasks WHERE status = 'running' AND type = $1 AND priority < $2 AND NOT yield_requested
                 ORDER BY priority ASC, started_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&critical.task_type, &critical_priority],
            )
            .await?;
            if let Some(victim) = victim.first() {
                let (task, current) = lock(&tx, *victim).await?;
                let asked_task = save(
                    &tx,
                    steps::yield_request_step(task, &critical, current, now),
                    &mut staged,
                )
                .await?;
                entry.1 += 1;
                asked.push((critical, asked_task));
            }
        }
        append_and_commit(tx, staged).await?;
        Ok(asked)
    }

    async fn yield_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, current) = lock(&tx, task_id).await?;
        save_and_commit(tx, steps::yield_step(task, current, token, now, actor)?).await
    }

    async fn requeue_task(&self, task_id: Uuid, now: Timestamp, actor: &str) -> Result<Task> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, _) = lock(&tx, task_id).await?;
        save_and_commit(tx, steps::requeue_step(task, now, actor)?).await
    }

    async fn resolve_approval(
        &self,
        task_id: Uuid,
        approve: bool,
        now: Timestamp,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Task> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (task, _) = lock(&tx, task_id).await?;
        save_and_commit(tx, steps::approval_step(task, approve, now, actor, note)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskStore;
    use mesh_types::task::NewTask;

    /// The candidate index scans of the `EXPLAIN (ANALYZE, FORMAT JSON)` plan `node`
    /// and below, with how many times each ran.
    fn candidate_scan_loops(node: &Value, out: &mut Vec<u64>) {
        let index = node.get("Index Name").and_then(Value::as_str);
        if matches!(index, Some("tasks_claim_priority" | "tasks_claimable")) {
            out.push(node["Actual Loops"].as_u64().unwrap_or(0));
        }
        for child in node
            .get("Plans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            candidate_scan_loops(child, out);
        }
    }

    /// A new database has no statistics until something ANALYZEs it (autovacuum, if it
    /// runs, within a minute or so). The ranking must not depend on them: each
    /// candidate scan runs once per claim, not once per queued task.
    #[tokio::test]
    async fn the_candidate_scans_run_once_without_statistics() {
        let Some(store) = crate::postgres::scratch_store().await else {
            return;
        };
        let now = mesh_types::time::now();
        let tasks = (0..300)
            .map(|i| {
                let new: NewTask = serde_json::from_value(
                    serde_json::json!({"type": "job", "input": {}, "priority": i % 3}),
                )
                .unwrap();
                (new.into_task(Uuid::now_v7(), "acme", 3, now), vec![])
            })
            .collect();
        store.insert_tasks(tasks).await.unwrap();

        let mut client = store.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", *RANK_SQL);
        let types = vec!["job".to_string()];
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&now, &types, &Uuid::now_v7(), &60f64, &10i64];
        let plan: Value = tx.query_one(&explain, &args).await.unwrap().get(0);
        let mut loops = Vec::new();
        candidate_scan_loops(&plan[0]["Plan"], &mut loops);
        assert_eq!(
            loops,
            vec![1, 1],
            "both candidate scans, once each: {plan:#}"
        );
        tx.rollback().await.unwrap();
    }
}
