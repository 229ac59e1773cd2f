use crate::export::ExportFormat;
use crate::{ProvenanceService, TaskProvenance, VerifyReport};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, IdPath, QueryParams, ServiceName};
use mesh_types::{Permission, ProvenanceEvent};
use serde::Deserialize;
use std::sync::Arc;

pub fn router(core: Arc<ProvenanceService>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/provenance/task/{id}",
            get(task).route_layer(auth.require(Permission::ProvenanceRead)),
        )
        .route(
            "/api/v1/provenance/events",
            get(events).route_layer(auth.require(Permission::ProvenanceRead)),
        )
        .route(
            "/api/v1/provenance/export",
            get(export).route_layer(auth.require(Permission::ProvenanceRead)),
        )
        .route(
            "/api/v1/provenance/task/{id}/export",
            get(export_task).route_layer(auth.require(Permission::ProvenanceRead)),
        )
        .route(
            "/api/v1/provenance/verify",
            get(verify).route_layer(auth.require(Permission::ProvenanceVerify)),
        )
        .with_state(core.clone())
        .merge(crate::proof_routes::router(core.clone()))
        .merge(crate::archive_routes::router(core.clone()));
    let op = |method, path, summary, permission, success| {
        Op::guarded(method, path, summary, permission, None, success)
    };
    let doc = document(
        ServiceName::Provenance,
        &[
            op(
                "get",
                "/api/v1/provenance/task/{id}",
                "A task's timeline and provenance graph (seed labels and relationships)",
                Permission::ProvenanceRead,
                (200, "{taskId, timeline, graph: {nodes, edges}}"),
            ),
            op(
                "get",
                "/api/v1/provenance/events",
                "Events in log order (after, limit)",
                Permission::ProvenanceRead,
                (200, "Events"),
            ),
            op(
                "get",
                "/api/v1/provenance/export",
                "Events as NDJSON, one per line (after, limit ≤ 10000); the data.export policy decides",
                Permission::ProvenanceRead,
                (200, "application/x-ndjson"),
            ),
            op(
                "get",
                "/api/v1/provenance/task/{id}/export",
                "A task tree's provenance as W3C PROV-JSON, openCypher MERGE statements or JSON lines (format=prov-json|cypher|jsonl); the data.export policy decides",
                Permission::ProvenanceRead,
                (200, "application/json | text/plain | application/x-ndjson"),
            ),
            op(
                "get",
                "/api/v1/provenance/verify",
                "Verify the hash chain against its head and the Merkle roots and signatures of the stored checkpoints (409 when broken)",
                Permission::ProvenanceVerify,
                (200, "Verification report"),
            ),
        ]
        .into_iter()
        .chain(crate::proof_routes::ops())
        .chain(crate::archive_routes::ops())
        .collect::<Vec<_>>(),
    );
    mesh_service::server::finish_router(core.context(), api, doc)
}

async fn task(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<TaskProvenance>, ApiError> {
    Ok(Json(core.task(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn events(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<Vec<ProvenanceEvent>>, ApiError> {
    Ok(Json(core.events_after(q.after, q.limit).await?))
}

async fn export(
    State(core): State<Arc<ProvenanceService>>,
    caller: Caller,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Response, ApiError> {
    let events = core.export(&caller.principal, q.after, q.limit).await?;
    let mut body = String::new();
    for event in &events {
        body.push_str(
            &serde_json::to_string(event).map_err(|e| ApiError::internal(e.to_string()))?,
        );
        body.push('\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: String,
}

async fn export_task(
    State(core): State<Arc<ProvenanceService>>,
    caller: Caller,
    IdPath(id): IdPath,
    QueryParams(q): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let format: ExportFormat = q
        .format
        .parse()
        .map_err(|e: String| ApiError::invalid("format", e))?;
    let body = core.export_task(&caller.principal, id, format).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response())
}

/// 200 with the report when intact; 409 with the same report when the chain is broken,
/// so a monitoring probe can alert on the status alone.
async fn verify(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let report: VerifyReport = core.verify().await?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(report)).into_response())
}
