use mesh_policy::{Actor, Enforcer, Point, Verdict, inputs};
use mesh_registry::AgentRegistryClient;
use mesh_service::{ApiError, ServiceContext};
use mesh_types::queue::RetryPolicy;
use mesh_types::task::{QueueStats, TaskFilter};
use mesh_types::{
    EventDraft, NewTask, Page, PageRequest, PolicyAction, Principal, Task, TaskStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The queue's core: plain async functions over the store, no HTTP types.
pub struct TaskQueue {
    pub(crate) ctx: ServiceContext,
    pub(crate) config: QueueConfig,
    pub(crate) agents: AgentRegistryClient,
    pub(crate) policy: Arc<Enforcer>,
}

/// How the queue leases and retries.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Lease length when a claim does not ask for one.
    pub lease_ms: i64,
    /// Longest lease a claim may ask for.
    pub max_lease_ms: i64,
    pub default_max_attempts: i32,
    /// Attempts per task type, overriding the default.
    pub max_attempts_by_type: HashMap<String, i32>,
    pub retry: RetryPolicy,
    /// Seconds of waiting worth one point of priority.
    pub ageing_secs: i64,
    /// How often expired leases and missed deadlines are swept.
    pub sweep_interval_ms: u64,
    /// Tasks at or above this priority are critical: when one has waited
    /// `preempt_after_ms`, a running lower-priority task of its type is asked to yield.
    pub critical_priority: i32,
    pub preempt_after_ms: i64,
    /// How long one attempt of a task type may run (`metadata.timeoutMs` when the
    /// submitter gave none); past it the attempt fails and is retried elsewhere.
    pub timeout_ms_by_type: HashMap<String, i64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_lease_ms: 3_600_000,
            default_max_attempts: 3,
            max_attempts_by_type: HashMap::new(),
            retry: RetryPolicy::default(),
            ageing_secs: 60,
            sweep_interval_ms: 250,
            critical_priority: 100,
            preempt_after_ms: 2_000,
            timeout_ms_by_type: HashMap::new(),
        }
    }
}

/// Filters and paging of a task listing, as they arrive in a query string.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskListQuery {
    pub status: Option<TaskStatus>,
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    pub parent_id: Option<Uuid>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A human's note on an approval or rejection; the body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ApprovalBody {
    /// Parses an optional body: nothing at all means no note.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let body: Self = mesh_service::extract::parse_json(bytes)?;
        if let Some(note) = &body.note {
            mesh_types::validate::text("note", note, 2_000)?;
        }
        Ok(body)
    }
}

