use crate::StoreError;
use async_trait::async_trait;
use mesh_types::agent::{AgentFilter, AgentSummary};
use mesh_types::provenance::ChainHead;
use mesh_types::task::{QueueStats, TaskFilter};
use mesh_types::time::Timestamp;
use mesh_types::tool::ToolFilter;
use mesh_types::{
    Agent, EventDraft, McpServer, Page, PageRequest, ProvenanceEvent, Role, Task, Tool,
};
use std::collections::HashMap;
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, StoreError>;

/// Builds the provenance event for one row a bulk change touched.
pub type EventFor<T> = std::sync::Arc<dyn Fn(&T) -> EventDraft + Send + Sync>;

/// Builds the provenance events for one row a bulk change touched.
pub type EventsFor<T> = std::sync::Arc<dyn Fn(&T) -> Vec<EventDraft> + Send + Sync>;

#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task and returns it. A `parent_id` that names no task is
    /// `Invalid`. If the tenant already has a task with the same idempotency key, that
    /// task is returned instead and nothing is written.
    async fn insert_task(&self, task: &Task, audit: Vec<EventDraft>) -> Result<Task>;
    /// Stores several tasks in one transaction, all or none: the first task that cannot
    /// be stored fails the batch and nothing of it is written. Idempotency keys apply
    /// per task, as in [`TaskStore::insert_task`], within the batch too.
    async fn insert_tasks(&self, tasks: Vec<(Task, Vec<EventDraft>)>) -> Result<Vec<Task>>;
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;
    /// Newest first; the cursor is the id of the last task of the previous page.
    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> Result<Page<Task>>;
    /// Cancels a task and every unfinished descendant, returning the cancelled rows
    /// (the task itself first). `Conflict` if the task already finished.
    async fn cancel_task(
        &self,
        id: Uuid,
        now: Timestamp,
        event: EventFor<Task>,
    ) -> Result<Vec<Task>>;
    /// How much work waits ahead of a new task of this type and priority.
    async fn queue_stats(&self, task_type: &str, priority: i32) -> Result<QueueStats>;
}

