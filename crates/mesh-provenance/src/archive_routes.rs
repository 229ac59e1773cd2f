//! `GET /api/v1/provenance/archive/{sha256}`: an archived payload (prompt, response,
//! tool arguments or output) read back by the hash a provenance event carries,
//! decrypted, for a caller the `data.export` policy admits.

use crate::ProvenanceService;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mesh_service::openapi::Op;
use mesh_service::{ApiError, Caller};
use mesh_types::Permission;
use std::sync::Arc;

pub(crate) fn router(core: Arc<ProvenanceService>) -> Router {
    let auth = core.context().auth.clone();
    Router::new()
        .route(
            "/api/v1/provenance/archive/{sha256}",
            get(archived).route_layer(auth.require(Permission::ProvenanceRead)),
        )
        .with_state(core)
}

pub(crate) fn ops() -> Vec<Op> {
    vec![Op::guarded(
        "get",
        "/api/v1/provenance/archive/{sha256}",
        "An archived payload by its SHA-256 (promptSha256, responseSha256, argumentsSha256, outputSha256), decrypted; the data.export policy decides; 404 if not archived (hash-only classification, or past retention), 503 if archiving is off",
        Permission::ProvenanceRead,
        None,
        (200, "application/json (the payload's canonical JSON)"),
    )]
}

async fn archived(
    State(core): State<Arc<ProvenanceService>>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = core.archived(&caller.principal, &sha256).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

impl ProvenanceService {
    /// The payload archived under `sha256`, once `data.export` allows the caller.
    pub async fn archived(
        &self,
        caller: &mesh_types::Principal,
        sha256: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(archive) = self.archive.get() else {
            return Err(ApiError::unavailable(
                "archive_off",
                "payload archiving is off on this mesh ([archive], or no archive key)",
            ));
        };
        self.admit_export(
            caller,
            Some(sha256.to_string()),
            serde_json::json!({"archive": sha256}),
        )
        .await?;
        match archive.get(sha256).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(ApiError::not_found(format!("no archived payload {sha256}"))),
            Err(e) => Err(ApiError::unavailable("archive_unavailable", e)),
        }
    }

    /// Serves archived payloads from now on (`[archive]`).
    pub fn set_archive(&self, archive: Arc<mesh_archive::Archive>) {
        let _ = self.archive.set(archive);
    }
}
