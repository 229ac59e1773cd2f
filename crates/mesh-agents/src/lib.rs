//! The mesh's built-in agents: a planner that splits a task into steps, a coder that
//! does one step, and a critic that approves or rejects the work. Each is an SDK
//! [`BaseAgent`](mesh_sdk::BaseAgent) whose thinking is a model call through the routing
//! gateway (so every call is routed, policy-checked, budgeted and recorded as the
//! agent's `ModelCall`), with its prompt from a file under `prompts/`.
//!
//! The coder reads the file it is to change through the tool registry's `file_read`
//! (a `ToolCall` like any other).
//!
//! They run inside `mesh up` or as `mesh worker` processes; the orchestrator's code
//! flow hands them subtasks of the types `plan`, `implement` and `review`.

mod builtin;
mod model;
mod parse;
mod prompts;
mod tools;

pub use builtin::{BuiltinAgent, BuiltinKind};
pub use model::ModelClient;
pub use parse::{Plan, PlanStep, Verdict, parse_plan, parse_verdict};
pub use prompts::Prompts;
pub use tools::ToolClient;
