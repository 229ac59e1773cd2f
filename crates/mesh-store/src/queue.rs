//! The queue's capability trait and the steps every backend applies inside its
//! transactions. A step takes the locked row and its current lease token, applies the
//! state machine in `mesh_types::queue`, and says what to save and which events to
//! append, so both backends share one implementation of the rules.

use crate::{Result, StoreError};
use async_trait::async_trait;
use mesh_types::queue::{self, ClaimRequest, FailOutcome, Lease, LeaseError, RetryPolicy};
use mesh_types::time::Timestamp;
use mesh_types::{EventDraft, Task, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

/// Asked about each candidate task before it is leased (the `task.assign` policy
/// point). Runs inside the claim's transaction, so it must be quick and must not block.
pub type ClaimGate = std::sync::Arc<dyn Fn(&Task) -> GateVerdict + Send + Sync>;

/// A gate's answer: whether the task may be leased, and the event recording the
/// decision, appended in the claim's transaction either way.
pub struct GateVerdict {
    pub allow: bool,
    pub reason: String,
    pub audit: Option<EventDraft>,
}

/// What a gated claim leased, and why the candidates it skipped were refused.
#[derive(Debug, Default)]
pub struct ClaimOutcome {
    pub leases: Vec<Lease>,
    pub refused: Vec<String>,
}

/// Extra candidates read when a gate may refuse some.
pub(crate) const GATE_SLACK: u32 = 16;

/// How long a retried task is left for other agents before the agent whose attempt
/// failed (crashed, timed out) may claim it again: the seed retries "on a different
/// agent", but an agent that is the only one able to take the task still gets it.
pub const RETRY_ELSEWHERE_MS: i64 = 3_000;

/// Whether `req`'s agent should pass over `task` for now (see [`RETRY_ELSEWHERE_MS`]).
pub(crate) fn left_for_others(task: &Task, req: &ClaimRequest) -> bool {
    task.last_failed_agent == Some(req.agent_id)
        && req.now < task.available_at + mesh_types::time::millis(RETRY_ELSEWHERE_MS)
}

#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Woken whenever claimable work may have appeared: in this process, and on
    /// PostgreSQL in any process (LISTEN/NOTIFY). Waiters still poll as a fallback:
    /// retries becoming due after their backoff wake no one.
    fn work_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Leases up to `limit` claimable tasks of the requested types: highest priority
    /// first (aged by waiting time), tasks this agent last failed last.
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Lease>> {
        Ok(self.claim_gated(req, None).await?.leases)
    }
    /// As [`QueueStore::claim`], asking `gate` about each candidate; refused tasks stay
    /// queued, untouched, and the next candidates are tried.
    async fn claim_gated(
        &self,
        req: &ClaimRequest,
        gate: Option<&ClaimGate>,
    ) -> Result<ClaimOutcome>;
    async fn extend_lease(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Lease>;
    async fn complete_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Option<Value>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task>;
    /// Completes several leased tasks in one transaction. Each completion stands
    /// alone: one with a stale token or an unknown task gets its error and changes
    /// nothing, and the others still commit. Results are in the order given.
    async fn complete_tasks(
        &self,
        completions: Vec<Completion>,
        now: Timestamp,
        actor: &str,
    ) -> Result<Vec<Result<Task>>>;
    #[allow(clippy::too_many_arguments)]
    async fn fail_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        reason: &str,
        retryable: bool,
        now: Timestamp,
        policy: RetryPolicy,
        actor: &str,
    ) -> Result<(Task, FailOutcome)>;
    /// Takes back every task whose lease ran out (its agent crashed or hung).
    async fn reap_expired_leases(
        &self,
        now: Timestamp,
        policy: RetryPolicy,
    ) -> Result<Vec<(Task, FailOutcome)>>;
    /// Fails queued tasks whose deadline passed before they started (`slo_timeout`).
    async fn expire_deadlines(&self, now: Timestamp) -> Result<Vec<Task>>;
    /// Parks a leased task until its subtasks finish (at once back to the queue if they
    /// already have), keeping `output` as its result so far.
    async fn await_children(
        &self,
        task_id: Uuid,
        token: Uuid,
        output: Value,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task>;
    /// Asks running lower-priority tasks to yield to critical tasks (priority at least
    /// `critical_priority`) that have waited `waited_ms` or more; at most one request per
    /// waiting critical task. Returns (critical task, task asked to yield) pairs.
    async fn request_yields(
        &self,
        now: Timestamp,
        critical_priority: i32,
        waited_ms: i64,
    ) -> Result<Vec<(Task, Task)>>;
    /// Hands a leased task back at the scheduler's request; the attempt is refunded.
    async fn yield_task(
        &self,
        task_id: Uuid,
        token: Uuid,
        now: Timestamp,
        actor: &str,
    ) -> Result<Task>;
    /// Puts a dead-lettered task back in the queue.
    async fn requeue_task(&self, task_id: Uuid, now: Timestamp, actor: &str) -> Result<Task>;
    /// Approves (queues) or rejects (cancels) a task parked in `needs_approval`.
    async fn resolve_approval(
        &self,
        task_id: Uuid,
        approve: bool,
        now: Timestamp,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Task>;
}

/// One completion in a batch: the task, the lease it was done under, its result.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: Uuid,
    pub token: Uuid,
    pub output: Option<Value>,
}

/// What to write back after one step.
pub(crate) struct Step {
    pub task: Task,
    pub token: Option<Uuid>,
    pub events: Vec<EventDraft>,
    pub outcome: Option<FailOutcome>,
}

fn lease_error(task: &Task, err: LeaseError) -> StoreError {
    StoreError::Conflict(format!("task {}: {err}", task.id))
}

pub(crate) fn claim_step(task: Task, req: &ClaimRequest) -> (Step, Lease) {
    let lease = task.claim(req.agent_id, req.now, req.lease_ms);
    let step = Step {
        task: lease.task.clone(),
        token: Some(lease.lease_token),
        events: vec![queue::assigned_event(&lease, &req.agent_name)],
        outcome: None,
    };
    (step, lease)
}

pub(crate) fn extend_step(
    mut task: Task,
    current: Option<Uuid>,
    token: Uuid,
    now: Timestamp,
    lease_ms: i64,
) -> Result<(Step, Lease)> {
    task.check_lease(current, token)
        .map_err(|e| lease_error(&task, e))?;
    let expires = task.extend_lease(now, lease_ms);
    let lease = Lease {
        attempt: task.attempts,
        task: task.clone(),
        lease_token: token,
        lease_expires_at: expires,
    };
    Ok((
        Step {
            task,
            token: Some(token),
            events: vec![],
            outcome: None,
        },
        lease,
    ))
}

pub(crate) fn complete_step(
    mut task: Task,
    current: Option<Uuid>,
    token: Uuid,
    output: Option<Value>,
    now: Timestamp,
    actor: &str,
) -> Result<Step> {
    task.check_lease(current, token)
        .map_err(|e| lease_error(&task, e))?;
    let agent = task.leased_by;
    task.complete(output, now);
    let events = vec![queue::completed_event(&task, agent, actor)];
    Ok(Step {
        task,
        token: None,
        events,
        outcome: None,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn fail_step(
    mut task: Task,
    current: Option<Uuid>,
    token: Option<Uuid>,
    reason: &str,
    retryable: bool,
    now: Timestamp,
    policy: &RetryPolicy,
    actor: &str,
) -> Result<Step> {
    if let Some(token) = token {
        task.check_lease(current, token)
            .map_err(|e| lease_error(&task, e))?;
    }
    let agent = task.leased_by;
    let outcome = task.fail(reason, retryable, now, policy);
    let events = vec![queue::failed_event(&task, outcome, agent, actor)];
    Ok(Step {
        task,
        token: None,
        events,
        outcome: Some(outcome),
    })
}

/// `unfinished` counts the task's subtasks that are not yet terminal.
pub(crate) fn await_step(
    mut task: Task,
    current: Option<Uuid>,
    token: Uuid,
    output: Value,
    unfinished: i64,
    now: Timestamp,
    actor: &str,
) -> Result<Step> {
    task.check_lease(current, token)
        .map_err(|e| lease_error(&task, e))?;
    task.wait_for_children(output, now);
    let mut events = vec![queue::waiting_event(&task, unfinished, actor)];
    if unfinished == 0 {
        task.resume(now);
        events.push(queue::resumed_event(&task));
    }
    Ok(Step {
        task,
        token: None,
        events,
        outcome: None,
    })
}

/// Resumes a parked parent whose last unfinished subtask just finished.
pub(crate) fn resume_step(mut parent: Task, unfinished: i64, now: Timestamp) -> Option<Step> {
    if parent.status != TaskStatus::Pending || unfinished > 0 {
        return None;
    }
    parent.resume(now);
    let events = vec![queue::resumed_event(&parent)];
    Some(Step {
        task: parent,
        token: None,
        events,
        outcome: None,
    })
}

pub(crate) fn yield_request_step(
    mut victim: Task,
    critical: &Task,
    current: Option<Uuid>,
    now: Timestamp,
) -> Step {
    victim.yield_requested = true;
    victim.updated_at = now;
    let events = vec![queue::yield_requested_event(&victim, critical)];
    Step {
        task: victim,
        token: current,
        events,
        outcome: None,
    }
}

pub(crate) fn yield_step(
    mut task: Task,
    current: Option<Uuid>,
    token: Uuid,
    now: Timestamp,
    actor: &str,
) -> Result<Step> {
    task.check_lease(current, token)
        .map_err(|e| lease_error(&task, e))?;
    let agent = task.leased_by;
    task.yield_back(now);
    let events = vec![queue::yielded_event(&task, agent, actor)];
    Ok(Step {
        task,
        token: None,
        events,
        outcome: None,
    })
}

pub(crate) fn deadline_step(mut task: Task, now: Timestamp) -> Step {
    task.miss_deadline(now);
    let events = vec![queue::failed_event(
        &task,
        FailOutcome::DeadLettered,
        None,
        "system",
    )];
    Step {
        task,
        token: None,
        events,
        outcome: Some(FailOutcome::DeadLettered),
    }
}

pub(crate) fn approval_step(
    mut task: Task,
    approve: bool,
    now: Timestamp,
    actor: &str,
    note: Option<&str>,
) -> Result<Step> {
    if task.status != TaskStatus::NeedsApproval {
        return Err(StoreError::Conflict(format!(
            "task {} is {}; only tasks awaiting approval can be approved or rejected",
            task.id, task.status
        )));
    }
    if approve {
        task.approve(now);
    } else {
        task.reject(
            now,
            format!("rejected by {actor}: {}", note.unwrap_or("no reason given")),
        );
    }
    let mut events = vec![queue::approval_event(&task, approve, actor, note)];
    if approve {
        events.push(
            EventDraft::new("task_queued", actor, "task", Some(task.id.to_string()))
                .task(task.id)
                .payload(serde_json::json!({"priority": task.priority, "after": "approval"})),
        );
    }
    Ok(Step {
        task,
        token: None,
        events,
        outcome: None,
    })
}

pub(crate) fn requeue_step(mut task: Task, now: Timestamp, actor: &str) -> Result<Step> {
    if task.status != TaskStatus::Failed {
        return Err(StoreError::Conflict(format!(
            "task {} is {}; only failed (dead-lettered) tasks can be re-queued",
            task.id, task.status
        )));
    }
    task.requeue(now);
    let events = vec![queue::requeued_event(&task, actor)];
    Ok(Step {
        task,
        token: None,
        events,
        outcome: None,
    })
}
