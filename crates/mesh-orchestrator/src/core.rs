use crate::flows::{FlowKind, Flows};
use chrono::Duration;
use mesh_queue::{TaskListQuery, TaskQueueClient};
use mesh_registry::AgentRegistryClient;
use mesh_service::{ApiError, Caller, ServiceContext};
use mesh_types::matching::MatchQuery;
use mesh_types::task::QueueStats;
use mesh_types::time::{Timestamp, rfc3339_micros};
use mesh_types::{NewTask, Page, Task, TaskStatus};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// Assumed run time of a task type nothing has been observed for yet.
pub const DEFAULT_TASK_DURATION: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Orchestrator {
    ctx: ServiceContext,
    queue: TaskQueueClient,
    agents: AgentRegistryClient,
    flows: Arc<Flows>,
}

/// The seed's reply to a task submission.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResponse {
    pub task_id: Uuid,
    pub status: TaskStatus,
    #[serde(with = "rfc3339_micros")]
    pub estimated_completion: Timestamp,
}

impl Orchestrator {
    pub fn new(
        ctx: ServiceContext,
        queue: TaskQueueClient,
        agents: AgentRegistryClient,
        flows: Arc<Flows>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            queue,
            agents,
            flows,
        })
    }

    pub fn flows(&self) -> &Arc<Flows> {
        &self.flows
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    pub async fn submit(
        &self,
        caller: &Caller,
        mut new: NewTask,
    ) -> Result<SubmitResponse, ApiError> {
        new.validate()?;
        self.assign_flow(&mut new);
        // Read the queue before enqueueing: the estimate is for the work ahead of us.
        let stats = self
            .queue
            .stats(caller, &new.task_type, new.priority)
            .await?;
        let capable = self.capable_agents(caller, &new).await?;
        let task = self.queue.enqueue(caller, new).await?;
        Ok(SubmitResponse {
            task_id: task.id,
            status: task.status,
            estimated_completion: estimate_completion(task.created_at, &stats, capable),
        })
    }

    /// How many agents could take the task's first step now (the registry's matcher:
    /// capability, health, risk tier, `task.assign`): the estimate's parallelism.
    async fn capable_agents(&self, caller: &Caller, new: &NewTask) -> Result<u64, ApiError> {
        let flow = self
            .flows
            .select(&new.task_type, new.risk_tier.unwrap_or_default());
        let first_step = match flow {
            Some(f) if f.kind == FlowKind::Code => f.stages.plan.clone(),
            _ => new.task_type.clone(),
        };
        let query = MatchQuery {
            capabilities: vec![first_step],
            risk_tier: new.risk_tier,
            data_classification: new.data_classification,
            limit: Some(100),
            ..MatchQuery::default()
        };
        let found = self.agents.match_agents(caller, &query).await?;
        Ok(found.candidates.len() as u64)
    }

    /// Names the task's flow in its metadata, and asks for a human's approval first if
    /// the flow says so. The queue honours `requireApproval` whoever sets it: asking
    /// for more scrutiny needs no privilege.
    fn assign_flow(&self, new: &mut NewTask) {
        let risk = new.risk_tier.unwrap_or_default();
        let Some(flow) = self.flows.select(&new.task_type, risk) else {
            return;
        };
        let metadata = new.metadata.get_or_insert_with(|| json!({}));
        let Some(fields) = metadata.as_object_mut() else {
            return;
        };
        fields.insert("flow".into(), json!(flow.name));
        if flow.approval {
            fields.insert(
                "requireApproval".into(),
                json!({
                    "reason": format!("flow {} requires a human's approval for {risk}-risk tasks", flow.name),
                    "approver": flow.approver,
                }),
            );
        }
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Task, ApiError> {
        self.queue.get(caller, id).await
    }

    pub async fn list(
        &self,
        caller: &Caller,
        query: TaskListQuery,
    ) -> Result<Page<Task>, ApiError> {
        self.queue.list(caller, query).await
    }

    pub async fn cancel(&self, caller: &Caller, id: Uuid) -> Result<Task, ApiError> {
        self.queue.cancel(caller, id).await
    }

    /// Tasks a policy escalated to a human, each with the policy's reason and who
    /// should decide (read from the task's `task_needs_approval` event).
    pub async fn approvals(
        &self,
        caller: &Caller,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<PendingApproval>, ApiError> {
        let query = TaskListQuery {
            status: Some(TaskStatus::NeedsApproval),
            limit,
            cursor,
            ..TaskListQuery::default()
        };
        let page = self.queue.list(caller, query).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for task in page.items {
            let events = self.ctx.store.provenance.events_for_task(task.id).await?;
            let escalation = events
                .iter()
                .rev()
                .find(|e| e.action == "task_needs_approval")
                .map(|e| e.payload.clone())
                .unwrap_or_default();
            let text = |k: &str| {
                escalation
                    .get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            items.push(PendingApproval {
                reason: text("reason"),
                escalation_target: text("escalationTarget"),
                decision_id: text("decisionId"),
                task,
            });
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    pub async fn resolve_approval(
        &self,
        caller: &Caller,
        id: Uuid,
        approve: bool,
        note: Option<String>,
    ) -> Result<Task, ApiError> {
        self.queue.resolve_approval(caller, id, approve, note).await
    }
}

/// A task waiting for a human, with why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    #[serde(flatten)]
    pub task: Task,
    pub reason: Option<String>,
    pub escalation_target: Option<String>,
    pub decision_id: Option<String>,
}

/// When a task submitted at `now` should finish: the tasks ahead of it drain through the
/// active agents in waves of one mean duration each, then it runs for one more.
pub fn estimate_completion(now: Timestamp, stats: &QueueStats, active_agents: u64) -> Timestamp {
    let mean_ms = stats
        .mean_duration_ms
        .filter(|m| m.is_finite() && *m >= 0.0)
        .unwrap_or(DEFAULT_TASK_DURATION.as_millis() as f64);
    let workers = active_agents.max(1) as f64;
    let waves = (stats.ahead as f64 / workers).ceil() + 1.0;
    let total_ms = (mean_ms * waves).min(i64::MAX as f64 / 2.0);
    now + Duration::milliseconds(total_ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ahead: u64, mean: Option<f64>) -> QueueStats {
        QueueStats {
            ahead,
            mean_duration_ms: mean,
            samples: u64::from(mean.is_some()),
        }
    }

    #[test]
    fn estimate_grows_with_the_queue_and_shrinks_with_agents() {
        let now = mesh_types::time::now();
        let empty = estimate_completion(now, &stats(0, Some(1000.0)), 1);
        assert_eq!(empty - now, Duration::milliseconds(1000));
        let busy = estimate_completion(now, &stats(4, Some(1000.0)), 1);
        assert_eq!(busy - now, Duration::milliseconds(5000));
        let parallel = estimate_completion(now, &stats(4, Some(1000.0)), 4);
        assert_eq!(parallel - now, Duration::milliseconds(2000));
        let unknown = estimate_completion(now, &stats(0, None), 0);
        assert_eq!(unknown - now, Duration::seconds(30));
    }
}
