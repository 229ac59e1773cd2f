//! The `execute_tool {tool}` span of a tool invocation (OpenTelemetry GenAI
//! conventions). The checks' policy decisions nest under it; once the `tool_call`
//! event is written, the span names its `toolCallId` (`gen_ai.tool.call.id`).

use crate::invoke::InvokeBody;
use mesh_telemetry::{Kind, Span, semconv};
use mesh_types::{Agent, Tool, ToolBackend};
use uuid::Uuid;

pub(crate) fn open(service: &str, tool: &Tool, body: &InvokeBody) -> Span {
    let mut span = Span::start(service, semconv::EXECUTE_TOOL, &tool.name, Kind::Internal);
    if !span.is_recording() {
        return span;
    }
    span.set(semconv::TOOL_NAME, tool.name.as_str());
    // The conventions' tool types: a function run here, an extension reached elsewhere.
    let (kind, backend) = match &tool.backend {
        ToolBackend::Builtin => ("function", "builtin"),
        ToolBackend::Http => ("extension", "http"),
        ToolBackend::Mcp { .. } => ("extension", "mcp"),
    };
    span.set(semconv::TOOL_TYPE, kind);
    span.set("mesh.tool.backend", backend);
    span.set("mesh.tool.id", tool.id.to_string());
    span.set(semconv::AGENT_ID, body.agent_id.to_string());
    span.set_opt(semconv::TASK_ID, body.task_id.map(|t| t.to_string()));
    span
}

/// The call went out and its `tool_call` event is in the log.
pub(crate) fn recorded(span: &mut Span, call_id: Uuid, agent: &Agent) {
    if !span.is_recording() {
        return;
    }
    span.set(semconv::TOOL_CALL_ID, call_id.to_string());
    span.set(semconv::PROVENANCE_ACTION, "tool_call");
    span.set(semconv::PROVENANCE_REF, call_id.to_string());
    span.set(semconv::AGENT_NAME, agent.name.as_str());
}
