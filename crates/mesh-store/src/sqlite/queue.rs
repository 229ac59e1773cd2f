use super::SqliteStore;
use super::provenance::record_in_tx;
use super::rows::{fmt_ts, to_json};
use super::tasks::{TASK_COLUMNS, task_from_row};
use crate::queue::{self as steps, Step};
use crate::queue::{ClaimGate, ClaimOutcome, Completion};
use crate::{QueueStore, Result, StoreError};
use async_trait::async_trait;
use mesh_types::queue::{ClaimRequest, FailOutcome, Lease, RetryPolicy};
use mesh_types::time::Timestamp;
use mesh_types::{PreparedDraft, Task};
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde_json::Value;
use uuid::Uuid;

/// How many of the highest-priority and of the longest-waiting tasks a claim ranks.
const CANDIDATES: u32 = 256;

/// The task and its current lease token. The immediate transaction already holds the
/// database's write lock, so no row lock is needed.
pub(super) fn load(conn: &Connection, id: Uuid) -> Result<(Task, Option<Uuid>)> {
    conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS}, lease_token FROM tasks WHERE id = ?1"
    ))?
    .query_row(params![id.to_string()], |row| {
        let token: Option<String> = row.get(25)?;
        Ok((task_from_row(row)?, token.and_then(|t| t.parse().ok())))
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
}

/// Events staged for one append at the end of a write: every append reads and advances
/// the log's head, so a write that changes many tasks appends all their events at once.
pub(super) type Staged = Vec<PreparedDraft>;

/// Writes back every column the queue's state machine may change, and the events; a
/// subtask reaching a final status may resume its parked parent.
pub(super) fn save(tx: &Transaction<'_>, step: Step) -> Result<Task> {
    let mut staged = Staged::new();
    let task = stage(tx, step, &mut staged)?;
    record_in_tx(tx, staged)?;
    Ok(task)
}

/// [`save`] with the events staged (in order) instead of appended.
pub(super) fn stage(tx: &Transaction<'_>, step: Step, staged: &mut Staged) -> Result<Task> {
    write_row(tx, &step)?;
    let task = step.task;
    staged.extend(step.events.into_iter().map(PreparedDraft::from));
    if task.status.is_terminal()
        && let Some(parent) = task.parent_id
    {
        stage_parent_resume(tx, parent, task.updated_at, staged)?;
    }
    Ok(task)
}

/// Leases `task` to the claim's agent: the row written, its events staged.
pub(super) fn lease(
    tx: &Transaction<'_>,
    task: Task,
    req: &ClaimRequest,
    staged: &mut Staged,
    out: &mut ClaimOutcome,
) -> Result<()> {
    let (step, lease) = steps::claim_step(task, req);
    stage(tx, step, staged)?;
    out.leases.push(lease);
    Ok(())
}

/// Subtasks of `parent` that have not reached a final status.
fn unfinished_children(tx: &Transaction<'_>, parent: Uuid) -> Result<i64> {
    Ok(tx.prepare_cached("SELECT COUNT(*) FROM tasks WHERE parent_id = ?1 AND status NOT IN ('completed', 'failed', 'cancelled')")?.query_row(params![parent.to_string()],
        |r| r.get(0),)?)
}

/// Puts a parked parent back in the queue once none of its subtasks is unfinished.
pub(crate) fn resume_parent_if_done(
    tx: &Transaction<'_>,
    parent: Uuid,
    now: Timestamp,
) -> Result<()> {
    let mut staged = Staged::new();
    stage_parent_resume(tx, parent, now, &mut staged)?;
    record_in_tx(tx, staged)?;
    Ok(())
}

fn stage_parent_resume(
    tx: &Transaction<'_>,
    parent: Uuid,
    now: Timestamp,
    staged: &mut Staged,
) -> Result<()> {
    let (task, _) = load(tx, parent)?;
    if let Some(step) = steps::resume_step(task, unfinished_children(tx, parent)?, now) {
        write_row(tx, &step)?;
        staged.extend(step.events.into_iter().map(PreparedDraft::from));
    }
    Ok(())
}

fn write_row(tx: &Transaction<'_>, step: &Step) -> Result<()> {
    let t = &step.task;
    tx.prepare_cached("UPDATE tasks SET status = ?2, output = ?3, attempts = ?4, available_at = ?5, leased_by = ?6,
           lease_token = ?7, lease_expires_at = ?8, last_failed_agent = ?9, last_error = ?10,
           started_at = ?11, completed_at = ?12, updated_at = ?13, yield_requested = ?14
         WHERE id = ?1")?.execute(params![
            t.id.to_string(),
            t.status.as_str(),
            t.output.as_ref().map(to_json),
            t.attempts,
            fmt_ts(&t.available_at),
            t.leased_by.map(|a| a.to_string()),
            step.token.map(|a| a.to_string()),
            t.lease_expires_at.as_ref().map(fmt_ts),
            t.last_failed_agent.map(|a| a.to_string()),
            t.last_error,
            t.started_at.as_ref().map(fmt_ts),
            t.completed_at.as_ref().map(fmt_ts),
            fmt_ts(&t.updated_at),
            t.yield_requested,
        ],)?;
    Ok(())
}

