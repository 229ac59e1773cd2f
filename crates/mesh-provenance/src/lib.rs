//! provenance-service (port 5003): reads the hash-chained provenance log.
//!
//! Every service appends to the log inside its own transactions; this service only
//! reads it: a task's timeline, the seed's provenance graph projected from the events
//! (`Task`, `Agent`, `ModelCall`, `ToolCall`, `PolicyDecision` nodes; `ASSIGNED_TO`,
//! `SPAWNED`, `INVOKED`, `CALLED`, `SUBJECT_TO`, `PRODUCED`, `REVIEWED_BY` edges), and
//! verification of the chain. It must never write to the log or any other table.

mod graph;
mod routes;

pub use graph::{Edge, Graph, Node, TaskProvenance, project_task};
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
        Arc::new(Self { ctx, policy })
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The timeline and graph of a task and, through `subtask_created` events, of the
    /// subtasks it spawned.
    pub async fn task(&self, task_id: Uuid) -> Result<TaskProvenance, ApiError> {
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
        Ok(project_task(task_id, &events))
    }

    pub async fn verify(&self) -> Result<VerifyReport, ApiError> {
        let verdict = mesh_store::verify_chain(self.ctx.store.provenance.as_ref()).await?;
        let head = self.ctx.store.provenance.head().await?;
        Ok(match verdict {
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
        })
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
