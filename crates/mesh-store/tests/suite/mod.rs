//! The conformance suite proper: plain async functions over a [`Harness`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_lifecycle;
mod batches;
mod budget;
mod bus;
mod checkpoints;
mod harness;
mod mcp;
mod projection;
mod provenance;
pub mod queue;
mod registry;
mod tasks;

pub use agent_lifecycle::*;
pub use batches::*;
pub use budget::*;
pub use bus::*;
pub use checkpoints::*;
pub use harness::{Harness, postgres_harness, sqlite_harness};
pub use mcp::*;
pub use projection::*;
pub use provenance::*;
pub use queue::*;
pub use registry::*;
pub use tasks::*;

use mesh_types::EventDraft;

pub fn event(action: &str) -> EventDraft {
    EventDraft::new(action, "conformance", "test", None)
}
