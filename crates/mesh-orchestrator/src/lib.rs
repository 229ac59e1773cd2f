//! mesh-orchestrator (port 5000): the front door for tasks and the home of API keys.
//!
//! The orchestrator owns no task rows: it estimates completion from the task queue's
//! statistics and the agent registry's capacity, and creates, reads and cancels tasks
//! through the queue's client. In split mode both clients speak HTTP with the caller's
//! key, so every hop is authorised and recorded as the caller.
//!
//! Flows (`flows`) decide what happens to a submitted task: which approval it needs,
//! and for staged flows, the plan → implement → review run by [`flows::FlowRunner`], an
//! SDK agent each orchestrator process runs; the flow's state lives in the queue, so
//! no orchestrator is a single point of coordination.
//!
//! Every agent is also served over A2A here (`a2a`): its Agent Card, and a JSON-RPC
//! endpoint whose messages become mesh tasks. The card reads the `agents` table.

mod a2a;
mod a2a_routes;
mod a2a_stream;
mod core;
pub mod flows;
mod keys_routes;
mod routes;

pub use core::{DEFAULT_TASK_DURATION, Orchestrator, SubmitResponse, estimate_completion};
pub use routes::router;
