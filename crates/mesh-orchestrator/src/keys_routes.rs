//! API key management, on the orchestrator's port.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::auth::{self, NewKey};
use mesh_service::{ApiError, Caller, IdPath, JsonBody, ServiceContext};
use mesh_store::ApiKeyRecord;
use mesh_types::Permission;
use serde_json::{Value, json};

pub fn router(ctx: ServiceContext) -> Router {
    let guard = |p| ctx.auth.require(p);
    Router::new()
        .route(
            "/api/v1/keys",
            post(create)
                .route_layer(guard(Permission::KeysManage))
                .merge(get(list).route_layer(guard(Permission::KeysManage))),
        )
        .route(
            "/api/v1/keys/{id}/revoke",
            post(revoke).route_layer(guard(Permission::KeysManage)),
        )
        .with_state(ctx.clone())
}

async fn create(
    State(ctx): State<ServiceContext>,
    caller: Caller,
    JsonBody(new): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (key, record) = auth::create_key(&ctx.store, caller.actor(), new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key, "record": record})),
    ))
}

async fn list(
    State(ctx): State<ServiceContext>,
    _caller: Caller,
) -> Result<Json<Vec<ApiKeyRecord>>, ApiError> {
    Ok(Json(ctx.store.keys.list_keys().await?))
}

async fn revoke(
    State(ctx): State<ServiceContext>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<ApiKeyRecord>, ApiError> {
    let record = auth::revoke_key(&ctx.store, caller.actor(), id).await?;
    ctx.auth.clear_cache();
    Ok(Json(record))
}
