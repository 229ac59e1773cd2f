//! Attribute names: the OpenTelemetry GenAI semantic conventions where they say what a
//! value means, `mesh.*` for what only the mesh has (its task ids and the ids that tie
//! a span to its provenance event).

pub const OPERATION: &str = "gen_ai.operation.name";
pub const PROVIDER: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const RESPONSE_ID: &str = "gen_ai.response.id";
pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const AGENT_ID: &str = "gen_ai.agent.id";
pub const AGENT_NAME: &str = "gen_ai.agent.name";
pub const TOOL_NAME: &str = "gen_ai.tool.name";
pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
pub const TOOL_TYPE: &str = "gen_ai.tool.type";
pub const ERROR_TYPE: &str = "error.type";

/// The task the work was for.
pub const TASK_ID: &str = "mesh.task.id";
pub const TASK_TYPE: &str = "mesh.task.type";
pub const TASK_ATTEMPT: &str = "mesh.task.attempt";
/// The `action` of the provenance event the operation left (`model_call`,
/// `model_call_failed`, `tool_call`, `policy_decision`, `task_assigned`).
pub const PROVENANCE_ACTION: &str = "mesh.provenance.action";
/// The id inside that event's payload that finds it: `modelCallId`, `toolCallId` or
/// `decisionId` (the log's own event ids are assigned at append, after the span).
pub const PROVENANCE_REF: &str = "mesh.provenance.ref";
pub const POLICY_POINT: &str = "mesh.policy.point";
pub const POLICY_ACTION: &str = "mesh.policy.action";
pub const POLICY_REASON: &str = "mesh.policy.reason";
pub const PROVIDER_CONFIG: &str = "mesh.provider";

/// Operation names (`gen_ai.operation.name`).
pub const CHAT: &str = "chat";
pub const EXECUTE_TOOL: &str = "execute_tool";
pub const INVOKE_AGENT: &str = "invoke_agent";
pub const APPLY_GUARDRAIL: &str = "apply_guardrail";