impl TaskQueue {
    pub fn new(
        ctx: ServiceContext,
        config: QueueConfig,
        agents: AgentRegistryClient,
        policy: Arc<Enforcer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            config,
            agents,
            policy,
        })
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Creates a task and enqueues it, with `task_created`, `subtask_created` (on the
    /// parent's timeline) and `task_queued` events, all in one transaction.
    ///
    /// The `task.submit` policy point (`agent.spawn` for a subtask) decides first: a
    /// deny writes nothing but the decision; an escalation parks the task in
    /// `needs_approval` instead of queueing it; redactions change the stored input.
    pub async fn enqueue(&self, caller: &Principal, new: NewTask) -> Result<Task, ApiError> {
        match self.prepare(caller, new).await? {
            Prepared::Store(task, events) => {
                Ok(self.ctx.store.tasks.insert_task(&task, events).await?)
            }
            Prepared::Denied(verdict) => Err(self.policy.refuse(verdict).await),
        }
    }

    /// Submits up to [`MAX_ENQUEUE_BATCH`] tasks in one transaction, all or none: a
    /// task that fails validation (400 naming `tasks[i]`) or that the policy denies
    /// (403; the decisions are recorded) stores none of them. Each task is decided and
    /// recorded exactly as [`TaskQueue::enqueue`] would.
    pub async fn enqueue_batch(
        &self,
        caller: &Principal,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Task>, ApiError> {
        if !(1..=MAX_ENQUEUE_BATCH).contains(&tasks.len()) {
            return Err(ApiError::invalid(
                "tasks",
                format!("tasks: between 1 and {MAX_ENQUEUE_BATCH} tasks per batch"),
            ));
        }
        let mut ready = Vec::with_capacity(tasks.len());
        let mut denied = Vec::new();
        for (i, new) in tasks.into_iter().enumerate() {
            match self
                .prepare(caller, new)
                .await
                .map_err(|e| at_index(e, i))?
            {
                Prepared::Store(task, events) => ready.push((task, events)),
                Prepared::Denied(verdict) => denied.push((i, verdict)),
            }
        }
        if let Some((i, verdict)) = denied.pop() {
            // Every refusal is on the record, not only the one reported.
            let others: Vec<_> = denied.into_iter().map(|(_, v)| v.audit).collect();
            if !others.is_empty() {
                self.ctx.store.provenance.append(others).await?;
            }
            return Err(at_index(self.policy.refuse(verdict).await, i));
        }
        Ok(self.ctx.store.tasks.insert_tasks(ready).await?)
    }

    /// Validates and decides one submission: the task to store and its events, or the
    /// policy's refusal (nothing written yet either way).
    async fn prepare(&self, caller: &Principal, new: NewTask) -> Result<Prepared, ApiError> {
        new.validate()?;
        if let Some(parent) = new.parent_id {
            // Visible-to-caller check: a parent in another tenant is as good as absent.
            self.get(caller, parent).await.map_err(|_| {
                ApiError::invalid("parentId", format!("parentId: no task {parent}"))
            })?;
        }
        let max_attempts = self
            .config
            .max_attempts_by_type
            .get(&new.task_type)
            .copied()
            .unwrap_or(self.config.default_max_attempts);
        let mut new = new;
        if let Some(limit) = self.config.timeout_ms_by_type.get(&new.task_type)
            && let Some(fields) = new
                .metadata
                .get_or_insert_with(|| json!({}))
                .as_object_mut()
        {
            fields.entry("timeoutMs").or_insert(json!(limit));
        }
        let mut task = new.into_task(
            Uuid::now_v7(),
            &caller.tenant,
            max_attempts,
            mesh_types::time::now(),
        );
        let verdict = self.submission_verdict(caller, &mut task);
        let escalated = match verdict.decision.action {
            PolicyAction::Deny => return Ok(Prepared::Denied(verdict)),
            PolicyAction::EscalateToHuman => true,
            PolicyAction::Allow | PolicyAction::AllowWithRedactions => false,
        };
        // A flow (or the submitter) may ask for a human's approval the policy did not.
        let requested = task.metadata.get("requireApproval").cloned();
        let parked = escalated || requested.is_some();
        if parked {
            task.status = TaskStatus::NeedsApproval;
        }
        let actor = caller.name.as_str();
        let mut events = vec![
            EventDraft::new("task_created", actor, "task", Some(task.id.to_string()))
                .task(task.id)
                .payload(json!({
                    "type": task.task_type,
                    "priority": task.priority,
                    "riskTier": task.risk_tier,
                    "dataClassification": task.data_classification,
                    "parentId": task.parent_id,
                    "tenant": task.tenant,
                    "keyId": caller.key_id,
                    "inputSha256": mesh_types::canonical::sha256_hex(&task.input),
                    "maxAttempts": task.max_attempts,
                    "deadline": task.deadline.map(|d| mesh_types::time::format(&d)),
                    "idempotencyKey": task.idempotency_key,
                })),
        ];
        if let Some(parent) = task.parent_id {
            events.push(
                EventDraft::new("subtask_created", actor, "task", Some(parent.to_string()))
                    .task(parent)
                    .payload(json!({"subtaskId": task.id, "type": task.task_type})),
            );
        }
        let d = &verdict.decision;
        events.push(if parked {
            EventDraft::new(
                "task_needs_approval",
                actor,
                "task",
                Some(task.id.to_string()),
            )
            .task(task.id)
            .payload(if escalated {
                json!({
                    "reason": d.reason,
                    "escalationTarget": d.escalation_target,
                    "decisionId": d.decision_id,
                })
            } else {
                let asked = requested.unwrap_or_default();
                json!({
                    "reason": asked.get("reason").cloned().unwrap_or(json!("approval requested at submission")),
                    "escalationTarget": asked.get("approver"),
                    "decisionId": d.decision_id,
                })
            })
        } else {
            EventDraft::new("task_queued", actor, "task", Some(task.id.to_string()))
                .task(task.id)
                .payload(json!({"priority": task.priority}))
        });
        events.push(verdict.audit);
        // With an idempotency key already used, the store answers with the first task.
        Ok(Prepared::Store(task, events))
    }

    /// Asks the submission policy about `task`, applying any redactions to its input
    /// and metadata.
    fn submission_verdict(&self, caller: &Principal, task: &mut Task) -> Verdict {
        let point = if task.parent_id.is_some() {
            Point::AgentSpawn
        } else {
            Point::TaskSubmit
        };
        let ctx = inputs::context(
            inputs::principal(caller),
            inputs::task(task, true),
            self.ctx.name.as_str(),
        );
        let actor = Actor {
            name: caller.name.clone(),
            agent: None,
            task: Some(task.id),
        };
        let verdict = self.policy.enforce(point, ctx, &actor);
        if verdict.decision.action == PolicyAction::AllowWithRedactions {
            let attributes = &verdict.input["resource"]["attributes"];
            task.input = attributes.get("input").cloned().unwrap_or(Value::Null);
            task.metadata = attributes.get("metadata").cloned().unwrap_or(json!({}));
        }
        verdict
    }

    /// A human's answer to an escalated task: approve queues it, reject cancels it.
    pub async fn resolve_approval(
        &self,
        caller: &Principal,
        id: Uuid,
        approve: bool,
        note: Option<String>,
    ) -> Result<Task, ApiError> {
        self.get(caller, id).await?;
        Ok(self
            .ctx
            .store
            .queue
            .resolve_approval(
                id,
                approve,
                mesh_types::time::now(),
                &caller.name,
                note.as_deref(),
            )
            .await?)
    }

    /// A task the caller may see; another tenant's task reads as not found.
    pub async fn get(&self, caller: &Principal, id: Uuid) -> Result<Task, ApiError> {
        match self.ctx.store.tasks.get_task(id).await? {
            Some(task) if visible(caller, &task) => Ok(task),
            _ => Err(ApiError::not_found(format!("task {id} not found"))),
        }
    }

    pub async fn list(
        &self,
        caller: &Principal,
        query: TaskListQuery,
    ) -> Result<Page<Task>, ApiError> {
        let filter = TaskFilter {
            status: query.status,
            task_type: query.task_type,
            parent_id: query.parent_id,
            tenant: caller.tenant_scope(),
        };
        let page = PageRequest::new(query.limit, query.cursor);
        Ok(self.ctx.store.tasks.list_tasks(&filter, &page).await?)
    }

    /// Cancels a task and its unfinished descendants; returns the task as cancelled.
    pub async fn cancel(&self, caller: &Principal, id: Uuid) -> Result<Task, ApiError> {
        self.get(caller, id).await?;
        let actor = caller.name.clone();
        let cancelled = self
            .ctx
            .store
            .tasks
            .cancel_task(
                id,
                mesh_types::time::now(),
                Arc::new(move |t: &Task| {
                    let cascade = (t.id != id).then_some(id);
                    EventDraft::new("task_cancelled", &actor, "task", Some(t.id.to_string()))
                        .task(t.id)
                        .payload(json!({"cascadeFrom": cascade}))
                }),
            )
            .await?;
        cancelled
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("cancellation returned no task"))
    }

    pub async fn stats(&self, task_type: &str, priority: i32) -> Result<QueueStats, ApiError> {
        Ok(self
            .ctx
            .store
            .tasks
            .queue_stats(task_type, priority)
            .await?)
    }
}

/// Most tasks one batch submission may carry.
pub const MAX_ENQUEUE_BATCH: usize = 500;

/// A submission ready to store, or refused by the policy.
enum Prepared {
    Store(Task, Vec<EventDraft>),
    Denied(Verdict),
}

/// Points an error about one task of a batch at it: `input` becomes `tasks[3].input`.
fn at_index(mut error: ApiError, i: usize) -> ApiError {
    error.field = Some(match error.field.take() {
        Some(field) => format!("tasks[{i}].{field}"),
        None => format!("tasks[{i}]"),
    });
    error.message = format!("tasks[{i}]: {}", error.message);
    error
}

fn visible(caller: &Principal, task: &Task) -> bool {
    caller
        .tenant_scope()
        .is_none_or(|tenant| tenant == task.tenant)
}
