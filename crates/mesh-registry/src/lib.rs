//! agent-registry (port 5004) and tool-registry (port 5005).
//!
//! The agent registry owns the `agents` table: registration, discovery, heartbeats and
//! the sweep that marks silent agents unhealthy, drains (retired once no lease is
//! held) and busy agents, retirement, capability matching (also behind the gateway's
//! `route/task`), and remote agents imported from A2A Agent Cards, whose health it
//! probes. It reads the `tasks` table only to count the leases each agent holds.
//!
//! The tool registry owns the `tools` and `mcp_servers` tables. It refuses tools whose
//! input or output schema is not valid JSON Schema, and invokes tools — HTTP endpoints,
//! its built-in `file_read`/`file_write`/`http_fetch`, and the tools of registered MCP
//! servers — after the same checks (schemas, rate limit, `tool.call` and `egress`
//! policy points, cost model), each call recorded as a `ToolCall`. It serves the mesh's
//! tools over MCP at `/mcp`. It reads the agents table only to know the calling agent
//! (and registers an agent for an MCP client through the agent registry's API).

mod a2a_import;
mod agent_client;
mod agents;
mod agents_routes;
mod builtin;
mod cost;
mod invoke;
mod lifecycle;
mod matching;
mod mcp;
mod probe;
mod secret_use;
mod secrets;
mod spans;
mod tools;
mod tools_routes;

pub use a2a_import::{ImportBody, skill_capabilities};
pub use agent_client::AgentRegistryClient;
pub use agents::{AgentListQuery, AgentRegistry, spawn_heartbeat_sweeper};
pub use agents_routes::router as agent_router;
pub use cost::{Cost, cost_of};
pub use invoke::{InvokeBody, InvokeReply, TOOL_TIMEOUT};
pub use matching::match_agents;
pub use mcp::{McpServerView, RegisteredServer, SkippedTool};
pub use probe::spawn_agent_prober;
pub use secrets::SecretValue;
pub use tools::{ToolListQuery, ToolRegistry, ToolsConfig};
pub use tools_routes::router as tool_router;
