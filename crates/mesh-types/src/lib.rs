//! Seed SDK types for Agentic Mesh.
//!
//! These are the values that cross every boundary of the mesh: tasks, agents, tools,
//! principals and provenance events, serialised as the seed's camelCase JSON. The crate
//! performs no IO; hashing of provenance events lives here because it is a pure function
//! that every store backend and every verifier must compute identically.

pub mod agent;
pub mod auth;
pub mod bus;
pub mod canonical;
pub mod checkpoint;
pub mod enums;
pub mod matching;
pub mod mcp;
pub mod merkle;
pub mod page;
pub mod proof;
pub mod provenance;
pub mod queue;
pub mod task;
pub mod time;
pub mod tool;
pub mod validate;

pub use agent::{Agent, AgentCostProfile, ModelPreference, NewAgent};
pub use auth::{Permission, Principal, Role};
pub use enums::{
    AgentRole, AgentStatus, DataClassification, McpServerStatus, PolicyAction, RiskTier,
    TaskStatus, ToolStatus,
};
pub use mcp::{McpServer, McpTransport, NewMcpServer};
pub use page::{Page, PageRequest};
pub use provenance::{ChainHead, EventDraft, PreparedDraft, ProvenanceEvent, ServerSealed};
pub use task::{NewTask, Task};
pub use tool::{NewTool, Tool, ToolBackend, ToolCostModel};
