//! Routes of the verifiable log: the public key, inclusion and consistency proofs.

use crate::ProvenanceService;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mesh_service::openapi::Op;
use mesh_service::{ApiError, Caller, IdPath};
use mesh_types::Permission;
use mesh_types::proof::{ConsistencyProof, InclusionProof};
use std::sync::Arc;

pub(crate) fn router(core: Arc<ProvenanceService>) -> Router {
    let auth = core.context().auth.clone();
    let read = || auth.require(Permission::ProvenanceRead);
    Router::new()
        .route(
            "/api/v1/provenance/public-key",
            get(public_key).route_layer(read()),
        )
        .route(
            "/api/v1/provenance/events/{id}/proof",
            get(proof).route_layer(read()),
        )
        .route(
            "/api/v1/provenance/checkpoints/{from}/{to}/consistency",
            get(consistency).route_layer(read()),
        )
        .with_state(core)
}

pub(crate) fn ops() -> [Op; 3] {
    let op = |method, path, summary, success| {
        Op::guarded(
            method,
            path,
            summary,
            Permission::ProvenanceRead,
            None,
            success,
        )
    };
    [
        op(
            "get",
            "/api/v1/provenance/public-key",
            "The log's checkpoint verifier key (C2SP: <origin>+<hex key id>+<base64(0x01 || Ed25519 key)>), text/plain",
            (200, "text/plain"),
        ),
        op(
            "get",
            "/api/v1/provenance/events/{id}/proof",
            "Inclusion proof of an event: {format, event, leafIndex, treeSize, inclusionPath, checkpoint (C2SP signed note)} against the latest checkpoint (one of the whole log is signed first if none covers the event)",
            (200, "Inclusion proof"),
        ),
        op(
            "get",
            "/api/v1/provenance/checkpoints/{from}/{to}/consistency",
            "RFC 9162 consistency proof between two stored checkpoint sizes: {fromSize, toSize, fromCheckpoint, toCheckpoint, proof}; 404 for a size never checkpointed, 409 when the stored tree no longer matches the signed roots",
            (200, "Consistency proof"),
        ),
    ]
}

async fn public_key(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let key = core.public_key()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!("{key}\n"),
    )
        .into_response())
}

async fn proof(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<InclusionProof>, ApiError> {
    Ok(Json(core.inclusion_proof(id).await?))
}

async fn consistency(
    State(core): State<Arc<ProvenanceService>>,
    _caller: Caller,
    Path((from, to)): Path<(String, String)>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let size = |field: &str, raw: &str| {
        raw.parse::<u64>()
            .map_err(|_| ApiError::invalid(field, format!("`{raw}` is not a tree size")))
    };
    let (from, to) = (size("from", &from)?, size("to", &to)?);
    Ok(Json(core.consistency_proof(from, to).await?))
}