#[async_trait]
pub trait AgentStore: Send + Sync {
    /// `Conflict` when the name is taken.
    async fn insert_agent(&self, agent: &Agent, audit: Vec<EventDraft>) -> Result<()>;
    async fn get_agent(&self, id: Uuid) -> Result<Option<Agent>>;
    async fn list_agents(&self, filter: &AgentFilter, page: &PageRequest) -> Result<Page<Agent>>;
    /// Records a heartbeat. An unhealthy agent becomes active again, and only then is
    /// `on_recovery` appended. `Conflict` for a retired agent.
    async fn heartbeat(&self, id: Uuid, now: Timestamp, on_recovery: EventDraft) -> Result<Agent>;
    /// `Conflict` when already retired.
    async fn retire_agent(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Agent>;
    /// Marks active or busy agents whose last sign of life is older than `cutoff` as
    /// unhealthy, one event each.
    async fn expire_heartbeats(
        &self,
        cutoff: Timestamp,
        event: EventFor<Agent>,
    ) -> Result<Vec<Agent>>;
    async fn agent_summary(&self) -> Result<AgentSummary>;
    /// Starts a drain: the agent is to take no new work. `audit` is written only when
    /// the drain starts (draining again changes nothing). `Conflict` when retired.
    async fn drain_agent(&self, id: Uuid, now: Timestamp, audit: Vec<EventDraft>) -> Result<Agent>;
    /// Retires every draining agent that holds no lease (no running task is leased to
    /// it), with `events` for each.
    async fn retire_drained(&self, events: EventsFor<Agent>) -> Result<Vec<Agent>>;
    /// Moves agents that declare a concurrency between `active` and `busy` by the leases
    /// they hold (busy at or above it), one event each; returns the changed agents.
    async fn balance_busy(&self, event: EventFor<Agent>) -> Result<Vec<Agent>>;
    /// How many leases (running tasks) each agent holds; agents holding none are absent.
    async fn agent_loads(&self) -> Result<HashMap<Uuid, u32>>;
    /// A failed health probe: an active or busy agent becomes unhealthy and `event` is
    /// appended; any other agent is left alone (`None`).
    async fn mark_unhealthy(&self, id: Uuid, event: EventDraft) -> Result<Option<Agent>>;
}

#[async_trait]
pub trait ToolStore: Send + Sync {
    /// `Conflict` when the name is taken.
    async fn insert_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<()>;
    async fn get_tool(&self, id: Uuid) -> Result<Option<Tool>>;
    async fn list_tools(&self, filter: &ToolFilter, page: &PageRequest) -> Result<Page<Tool>>;
    /// `Conflict` when already retired.
    async fn retire_tool(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Tool>;
    /// Replaces a tool's definition — everything but its id, name and registration
    /// time — for tools kept in step with their source (an MCP server), and returns it.
    /// `NotFound`; `Conflict` for a retired tool, since retirement is final.
    async fn update_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<Tool>;
}

#[async_trait]
pub trait McpServerStore: Send + Sync {
    /// Stores a server together with the tools it offers, all or nothing. `Conflict`
    /// when the server's name or a tool's name is taken.
    async fn insert_mcp_server(
        &self,
        server: &McpServer,
        tools: &[Tool],
        audit: Vec<EventDraft>,
    ) -> Result<()>;
    async fn get_mcp_server(&self, name: &str) -> Result<Option<McpServer>>;
    /// Every server, retired ones too, in registration order.
    async fn list_mcp_servers(&self) -> Result<Vec<McpServer>>;
    /// Retires the server and every tool of it that is not yet retired (one
    /// `tool_event` each). `NotFound`; `Conflict` when already retired.
    async fn retire_mcp_server(
        &self,
        name: &str,
        tool_event: EventFor<Tool>,
        audit: Vec<EventDraft>,
    ) -> Result<McpServer>;
}

/// An API key as stored: only its SHA-256 hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub key_hash: String,
    pub roles: Vec<Role>,
    pub tenant: String,
    #[serde(with = "mesh_types::time::rfc3339_micros")]
    pub created_at: Timestamp,
    pub revoked: bool,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<()>;
    /// Inserts the key only if no key exists yet; returns whether it did. Two
    /// processes starting on one empty store create one bootstrap key between them.
    async fn insert_first_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<bool>;
    /// The unrevoked key with this hash.
    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>>;
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// `NotFound` if no such key, `Conflict` if already revoked.
    async fn revoke_key(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<ApiKeyRecord>;
}

#[async_trait]
pub trait ProvenanceLog: Send + Sync {
    /// Appends events that accompany no other state change (e.g. denials).
    async fn append(&self, drafts: Vec<EventDraft>) -> Result<Vec<ProvenanceEvent>>;
    async fn head(&self) -> Result<ChainHead>;
    /// Up to `limit` events with `seq > after`, in order.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<ProvenanceEvent>>;
    /// Events of one kind (`policy_decision`, say) after `after`, in log order.
    async fn events_with_action(
        &self,
        action: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ProvenanceEvent>>;
    /// Every event on one task's timeline, in order.
    async fn events_for_task(&self, task_id: Uuid) -> Result<Vec<ProvenanceEvent>>;
    /// One event by id.
    async fn event(&self, id: Uuid) -> Result<Option<ProvenanceEvent>>;
    /// `(seq, hash)` of up to `limit` events with `seq > after`, in order: the Merkle
    /// leaves, without reading the events' bodies.
    async fn event_hashes(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>>;
    /// Stores a checkpoint unless one of that tree size exists; whether it was added.
    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<bool>;
    /// Up to `limit` checkpoints with `tree_size > after`, smallest first.
    async fn checkpoints_after(&self, after: i64, limit: u32) -> Result<Vec<StoredCheckpoint>>;
    /// The largest checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>>;
    /// Stores roots of perfect subtrees of the Merkle tree, keeping any already stored;
    /// returns those stored before with a different root (the log was rewritten).
    async fn add_subtrees(&self, subtrees: &[StoredSubtree]) -> Result<Vec<StoredSubtree>>;
    /// The stored roots at `level` with indices `from .. from + count`, in order; a
    /// subtree not stored (yet) is left out.
    async fn subtrees(&self, level: u32, from: u64, count: u64) -> Result<Vec<StoredSubtree>>;
}

/// The root of the perfect subtree over leaves `index * 2^level ..` of the log's
/// Merkle tree, kept so that proofs need not read every leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubtree {
    pub level: u32,
    pub index: u64,
    /// Hex.
    pub hash: String,
}

impl StoredSubtree {
    /// A perfect subtree and its root, as the stores keep them.
    pub fn new(subtree: mesh_types::merkle::Subtree, root: &mesh_types::merkle::Hash) -> Self {
        StoredSubtree {
            level: subtree.level,
            index: subtree.index,
            hash: hex::encode(root),
        }
    }
}

/// A subtree index as the stores keep it (a signed 64-bit integer).
pub(crate) fn subtree_index(index: u64) -> Result<i64> {
    i64::try_from(index)
        .map_err(|_| StoreError::invalid("subtree", format!("index {index} is too large")))
}

/// A signed tree head of the provenance log (see `mesh_types::checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCheckpoint {
    pub tree_size: i64,
    /// The Merkle root, hex.
    pub root_hash: String,
    /// The C2SP signed note.
    pub note: String,
}
