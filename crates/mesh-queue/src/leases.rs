//! Leasing work to agents: claim, extend, complete, fail, dead letters, and the sweep
//! that takes back expired leases and fails tasks that missed their deadline.

use crate::core::TaskQueue;
use mesh_policy::{Actor, Point};
use mesh_service::{ApiError, Caller};
use mesh_store::{ClaimGate, Completion, GateVerdict};
use mesh_types::queue::{ClaimRequest, FailOutcome, Lease};
use mesh_types::task::TaskFilter;
use mesh_types::{Agent, AgentStatus, Page, PageRequest, Task, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub const MAX_CLAIM_BATCH: u32 = 100;
/// Longest long poll; shorter than the drain grace period and any client timeout.
pub const MAX_CLAIM_WAIT_MS: u64 = 10_000;
/// While long-polling, look again this often even without a wake-up: retries whose
/// backoff ends and writes by other processes on SQLite send none.
const WAIT_POLL: Duration = Duration::from_millis(100);
const MIN_LEASE_MS: i64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimBody {
    pub agent_id: Uuid,
    /// Task types the agent handles.
    pub task_types: Vec<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub lease_ms: Option<i64>,
    /// Long poll: when nothing is claimable, wait up to this long for work to appear.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtendBody {
    pub lease_token: Uuid,
    #[serde(default)]
    pub lease_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteBody {
    pub lease_token: Uuid,
    #[serde(default)]
    pub output: Option<Value>,
}

/// `POST /api/v1/queue/completions`: several leased tasks finished at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompletionsBody {
    pub completions: Vec<CompletionItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompletionItem {
    pub task_id: Uuid,
    pub lease_token: Uuid,
    #[serde(default)]
    pub output: Option<Value>,
}

/// One completion's outcome: the completed task, or why it was refused (the status
/// and code its own `complete` call would have answered).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionResult {
    pub task_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl From<ApiError> for ItemError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status.as_u16(),
            code: e.code,
            message: e.message,
        }
    }
}

