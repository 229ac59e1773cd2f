//! The agent SDK: a [`BaseAgent`] trait mirroring the seed's agent lifecycle, and a
//! [`Worker`] runtime that registers the agent, heartbeats, claims tasks of its types,
//! runs them with their leases kept alive, reports results or subtasks, and retires on
//! shutdown.
//!
//! Remote A2A agents take part too: [`A2aRemoteAgent`] forwards the tasks leased to an
//! imported agent over A2A, and [`spawn_a2a_supervisor`] keeps one such worker running
//! per imported agent.
//!
//! The same agent code runs in-process (a [`MeshClient`] over the service cores, as in
//! `mesh up`) or in its own process speaking HTTP to a remote mesh. The SDK never talks
//! to a store; it only uses the services' clients.

mod a2a_remote;
mod a2a_supervisor;
mod agent;
mod client;
mod completions;
mod spans;
mod worker;

pub use a2a_remote::A2aRemoteAgent;
pub use a2a_supervisor::spawn_a2a_supervisor;
pub use agent::{AgentError, BaseAgent, Health, TaskContext, TaskOutcome};
pub use client::MeshClient;
pub use worker::{Worker, WorkerOptions, WorkerReport};
