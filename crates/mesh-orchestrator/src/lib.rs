//! mesh-orchestrator (port 5000): the front door for tasks and the home of API keys.
//!
//! The orchestrator owns no task rows: it estimates completion from the task queue's
//! statistics and the agent registry's capacity, and creates, reads and cancels tasks
//! through the queue's client. In split mode both clients speak HTTP with the caller's
//! key, so every hop is authorised and recorded as the caller.

mod core;
mod keys_routes;
mod routes;

pub use core::{DEFAULT_TASK_DURATION, Orchestrator, SubmitResponse, estimate_completion};
pub use routes::router;