/// Most completions one batch may carry.
pub const MAX_COMPLETE_BATCH: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwaitBody {
    pub lease_token: Uuid,
    /// The result so far, handed back when the task resumes.
    #[serde(default)]
    pub output: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailBody {
    pub lease_token: Uuid,
    pub reason: String,
    /// False for failures a retry cannot fix (bad input): dead-letter at once.
    #[serde(default = "retryable_by_default")]
    pub retryable: bool,
}

fn retryable_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailReply {
    pub task: Task,
    pub outcome: FailOutcome,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl TaskQueue {
    fn lease_ms(&self, asked: Option<i64>) -> Result<i64, ApiError> {
        let lease = asked.unwrap_or(self.config.lease_ms);
        if !(MIN_LEASE_MS..=self.config.max_lease_ms).contains(&lease) {
            return Err(ApiError::invalid(
                "leaseMs",
                format!(
                    "leaseMs: must be between {MIN_LEASE_MS} and {}",
                    self.config.max_lease_ms
                ),
            ));
        }
        Ok(lease)
    }

    /// Leases up to `limit` tasks of the given types that are also among the agent's
    /// capabilities to a registered, working agent. Nothing to claim is an empty list,
    /// not an error.
    pub async fn claim(&self, caller: &Caller, body: ClaimBody) -> Result<Vec<Lease>, ApiError> {
        let limit = body.limit.unwrap_or(1);
        if !(1..=MAX_CLAIM_BATCH).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit: must be between 1 and {MAX_CLAIM_BATCH}"),
            ));
        }
        let lease_ms = self.lease_ms(body.lease_ms)?;
        for (i, t) in body.task_types.iter().enumerate() {
            mesh_types::validate::text(
                &format!("taskTypes[{i}]"),
                t,
                mesh_types::task::MAX_TASK_TYPE_LEN,
            )?;
        }
        let agent = self.working_agent(caller, body.agent_id).await?;
        // An agent takes only work it declared it can do.
        let task_types = body
            .task_types
            .into_iter()
            .filter(|t| agent.capabilities.contains(t))
            .collect();
        let wait = body.wait_ms.unwrap_or(0);
        if wait > MAX_CLAIM_WAIT_MS {
            return Err(ApiError::invalid(
                "waitMs",
                format!("waitMs: at most {MAX_CLAIM_WAIT_MS}"),
            ));
        }
        let gate = self.assignment_gate(&agent);
        let mut request = ClaimRequest {
            agent_id: agent.id,
            agent_name: agent.name,
            task_types,
            limit,
            lease_ms,
            now: mesh_types::time::now(),
            ageing_secs: self.config.ageing_secs,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        let signal = self.ctx.store.queue.work_signal();
        let mut first = true;
        loop {
            // A long poll outlives the check above: an agent that turned unhealthy or
            // began draining while it waited takes nothing. (What remains is the
            // moment between this read and the claim's transaction.)
            if !std::mem::take(&mut first) {
                self.working_agent(caller, agent.id).await?;
            }
            // Register for the wake-up before looking, so work that lands in between
            // is not missed.
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            request.now = mesh_types::time::now();
            let outcome = self
                .ctx
                .store
                .queue
                .claim_gated(&request, Some(&gate))
                .await?;
            if outcome.leases.is_empty() && !outcome.refused.is_empty() {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "policy_denied",
                    format!("denied by policy: {}", outcome.refused.join("; ")),
                ));
            }
            let now = tokio::time::Instant::now();
            if !outcome.leases.is_empty() || now >= deadline {
                return Ok(outcome.leases);
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep((deadline - now).min(WAIT_POLL)) => {}
            }
        }
    }

    /// The agent, if it may take work now: registered, neither retired nor unhealthy
    /// (`agent_retired`, `agent_unhealthy`: a worker tells a final refusal from one that
    /// lasts until the agent's next heartbeat or probe) and not draining (it finishes
    /// what it holds and takes nothing new).
    async fn working_agent(&self, caller: &Caller, id: Uuid) -> Result<Agent, ApiError> {
        let agent = self.agents.get(caller, id).await.map_err(|e| {
            if e.status == axum::http::StatusCode::NOT_FOUND {
                ApiError::invalid("agentId", format!("agentId: no agent {id}"))
            } else {
                e
            }
        })?;
        if matches!(agent.status, AgentStatus::Retired | AgentStatus::Unhealthy) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                &format!("agent_{}", agent.status),
                format!(
                    "agent {} is {} and cannot take work",
                    agent.name, agent.status
                ),
            ));
        }
        if agent.draining_since.is_some() {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "agent_draining",
                format!("agent {} is draining and takes no new work", agent.name),
            ));
        }
        Ok(agent)
    }

    /// The `task.assign` policy point, asked about each candidate inside the claim.
    fn assignment_gate(&self, agent: &Agent) -> ClaimGate {
        let policy = self.policy.clone();
        let subject = mesh_policy::inputs::agent(agent);
        let who = (agent.id, agent.name.clone());
        let service = self.ctx.name.as_str();
        Arc::new(move |task: &Task| {
            let ctx = mesh_policy::inputs::context(
                subject.clone(),
                mesh_policy::inputs::task(task, false),
                service,
            );
            let actor = Actor {
                name: who.1.clone(),
                agent: Some(who.clone()),
                task: Some(task.id),
            };
            let verdict = policy.enforce(Point::TaskAssign, ctx, &actor);
            GateVerdict {
                allow: verdict.permits(),
                reason: verdict.decision.reason,
                audit: Some(verdict.audit),
            }
        })
    }

    /// Extends a lease, unless the attempt has run past the task's `metadata.timeoutMs`:
    /// then the attempt fails with `agent_timeout` (retried, preferring another agent)
    /// and the worker is told 409, which is its signal to abandon the work.
    pub async fn extend(&self, id: Uuid, body: ExtendBody) -> Result<Lease, ApiError> {
        let lease_ms = self.lease_ms(body.lease_ms)?;
        self.enforce_timeout(id, body.lease_token).await?;
        Ok(self
            .ctx
            .store
            .queue
            .extend_lease(id, body.lease_token, mesh_types::time::now(), lease_ms)
            .await?)
    }

    async fn enforce_timeout(&self, id: Uuid, token: Uuid) -> Result<(), ApiError> {
        let Some(task) = self.ctx.store.tasks.get_task(id).await? else {
            return Ok(());
        };
        let Some(limit_ms) = task.metadata.get("timeoutMs").and_then(Value::as_i64) else {
            return Ok(());
        };
        let Some(claimed_ms) = token.get_timestamp().map(|t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        }) else {
            return Ok(()); // a token minted before tokens carried their time
        };
        let now = mesh_types::time::now();
        let ran_ms = now.timestamp_millis() - claimed_ms;
        if ran_ms <= limit_ms {
            return Ok(());
        }
        let reason = format!(
            "agent_timeout: the attempt ran {ran_ms} ms, over the task's timeoutMs {limit_ms}"
        );
        let (task, outcome) = self
            .ctx
            .store
            .queue
            .fail_task(id, token, &reason, true, now, self.config.retry, "system")
            .await?;
        tracing::warn!(task = %task.id, agent = ?task.last_failed_agent, ?outcome, "attempt timed out; the agent is told to stop");
        Err(ApiError::conflict(format!("task {id}: {reason}")))
    }

    pub async fn complete(
        &self,
        caller: &Caller,
        id: Uuid,
        body: CompleteBody,
    ) -> Result<Task, ApiError> {
        Ok(self
            .ctx
            .store
            .queue
            .complete_task(
                id,
                body.lease_token,
                body.output,
                mesh_types::time::now(),
                caller.actor(),
            )
            .await?)
    }

    /// Completes several leased tasks in one transaction; each stands or falls alone
    /// (a stale token is refused with 409 in its result and changes nothing).
    pub async fn complete_batch(
        &self,
        caller: &Caller,
        body: CompletionsBody,
    ) -> Result<Vec<CompletionResult>, ApiError> {
        if !(1..=MAX_COMPLETE_BATCH).contains(&body.completions.len()) {
            return Err(ApiError::invalid(
                "completions",
                format!("completions: between 1 and {MAX_COMPLETE_BATCH} per batch"),
            ));
        }
        let completions: Vec<Completion> = body
            .completions
            .into_iter()
            .map(|c| Completion {
                task_id: c.task_id,
                token: c.lease_token,
                output: c.output,
            })
            .collect();
        let ids: Vec<Uuid> = completions.iter().map(|c| c.task_id).collect();
        let results = self
            .ctx
            .store
            .queue
            .complete_tasks(completions, mesh_types::time::now(), caller.actor())
            .await?;
        Ok(ids
            .into_iter()
            .zip(results)
            .map(|(task_id, result)| match result {
                Ok(task) => CompletionResult {
                    task_id,
                    task: Some(task),
                    error: None,
                },
                Err(e) => CompletionResult {
                    task_id,
                    task: None,
                    error: Some(ApiError::from(e).into()),
                },
            })
            .collect())
    }

    /// Hands a leased task back because the scheduler asked it to yield; the attempt is
    /// refunded.
    pub async fn yield_task(
        &self,
        caller: &Caller,
        id: Uuid,
        body: ExtendBody,
    ) -> Result<Task, ApiError> {
        Ok(self
            .ctx
            .store
            .queue
            .yield_task(
                id,
                body.lease_token,
                mesh_types::time::now(),
                caller.actor(),
            )
            .await?)
    }

    /// Parks a leased task until its subtasks finish; it is then queued again and its
    /// next claim is a resumption (the task carries `output`).
    pub async fn await_children(
        &self,
        caller: &Caller,
        id: Uuid,
        body: AwaitBody,
    ) -> Result<Task, ApiError> {
        let output = body
            .output
            .unwrap_or_else(|| Value::Object(Default::default()));
        Ok(self
            .ctx
            .store
            .queue
            .await_children(
                id,
                body.lease_token,
                output,
                mesh_types::time::now(),
                caller.actor(),
            )
            .await?)
    }

    pub async fn fail(
        &self,
        caller: &Caller,
        id: Uuid,
        body: FailBody,
    ) -> Result<FailReply, ApiError> {
        mesh_types::validate::text("reason", &body.reason, 2_000)?;
        let (task, outcome) = self
            .ctx
            .store
            .queue
            .fail_task(
                id,
                body.lease_token,
                &body.reason,
                body.retryable,
                mesh_types::time::now(),
                self.config.retry,
                caller.actor(),
            )
            .await?;
        Ok(FailReply { task, outcome })
    }

    /// Failed tasks (out of attempts, not retryable, or past their deadline).
    pub async fn dead_letters(
        &self,
        caller: &Caller,
        query: PageQuery,
    ) -> Result<Page<Task>, ApiError> {
        let filter = TaskFilter {
            status: Some(TaskStatus::Failed),
            tenant: caller.principal.tenant_scope(),
            ..Default::default()
        };
        Ok(self
            .ctx
            .store
            .tasks
            .list_tasks(&filter, &PageRequest::new(query.limit, query.cursor))
            .await?)
    }

    pub async fn requeue(&self, caller: &Caller, id: Uuid) -> Result<Task, ApiError> {
        self.get(&caller.principal, id).await?;
        Ok(self
            .ctx
            .store
            .queue
            .requeue_task(id, mesh_types::time::now(), caller.actor())
            .await?)
    }

    /// One sweep: expired leases back to the queue, missed deadlines to `slo_timeout`.
    pub async fn sweep(&self) -> Result<(usize, usize), ApiError> {
        let now = mesh_types::time::now();
        let reaped = self
            .ctx
            .store
            .queue
            .reap_expired_leases(now, self.config.retry)
            .await?;
        for (task, outcome) in &reaped {
            tracing::warn!(task = %task.id, agent = ?task.last_failed_agent, ?outcome, "lease expired; task taken back");
        }
        let late = self.ctx.store.queue.expire_deadlines(now).await?;
        for task in &late {
            tracing::warn!(task = %task.id, "task missed its deadline before starting (slo_timeout)");
        }
        let asked = self
            .ctx
            .store
            .queue
            .request_yields(
                now,
                self.config.critical_priority,
                self.config.preempt_after_ms,
            )
            .await?;
        for (critical, victim) in &asked {
            tracing::info!(critical = %critical.id, yielding = %victim.id, "asked a lower-priority task to yield");
        }
        Ok((reaped.len(), late.len()))
    }
}

/// Sweeps every `sweep_interval_ms` until `shutdown` fires.
pub fn spawn_queue_sweeper(
    queue: Arc<TaskQueue>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(
            queue.config.sweep_interval_ms.max(10),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(err) = queue.sweep().await {
                tracing::error!(error = %err, "queue sweep failed");
            }
        }
    })
}
