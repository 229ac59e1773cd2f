//! provenance-service (port 5003): reads the hash-chained provenance log.
//!
//! Every service appends to the log inside its own transactions; this service only
//! reads it: a task's timeline, the seed's provenance graph projected from the events
//! (`Task`, `Agent`, `ModelCall`, `ToolCall`, `PolicyDecision` nodes; `ASSIGNED_TO`,
//! `SPAWNED`, `INVOKED`, `CALLED`, `SUBJECT_TO`, `PRODUCED`, `REVIEWED_BY` edges), and
//! verification of the chain; exports of a task tree (`export`: PROV-JSON, openCypher,
//! JSON lines) and, when configured, the live graph projection (`live`). It never
//! writes a change to the log — only its `data.export` decisions — and its tables are
//! the live projection's cursor and the Merkle tree's signed checkpoints
//! (`provenance_checkpoints`: `checkpointer`, `tree`; the leaves are the events' hashes).

mod archive_routes;
pub mod checkpointer;
pub mod export;
mod graph;
pub mod live;
mod proof_routes;
mod routes;
pub mod signing;
pub mod tree;
mod verifiable;

pub use graph::{Edge, Graph, Node, TaskProvenance, project_events, project_task};
pub use routes::router;

use mesh_policy::{Enforcer, Point, inputs};
use mesh_service::{ApiError, ServiceContext};
use mesh_types::Principal;
use mesh_types::provenance::Breach;
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

/// How deep `SPAWNED` chains are followed when collecting a task's subgraph.
pub const MAX_SUBTASK_DEPTH: usize = 16;

pub struct ProvenanceService {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    /// The checkpoint signing key, once loaded (`verifiable.rs`).
    signer: std::sync::OnceLock<Arc<mesh_types::checkpoint::NoteSigner>>,
    /// The payload archive, when archiving is on (`archive_routes.rs`).
    archive: std::sync::OnceLock<Arc<mesh_archive::Archive>>,
}

/// Most events one export returns; page with `after`.
pub const MAX_EXPORT: u32 = 10_000;

/// Outcome of verifying the whole chain.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub ok: bool,
    pub events: i64,
    pub head: mesh_types::provenance::ChainHead,
    pub breach: Option<Breach>,
}

impl ProvenanceService {
    pub fn new(ctx: ServiceContext, policy: Arc<Enforcer>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            policy,
            signer: std::sync::OnceLock::new(),
            archive: std::sync::OnceLock::new(),
        })
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The timeline and graph of a task and, through `subtask_created` events, of the
    /// subtasks it spawned.
    pub async fn task(&self, task_id: Uuid) -> Result<TaskProvenance, ApiError> {
        let events = self.task_events(task_id).await?;
        Ok(project_task(task_id, &events))
    }

    /// The events of a task's tree (the task and the subtasks it spawned), in log order;
    /// 404 when none are recorded.
    pub async fn task_events(
        &self,
        task_id: Uuid,
    ) -> Result<Vec<mesh_types::ProvenanceEvent>, ApiError> {
        let mut events = Vec::new();
        let mut frontier = vec![(task_id, 0usize)];
        let mut seen = std::collections::HashSet::new();
        while let Some((id, depth)) = frontier.pop() {
            if !seen.insert(id) {
                continue;
            }
            let batch = self.ctx.store.provenance.events_for_task(id).await?;
            if depth < MAX_SUBTASK_DEPTH {
                for e in batch.iter().filter(|e| e.action == "subtask_created") {
                    if let Some(child) = e
                        .payload
                        .get("subtaskId")
                        .and_then(|v| v.as_str())
                        .and_then(|s| s.parse().ok())
                    {
                        frontier.push((child, depth + 1));
                    }
                }
            }
            events.extend(batch);
        }
        if events.is_empty() {
            return Err(ApiError::not_found(format!(
                "no provenance recorded for task {task_id}"
            )));
        }
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    /// One task's provenance in an export format, behind the `data.export` policy
    /// point (as `export` is; its decision is logged either way).
    pub async fn export_task(
        &self,
        caller: &Principal,
        task_id: Uuid,
        format: export::ExportFormat,
    ) -> Result<String, ApiError> {
        self.admit_export(
            caller,
            Some(task_id.to_string()),
            serde_json::json!({"taskId": task_id, "format": format.as_str()}),
        )
        .await?;
        let events = self.task_events(task_id).await?;
        let p = project_task(task_id, &events);
        export::render(format, &p, &events).map_err(|e| ApiError::internal(e.to_string()))
    }

    async fn admit_export(
        &self,
        caller: &Principal,
        id: Option<String>,
        attributes: serde_json::Value,
    ) -> Result<(), ApiError> {
        let resource = mesh_policy::Resource {
            kind: Some("provenance".into()),
            id,
            classification: None,
            attributes,
        };
        let ctx = inputs::context(inputs::principal(caller), resource, self.ctx.name.as_str());
        let verdict = self
            .policy
            .admit(Point::DataExport, ctx, &inputs::principal_actor(caller))
            .await?;
        self.ctx
            .store
            .provenance
            .append(vec![verdict.audit])
            .await?;
        Ok(())
    }

    pub async fn verify(&self) -> Result<VerifyReport, ApiError> {
        let verdict = mesh_store::verify_chain(self.ctx.store.provenance.as_ref()).await?;
        let head = self.ctx.store.provenance.head().await?;
        let mut report = match verdict {
            Ok(events) => VerifyReport {
                ok: true,
                events,
                head,
                breach: None,
            },
            Err(breach) => VerifyReport {
                ok: false,
                events: head.count,
                head,
                breach: Some(breach),
            },
        };
        if report.ok {
            self.verify_signatures(&mut report).await?;
        }
        Ok(report)
    }

    /// Exports raw events (the `data.export` policy point decides first; the decision
    /// is logged either way).
    pub async fn export(
        &self,
        caller: &Principal,
        after: i64,
        limit: u32,
    ) -> Result<Vec<mesh_types::ProvenanceEvent>, ApiError> {
        let resource = mesh_policy::Resource {
            kind: Some("provenance".into()),
            id: None,
            classification: None,
            attributes: serde_json::json!({"after": after, "limit": limit, "format": "ndjson"}),
        };
        let ctx = inputs::context(inputs::principal(caller), resource, self.ctx.name.as_str());
        let verdict = self
            .policy
            .admit(Point::DataExport, ctx, &inputs::principal_actor(caller))
            .await?;
        self.ctx
            .store
            .provenance
            .append(vec![verdict.audit])
            .await?;
        Ok(self
            .ctx
            .store
            .provenance
            .events_after(after, limit.clamp(1, MAX_EXPORT))
            .await?)
    }

    pub async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<mesh_types::ProvenanceEvent>, ApiError> {
        Ok(self
            .ctx
            .store
            .provenance
            .events_after(after, limit.clamp(1, 1000))
            .await?)
    }
}
