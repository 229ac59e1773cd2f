//! The mesh's state behind small capability traits, with two real backends.
//!
//! Each trait covers one query family (tasks, agents, tools, API keys, the provenance
//! log). Every method that changes state takes the provenance events describing the
//! change and appends them to the hash-chained log in the same transaction, under a
//! lock on the log's head, so the log can neither miss a change nor fork. The backends
//! are SQLite in WAL mode (embedded default) and PostgreSQL; one conformance suite in
//! `tests/conformance.rs` runs against both.
//!
//! This crate must never hold HTTP types or business rules: it stores and returns.

mod budget;
mod bus;
mod checkpoint;
mod columns;
mod error;
mod paging;
pub mod postgres;
mod projection;
mod queue;
pub mod sqlite;
mod traits;
mod url;

pub use budget::{BudgetScope, BudgetStore, BudgetUsage, Spend};
pub use bus::{BusStore, GroupRead, Outgoing};
pub use error::StoreError;
pub use projection::ProjectionStore;
pub use queue::{ClaimGate, ClaimOutcome, Completion, GateVerdict, QueueStore, RETRY_ELSEWHERE_MS};
pub use traits::*;
pub use url::StoreUrl;

use std::path::Path;
use std::sync::Arc;

/// Every capability of one backend, shared by the services of a process.
#[derive(Clone)]
pub struct Store {
    pub tasks: Arc<dyn TaskStore>,
    pub queue: Arc<dyn QueueStore>,
    pub bus: Arc<dyn BusStore>,
    pub agents: Arc<dyn AgentStore>,
    pub tools: Arc<dyn ToolStore>,
    pub mcp_servers: Arc<dyn McpServerStore>,
    pub keys: Arc<dyn KeyStore>,
    pub provenance: Arc<dyn ProvenanceLog>,
    pub budgets: Arc<dyn BudgetStore>,
    pub projections: Arc<dyn ProjectionStore>,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The URL with any password removed, for logs and errors.
    pub display_url: String,
}

impl Store {
    fn from_backend<B>(backend: Arc<B>, name: &'static str, display_url: String) -> Self
    where
        B: TaskStore
            + QueueStore
            + BusStore
            + AgentStore
            + ToolStore
            + McpServerStore
            + KeyStore
            + ProvenanceLog
            + BudgetStore
            + ProjectionStore
            + 'static,
    {
        Store {
            tasks: backend.clone(),
            queue: backend.clone(),
            bus: backend.clone(),
            agents: backend.clone(),
            tools: backend.clone(),
            mcp_servers: backend.clone(),
            keys: backend.clone(),
            budgets: backend.clone(),
            projections: backend.clone(),
            provenance: backend,
            backend: name,
            display_url,
        }
    }
}

/// Opens the store named by `url`, running pending migrations. Relative SQLite paths
/// are resolved against the current directory; `None` means `sqlite://{data_dir}/mesh.db`.
pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Store> {
    let url = match url {
        Some(url) => StoreUrl::parse(url)?,
        None => StoreUrl::default_for(data_dir),
    };
    let display = url.display();
    match url {
        StoreUrl::Sqlite(options) => {
            let backend = sqlite::SqliteStore::open(options).await?;
            Ok(Store::from_backend(Arc::new(backend), "sqlite", display))
        }
        StoreUrl::Postgres(url) => {
            let backend = postgres::PgStore::connect(&url).await?;
            Ok(Store::from_backend(Arc::new(backend), "postgres", display))
        }
    }
}

/// Events read per round trip while verifying.
const VERIFY_BATCH: u32 = 1_000;

/// Reads the whole provenance log in order and checks its hash chain against the head.
/// The outer error is a store failure; the inner one is the first breach of the chain.
pub async fn verify_chain(
    log: &dyn ProvenanceLog,
) -> Result<std::result::Result<i64, mesh_types::provenance::Breach>> {
    // Read the head first: events appended while we read cannot make an intact log
    // look truncated, only longer than the head, which we tolerate below.
    let head = log.head().await?;
    let mut verifier = mesh_types::provenance::ChainVerifier::new();
    let mut checkpoints = checkpoint::CheckpointCheck::load(log).await?;
    let mut after = 0;
    while after < head.count && !verifier.is_broken() {
        let batch = log.events_after(after, VERIFY_BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for event in batch.iter().take_while(|e| e.seq <= head.count) {
            verifier.push(event);
            if verifier.is_broken() {
                break;
            }
            if let Some(breach) = checkpoints.push(event) {
                return Ok(Err(breach));
            }
        }
        if !verifier.is_broken()
            && let Some(breach) = checkpoints.check_subtrees(log).await?
        {
            return Ok(Err(breach));
        }
    }
    if !verifier.is_broken()
        && let Some(breach) = checkpoints.finish(verifier.checked())
    {
        return Ok(Err(breach));
    }
    // Anything stored past the head's count must have been written without the head.
    if !verifier.is_broken() {
        let beyond = log.events_after(head.count, 1).await?;
        let current = log.head().await?;
        if let Some(extra) = beyond.first()
            && current.count < extra.seq
        {
            return Ok(Err(mesh_types::provenance::Breach {
                kind: mesh_types::provenance::BreachKind::HeadMismatch,
                event_id: Some(extra.id),
                seq: Some(extra.seq),
                message: format!(
                    "event {} (seq {}) lies beyond the head, which records {} events: it was inserted",
                    extra.id, extra.seq, current.count
                ),
            }));
        }
    }
    Ok(verifier.finish(&head))
}