pub(super) fn ids(conn: &Connection, sql: &str, args: Vec<String>) -> Result<Vec<Uuid>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(
            row?.parse()
                .map_err(|e| StoreError::Corrupt(format!("task id: {e}")))?,
        );
    }
    Ok(out)
}

/// The claim ranking for `req`, fetching up to `fetch` task ids: the SQL and its
/// arguments. Tasks the agent failed last go last; then priority aged by waiting time.
/// Ageing cannot be indexed (it depends on now), so only a bounded set of candidates
/// is ranked: per task type, the highest-priority and the longest-waiting claimable
/// tasks. A task in neither set is ranked once the tasks ahead of it on both counts
/// are claimed (each claim takes the best of the candidates; nothing waits forever,
/// since every task becomes one of the longest-waiting).
///
/// Each candidate scan names its index and takes one type: without statistics the
/// planner would range-scan every claimable task by `available_at` and sort them all
/// to find the highest priorities, a cost that grows with the backlog.
pub(super) fn candidate_query(req: &ClaimRequest, fetch: usize) -> (String, Vec<String>) {
    let scans = (0..req.task_types.len())
        .flat_map(|i| {
            let claimable = |index: &str, order: &str| {
                format!(
                    "SELECT * FROM (SELECT id, priority, available_at, last_failed_agent
                       FROM tasks INDEXED BY {index}
                       WHERE status = 'queued' AND type = ?{ty} AND available_at <= ?1
                         AND (deadline IS NULL OR deadline >= ?1)
                       ORDER BY {order} LIMIT {CANDIDATES})",
                    ty = i + 4
                )
            };
            [
                claimable("tasks_claim_priority", "priority DESC, available_at"),
                claimable("tasks_claimable", "available_at"),
            ]
        })
        .collect::<Vec<_>>()
        .join(" UNION ");
    let sql = format!(
        "SELECT id FROM ({scans})
         ORDER BY (last_failed_agent IS NOT NULL AND last_failed_agent = ?2) ASC,
                  priority + (julianday(?1) - julianday(available_at)) * 86400.0 / ?3 DESC,
                  id ASC
         LIMIT {fetch}"
    );
    let mut args = vec![
        fmt_ts(&req.now),
        req.agent_id.to_string(),
        req.ageing_secs.max(1).to_string(),
    ];
    args.extend(req.task_types.iter().cloned());
    (sql, args)
}

