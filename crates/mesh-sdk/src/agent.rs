use async_trait::async_trait;
use mesh_types::{NewAgent, NewTask, Task};
use serde_json::Value;
use uuid::Uuid;

/// What a task handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub agent_id: Uuid,
    pub agent_name: String,
    /// 1 on the first attempt; higher when earlier attempts failed or were lost.
    pub attempt: i32,
}

/// How a handled task ends.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Done, with this output.
    Complete(Value),
    /// Done, with this output, after handing work on as subtasks (they get this task as
    /// their parent and are queued in the same mesh).
    Spawn {
        subtasks: Vec<NewTask>,
        output: Value,
    },
}

/// A failed attempt. Retryable failures go back to the queue with backoff; the others
/// are dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    pub message: String,
    pub retryable: bool,
}

impl AgentError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether the agent can take work; an unhealthy agent stops heartbeating, so the
/// registry marks it `unhealthy` and the queue routes around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

/// An agent of the mesh. Only `descriptor` and `on_task_received` are required.
#[async_trait]
pub trait BaseAgent: Send + Sync + 'static {
    /// The registration: name, version, role, risk tier, capabilities, model preference.
    fn descriptor(&self) -> NewAgent;

    /// Runs one task. Called concurrently for different tasks, up to the worker's
    /// concurrency; the lease is extended in the background while it runs.
    async fn on_task_received(
        &self,
        ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError>;

    /// Resumes a task whose subtasks have all finished (completed, failed or cancelled).
    /// `parent.output` is what the task kept when it spawned them. By default the task
    /// completes with that and every subtask's status and output.
    async fn on_subtask_result(
        &self,
        _ctx: &TaskContext,
        parent: &Task,
        subtasks: &[Task],
    ) -> Result<TaskOutcome, AgentError> {
        let results: Vec<Value> = subtasks
            .iter()
            .map(|t| serde_json::json!({"id": t.id, "type": t.task_type, "status": t.status, "output": t.output}))
            .collect();
        Ok(TaskOutcome::Complete(
            serde_json::json!({"output": parent.output, "subtasks": results}),
        ))
    }

    /// Told of every failed attempt before it is reported.
    async fn on_error(&self, _ctx: &TaskContext, _task: &Task, _error: &AgentError) {}

    /// Called once when the worker shuts down, after in-flight tasks finish.
    async fn on_retire(&self) {}

    async fn health_check(&self) -> Health {
        Health::Healthy
    }
}
