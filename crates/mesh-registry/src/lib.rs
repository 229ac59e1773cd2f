//! agent-registry (port 5004) and tool-registry (port 5005).
//!
//! The agent registry owns the `agents` table: registration, discovery, heartbeats and
//! the sweep that marks silent agents unhealthy, and retirement. The tool registry owns
//! the `tools` table and refuses tools whose input or output schema is not valid JSON
//! Schema, and proxies tool invocations (`tool.call` and `egress` policy points), each
//! recorded as a `ToolCall`. The tool registry reads the agents table only to know the
//! calling agent's risk tier.

mod agent_client;
mod agents;
mod agents_routes;
mod invoke;
mod secrets;
mod tools;
mod tools_routes;

pub use agent_client::AgentRegistryClient;
pub use agents::{AgentListQuery, AgentRegistry, spawn_heartbeat_sweeper};
pub use agents_routes::router as agent_router;
pub use invoke::{InvokeBody, InvokeReply, TOOL_TIMEOUT};
pub use secrets::SecretValue;
pub use tools::{ToolListQuery, ToolRegistry};
pub use tools_routes::router as tool_router;