#[async_trait]
impl QueueStore for SqliteStore {
    fn work_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.work()
    }

    async fn claim_gated(
        &self,
        req: &ClaimRequest,
        gate: Option<&ClaimGate>,
    ) -> Result<ClaimOutcome> {
        if req.task_types.is_empty() || req.limit == 0 {
            return Ok(ClaimOutcome::default());
        }
        if let Some(gate) = gate {
            // The gate's decisions are made outside the writer (see `claim.rs`).
            return super::claim::claim_gated(self, req.clone(), gate.clone()).await;
        }
        let req = req.clone();
        self.write(move |tx| {
            let (sql, args) = candidate_query(&req, req.limit as usize);
            let mut out = ClaimOutcome::default();
            let mut staged = Staged::new();
            for id in ids(tx, &sql, args)? {
                if out.leases.len() as u32 >= req.limit {
                    break;
                }
                let (task, _) = load(tx, id)?;
                if steps::left_for_others(&task, &req) {
                    continue;
                }
                lease(tx, task, &req, &mut staged, &mut out)?;
            }
            record_in_tx(tx, staged)?;
            Ok(out)
        })
        .await
    }

    async fn extend_lease(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Lease> {
        self.write(move |tx| {
            let (task, current) = load(tx, task_id)?;
            let (step, lease) = steps::extend_step(task, current, token, now, lease_ms)?;
            save(tx, step)?;
            Ok(lease)
        })
        .await
    }

    async fn complete_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Option<Value>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let (task, current) = load(tx, task_id)?;
            save(
                tx,
                steps::complete_step(task, current, token, output, now, &actor)?,
            )
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn complete_tasks(
        &self,
        completions: Vec<Completion>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Vec<Result<Task>>> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let mut results = Vec::with_capacity(completions.len());
            let mut staged = Staged::new();
            for c in completions {
                // Every refusal (unknown task, stale token, named twice) is known before
                // anything is written, because the step is pure: a refused completion
                // changes nothing without a savepoint of its own. Savepoints cost the
                // writer a copy of every page a completion touches. A write that fails
                // after that is a storage error, and fails the whole batch: the job's
                // savepoint undoes it all.
                let step = load(tx, c.task_id).and_then(|(task, current)| {
                    steps::complete_step(task, current, c.token, c.output, now, &actor)
                });
                results.push(match step {
                    Ok(step) => Ok(stage(tx, step, &mut staged)?),
                    Err(refused) => Err(refused),
                });
            }
            record_in_tx(tx, staged)?;
            Ok(results)
        })
        .await
        .inspect(|_| self.signal_work())
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
        let (reason, actor) = (reason.to_string(), actor.to_string());
        self.write(move |tx| {
            let (task, current) = load(tx, task_id)?;
            let step = steps::fail_step(
                task,
                current,
                Some(token),
                &reason,
                retryable,
                now,
                &policy,
                &actor,
            )?;
            let outcome = step.outcome.unwrap_or(FailOutcome::DeadLettered);
            Ok((save(tx, step)?, outcome))
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn reap_expired_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
    ) -> Result<Vec<(Task, FailOutcome)>> {
        self.write(move |tx| {
            let expired = ids(
                tx,
                "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ?1 ORDER BY lease_expires_at",
                vec![fmt_ts(&now)],
            )?;
            let mut out = Vec::new();
            for id in expired {
                let (task, _) = load(tx, id)?;
                let step = steps::fail_step(task, None, None, mesh_types::queue::LEASE_EXPIRED, true, now, &policy, "system")?;
                let outcome = step.outcome.unwrap_or(FailOutcome::DeadLettered);
                out.push((save(tx, step)?, outcome));
            }
            Ok(out)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn expire_deadlines(&self, now: Timestamp) -> Result<Vec<Task>> {
        self.write(move |tx| {
            let late = ids(
                tx,
                "SELECT id FROM tasks WHERE status = 'queued' AND deadline < ?1 AND started_at IS NULL ORDER BY deadline",
                vec![fmt_ts(&now)],
            )?;
            let mut out = Vec::new();
            for id in late {
                let (task, _) = load(tx, id)?;
                out.push(save(tx, steps::deadline_step(task, now))?);
            }
            Ok(out)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn await_children(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Value,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let (task, current) = load(tx, task_id)?;
            let unfinished = unfinished_children(tx, task_id)?;
            save(
                tx,
                steps::await_step(task, current, token, output, unfinished, now, &actor)?,
            )
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn request_yields(
        &self,
        now: Timestamp,
        critical_priority: i32,
        waited_ms: i64,
    ) -> Result<Vec<(Task, Task)>> {
        self.write(move |tx| {
            let waited_since = fmt_ts(&(now - mesh_types::time::millis(waited_ms)));
            let waiting = ids(
                tx,
                "SELECT id FROM tasks WHERE status = 'queued' AND priority >= ?1 AND available_at <= ?2
                   AND (deadline IS NULL OR deadline >= ?3)
                 ORDER BY priority DESC, available_at LIMIT 50",
                vec![critical_priority.to_string(), waited_since, fmt_ts(&now)],
            )?;
            let mut asked = Vec::new();
            // Per task type: critical tasks seen so far, and yields already requested.
            let mut seen: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
            for id in waiting {
                let (critical, _) = load(tx, id)?;
                let entry = match seen.get_mut(&critical.task_type) {
                    Some(e) => e,
                    None => {
                        let outstanding: i64 = tx.prepare_cached("SELECT COUNT(*) FROM tasks WHERE status = 'running' AND type = ?1 AND yield_requested")?.query_row(params![critical.task_type],
                            |r| r.get(0),)?;
                        seen.entry(critical.task_type.clone()).or_insert((0, outstanding))
                    }
                };
                entry.0 += 1;
                if entry.1 >= entry.0 {
                    continue; // enough yields are already on their way
                }
                let victim = ids(
                    tx,
                    "SELECT id FROM tasks WHERE status = 'running' AND type = ?1 AND priority < ?2 AND NOT yield_requested
                     ORDER BY priority ASC, started_at DESC LIMIT 1",
                    vec![critical.task_type.clone(), critical_priority.to_string()],
                )?;
                if let Some(victim) = victim.first() {
                    let (task, current) = load(tx, *victim)?;
                    let asked_task = save(tx, steps::yield_request_step(task, &critical, current, now))?;
                    entry.1 += 1;
                    asked.push((critical, asked_task));
                }
            }
            Ok(asked)
        })
        .await
    }

    async fn yield_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let (task, current) = load(tx, task_id)?;
            save(tx, steps::yield_step(task, current, token, now, &actor)?)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn requeue_task(&self, task_id: Uuid, now: Timestamp, actor: &str) -> Result<Task> {
        let actor = actor.to_string();
        self.write(move |tx| {
            let (task, _) = load(tx, task_id)?;
            save(tx, steps::requeue_step(task, now, &actor)?)
        })
        .await
        .inspect(|_| self.signal_work())
    }

    async fn resolve_approval(
        &self,
        task_id: Uuid,
        approve: bool,
        now: Timestamp,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Task> {
        let actor = actor.to_string();
        let note = note.map(str::to_string);
        self.write(move |tx| {
            let (task, _) = load(tx, task_id)?;
            save(
                tx,
                steps::approval_step(task, approve, now, &actor, note.as_deref())?,
            )
        })
        .await
        .inspect(|_| self.signal_work())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each candidate scan reads its index in order and stops at its limit: the only
    /// sorts are the union's dedup and the final ranking of the bounded candidates. A
    /// per-type sort would mean reading every claimable task of that type.
    #[tokio::test]
    async fn the_candidate_scans_need_no_sort() {
        let (_dir, store) = crate::sqlite::scratch_store().await;
        let req = ClaimRequest {
            agent_id: Uuid::now_v7(),
            agent_name: "a".into(),
            task_types: vec!["a".into(), "b".into()],
            limit: 10,
            lease_ms: 1_000,
            now: mesh_types::time::now(),
            ageing_secs: 60,
        };
        let (sql, args) = candidate_query(&req, 10);
        let plan: Vec<String> = store
            .read(move |conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .unwrap();
        let sorts = plan.iter().filter(|l| l.contains("FOR ORDER BY")).count();
        assert_eq!(sorts, 1, "only the final ranking sorts: {plan:#?}");
        let scans = plan
            .iter()
            .filter(|l| l.starts_with("SEARCH tasks USING INDEX"));
        assert_eq!(scans.count(), 4, "two index scans per type: {plan:#?}");
    }
}
