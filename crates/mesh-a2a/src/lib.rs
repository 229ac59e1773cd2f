//! The A2A protocol, v1.0, as far as the mesh speaks it: Agent Cards (parsed and
//! checked against the specification's required fields), the data model of the
//! JSON-RPC binding (`Message`, `Part`, `Task`, `TaskState`, `Artifact`), its envelope
//! and error codes, the streaming events, a client for `SendMessage` / `GetTask` /
//! `CancelTask`, and the
//! mapping between A2A tasks and mesh tasks.
//!
//! This crate knows nothing of the mesh's services: it depends only on `mesh-types`
//! and HTTP, so the agent registry (import, probes), the orchestrator (serving cards
//! and the JSON-RPC endpoint) and the SDK (remote agents as workers) can all use it.
//! It must never depend on `mesh-sdk`, `mesh-registry` or another service crate.
//!
//! JSON follows the specification's ProtoJSON rules: camelCase fields, enums as their
//! SCREAMING_SNAKE_CASE names, unknown fields ignored.

mod card;
mod client;
pub mod jsonrpc;
pub mod mesh;
mod model;

pub use card::{
    AgentCapabilities, AgentCard, AgentInterface, AgentProvider, AgentSkill, CardError,
    JSONRPC_BINDING, PROTOCOL_VERSION, WELL_KNOWN_CARD_PATH, card_url, parse_card,
};
pub use client::{A2aClient, A2aError, MAX_REPLY_BYTES, fetch_card};
pub use model::{
    Artifact, CancelTaskRequest, GetTaskRequest, Message, Part, Role, SendMessageConfiguration,
    SendMessageRequest, SendMessageResponse, StreamResponse, SubscribeToTaskRequest, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatus, TaskStatusUpdateEvent,
};
