use crate::core::{Orchestrator, SubmitResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_queue::{ApprovalBody, TaskListQuery};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, IdPath, JsonBody, QueryParams, ServiceName};
use mesh_types::{NewTask, Page, Permission, Task};
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(core: Arc<Orchestrator>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/tasks",
            post(submit)
                .route_layer(auth.require(Permission::TaskSubmit))
                .merge(get(list).route_layer(auth.require(Permission::TaskRead))),
        )
        .route(
            "/api/v1/tasks/{id}",
            get(get_task).route_layer(auth.require(Permission::TaskRead)),
        )
        .route(
            "/api/v1/tasks/{id}/cancel",
            post(cancel).route_layer(auth.require(Permission::TaskCancel)),
        )
        .route(
            "/api/v1/approvals",
            get(approvals).route_layer(auth.require(Permission::TaskRead)),
        )
        .route(
            "/api/v1/approvals/{id}/approve",
            post(approve).route_layer(auth.require(Permission::ApprovalDecide)),
        )
        .route(
            "/api/v1/approvals/{id}/reject",
            post(reject).route_layer(auth.require(Permission::ApprovalDecide)),
        )
        .with_state(core.clone())
        .merge(crate::keys_routes::router(core.context().clone()))
        .merge(crate::a2a_routes::router(core.clone()));
    let doc = crate::a2a_routes::with_openapi(openapi());
    mesh_service::server::finish_router(core.context(), api, doc)
}

async fn submit(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    JsonBody(new): JsonBody<NewTask>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    Ok((StatusCode::CREATED, Json(core.submit(&caller, new).await?)))
}

async fn list(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    QueryParams(query): QueryParams<TaskListQuery>,
) -> Result<Json<Page<Task>>, ApiError> {
    Ok(Json(core.list(&caller, query).await?))
}

async fn get_task(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.get(&caller, id).await?))
}

async fn cancel(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(core.cancel(&caller, id).await?))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn approvals(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    QueryParams(q): QueryParams<ApprovalsQuery>,
) -> Result<Json<Page<crate::core::PendingApproval>>, ApiError> {
    Ok(Json(core.approvals(&caller, q.limit, q.cursor).await?))
}

async fn approve(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    IdPath(id): IdPath,
    body: axum::body::Bytes,
) -> Result<Json<Task>, ApiError> {
    let body = ApprovalBody::from_bytes(&body)?;
    Ok(Json(
        core.resolve_approval(&caller, id, true, body.note).await?,
    ))
}

async fn reject(
    State(core): State<Arc<Orchestrator>>,
    caller: Caller,
    IdPath(id): IdPath,
    body: axum::body::Bytes,
) -> Result<Json<Task>, ApiError> {
    let body = ApprovalBody::from_bytes(&body)?;
    Ok(Json(
        core.resolve_approval(&caller, id, false, body.note).await?,
    ))
}

fn openapi() -> Value {
    let op = Op::guarded;
    let new_key = json!({
        "type": "object",
        "required": ["name", "roles"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string"},
            "roles": {"type": "array", "items": {"enum": ["admin", "operator", "agent", "auditor"]}},
            "tenant": {"type": "string", "default": "default"},
        },
    });
    document(
        ServiceName::Orchestrator,
        &[
            op(
                "post",
                "/api/v1/tasks",
                "Submit a task: {taskId, status: queued, estimatedCompletion}",
                Permission::TaskSubmit,
                Some(mesh_queue::new_task_schema()),
                (201, "Task accepted"),
            ),
            op(
                "get",
                "/api/v1/tasks",
                "List tasks (filters: status, type, parentId; limit, cursor)",
                Permission::TaskRead,
                None,
                (200, "A page of tasks"),
            ),
            op(
                "get",
                "/api/v1/tasks/{id}",
                "Get a task",
                Permission::TaskRead,
                None,
                (200, "The task"),
            ),
            op(
                "post",
                "/api/v1/tasks/{id}/cancel",
                "Cancel a task and its unfinished subtasks",
                Permission::TaskCancel,
                None,
                (200, "The cancelled task"),
            ),
            op(
                "get",
                "/api/v1/approvals",
                "Tasks a policy escalated to a human, with reason and escalationTarget (limit, cursor)",
                Permission::TaskRead,
                None,
                (200, "{items, nextCursor}"),
            ),
            op(
                "post",
                "/api/v1/approvals/{id}/approve",
                "Queue an escalated task (body {note} optional)",
                Permission::ApprovalDecide,
                None,
                (200, "The queued task"),
            ),
            op(
                "post",
                "/api/v1/approvals/{id}/reject",
                "Cancel an escalated task (body {note} optional)",
                Permission::ApprovalDecide,
                None,
                (200, "The cancelled task"),
            ),
            op(
                "post",
                "/api/v1/keys",
                "Create an API key (the key is in the reply, once)",
                Permission::KeysManage,
                Some(new_key),
                (201, "{key, record}"),
            ),
            op(
                "get",
                "/api/v1/keys",
                "List API keys (never the keys themselves)",
                Permission::KeysManage,
                None,
                (200, "Key records"),
            ),
            op(
                "post",
                "/api/v1/keys/{id}/revoke",
                "Revoke an API key",
                Permission::KeysManage,
                None,
                (200, "The revoked key record"),
            ),
        ],
    )
}
