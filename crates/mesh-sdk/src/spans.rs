//! The `invoke_agent {agent}` span of one task attempt (OpenTelemetry GenAI
//! conventions). The handler runs inside it, so the model and tool calls the agent
//! makes — in this process, or over HTTP with `traceparent` — are its children.

use crate::agent::{AgentError, TaskOutcome};
use mesh_telemetry::{Kind, Span, SpanContext, semconv};
use mesh_types::{Agent, Task};

/// `service.name` of agent spans: agents run wherever workers run, not in a service.
const SERVICE: &str = "mesh-agents";

/// Subtask metadata: the W3C `traceparent` of the attempt that spawned it.
pub(crate) const SPAWNED_BY: &str = "traceparent";

pub(crate) fn open(agent: &Agent, task: &Task, attempt: i32) -> Span {
    // One trace per task: its id (or its parent's, for a flow's subtasks) is the trace
    // id, so every attempt of a task and of the subtasks it spawned shows as one trace,
    // found in a tracing UI by the task id. In-process agent work: INTERNAL, as the
    // conventions say for agents run locally.
    let trace = *task.parent_id.unwrap_or(task.id).as_bytes();
    // A subtask carries the span of the attempt that spawned it, and nests under it.
    let spawned_by = task
        .metadata
        .get(SPAWNED_BY)
        .and_then(|v| v.as_str())
        .and_then(SpanContext::parse);
    let mut span = Span::start_after(
        SERVICE,
        semconv::INVOKE_AGENT,
        &agent.name,
        Kind::Internal,
        Some(trace),
        spawned_by,
    );
    if !span.is_recording() {
        return span;
    }
    span.set(semconv::AGENT_ID, agent.id.to_string());
    span.set(semconv::AGENT_NAME, agent.name.as_str());
    span.set(semconv::TASK_ID, task.id.to_string());
    span.set(semconv::TASK_TYPE, task.task_type.as_str());
    span.set(semconv::TASK_ATTEMPT, attempt);
    // The attempt's lease is recorded as `task_assigned` for this task and attempt.
    span.set(semconv::PROVENANCE_ACTION, "task_assigned");
    span
}

pub(crate) fn outcome(span: &mut Span, result: &Result<TaskOutcome, AgentError>) {
    match result {
        Ok(TaskOutcome::Complete(_)) => span.set("mesh.task.outcome", "completed"),
        Ok(TaskOutcome::Spawn { subtasks, .. }) => {
            span.set("mesh.task.outcome", "spawned");
            span.set("mesh.task.subtasks", subtasks.len() as u64);
        }
        Err(e) => {
            span.set("mesh.task.outcome", "failed");
            let kind = if e.retryable { "retryable" } else { "fatal" };
            span.fail(kind, &e.message);
        }
    }
}
